"""A node killed after writing a snapshot and before trimming its journal.

The snapshot is renamed into place first; the journal still starts before it.
On restart the journal must keep the entries after the snapshot (committed,
acknowledged, perhaps not in the store yet) and drop only those before.

The kill is placed exactly: a ``sitecustomize`` on the node's PYTHONPATH makes
the journal's first trim SIGKILL its own process (once: a marker file records it).
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

from client import StanError, connect
from tests.helpers import StanNodeFactory, wait_for

_HOOK = textwrap.dedent(
    """
    import os, signal
    import cluster.raft_journal as rj

    _marker = os.environ["STANCHION_TEST_TRIM_MARKER"]
    _trim = rj.StanJournal.deleteEntriesTo

    def _killed_once(self, entry_to):
        if not os.path.exists(_marker):
            with open(_marker, "w") as out:
                out.write(str(len(self)))
            os.kill(os.getpid(), signal.SIGKILL)
        _trim(self, entry_to)

    rj.StanJournal.deleteEntriesTo = _killed_once
    """
)


async def _publish_until_refused(url: str, cluster_id: str, window: int) -> list[bytes]:
    """Publish with ``window`` acks in flight until the node goes away; return
    the payloads acknowledged."""
    sc = await connect(cluster_id, "writer", nats_url=url, pub_ack_wait=3)
    acked: list[bytes] = []
    pending: set[asyncio.Future[None]] = set()

    async def one(payload: bytes) -> None:
        await sc.publish("trimkill", payload)
        acked.append(payload)

    try:
        for i in range(200_000):
            task = asyncio.ensure_future(one(f"m{i:06d}".encode() + b"t" * 200))
            pending.add(task)
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() is not None for t in done):
                    break
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        try:
            await sc.close()
        except StanError:
            pass
    return acked


async def test_kill_between_snapshot_and_trim_keeps_the_journal(
    stan_node: StanNodeFactory, tmp_path: Path
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_HOOK)
    marker = tmp_path / "trim-killed"
    node = stan_node(
        "--cluster_compact_size",
        "256kb",
        env={"PYTHONPATH": str(hook), "STANCHION_TEST_TRIM_MARKER": str(marker)},
    )
    url, cid = stan_node.nats_url, stan_node.cluster_id
    acked = await _publish_until_refused(url, cid, window=64)
    assert marker.exists(), "the node was not killed at its first journal trim"
    assert node.wait_exit(10) is not None
    assert "snapshot written" in node.log_text()
    journal_entries = int(marker.read_text())
    assert len(acked) > 0

    node.restart()
    log_text = node.log_text()
    assert "finishing an interrupted journal trim" in log_text, node.log_tail()
    assert "padding the log" not in log_text

    reader = await connect(cid, "reader", nats_url=url)
    want = set(acked)
    got: set[bytes] = set()
    done = asyncio.Event()

    def on_msg(msg: object) -> None:
        data: bytes = msg.data  # type: ignore[attr-defined]
        if data in want and data not in got:
            got.add(data)
            if len(got) == len(want):
                done.set()

    sub = await reader.subscribe("trimkill", on_msg, start_at="first", max_inflight=8192)
    try:
        await wait_for(done.is_set, 60, "every acknowledged message read back")
    except AssertionError:
        pass  # reported below, with what is missing
    finally:
        await sub.unsubscribe()
        await reader.close()
    missing = [m[:7] for m in acked if m not in got]
    assert missing == [], f"{len(missing)} of {len(acked)} acknowledged messages lost"
    await wait_for(lambda: node.running, 5, "the node still running")
    assert journal_entries > 2
