"""A snapshot sent by the leader is checked whole before it replaces ours.

pysyncobj's serializers exchange a snapshot file in chunks with no offsets;
chunks queued on a connection that dropped are just missing at the other end.
Such a file must not replace the follower's snapshot (opening its store image
would read past the end of the file and kill the process).
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest
from pysyncobj.serializer import Serializer

import cluster.raft_node  # noqa: F401 - installs the checked receipt
from store import ChannelLimits, open_store

CHUNK = 1 << 14


def _snapshot_file(path: Path) -> bytes:
    """A snapshot file as the nodes write it: header length, header, store image."""
    store = open_store("LMDB", str(path.parent / "src"), sync=False, map_size=1 << 28)
    try:
        with store.write() as txn:
            limits = ChannelLimits(max_msgs=0, max_bytes=0, max_age=0, max_subs=0)
            txn.create_channel("foo", 1, limits, 1000, 0)
            for i in range(300):
                txn.store_msg("foo", "", os.urandom(500), 1000 + i)
        store.snapshot(str(path) + ".image")
    finally:
        store.close()
    head = pickle.dumps(("raft", 1, 2), protocol=5)
    image = Path(str(path) + ".image").read_bytes()
    data = struct.pack(">Q", len(head)) + head + image
    path.write_bytes(data)
    return data


def _chunks(data: bytes) -> list[tuple[bytes, bool, bool]]:
    parts = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    out = [(p, i == 0, False) for i, p in enumerate(parts)]
    return out + [(b"", False, True)]


@pytest.mark.parametrize("lost", [[], [3], [1, 2, 3], [-2]])
def test_snapshot_missing_chunks_does_not_replace_ours(tmp_path: Path, lost: list[int]) -> None:
    data = _snapshot_file(tmp_path / "sent")
    ours = tmp_path / "raft.dump"
    ours.write_bytes(b"our previous snapshot")
    receiver = Serializer(str(ours), CHUNK, False, None, None, None)
    chunks = _chunks(data)
    gone = {i % (len(chunks) - 1) for i in lost}
    results = [receiver.setTransmissionData(c) for i, c in enumerate(chunks) if i not in gone]
    if gone:
        assert results[-1] is False
        assert ours.read_bytes() == b"our previous snapshot"
        assert not Path(str(ours) + ".1.tmp").exists()
    else:
        assert results[-1] is True
        assert ours.read_bytes() == data
    assert not any(results[:-1])
