"""The pysyncobj settings this project depends on."""

from __future__ import annotations

import pysyncobj.pickle as pso_pickle

from cluster.raft_node import pickle_protocol_in_use


def test_pickle_protocol_raised() -> None:
    assert pickle_protocol_in_use() == 5
    blob = b"\x00\xff" * 1000
    # Protocol 5 stores bytes as bytes: no latin-1 expansion.
    assert len(pso_pickle.dumps((1, (blob,)))) < len(blob) + 64


def test_transport_does_not_compress() -> None:
    import zlib

    import pysyncobj.tcp_connection as tcp

    data = b"x" * 10_000
    packed = tcp.zlib.compress(data, 3)
    assert len(packed) > len(data)  # stored, not compressed
    assert zlib.decompress(packed) == data
