"""``make bench-memory``: does a node's memory grow with a channel?

One node (its own nats-server), ``--count`` messages of 128 bytes published
into one channel, then a subscriber reading the whole channel from the first
message. The node's resident memory (VmRSS, and the anonymous part RssAnon,
which excludes pages of the memory-mapped LMDB and journal files) is sampled
before, after publishing, during and after the read.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from client import connect
from cluster.bench_procs import Child, free_port, memory_kb, stop_all
from cluster.bench_report import SuiteOptions
from cluster.bench_suite import Node, start_nodes, wait_ready
from cluster.natsproc import nats_server_binary

#: The cluster ID ``start_nodes`` gives a one-node setup.
CLUSTER_ID = "bench1"


def _fmt(mem: dict[str, int]) -> str:
    return (
        f"VmRSS {mem.get('VmRSS', 0) / 1024:.1f} MB, RssAnon {mem.get('RssAnon', 0) / 1024:.1f} MB"
    )


async def _run(
    nats_url: str, node: Node, count: int, size: int
) -> list[tuple[str, dict[str, int]]]:
    samples: list[tuple[str, dict[str, int]]] = [("idle", memory_kb(node.child.pid))]
    sc = await connect(CLUSTER_ID, "mem-writer", nats_url=nats_url)
    data = b"m" * size
    started = time.monotonic()
    window: list[asyncio.Future[str]] = []
    for i in range(count):
        window.append(await sc.publish_async("memory", data))
        if len(window) >= 8192:
            await asyncio.gather(*window)
            window.clear()
        if i and i % 200_000 == 0:
            print(f"  published {i:,} ({i / (time.monotonic() - started):,.0f} msgs/s)", flush=True)
    await asyncio.gather(*window)
    await sc.close()
    samples.append((f"after publishing {count:,}", memory_kb(node.child.pid)))

    reader = await connect(CLUSTER_ID, "mem-reader", nats_url=nats_url)
    received = 0
    done = asyncio.Event()
    peak: dict[str, int] = {}

    def on_msg(msg: object) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    sub = await reader.subscribe("memory", on_msg, start_at="first", max_inflight=1024)
    while not done.is_set():
        await asyncio.sleep(1.0)
        mem = memory_kb(node.child.pid)
        if mem.get("VmRSS", 0) > peak.get("VmRSS", 0):
            peak = mem
        print(f"  read {received:,}: {_fmt(mem)}", flush=True)
    samples.append(("peak while reading", peak))
    await sub.unsubscribe()
    await reader.close()
    samples.append((f"after reading {count:,}", memory_kb(node.child.pid)))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stanchion bench-memory", description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000, help="messages to store")
    parser.add_argument("--size", type=int, default=128, help="message size in bytes")
    parser.add_argument("--keep", action="store_true", help="keep the data and logs")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="stanchion-bench-memory-"))
    children: list[Child] = []
    try:
        port = free_port()
        nats = Child(
            "nats-server",
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
            root / "nats.log",
        ).start()
        children.append(nats)
        nats.wait_port(port, 10)
        url = f"nats://127.0.0.1:{port}"
        nodes = start_nodes(1, url, root, SuiteOptions())
        children.extend(n.child for n in nodes)
        node = wait_ready(nodes)
        print(f"memory of one node, {args.count:,} messages of {args.size} bytes", flush=True)
        samples = asyncio.run(_run(url, node, args.count, args.size))
        print()
        for label, mem in samples:
            print(f"{label:>28}: {_fmt(mem)}")
        return 0
    finally:
        stop_all(children)
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
