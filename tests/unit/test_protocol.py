"""Golden bytes for every client protocol message (PROTOCOL.md §4) and the error texts (§7).

Expected bytes are written out by hand from the field tables: a field's tag is
``field_number << 3 | wire_type`` (0 = varint, 2 = length-delimited), as a
varint; proto3 leaves default values out and serializes in field-number order.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol import errors
from protocol.messages import (
    FIRST,
    LAST_RECEIVED,
    NEW_ONLY,
    SEQUENCE_START,
    TIME_DELTA_START,
    Ack,
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    CtrlMsg,
    MsgProto,
    Ping,
    PingResponse,
    PubAck,
    PubMsg,
    StartPosition,
    SubscriptionRequest,
    SubscriptionResponse,
    UnsubscribeRequest,
    decode,
    encode_msg,
    redelivered,
    varint,
)

# 1_000_000_000 ns as a varint: 7-bit groups, least significant first.
NS_1S = b"\x80\x94\xeb\xdc\x03"
# 0xdeadbeef as a varint.
DEADBEEF = b"\xef\xfd\xb6\xf5\x0d"
# -1 as int64: two's complement, always ten bytes.
MINUS_ONE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"

# (message with every field set, its bytes)
GOLDEN: dict[str, tuple[Any, bytes]] = {
    "PubMsg": (
        PubMsg(
            clientID="me",
            guid="g1",
            subject="foo",
            reply="r",
            data=b"\x00\x01",
            connID=b"cid",
            sha256=b"\xff",
        ),
        b"\x0a\x02me"  # 1 clientID
        b"\x12\x02g1"  # 2 guid
        b"\x1a\x03foo"  # 3 subject
        b"\x22\x01r"  # 4 reply
        b"\x2a\x02\x00\x01"  # 5 data
        b"\x32\x03cid"  # 6 connID
        b"\x52\x01\xff",  # 10 sha256
    ),
    "PubAck": (
        PubAck(guid="g1", error="stan: invalid publish request"),
        b"\x0a\x02g1"  # 1 guid
        b"\x12\x1dstan: invalid publish request",  # 2 error (29 bytes)
    ),
    "MsgProto": (
        MsgProto(
            sequence=300,
            subject="foo",
            reply="r",
            data=b"hi",
            timestamp=1_000_000_000,
            redelivered=True,
            redeliveryCount=2,
            CRC32=0xDEADBEEF,
        ),
        b"".join(
            [
                b"\x08\xac\x02",  # 1 sequence = 300
                b"\x12\x03foo",  # 2 subject
                b"\x1a\x01r",  # 3 reply
                b"\x22\x02hi",  # 4 data
                b"\x28" + NS_1S,  # 5 timestamp
                b"\x30\x01",  # 6 redelivered
                b"\x38\x02",  # 7 redeliveryCount
                b"\x50" + DEADBEEF,  # 10 CRC32
            ]
        ),
    ),
    "Ack": (
        Ack(subject="foo", sequence=7),
        b"\x0a\x03foo"  # 1 subject
        b"\x10\x07",  # 2 sequence
    ),
    "ConnectRequest": (
        ConnectRequest(
            clientID="me",
            heartbeatInbox="hb",
            protocol=1,
            connID=b"c",
            pingInterval=5,
            pingMaxOut=88,
        ),
        b"\x0a\x02me"  # 1 clientID
        b"\x12\x02hb"  # 2 heartbeatInbox
        b"\x18\x01"  # 3 protocol
        b"\x22\x01c"  # 4 connID
        b"\x28\x05"  # 5 pingInterval
        b"\x30\x58",  # 6 pingMaxOut = 88
    ),
    "ConnectResponse": (
        ConnectResponse(
            pubPrefix="a",
            subRequests="b",
            unsubRequests="c",
            closeRequests="d",
            error="e",
            subCloseRequests="f",
            pingRequests="g",
            pingInterval=5,
            pingMaxOut=88,
            protocol=1,
            publicKey="k",
        ),
        b"\x0a\x01a"  # 1 pubPrefix
        b"\x12\x01b"  # 2 subRequests
        b"\x1a\x01c"  # 3 unsubRequests
        b"\x22\x01d"  # 4 closeRequests
        b"\x2a\x01e"  # 5 error
        b"\x32\x01f"  # 6 subCloseRequests
        b"\x3a\x01g"  # 7 pingRequests
        b"\x40\x05"  # 8 pingInterval
        b"\x48\x58"  # 9 pingMaxOut
        b"\x50\x01"  # 10 protocol
        b"\xa2\x06\x01k",  # 100 publicKey: tag 802 = 0x322 -> a2 06
    ),
    "Ping": (Ping(connID=b"cid"), b"\x0a\x03cid"),
    "PingResponse": (
        PingResponse(error="client has been replaced or is no longer registered"),
        b"\x0a\x33client has been replaced or is no longer registered",  # 51 bytes
    ),
    "SubscriptionRequest": (
        SubscriptionRequest(
            clientID="me",
            subject="foo",
            qGroup="q",
            inbox="in",
            maxInFlight=1024,
            ackWaitInSecs=30,
            durableName="dur",
            startPosition=StartPosition.TimeDeltaStart,
            startSequence=300,
            startTimeDelta=1_000_000_000,
        ),
        b"\x0a\x02me"  # 1 clientID
        b"\x12\x03foo"  # 2 subject
        b"\x1a\x01q"  # 3 qGroup
        b"\x22\x02in"  # 4 inbox
        b"\x28\x80\x08"  # 5 maxInFlight = 1024
        b"\x30\x1e"  # 6 ackWaitInSecs = 30
        b"\x3a\x03dur"  # 7 durableName
        b"\x50\x02"  # 10 startPosition = TimeDeltaStart
        b"\x58\xac\x02"  # 11 startSequence = 300
        b"\x60" + NS_1S,  # 12 startTimeDelta
    ),
    "SubscriptionResponse": (
        SubscriptionResponse(ackInbox="_INBOX.x", error="e"),
        b"\x12\x08_INBOX.x"  # 2 ackInbox (there is no field 1)
        b"\x1a\x01e",  # 3 error
    ),
    "UnsubscribeRequest": (
        UnsubscribeRequest(clientID="me", subject="foo", inbox="ai", durableName="dur"),
        b"\x0a\x02me"  # 1 clientID
        b"\x12\x03foo"  # 2 subject
        b"\x1a\x02ai"  # 3 inbox
        b"\x22\x03dur",  # 4 durableName
    ),
    "CloseRequest": (CloseRequest(clientID="me"), b"\x0a\x02me"),
    "CloseResponse": (
        CloseResponse(error="stan: unknown clientID"),
        b"\x0a\x16stan: unknown clientID",  # 22 bytes
    ),
    "CtrlMsg": (
        CtrlMsg(MsgType=CtrlMsg.FTHeartbeat, ServerID="s", Data=b"d", RefID="r"),
        b"\x08\x03"  # 1 MsgType = FTHeartbeat
        b"\x12\x01s"  # 2 ServerID
        b"\x1a\x01d"  # 3 Data
        b"\x22\x01r",  # 4 RefID
    ),
}

ALL_CLASSES = [type(msg) for msg, _ in GOLDEN.values()]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_encode(name: str) -> None:
    msg, expected = GOLDEN[name]
    assert msg.SerializeToString() == expected


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_decode(name: str) -> None:
    msg, expected = GOLDEN[name]
    decoded = decode(type(msg), expected)
    assert decoded == msg


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_default_message_is_empty_and_empty_payload_is_defaults(cls: type) -> None:
    assert cls().SerializeToString() == b""
    decoded = decode(cls, b"")
    assert decoded is not None
    assert decoded == cls()
    assert decoded.ListFields() == []


def test_ok_responses_are_zero_length() -> None:
    assert PingResponse().SerializeToString() == b""
    assert CloseResponse().SerializeToString() == b""
    assert SubscriptionResponse().SerializeToString() == b""
    assert PubAck(guid="g").SerializeToString() == b"\x0a\x01g"


def test_zero_values_are_not_encoded() -> None:
    msg = MsgProto(sequence=0, subject="", data=b"", redelivered=False, redeliveryCount=0)
    assert msg.SerializeToString() == b""


def test_negative_int64_is_ten_bytes() -> None:
    assert SubscriptionRequest(startTimeDelta=-1).SerializeToString() == b"\x60" + MINUS_ONE


# Unknown fields of every wire type: varint, fixed64, length-delimited, fixed32,
# with one- and two-byte tags.
UNKNOWN = (
    b"\x78\x01"  # 15 varint
    b"\x99\x01\x01\x02\x03\x04\x05\x06\x07\x08"  # 19 fixed64
    b"\xa2\x06\x03abc"  # 100 length-delimited
    b"\xfd\x07\x01\x02\x03\x04"  # 127 fixed32
)


def _known_fields(msg: Any) -> list[tuple[str, Any]]:
    # Message equality also compares the unknown fields protobuf keeps around.
    return [(field.name, value) for field, value in msg.ListFields()]


@pytest.mark.parametrize("name", sorted(set(GOLDEN) - {"ConnectResponse"}))
def test_unknown_fields_are_ignored(name: str) -> None:
    msg, expected = GOLDEN[name]
    for data in (UNKNOWN + expected, expected + UNKNOWN):
        decoded = decode(type(msg), data)
        assert decoded is not None
        assert _known_fields(decoded) == _known_fields(msg)


def test_unknown_fields_are_ignored_connect_response() -> None:
    # Field 100 is publicKey here; use other unknown numbers.
    msg, expected = GOLDEN["ConnectResponse"]
    extra = b"\x78\x01\xaa\x06\x01z"  # 15 varint, 101 length-delimited
    decoded = decode(ConnectResponse, extra + expected)
    assert decoded is not None
    assert _known_fields(decoded) == _known_fields(msg)


def test_unknown_fields_only_is_all_defaults() -> None:
    decoded = decode(PubMsg, UNKNOWN)
    assert decoded is not None
    assert _known_fields(decoded) == []


def test_field_order_does_not_matter() -> None:
    data = b"\x10\x07\x0a\x03foo"  # Ack with sequence before subject
    assert decode(Ack, data) == Ack(subject="foo", sequence=7)


def test_repeated_scalar_keeps_last() -> None:
    assert decode(PubAck, b"\x0a\x02ab\x0a\x01c") == PubAck(guid="c")


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00",  # field number 0
        b"\x0f",  # wire type 7
        b"\x0c",  # end-group without start
        b"\x08\xff",  # truncated varint
        b"\x0a\x05ab",  # length beyond the end
        b"\x0a",  # tag without value
        b"\xff" * 11,  # varint longer than ten bytes
        b"\x0d\x00\x00",  # truncated fixed32
    ],
)
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_decode_garbage_is_none(cls: type, garbage: bytes) -> None:
    assert decode(cls, garbage) is None


def test_decode_invalid_utf8_string_is_replaced() -> None:
    # The reference (Go) keeps such strings; we keep them with U+FFFD.
    assert decode(PubAck, b"\x0a\x01\xff") == PubAck(guid="\ufffd")
    assert decode(PubMsg, b"\x12\x02\xc3\x28") == PubMsg(guid="\ufffd(")


def test_decode_returns_instance() -> None:
    ack = decode(Ack, b"\x0a\x03foo\x10\x07")
    assert isinstance(ack, Ack)
    assert (ack.subject, ack.sequence) == ("foo", 7)


def test_start_position_values() -> None:
    assert (NEW_ONLY, LAST_RECEIVED, TIME_DELTA_START, SEQUENCE_START, FIRST) == (0, 1, 2, 3, 4)
    names = ["NewOnly", "LastReceived", "TimeDeltaStart", "SequenceStart", "First"]
    assert [StartPosition.Value(n) for n in names] == [0, 1, 2, 3, 4]


def test_start_position_out_of_range_still_encodes() -> None:
    # Proto3 enums are open: a server must see (and reject) unknown values.
    raw = b"\x50\x07"
    req = decode(SubscriptionRequest, raw)
    assert req is not None
    assert req.startPosition == 7
    assert req.SerializeToString() == raw


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16_384, b"\x80\x80\x01"),
        (1_000_000_000, NS_1S),
        (0xDEADBEEF, DEADBEEF),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint(value: int, expected: bytes) -> None:
    assert varint(value) == expected


def test_encode_msg() -> None:
    raw = encode_msg(300, "foo", "r", b"hi", 1_000_000_000)
    assert raw == b"\x08\xac\x02\x12\x03foo\x1a\x01r\x22\x02hi\x28" + NS_1S
    assert (
        raw
        == MsgProto(
            sequence=300, subject="foo", reply="r", data=b"hi", timestamp=1_000_000_000
        ).SerializeToString()
    )


def test_encode_msg_empty_fields() -> None:
    assert encode_msg(1, "foo", "", b"", 5) == b"\x08\x01\x12\x03foo\x28\x05"


@pytest.mark.parametrize("count", [1, 2, 127, 128, 300, 2**32 - 1])
def test_redelivered_equals_reencoding(count: int) -> None:
    raw = encode_msg(300, "foo", "r", b"hi", 1_000_000_000)
    flagged = redelivered(raw, count)
    reencoded = MsgProto(
        sequence=300,
        subject="foo",
        reply="r",
        data=b"hi",
        timestamp=1_000_000_000,
        redelivered=True,
        redeliveryCount=count,
    ).SerializeToString()
    assert flagged == reencoded
    assert flagged == raw + b"\x30\x01\x38" + varint(count)


def test_redelivered_golden() -> None:
    raw = encode_msg(1, "foo", "", b"", 5)
    assert redelivered(raw, 1) == b"\x08\x01\x12\x03foo\x28\x05\x30\x01\x38\x01"


def test_redelivered_twice_keeps_last_count() -> None:
    raw = encode_msg(1, "foo", "", b"x", 5)
    msg = decode(MsgProto, redelivered(redelivered(raw, 1), 2))
    assert msg is not None
    assert msg.redelivered
    assert msg.redeliveryCount == 2


def test_redelivered_with_crc32_decodes_equal() -> None:
    # CRC32 (field 10) precedes the appended fields 6 and 7, so only the parsed
    # messages are equal, not the bytes.
    msg = MsgProto(sequence=3, subject="foo", data=b"x", timestamp=9, CRC32=0xDEADBEEF)
    flagged = decode(MsgProto, redelivered(msg.SerializeToString(), 4))
    expected = MsgProto()
    expected.CopyFrom(msg)
    expected.redelivered = True
    expected.redeliveryCount = 4
    assert flagged == expected


# ---------------------------------------------------------------------------
# Error texts: PROTOCOL.md §7, verbatim list (copied here on purpose, so that a
# change in protocol/errors.py cannot silently change the contract).

VERBATIM = [
    "stan: invalid connection request",
    "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed",
    "stan: clientID already registered",
    "stan: invalid publish request",
    "too many channels",
    "rejecting channel %q because channel %q alreay exists (different cases not allowed)",
    "stan: channel is being deleted",
    "stan: invalid subscription request",
    "stan: clientID missing",
    "stan: invalid ack wait time, should be >= 1s",
    "stan: invalid MaxInflight, should be >= 1",
    "stan: invalid start position",
    "stan: invalid subject",
    "stan: unknown clientID",
    "stan: durable name of a durable queue subscriber can't contain the character ':'",
    "stan: duplicate durable registration",
    "too many subscriptions per channel",
    "stan: invalid unsubscribe request",
    "stan: unknown channel",
    "stan: invalid subscription",
    "stan: invalid close request",
    "client has been replaced or is no longer registered",
]

SERVER_STARTUP = [
    "stan: cannot restart server in clustered mode if it was not previously clustered",
    "stan: clustering mode not supported with MEMORY store type",
]


def _constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(errors).items()
        if name.isupper() and isinstance(value, str)
    }


@pytest.mark.parametrize("text", [t for t in VERBATIM if "%q" not in t])
def test_error_text_is_a_constant(text: str) -> None:
    names = [name for name, value in _constants().items() if value == text]
    assert len(names) == 1, f"{text!r} is defined by {names}"


@pytest.mark.parametrize("text", SERVER_STARTUP)
def test_startup_error_text_is_a_constant(text: str) -> None:
    assert text in _constants().values()


def test_error_constants_are_distinct() -> None:
    values = list(_constants().values())
    assert len(values) == len(set(values))


def test_specific_constants() -> None:
    assert errors.CLIENT_REPLACED == "client has been replaced or is no longer registered"
    assert errors.INVALID_CLIENT_ID == (
        "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed"
    )
    assert errors.DURABLE_QUEUE_NAME_COLON == (
        "stan: durable name of a durable queue subscriber can't contain the character ':'"
    )
    assert errors.INVALID_PUB_REQ == "stan: invalid publish request"
    assert errors.INVALID_SUB == "stan: invalid subscription"


def test_channel_case_conflict() -> None:
    assert errors.channel_case_conflict("Foo", "foo") == (
        'rejecting channel "Foo" because channel "foo" alreay exists (different cases not allowed)'
    )
    template = VERBATIM[5]
    assert errors.channel_case_conflict("A.b", "a.B") == template.replace("%q", '"A.b"', 1).replace(
        "%q", '"a.B"', 1
    )


def test_cluster_id_mismatch() -> None:
    assert errors.cluster_id_mismatch("new", "old") == (
        'cluster ID "new" does not match recovered value of "old"'
    )


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("foo", '"foo"'),
        ("", '""'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\nb\tc\rd", '"a\\nb\\tc\\rd"'),
        ("\x00", '"\\x00"'),
        ("\x1f", '"\\x1f"'),
        ("\x7f", '"\\x7f"'),
        ("é日本", '"é日本"'),  # printable non-ASCII stays as is
        ("😀", '"😀"'),
        ("\u200b", '"\\u200b"'),  # zero width space: format character
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_go_quote(name: str, quoted: str) -> None:
    assert errors.go_quote(name) == quoted


@pytest.mark.parametrize(
    ("name", "quoted"),
    [("\a", '"\\a"'), ("\b", '"\\b"'), ("\f", '"\\f"'), ("\v", '"\\v"')],
)
def test_go_quote_short_escapes(name: str, quoted: str) -> None:
    assert errors.go_quote(name) == quoted


@pytest.mark.parametrize(("name", "quoted"), [("\x80", '"\\u0080"'), ("\xa0", '"\\u00a0"')])
def test_go_quote_latin1_controls(name: str, quoted: str) -> None:
    assert errors.go_quote(name) == quoted


@pytest.mark.parametrize(
    ("guid", "error"),
    [("", ""), ("g", ""), ("abc" * 50, "stan: invalid publish request"), ("", "x")],
)
def test_encode_pub_ack_matches_protobuf(guid: str, error: str) -> None:
    from protocol.messages import PubAck, encode_pub_ack

    assert encode_pub_ack(guid, error) == PubAck(guid=guid, error=error).SerializeToString()


def test_strict_decode_refuses_wrong_wire_types() -> None:
    from protocol.messages import (
        CloseRequest,
        ConnectRequest,
        CtrlMsg,
        MsgProto,
        PubMsg,
        SubscriptionRequest,
        decode,
    )

    pub = PubMsg(clientID="c", guid="g", subject="foo", data=b"x").SerializeToString()
    # ConnectRequest's field 3 is a varint, a PubMsg's is a string.
    assert decode(ConnectRequest, pub) is None
    msg = MsgProto(sequence=5, subject="foo").SerializeToString()
    assert decode(CloseRequest, msg) is None
    assert decode(SubscriptionRequest, pub) is None  # field 5 is int32, not bytes
    ctrl = CtrlMsg(MsgType=1, ServerID="s").SerializeToString()
    assert decode(PubMsg, ctrl) is None
    assert decode(CtrlMsg, ctrl) is not None


def test_strict_decode_skips_unknown_fields_and_rejects_garbage() -> None:
    from protocol.messages import Ping, decode, varint

    unknown = varint(99 << 3 | 0) + varint(7) + varint(1 << 3 | 2) + b"\x02ab"
    got = decode(Ping, unknown)
    assert got is not None and got.connID == b"ab"
    assert decode(Ping, b"\x0a\x05ab") is None  # length past the end
    assert decode(Ping, b"\x0f") is None  # wire type 7
    assert decode(Ping, b"\x08\xff\xff") is None  # truncated varint


def test_invalid_utf8_strings_are_accepted_like_the_reference() -> None:
    from protocol.messages import ConnectRequest, decode

    raw = b"\x0a\x02\xff\xfe\x12\x02hb"
    got = decode(ConnectRequest, raw)
    assert got is not None
    assert got.heartbeatInbox == "hb"
    assert got.clientID == "\ufffd\ufffd"


@pytest.mark.parametrize("fields", [1, 10_000])
def test_big_payloads_are_decoded_as_strictly(fields: int) -> None:
    """Payloads over a few KB skip protobuf's unknown-field listing for the
    scan alone: the outcome is the same as for small ones."""
    from protocol.messages import ConnectRequest, PubMsg, decode, varint

    big = b"d" * 20_000
    pub = PubMsg(clientID="c", guid="g", subject="foo", data=big)
    unknown = (varint(99 << 3 | 0) + varint(7)) * fields
    got = decode(PubMsg, pub.SerializeToString() + unknown)
    assert got is not None
    got.DiscardUnknownFields()
    assert got == pub
    wrong_wire = varint(1 << 3 | 0) + varint(5)  # clientID as a varint
    assert decode(PubMsg, pub.SerializeToString() + unknown + wrong_wire) is None
    assert decode(ConnectRequest, pub.SerializeToString()) is None  # field 3 wrong type
    bad_utf8 = b"\x0a\x02\xff\xfe" * fields + unknown
    got = decode(PubMsg, bad_utf8 + varint(5 << 3 | 2) + varint(len(big)) + big)  # data
    assert got is not None and got.clientID == "\ufffd\ufffd" and got.data == big
