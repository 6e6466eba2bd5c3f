"""Replicated command encoding: stable op numbers, round trips, bad input."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from cluster import commands as c


def test_op_numbers_are_stable() -> None:
    # Entries already in journals and snapshots depend on these numbers.
    assert {op.name: int(op) for op in c.Op} == {
        "NOOP": 0,
        "CONNECT": 1,
        "DISCONNECT": 2,
        "PUBLISH": 3,
        "SUBSCRIBE": 4,
        "UNSUBSCRIBE": 5,
        "CLOSE_SUB": 6,
        "SENT_ACK": 7,
        "DELETE_CHANNEL": 8,
        "EXPIRE": 9,
        "IMPORT_CHANNEL": 10,
        "IMPORT_MSGS": 11,
        "IMPORT_CLIENT": 12,
        "IMPORT_SUB": 13,
    }


SAMPLES: list[c.Command] = [
    c.Noop("tok"),
    c.Connect("a", "hb", b"\x00\xff", 1, 5, 88, True),
    c.Disconnect("a"),
    c.Publish(123, [("foo", "r", b"\x00data"), ("bar", "", b"")]),
    c.Subscribe("a", "foo", "q", "in", 10, 30, "d", 3, 7, 99, "ack", 5, True),
    c.Unsubscribe("a", "foo", "ack"),
    c.CloseSub("a", "foo", "ack"),
    c.SentAck([("foo", 1, 9, [8, 9], [7])]),
    c.DeleteChannel("foo", 42),
    c.Expire(77, ["foo", "bar"]),
    c.ImportChannel("foo", 5, 3, [1, 2, 3, 4, 5], 99),
    c.ImportChannel("foo"),
    c.ImportMsgs("foo", 4, [(5, 100, "r", b"\x00d"), (7, 90, "", b"")], 9, 123),
    c.ImportClient([("a", "hb", b"\x01", 1, 5, 3)]),
    c.ImportSub("foo", 3, "a", "in", "ack", 5, 60, "d:q", "", 9, True, True, [7, 9]),
]


@pytest.mark.parametrize("cmd", SAMPLES)
def test_round_trip(cmd: c.Command) -> None:
    back = c.decode(c.encode(cmd))
    assert type(back) is type(cmd)
    if isinstance(cmd, c.SentAck):
        assert [tuple(u) for u in back.updates] == [tuple(u) for u in cmd.updates]  # type: ignore[attr-defined]
    else:
        assert back == cmd


@pytest.mark.parametrize("cmd", SAMPLES)
def test_encoding_is_op_version_then_fields_in_order(cmd: c.Command) -> None:
    """The bytes of entries already in journals and snapshots: op, version,
    then every field in declaration order, nested values as plain arrays."""
    want = msgpack.packb(
        [int(cmd.op), cmd.version, *(getattr(cmd, f.name) for f in dataclasses.fields(cmd))],
        use_bin_type=True,
    )
    assert c.encode(cmd) == want
    assert c.encode(cmd) == msgpack.packb(
        [int(cmd.op), cmd.version, *dataclasses.astuple(cmd)], use_bin_type=True
    )


def test_samples_cover_every_command() -> None:
    assert {type(cmd) for cmd in SAMPLES} == set(c._CLASSES.values())


def test_fast_publish_encoding_matches() -> None:
    msgs = [("foo", "", b"x"), ("bar", "r", b"yy")]
    assert c.encode_publish(5, msgs) == c.encode(c.Publish(5, msgs))


@pytest.mark.parametrize("msgs", [[], [(1, 10, "", b"x"), (3, 30, "r", b"yy")]])
def test_import_batch_encoding_matches(msgs: list[tuple[int, int, str, bytes]]) -> None:
    packed = c.pack_import_msgs(msgs)
    blob = c.encode_import_msgs("foo", 0, packed, 4, 1 << 62)
    assert blob == c.encode(c.ImportMsgs("foo", 0, msgs, 4, 1 << 62))
    assert c.decode(blob) == c.ImportMsgs("foo", 0, msgs, 4, 1 << 62)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\xc1", msgpack.packb([999, 1]), msgpack.packb("x"), msgpack.packb([3, 99, 1, []])],
)
def test_bad_blobs_raise_command_error(blob: bytes) -> None:
    with pytest.raises(c.CommandError):
        c.decode(blob)
