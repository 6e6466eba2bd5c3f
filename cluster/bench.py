"""``stanchion bench``: publish/subscribe throughput and publish ack latency.

Modelled on the reference's ``stan-bench``::

    stanchion bench -np 2 -ns 1 -n 50000 -ms 128 foo
    stanchion bench --sync -n 2000 --csv out.csv
    stanchion bench -np 4 --procs 2 -n 50000      # publishers in 2 worker processes
    stanchion bench --suite [--quick] [--csv F]   # the fixed suite (``make bench``)

Unlike ``stan-bench``, ``-n`` counts messages *per publisher*: every
subscriber expects ``n * np``. Publishing is asynchronous (up to ``-mpa`` acks
outstanding per publisher) unless ``--sync``. Exit status: 0 when every
publish was acked and every subscriber got every message, 1 otherwise, 2 on
bad options or a failure to connect.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.bench_stats import CSV_COLUMNS, RunConfig, csv_rows, format_report, to_csv


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="stanchion bench",
        description="Benchmark a NATS Streaming server (like stan-bench). "
        "`stanchion bench --suite --help` describes the fixed suite.",
        epilog="-n counts messages per publisher: each subscriber expects n * np. "
        "Exit status 0: all acked and received; 1: something missing; 2: could not run.",
        allow_abbrev=False,
    )
    p.add_argument("-s", "--server", default=d.server, help="NATS URL (default %(default)s)")
    p.add_argument(
        "-c", "--cluster", default=d.cluster_id, help="streaming cluster ID (default %(default)s)"
    )
    p.add_argument(
        "-np", "--num_pubs", type=int, default=d.num_pubs, help="publishers (default %(default)s)"
    )
    p.add_argument(
        "-ns", "--num_subs", type=int, default=d.num_subs, help="subscribers (default %(default)s)"
    )
    p.add_argument(
        "-n",
        "--num_msgs",
        type=int,
        default=d.num_msgs,
        help="messages per publisher (default %(default)s)",
    )
    p.add_argument(
        "-ms",
        "--msg_size",
        type=int,
        default=d.msg_size,
        help="message bytes (default %(default)s)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sync", action="store_true", help="wait for each ack before publishing on")
    mode.add_argument(
        "-a",
        "--async",
        dest="async_",
        action="store_true",
        help="asynchronous publishing (default)",
    )
    p.add_argument(
        "-mpa",
        "--max_pub_acks",
        type=int,
        default=d.max_pub_acks,
        help="async: acks in flight per publisher (default %(default)s)",
    )
    p.add_argument(
        "--procs",
        type=int,
        default=d.procs,
        help="spread publishers over N worker processes (default 0: all in this one)",
    )
    p.add_argument(
        "-mi",
        "--sub_inflight",
        type=int,
        default=d.sub_inflight,
        help="MaxInflight of each subscription (default %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=d.timeout,
        help="seconds publishing may take (default %(default)s)",
    )
    p.add_argument(
        "--sub_idle",
        type=float,
        default=d.sub_idle,
        help="seconds subscribers may wait for a message after publishing (default %(default)s)",
    )
    p.add_argument("--channel", default=None, help=f"channel (default {d.channel})")
    p.add_argument("channel_arg", nargs="?", metavar="CHANNEL", help="channel, as in stan-bench")
    p.add_argument("--csv", type=Path, help="write the figures to this CSV file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig(
        server=args.server,
        cluster_id=args.cluster,
        num_pubs=args.num_pubs,
        num_subs=args.num_subs,
        num_msgs=args.num_msgs,
        msg_size=args.msg_size,
        sync=args.sync,
        max_pub_acks=args.max_pub_acks,
        procs=args.procs,
        sub_inflight=args.sub_inflight,
        timeout=args.timeout,
        sub_idle=args.sub_idle,
    )
    if args.channel and args.channel_arg and args.channel != args.channel_arg:
        raise ValueError("give the channel once (--channel or positional)")
    cfg.channel = args.channel or args.channel_arg or cfg.channel
    for name in ("num_pubs", "num_msgs", "max_pub_acks", "sub_inflight"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    for name in ("num_subs", "msg_size", "procs"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must not be negative")
    if cfg.timeout <= 0 or cfg.sub_idle <= 0:
        raise ValueError("--timeout and --sub_idle must be positive")
    return cfg


def main(argv: list[str]) -> int:
    if "--suite" in argv:
        from cluster.bench_suite import main as suite_main

        return suite_main([a for a in argv if a != "--suite"])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    import nats.errors

    from client import StanError
    from cluster.bench_procs import interrupt_on_sigterm
    from cluster.bench_run import run, run_interruptible

    stream = None if args.no_progress or not sys.stderr.isatty() else sys.stderr
    interrupt_on_sigterm()
    try:
        result = run_interruptible(run(cfg, stream))
    except (StanError, nats.errors.Error, OSError, TimeoutError, RuntimeError) as exc:
        print(f"stanchion bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stanchion bench: interrupted", file=sys.stderr)
        return 130
    print(format_report(result))
    if args.csv is not None:
        args.csv.write_text(to_csv(CSV_COLUMNS, csv_rows(result, "1")))
        print(f"CSV written to {args.csv}")
    return 0 if result.complete else 1
