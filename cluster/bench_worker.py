"""A worker process of ``stanchion bench --procs N``: runs some of the publishers.

Started by :class:`cluster.bench_run.WorkerPool`, which documents the line
protocol on stdin/stdout. The worker exits when its stdin closes before
``go``, or after reporting its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from client import StanConnection, StanError
from cluster.bench_run import (
    PROGRESS_INTERVAL,
    SETUP_TIMEOUT,
    Progress,
    clock,
    close_client,
    connect_client,
    run_publishers,
)
from cluster.bench_stats import RunConfig


def _say(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def _readline() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


async def _report(progress: Progress) -> None:
    last = -1
    while True:
        if progress.pub != last:
            last = progress.pub
            _say({"acked": last})
        await asyncio.sleep(PROGRESS_INTERVAL)


async def work(spec: dict[str, Any]) -> int:
    cfg = RunConfig(**spec["config"])
    ids: list[str] = spec["client_ids"]
    conns: list[StanConnection] = []
    try:
        try:
            for cid in ids:
                conns.append(await connect_client(cfg, cid))
        except (StanError, OSError, TimeoutError) as exc:
            _say({"error": f"connect failed: {exc}"})
            return 1
        _say({"ready": True})
        line = await asyncio.wait_for(_readline(), SETUP_TIMEOUT * 3)
        if line.strip() != "go":
            return 0
        progress = Progress(pub_total=cfg.num_msgs * len(ids), sub_total=0)
        reporter = asyncio.get_running_loop().create_task(_report(progress))
        try:
            outcomes = await run_publishers(conns, cfg, clock() + cfg.timeout, progress)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        _say({"result": [o.to_json() for o in outcomes]})
        return 0
    finally:
        for sc in conns:
            await close_client(sc)


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    try:
        import uvloop

        return uvloop.run(work(spec))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
