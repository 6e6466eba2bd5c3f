"""A node killed while it writes snapshots loses nothing acknowledged.

With a tiny compaction size the node snapshots its store every few hundred
messages; it is SIGKILLed at random moments while a publisher keeps going,
so some kills land in the middle of a snapshot (a snapshot is written aside
and renamed into place, so a half-written one is never loaded).
"""

from __future__ import annotations

import asyncio
import random
import signal

from client import StanError, connect
from tests.helpers import StanNodeFactory, wait_for

ROUNDS = 4


async def _publish_some(url: str, cluster_id: str, start: int, count: int) -> list[bytes]:
    """Publish ``count`` messages; return those acknowledged (in order)."""
    acked: list[bytes] = []
    try:
        sc = await connect(cluster_id, f"writer-{start}", nats_url=url, pub_ack_wait=5)
    except StanError:
        return acked
    try:
        for i in range(start, start + count):
            payload = f"m{i:06d}".encode() + b"s" * 200
            try:
                await sc.publish("snapkill", payload)
            except StanError:
                break
            acked.append(payload)
    finally:
        try:
            await sc.close()
        except StanError:
            pass
    return acked


async def test_kills_during_snapshots_lose_nothing_acknowledged(
    stan_node: StanNodeFactory,
) -> None:
    rng = random.Random(7)
    node = stan_node("--cluster_compact_size", "32kb")
    url, cid = stan_node.nats_url, stan_node.cluster_id
    acked: list[bytes] = []
    for round_ in range(ROUNDS):
        writer = asyncio.ensure_future(_publish_some(url, cid, round_ * 100_000, 100_000))
        await wait_for(
            lambda: node.log_text().count("snapshot written") >= 1,
            30,
            "a snapshot in this run",
            state=node.log_tail,
        )
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # land somewhere in the next ones
        node.kill(signal.SIGKILL)
        acked += await writer
        node.restart()
    assert "failed to load" not in node.full_log_text()

    reader = await connect(cid, "reader", nats_url=url)
    got: list[bytes] = []
    done = asyncio.Event()
    last = acked[-1]

    def on_msg(msg: object) -> None:
        got.append(msg.data)  # type: ignore[attr-defined]
        if msg.data == last:  # type: ignore[attr-defined]
            done.set()

    sub = await reader.subscribe("snapkill", on_msg, start_at="first", max_inflight=8192)
    await asyncio.wait_for(done.wait(), 60)
    await sub.unsubscribe()
    await reader.close()
    stored = set(got)
    missing = [m[:7] for m in acked if m not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    assert len(acked) > 0
