"""``make bench`` (``stanchion bench --suite``): a fixed suite and one table.

Starts its own nats-server on a free 127.0.0.1 port, then for one node and
for a three-node cluster (fresh temporary data directories, default node
flags plus ``--node_arg``): asynchronous and synchronous publishing, 1
publisher with 0 and with 1 subscriber, 128-byte messages. Right before each
setup it measures the raw limit of nats-py request/reply through the same
nats-server (1 and 100 requests in flight against a responder process) and
reports every server figure against it:

* async: publish msgs/s divided by the raw 100-in-flight requests/s;
* sync: median publish round trip divided by the raw 1-in-flight median.

It measures the raw limit again after the setup and uses the better of the
two, which shields the ratios from a moment of noise. After each setup's
runs it reads each node's VmRSS and RssAnon. Progress goes
to stderr, the table to stdout, ``--csv FILE`` gets every figure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import nats.errors

from client import StanError
from cluster.bench_procs import (
    Child,
    ChildError,
    cpu_count,
    free_port,
    http_json,
    interrupt_on_sigterm,
    load_average,
    memory_kb,
    stop_all,
)
from cluster.bench_raw import RESPONDER_READY, measure
from cluster.bench_report import (
    QUICK,
    SUITE_CSV_COLUMNS,
    NodeMemory,
    SetupResult,
    SuiteOptions,
    SuiteResult,
    format_suite,
    suite_csv_rows,
)
from cluster.bench_run import run, run_interruptible
from cluster.bench_stats import RawResult, RunConfig, human_duration, to_csv
from cluster.natsproc import nats_server_binary

READY_LINE = "Streaming Server is ready"
#: Seconds for a node (or a cluster's election) to get ready.
READY_TIMEOUT = 60.0
RAW_SUBJECT = "bench.raw.echo"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- nodes ---------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    child: Child
    http_port: int


def start_nodes(count: int, nats_url: str, root: Path, opts: SuiteOptions) -> list[Node]:
    cluster_id = f"bench{count}"
    names = ["a", "b", "c", "d", "e", "f", "g"][:count]
    peers = ",".join(f"{n}=127.0.0.1:{free_port()}" for n in names)
    nodes: list[Node] = []
    for name in names:
        data = root / f"{cluster_id}-{name}"
        data.mkdir(parents=True)
        port = free_port()
        args = [sys.executable, "-m", "cluster.cli", "-cid", cluster_id, "-ns", nats_url]
        args += ["--dir", str(data), "-m", str(port)]
        if count > 1:
            args += ["--clustered", "--cluster_node_id", name, "--cluster_peers", peers]
        args += opts.node_args
        child = Child(f"node {name}", args, root / f"{cluster_id}-{name}.log")
        nodes.append(Node(name, child, port))
        child.start()
    return nodes


def _role(node: Node) -> str:
    try:
        return str(http_json(node.http_port, "/streaming/serverz").get("role", "Standalone"))
    except (OSError, ValueError):
        return "?"


def wait_ready(nodes: list[Node], timeout: float = READY_TIMEOUT) -> Node:
    """Wait until one node serves clients: the node itself, or a cluster's only leader."""
    deadline = time.monotonic() + timeout
    if len(nodes) == 1:
        nodes[0].child.wait_for_log(READY_LINE, timeout)
        return nodes[0]
    roles: dict[str, str] = {}
    while True:
        for node in nodes:
            node.child.check_running("an elected leader")
        roles = {n.name: _role(n) for n in nodes}
        leaders = [n for n in nodes if roles[n.name] == "Leader"]
        if len(leaders) == 1:
            leaders[0].child.wait_for_log(READY_LINE, max(1.0, deadline - time.monotonic()))
            return leaders[0]
        if time.monotonic() > deadline:
            raise ChildError(f"no single leader within {timeout}s; roles {roles}")
        time.sleep(0.1)


# -- the suite -------------------------------------------------------------------------------


def cases() -> list[tuple[bool, int]]:
    """(sync, subscribers) of each run, in order."""
    return [(False, 0), (False, 1), (True, 0), (True, 1)]


def run_setup(
    count: int, nats_url: str, root: Path, opts: SuiteOptions, progress: IO[str] | None
) -> SetupResult:
    label = "1 node" if count == 1 else f"{count} nodes"
    setup = SetupResult(count)
    measure_raw(nats_url, opts, setup, "before")
    nodes = start_nodes(count, nats_url, root, opts)
    try:
        _say(f"[{label}] starting")
        wait_ready(nodes)
        for sync, subs in cases():
            mode = "sync" if sync else "async"
            cfg = RunConfig(
                server=nats_url,
                cluster_id=f"bench{count}",
                channel=f"bench.{mode}.{subs}",
                num_pubs=1,
                num_subs=subs,
                num_msgs=opts.sync_msgs if sync else opts.async_msgs,
                msg_size=opts.msg_size,
                sync=sync,
                procs=opts.procs,
                timeout=opts.timeout,
            )
            _say(f"[{label}] {mode}, 1 pub / {subs} sub, {cfg.num_msgs:,} msgs")
            before = _adjacent_raw(nats_url, opts) if sync else None
            result = run_interruptible(run(cfg, progress))
            if before is not None:
                result.adjacent_raw = [before, _adjacent_raw(nats_url, opts)]
            setup.runs.append(result)
            sub = f", sub {result.sub_total.msgs_per_s:,.0f} msgs/s" if subs else ""
            _say(
                f"[{label}]   pub {result.pub_total.msgs_per_s:,.0f} msgs/s{sub}, "
                f"ack p50 {human_duration(result.latency.p50)}"
                + ("" if result.complete else "  INCOMPLETE")
            )
        for node in nodes:
            mem = memory_kb(node.child.pid)
            setup.memory.append(
                NodeMemory(node.name, _role(node), mem.get("VmRSS", 0), mem.get("RssAnon", 0))
            )
    finally:
        stop_all([n.child for n in nodes])
    measure_raw(nats_url, opts, setup, "after")
    return setup


def _adjacent_raw(nats_url: str, opts: SuiteOptions) -> RawResult:
    """A short raw 1-in-flight measurement next to a sync run."""
    count = max(200, opts.raw1_requests // 3)
    return run_interruptible(measure(nats_url, RAW_SUBJECT, 1, count, opts.msg_size))


def measure_raw(nats_url: str, opts: SuiteOptions, setup: SetupResult, when: str) -> None:
    """nats-py request/reply with 1 and with 100 in flight, added to ``setup.raw``."""
    _say(f"[{setup.label}] raw nats-py request/reply {when}, 1 and 100 in flight")
    for in_flight, count in ((1, opts.raw1_requests), (100, opts.raw100_requests)):
        raw = run_interruptible(measure(nats_url, RAW_SUBJECT, in_flight, count, opts.msg_size))
        raw.when = when
        setup.raw.append(raw)
        _say(
            f"[{setup.label}]   {in_flight} in flight {raw.rate:,.0f} req/s, "
            f"p50 {human_duration(raw.latency.p50)}"
        )


def run_suite(opts: SuiteOptions, root: Path, progress: IO[str] | None) -> SuiteResult:
    suite = SuiteResult(opts, cpu_count(), load_average())
    started = time.monotonic()
    children: list[Child] = []
    try:
        port = free_port()
        nats = Child(
            "nats-server",
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
            root / "nats-server.log",
        )
        children.append(nats.start())
        nats.wait_port(port, 10.0)
        url = f"nats://127.0.0.1:{port}"
        responder = Child(
            "responder",
            [sys.executable, "-m", "cluster.bench_raw", url, RAW_SUBJECT],
            root / "responder.log",
        )
        children.append(responder.start())
        responder.wait_for_log(RESPONDER_READY, 20.0)
        for count in opts.nodes:
            suite.setups.append(run_setup(count, url, root, opts, progress))
    finally:
        stop_all(children)
    suite.seconds = time.monotonic() - started
    suite.load_end = load_average()
    return suite


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = SuiteOptions()
    p = argparse.ArgumentParser(
        prog="stanchion bench --suite",
        description="The fixed benchmark suite: 1 node and a 3-node cluster, async and sync "
        "publishing, 1 pub with 0 and 1 sub, against raw nats-py request/reply.",
        allow_abbrev=False,
    )
    p.add_argument("--quick", action="store_true", help="a short smoke version")
    p.add_argument("--async_msgs", type=int, help=f"msgs per async run (default {d.async_msgs})")
    p.add_argument("--sync_msgs", type=int, help=f"msgs per sync run (default {d.sync_msgs})")
    p.add_argument("--raw1", type=int, help=f"raw 1-in-flight requests ({d.raw1_requests})")
    p.add_argument("--raw100", type=int, help=f"raw 100-in-flight requests ({d.raw100_requests})")
    p.add_argument("-ms", "--msg_size", type=int, default=d.msg_size, help="message bytes")
    p.add_argument("--procs", type=int, default=d.procs, help="publisher worker processes")
    p.add_argument("--nodes", default="1,3", help="setups, as node counts (default %(default)s)")
    p.add_argument(
        "--node_arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra node flag, repeatable (e.g. --node_arg=--file_sync=false)",
    )
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds each run may publish")
    p.add_argument("--csv", type=Path, help="write every figure to this CSV file")
    p.add_argument("--keep", action="store_true", help="keep the data and logs directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def options_from_args(args: argparse.Namespace) -> SuiteOptions:
    opts = SuiteOptions(
        msg_size=args.msg_size,
        procs=args.procs,
        node_args=list(args.node_arg),
        timeout=args.timeout,
        csv=args.csv,
        keep=args.keep,
    )
    if args.quick:
        for key, value in QUICK.items():
            setattr(opts, key, value)
    for key, attr in (
        ("async_msgs", "async_msgs"),
        ("sync_msgs", "sync_msgs"),
        ("raw1", "raw1_requests"),
        ("raw100", "raw100_requests"),
    ):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{key} must be at least 1")
            setattr(opts, attr, value)
    opts.nodes = [int(x) for x in args.nodes.split(",") if x.strip()]
    if not opts.nodes or any(n < 1 or n > 7 for n in opts.nodes):
        raise ValueError("--nodes takes node counts from 1 to 7, e.g. 1,3")
    return opts


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        opts = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    progress = None if args.no_progress or not sys.stderr.isatty() else sys.stderr
    interrupt_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="stanchion-bench-"))
    ok = False
    try:
        suite = run_suite(opts, root, progress)
        ok = True
    except (ChildError, StanError, nats.errors.Error, OSError, RuntimeError, TimeoutError) as exc:
        _say(f"bench suite failed: {type(exc).__name__}: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("bench suite interrupted")
        return 130
    finally:
        if opts.keep or not ok:
            _say(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(format_suite(suite))
    if opts.csv is not None:
        opts.csv.write_text(to_csv(SUITE_CSV_COLUMNS, suite_csv_rows(suite)))
        print(f"\nCSV written to {opts.csv}")
    complete = all(r.complete for s in suite.setups for r in s.runs)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
