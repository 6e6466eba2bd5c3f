"""Wire messages (generated from ``pb/stan.proto``) and small codec helpers.

Import message classes from here, not from the generated module, so that the
generated code stays an implementation detail.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from protocol.pb.stan_pb2 import (
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
)

__all__ = [
    "Ack",
    "CloseRequest",
    "CloseResponse",
    "ConnectRequest",
    "ConnectResponse",
    "CtrlMsg",
    "DecodeError",
    "MsgProto",
    "Ping",
    "PingResponse",
    "PubAck",
    "PubMsg",
    "StartPosition",
    "SubscriptionRequest",
    "SubscriptionResponse",
    "UnsubscribeRequest",
    "NEW_ONLY",
    "LAST_RECEIVED",
    "TIME_DELTA_START",
    "SEQUENCE_START",
    "FIRST",
    "encode_msg",
    "redelivered",
    "varint",
    "decode",
    "encode_pub_ack",
]

NEW_ONLY = 0
LAST_RECEIVED = 1
TIME_DELTA_START = 2
SEQUENCE_START = 3
FIRST = 4


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_msg(seq: int, subject: str, reply: str, data: bytes, timestamp: int) -> bytes:
    """The stored (and first-delivery) encoding of a message."""
    return MsgProto(
        sequence=seq, subject=subject, reply=reply, data=data, timestamp=timestamp
    ).SerializeToString()


def redelivered(raw: bytes, count: int) -> bytes:
    """``raw`` (an encoded MsgProto) flagged as a redelivery with ``count``.

    Protobuf merges repeated scalar fields by keeping the last one, so appending
    fields 6 and 7 to the stored bytes is the same message as re-encoding it with
    ``redelivered=True`` and ``redeliveryCount=count``.
    """
    return raw + b"\x30\x01\x38" + varint(count)


M = TypeVar("M", bound=Message)


def encode_pub_ack(guid: str, error: str = "") -> bytes:
    """``PubAck{guid, error}`` encoded by hand: it is sent once per message."""
    out = b""
    if guid:
        g = guid.encode()
        out = b"\x0a" + varint(len(g)) + g
    if error:
        e = error.encode()
        out += b"\x12" + varint(len(e)) + e
    return out


def decode(cls: type[M], payload: bytes) -> M | None:
    """Parse ``payload`` as ``cls`` as strictly as the reference does.

    Returns None when the payload is not a valid encoding of ``cls``: malformed
    wire data, or a field the message declares sent with another wire type
    (Python's protobuf would quietly keep such a field as unknown; the
    reference's decoder refuses the message, which matters when a client sends
    one message type to another's subject). Unknown field numbers are skipped.
    Strings that are not valid UTF-8 are accepted, as the reference accepts
    them, with the invalid bytes replaced by U+FFFD.
    """
    msg: M | None = cls()
    try:
        msg.ParseFromString(payload)  # type: ignore[union-attr]
    except (DecodeError, ValueError, RuntimeError):
        msg = None
    # Fast path: every field was one the message declares, with its wire type
    # (protobuf keeps a field of the wrong wire type as an unknown field).
    # Not for big payloads: listing their unknown fields costs more than the
    # scan below, whose cost grows with the number of fields, not their size.
    if msg is not None and len(payload) <= _LIST_UNKNOWN_MAX and not len(UnknownFieldSet(msg)):
        return msg
    fields = _scan(payload, _wire_types(cls))
    if fields is None:
        return None
    if msg is not None:
        return msg
    msg = cls()
    try:
        msg.ParseFromString(_with_valid_utf8(payload, fields, _string_fields(cls)))
    except (DecodeError, ValueError, RuntimeError):
        return None
    return msg


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
#: Payload size up to which ``decode`` checks protobuf's unknown fields first.
_LIST_UNKNOWN_MAX = 4096
_WIRE_BY_TYPE = {
    FieldDescriptor.TYPE_DOUBLE: _I64,
    FieldDescriptor.TYPE_FLOAT: _I32,
    FieldDescriptor.TYPE_FIXED64: _I64,
    FieldDescriptor.TYPE_SFIXED64: _I64,
    FieldDescriptor.TYPE_FIXED32: _I32,
    FieldDescriptor.TYPE_SFIXED32: _I32,
    FieldDescriptor.TYPE_STRING: _LEN,
    FieldDescriptor.TYPE_BYTES: _LEN,
    FieldDescriptor.TYPE_MESSAGE: _LEN,
}
_wire_cache: dict[type, dict[int, int]] = {}
_string_cache: dict[type, frozenset[int]] = {}


def _wire_types(cls: type[Message]) -> dict[int, int]:
    """Field number -> the only wire type the reference accepts for it."""
    table = _wire_cache.get(cls)
    if table is None:
        table = {f.number: _WIRE_BY_TYPE.get(f.type, _VARINT) for f in cls.DESCRIPTOR.fields}
        _wire_cache[cls] = table
    return table


def _string_fields(cls: type[Message]) -> frozenset[int]:
    nums = _string_cache.get(cls)
    if nums is None:
        nums = frozenset(
            f.number for f in cls.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_STRING
        )
        _string_cache[cls] = nums
    return nums


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _scan(buf: bytes, wire_types: dict[int, int]) -> list[tuple[int, int, int, int]] | None:
    """The fields of ``buf`` as (number, wire type, start of value, end of
    value), or None when the wire data is malformed or a declared field comes
    with the wrong wire type. (One-byte keys, varints and lengths, by far the
    most common, are read inline.)"""
    out: list[tuple[int, int, int, int]] = []
    append = out.append
    expected_of = wire_types.get
    pos = 0
    end = len(buf)
    try:
        while pos < end:
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = _read_varint(buf, pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                return None
            expected = expected_of(number)
            if expected is not None and wire != expected:
                return None
            if wire == _VARINT:
                start = pos
                if pos < end and buf[pos] < 0x80:
                    pos += 1
                else:
                    _, pos = _read_varint(buf, pos, end)
            elif wire == _LEN:
                if pos < end and buf[pos] < 0x80:
                    start = pos + 1
                    pos = start + buf[pos]
                else:
                    length, start = _read_varint(buf, pos, end)
                    pos = start + length
            elif wire == _I64:
                start = pos
                pos += 8
            elif wire == _I32:
                start = pos
                pos += 4
            else:
                return None  # groups are not part of this protocol
            if pos > end:
                return None
            append((number, wire, start, pos))
    except ValueError:
        return None
    return out


def _with_valid_utf8(
    buf: bytes, fields: list[tuple[int, int, int, int]], strings: frozenset[int]
) -> bytes:
    """``buf`` re-encoded with invalid UTF-8 in string fields replaced."""
    out = bytearray()
    for number, wire, start, stop in fields:
        out += varint(number << 3 | wire)
        if wire == _LEN:
            value = buf[start:stop]
            if number in strings:
                value = value.decode("utf-8", errors="replace").encode()
            out += varint(len(value)) + value
        else:
            out += buf[start:stop]
    return bytes(out)
