"""``stanchion import-filestore DIR``: the command line of the FILE store import.

Parses the options, runs the check pass, prints the findings and the plan, and
hands the import itself to ``cluster.importer.Importer`` (see that module for
the two passes and what each guarantees). Exit statuses: 0 done, 1 failed
(damaged store without ``--skip-corrupt``, refused by the target, lost), 2
usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from cluster.import_progress import Progress
from cluster.import_report import format_findings, format_plan, format_result
from cluster.importer import (
    Importer,
    ImportFailed,
    Options,
    check_store,
)
from store.filestore_reader import FileStoreReader

#: Exit statuses.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stanchion import-filestore",
        description="Load a nats-streaming-server FILE store (read-only) into a running "
        "stanchion server or cluster.",
    )
    p.add_argument("dir", type=Path, help="the FILE store directory (the reference's --dir)")
    p.add_argument(
        "-ns",
        "--nats_server",
        "--nats-server",
        dest="nats_url",
        default="nats://127.0.0.1:4222",
        help="NATS URL(s) of the target, comma separated (default %(default)s)",
    )
    p.add_argument(
        "-cid",
        "--cluster_id",
        "--cluster-id",
        dest="cluster_id",
        default="",
        help="the target's cluster ID; must be the store's (default: the store's)",
    )
    p.add_argument("--user", default="", help="NATS user")
    p.add_argument("--pass", dest="password", default="", help="NATS password")
    p.add_argument("--auth", dest="token", default="", help="NATS authorization token")
    p.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="only read and check the store and print what would be imported (no server)",
    )
    p.add_argument(
        "--skip-corrupt",
        "--skip_corrupt",
        dest="skip_corrupt",
        action="store_true",
        help="import what is intact and list the damaged records left out",
    )
    p.add_argument(
        "--batch_msgs", "--batch-msgs", type=int, default=1000, help="max messages per batch"
    )
    p.add_argument(
        "--batch_bytes",
        "--batch-bytes",
        type=int,
        default=1 << 20,
        help="max bytes per batch (also bounded by the NATS max_payload)",
    )
    p.add_argument("--inflight", type=int, default=4, help="batches awaiting their answer at once")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds a request may wait for its answer (default %(default)s)",
    )
    p.add_argument(
        "--retry_window",
        "--retry-window",
        type=float,
        default=60.0,
        help="seconds to keep retrying unanswered requests (leader elections)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="progress display: a bar on a terminal, periodic lines otherwise (auto)",
    )
    return p


def parse_options(argv: list[str]) -> Options:
    args = build_parser().parse_args(argv)
    if args.batch_msgs < 1 or args.batch_bytes < 1024 or args.inflight < 1:
        raise SystemExit("stanchion import-filestore: batch sizes and --inflight must be positive")
    return Options(
        dir=args.dir,
        nats_url=args.nats_url,
        cluster_id=args.cluster_id,
        user=args.user,
        password=args.password,
        token=args.token,
        dry_run=args.dry_run,
        skip_corrupt=args.skip_corrupt,
        batch_msgs=args.batch_msgs,
        batch_bytes=args.batch_bytes,
        inflight=args.inflight,
        timeout=args.timeout,
        retry_window=args.retry_window,
        progress=args.progress,
    )


def main(argv: list[str]) -> int:
    try:
        opts = parse_options(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    return run(opts, sys.stdout, sys.stderr)


def run(opts: Options, out: TextIO, err: TextIO) -> int:
    """The whole command; returns the exit status."""
    prog = "stanchion import-filestore"
    if not opts.dir.is_dir():
        err.write(f"{prog}: {opts.dir} is not a directory\n")
        return EXIT_FAILED
    mode = opts.progress
    if mode == "auto":
        mode = "bar" if err.isatty() else "lines"
    progress = Progress(err, mode)
    reader = FileStoreReader(opts.dir)
    try:
        plan = check_store(reader, progress)
    except OSError as exc:
        err.write(f"{prog}: cannot read the store: {exc}\n")
        return EXIT_FAILED
    format_findings(plan.report, out)
    if plan.info is None:
        err.write(f"{prog}: {opts.dir}: no usable server record, nothing to import\n")
        return EXIT_FAILED
    store_cid = plan.info.cluster_id
    if opts.cluster_id and opts.cluster_id != store_cid:
        err.write(
            f"{prog}: cluster ID mismatch: the store belongs to cluster {store_cid!r}, "
            f"the target is {opts.cluster_id!r} (-cid); refusing to import\n"
        )
        return EXIT_FAILED
    opts.cluster_id = store_cid
    if opts.dry_run:
        format_plan(plan, out)
        if plan.report.problems and not opts.skip_corrupt:
            err.write(
                f"{prog}: the store is damaged (see above); --skip-corrupt imports the rest\n"
            )
            return EXIT_FAILED
        return EXIT_OK
    if plan.report.problems and not opts.skip_corrupt:
        err.write(
            f"{prog}: the store is damaged (see above), nothing imported; "
            "--skip-corrupt imports what is intact\n"
        )
        return EXIT_FAILED
    importer = Importer(opts, reader, plan, progress, out)
    try:
        result = asyncio.run(importer.run())
    except ImportFailed as exc:
        err.write(f"\n{prog}: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.write(f"\n{prog}: interrupted; the import is partial\n")
        return EXIT_INTERRUPTED
    format_result(plan, result, opts, out)
    return EXIT_OK
