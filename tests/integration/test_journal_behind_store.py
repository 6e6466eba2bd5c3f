"""A node whose Raft journal ends before what its store has applied.

That happens when a node is killed between writing a snapshot and trimming its
journal (pysyncobj then keeps only the snapshot's entries), or when an unsynced
journal loses its tail on a power loss while the synced store keeps it. The
store holds those entries; new commands must not reuse their indexes (apply
skips an index it has applied: they would be acknowledged and dropped).

The journal is cut here by hand, the way such a crash leaves it: its header's
end-of-records offset moved back over the last records.
"""

from __future__ import annotations

import asyncio
import signal
import struct
from pathlib import Path

from client import connect
from tests.helpers import StanNodeFactory

#: pysyncobj's journal layout: a 40-byte header whose last 4 bytes are the
#: offset after the last record; records are size, data, size (sizes 4 bytes).
_END_OFFSET_AT = 36
_FIRST_RECORD = 40


def _cut_journal_tail(journal: Path, records: int) -> int:
    """Drop the last ``records`` records; return how many the journal had."""
    data = bytearray(journal.read_bytes())
    end = struct.unpack_from("<I", data, _END_OFFSET_AT)[0]
    starts = []
    pos = _FIRST_RECORD
    while pos < end:
        starts.append(pos)
        pos += struct.unpack_from("<I", data, pos)[0] + 8
    assert pos == end, "journal records do not add up to its end offset"
    assert len(starts) > records, f"only {len(starts)} records in the journal"
    struct.pack_into("<I", data, _END_OFFSET_AT, starts[-records])
    journal.write_bytes(bytes(data))
    return len(starts)


async def _read(url: str, cluster_id: str, channel: str, count: int) -> list[tuple[int, bytes]]:
    sc = await connect(cluster_id, "reader", nats_url=url)
    got: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    def on_msg(msg: object) -> None:
        got.append((msg.sequence, msg.data))  # type: ignore[attr-defined]
        if len(got) >= count:
            done.set()

    sub = await sc.subscribe(channel, on_msg, start_at="first")
    try:
        await asyncio.wait_for(done.wait(), 20)
        await asyncio.sleep(0)
    finally:
        await sub.unsubscribe()
        await sc.close()
    return got


async def test_new_commands_after_a_journal_cut_short_are_kept(
    stan_node: StanNodeFactory,
) -> None:
    node = stan_node()
    url, cid = stan_node.nats_url, stan_node.cluster_id
    sc = await connect(cid, "early", nats_url=url)
    for i in range(20):
        await sc.publish("cut", f"early-{i}".encode())
    await sc.close()

    node.kill(signal.SIGKILL)
    journal = Path(node.args[node.args.index("--dir") + 1]) / "raft" / "raft.journal"
    # The last records are the 20 publishes and the close: cut 12 of them.
    assert _cut_journal_tail(journal, 12) > 12
    node.restart()

    # A registration and publishes after the restart: each a new command.
    sc = await connect(cid, "late", nats_url=url)
    for i in range(5):
        await sc.publish("cut", f"late-{i}".encode())
    await sc.close()

    got = await _read(url, cid, "cut", 25)
    expected = [f"early-{i}".encode() for i in range(20)] + [f"late-{i}".encode() for i in range(5)]
    assert [data for _seq, data in got] == expected
    assert [seq for seq, _data in got] == list(range(1, 26))
    assert "padding the log with no-op entries" in node.log_text()
