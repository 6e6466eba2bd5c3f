"""Raft log compaction on one node: snapshots are written in the background,
the journal is trimmed, and a restart recovers everything from snapshot plus
journal."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from client import connect
from tests.helpers import StanNodeFactory, wait_for

COUNT = 3000


async def _read_all(url: str, cluster_id: str, client_id: str, expected: int) -> list[bytes]:
    sc = await connect(cluster_id, client_id, nats_url=url)
    got: list[bytes] = []
    done = asyncio.Event()

    def on_msg(msg: object) -> None:
        got.append(msg.data)  # type: ignore[attr-defined]
        if len(got) >= expected:
            done.set()

    sub = await sc.subscribe("snap", on_msg, start_at="first", max_inflight=4096)
    await asyncio.wait_for(done.wait(), 30)
    await sub.unsubscribe()
    await sc.close()
    return got


async def test_snapshots_trim_the_journal_and_survive_a_kill(
    stan_node: StanNodeFactory, tmp_path: Path
) -> None:
    node = stan_node("--cluster_compact_size", "100kb")
    sc = await connect(stan_node.cluster_id, "writer", nats_url=stan_node.nats_url)
    payloads = [f"message-{i:05d}-".encode() + b"x" * 100 for i in range(COUNT)]
    futures = [await sc.publish_async("snap", p) for p in payloads]
    await asyncio.gather(*futures)
    await sc.close()

    await wait_for(
        lambda: "snapshot written" in node.log_text(),
        30,
        "a snapshot in the log",
        state=node.log_tail,
    )
    raft_dir = Path(node.args[node.args.index("--dir") + 1]) / "raft"
    assert (raft_dir / "raft.dump").stat().st_size > 0
    assert "snapshot failed" not in node.log_text()

    node.kill(signal.SIGKILL)
    node.restart()
    got = await _read_all(stan_node.nats_url, stan_node.cluster_id, "reader", COUNT)
    assert got == payloads
