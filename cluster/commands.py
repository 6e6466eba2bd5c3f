"""Replicated commands: every change of state is one of these, encoded with msgpack.

An encoded command is ``[op, version, *fields]``. Op numbers are stable: new
operations are added at the end and existing numbers are never reused. The
leader fills in everything that must be decided once for all nodes (times in
ns, ack inboxes); applying a command reads nothing else but the store and the
node's configured limits, so every node reaches the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar

import msgpack


class Op(IntEnum):
    #: A no-op used as a barrier by a new leader (apply records its index only).
    NOOP = 0
    CONNECT = 1
    DISCONNECT = 2
    PUBLISH = 3
    SUBSCRIBE = 4
    UNSUBSCRIBE = 5
    CLOSE_SUB = 6
    SENT_ACK = 7
    DELETE_CHANNEL = 8
    EXPIRE = 9
    #: Imports of a store written by another server (``cluster/fsm_import.py``).
    IMPORT_CHANNEL = 10
    IMPORT_MSGS = 11
    IMPORT_CLIENT = 12
    IMPORT_SUB = 13


@dataclass(slots=True)
class Command:
    op: ClassVar[Op]
    version: ClassVar[int] = 1


@dataclass(slots=True)
class Noop(Command):
    op: ClassVar[Op] = Op.NOOP
    token: str = ""


@dataclass(slots=True)
class Connect(Command):
    """Register a client. With ``refresh`` an existing client with the same ID
    is closed first (it did not answer the duplicate probe)."""

    op: ClassVar[Op] = Op.CONNECT
    client_id: str = ""
    hb_inbox: str = ""
    conn_id: bytes = b""
    protocol: int = 0
    ping_interval: int = 0
    ping_max_out: int = 0
    refresh: bool = False


@dataclass(slots=True)
class Disconnect(Command):
    """Close a client (close request or heartbeat timeout)."""

    op: ClassVar[Op] = Op.DISCONNECT
    client_id: str = ""


@dataclass(slots=True)
class Publish(Command):
    """A batch of messages in arrival order: ``(channel, reply, data)`` each.

    Sequences are assigned by apply (last stored + 1, in log order) and
    timestamps are ``max(now, channel's last timestamp)``.
    """

    op: ClassVar[Op] = Op.PUBLISH
    now: int = 0
    msgs: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Subscribe(Command):
    """A subscription request with the leader's ack inbox and time."""

    op: ClassVar[Op] = Op.SUBSCRIBE
    client_id: str = ""
    channel: str = ""
    qgroup: str = ""
    inbox: str = ""
    max_inflight: int = 0
    ack_wait: int = 0
    durable_name: str = ""
    start_position: int = 0
    start_sequence: int = 0
    start_time_delta: int = 0
    ack_inbox: str = ""
    now: int = 0
    replace_durable: bool = False


@dataclass(slots=True)
class Unsubscribe(Command):
    op: ClassVar[Op] = Op.UNSUBSCRIBE
    client_id: str = ""
    channel: str = ""
    inbox: str = ""


@dataclass(slots=True)
class CloseSub(Command):
    op: ClassVar[Op] = Op.CLOSE_SUB
    client_id: str = ""
    channel: str = ""
    inbox: str = ""


@dataclass(slots=True)
class SentAck(Command):
    """Delivery state gathered by the leader since its last flush, per
    subscription: its cursor, the sequences sent and still unacknowledged, and
    the sequences acknowledged (a send acknowledged before the flush appears in
    neither list)."""

    op: ClassVar[Op] = Op.SENT_ACK
    #: ``(channel, sub_id, last_sent, sent, acked)`` each.
    updates: list[tuple[str, int, int, list[int], list[int]]] = field(default_factory=list)


@dataclass(slots=True)
class DeleteChannel(Command):
    op: ClassVar[Op] = Op.DELETE_CHANNEL
    channel: str = ""
    channel_id: int = 0


@dataclass(slots=True)
class Expire(Command):
    """Drop messages past max_age in these channels, as of ``now``."""

    op: ClassVar[Op] = Op.EXPIRE
    now: int = 0
    channels: list[str] = field(default_factory=list)


# -- imports ----------------------------------------------------------------------
#
# A store written by another server (the reference's FILE store) is loaded into
# a running cluster through these commands, so that every node gets it. Each
# carries what was stored there (sequences, timestamps, subscription IDs) and
# applies the same way on every node. All of them can be proposed again after a
# lost answer: a repeat is recognised and changes nothing.


@dataclass(slots=True)
class ImportChannel(Command):
    """Create a channel that is about to receive imported messages.

    The channel starts empty with ``first_seq`` as its first sequence (its
    ``last_seq`` is ``first_seq - 1``), and subscription IDs below
    ``next_sub_id`` are reserved. ``limits`` is ``[max_msgs, max_bytes,
    max_age, max_subs, max_inactivity]`` for this channel, or empty to resolve
    the node's configured limits as for any new channel. Refused if the
    channel exists.
    """

    op: ClassVar[Op] = Op.IMPORT_CHANNEL
    channel: str = ""
    first_seq: int = 0
    next_sub_id: int = 1
    limits: list[int] = field(default_factory=list)
    #: Leader's time (ns): the channel's last activity.
    now: int = 0


@dataclass(slots=True)
class ImportMsgs(Command):
    """A batch of imported messages of one channel, ``(seq, timestamp, reply,
    data)`` each, in increasing sequence order.

    Applied only when the channel's last sequence is ``after_seq`` (the batch
    follows the previous one); a batch whose last sequence the channel already
    has is a repeat and is ignored. After the messages, the channel's last
    sequence is raised to ``last_seq`` if that is higher (messages that could
    not be imported keep their sequence numbers from being reused), and its
    last activity is set to ``now`` (the leader's time, ns) so that a long
    import does not count as inactivity.
    """

    op: ClassVar[Op] = Op.IMPORT_MSGS
    channel: str = ""
    after_seq: int = 0
    msgs: list[tuple[int, int, str, bytes]] = field(default_factory=list)
    last_seq: int = 0
    now: int = 0


@dataclass(slots=True)
class ImportClient(Command):
    """Registered clients, ``(client_id, hb_inbox, conn_id, protocol,
    ping_interval, ping_max_out)`` each. A client ID that is registered
    already keeps its registration."""

    op: ClassVar[Op] = Op.IMPORT_CLIENT
    clients: list[tuple[str, str, bytes, int, int, int]] = field(default_factory=list)


@dataclass(slots=True)
class ImportSub(Command):
    """One subscription with its ID, cursor and unacknowledged sequences.

    Fields follow ``store.api.SubRecord``. An open subscription whose client
    is not registered is stored closed if durable (an offline durable) and
    left out otherwise. Pending sequences no longer stored in the channel are
    dropped.
    """

    op: ClassVar[Op] = Op.IMPORT_SUB
    channel: str = ""
    sub_id: int = 0
    client_id: str = ""
    inbox: str = ""
    ack_inbox: str = ""
    max_inflight: int = 0
    ack_wait: int = 0
    qgroup: str = ""
    durable_name: str = ""
    last_sent: int = 0
    is_durable: bool = False
    is_closed: bool = False
    pending: list[int] = field(default_factory=list)


_CLASSES: dict[int, type[Command]] = {
    cls.op: cls
    for cls in (
        Noop,
        Connect,
        Disconnect,
        Publish,
        Subscribe,
        Unsubscribe,
        CloseSub,
        SentAck,
        DeleteChannel,
        Expire,
        ImportChannel,
        ImportMsgs,
        ImportClient,
        ImportSub,
    )
}


class CommandError(ValueError):
    """An encoded command that this code cannot read."""


#: Field names of each command class, in declaration order.
_FIELD_NAMES: dict[type[Command], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _CLASSES.values()
}


def encode(cmd: Command) -> bytes:
    """``[op, version, *fields]``. Field values go to msgpack as they are (no
    field holds a dataclass; tuples and lists encode alike)."""
    names = _FIELD_NAMES[type(cmd)]
    return msgpack.packb(  # type: ignore[no-any-return]
        [int(cmd.op), cmd.version, *[getattr(cmd, n) for n in names]], use_bin_type=True
    )


def encode_publish(now: int, msgs: list[tuple[str, str, bytes]]) -> bytes:
    """Fast path for the hot publish command (same bytes as ``encode``)."""
    return msgpack.packb([int(Op.PUBLISH), 1, now, msgs], use_bin_type=True)


def pack_import_msgs(msgs: list[tuple[int, int, str, bytes]]) -> bytes:
    """The ``msgs`` field of an ImportMsgs, encoded on its own."""
    out = msgpack.packb(msgs, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def encode_import_msgs(
    channel: str, after_seq: int, packed_msgs: bytes, last_seq: int, now: int
) -> bytes:
    """An ImportMsgs from its message list already encoded by
    ``pack_import_msgs`` (same bytes as ``encode``): the leader adds its time
    to a batch without decoding it."""

    def pack(value: object) -> bytes:
        out = msgpack.packb(value, use_bin_type=True)
        assert isinstance(out, bytes)
        return out

    # A msgpack array of 7 items is the one-byte header 0x97 and the items.
    return b"".join(
        (
            b"\x97",
            pack(int(Op.IMPORT_MSGS)),
            pack(ImportMsgs.version),
            pack(channel),
            pack(after_seq),
            packed_msgs,
            pack(last_seq),
            pack(now),
        )
    )


def decode(blob: bytes) -> Command:
    try:
        raw: list[Any] = msgpack.unpackb(blob, raw=False, use_list=True)
        op, version, *fields = raw
        cls = _CLASSES[op]
    except Exception as exc:  # noqa: BLE001 - any malformed blob is the same error
        raise CommandError(f"undecodable command: {exc}") from exc
    if version > cls.version:
        raise CommandError(f"command {cls.__name__} version {version} is newer than this node")
    cmd = cls(*fields)
    if isinstance(cmd, Publish):
        cmd.msgs = [tuple(m) for m in cmd.msgs]  # type: ignore[misc]
    elif isinstance(cmd, ImportMsgs):
        cmd.msgs = [(m[0], m[1], m[2], m[3]) for m in cmd.msgs]
    elif isinstance(cmd, ImportClient):
        cmd.clients = [(m[0], m[1], m[2], m[3], m[4], m[5]) for m in cmd.clients]
    return cmd
