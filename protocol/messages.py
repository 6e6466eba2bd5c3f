"""Wire messages (generated from ``pb/stan.proto``) and small codec helpers.

Import message classes from here, not from the generated module, so that the
generated code stays an implementation detail.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

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
    """Parse ``payload`` as ``cls``; return None when it is not valid protobuf."""
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except (DecodeError, ValueError, RuntimeError):
        return None
    return msg
