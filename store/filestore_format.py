"""The reference server's FILE store format: constants, records and how they
decode, damage findings, and the recovery rules for subscriptions.

Spelled out in ``spec/FILESTORE.md``; the files themselves are read by
``store/filestore_reader.py``. Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

#: Version word at the start of every ``.dat`` and ``.idx`` file.
FILE_VERSION = 1
#: Size of a record header: header word and CRC-32, both uint32 LE.
RECORD_HEADER = 8
#: Size of one index entry (seq, offset, timestamp, size, CRC).
IDX_ENTRY = 32
#: Bytes the reference's monitoring counts per message on top of its payload
#: (record header and index entry).
REFERENCE_MSG_OVERHEAD = RECORD_HEADER + IDX_ENTRY

#: clients.dat record types.
CLIENT_ADD = 1
CLIENT_DELETE = 2
#: subs.dat record types.
SUB_NEW = 1
SUB_UPDATE = 2
SUB_DELETE = 3
SUB_ACK = 4
SUB_SENT = 5
SUB_RECORD_NAMES = {
    SUB_NEW: "new",
    SUB_UPDATE: "update",
    SUB_DELETE: "delete",
    SUB_ACK: "ack",
    SUB_SENT: "sent",
}

SERVER_FILE = "server.dat"
CLIENTS_FILE = "clients.dat"
SUBS_FILE = "subs.dat"

U32_STRUCT = struct.Struct("<I")
HEADER_STRUCT = struct.Struct("<II")
IDX_STRUCT = struct.Struct("<QqqII")


# ---------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem or note: where (file, byte offset of the record) and what."""

    path: str
    offset: int
    reason: str
    #: What the reader did about it ("message skipped", ...).
    action: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: offset {self.offset}: {self.reason}"
        return f"{text} ({self.action})" if self.action else text


@dataclass(slots=True)
class Report:
    """Problems (data left out) and notes (nothing lost) met while reading.

    A finding already recorded is not recorded again, so reading the same
    files twice (a check, then an import) reports each finding once.
    """

    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    _seen: set[Finding] = field(default_factory=set)

    def problem(self, path: str, offset: int, reason: str, action: str = "") -> None:
        self._add(self.problems, Finding(path, offset, reason, action))

    def note(self, path: str, offset: int, reason: str, action: str = "") -> None:
        self._add(self.notes, Finding(path, offset, reason, action))

    def _add(self, into: list[Finding], finding: Finding) -> None:
        if finding not in self._seen:
            self._seen.add(finding)
            into.append(finding)


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class ServerInfo:
    """``spb.ServerInfo``: the cluster ID and the subjects clients were given."""

    cluster_id: str = ""
    discovery: str = ""
    publish: str = ""
    subscribe: str = ""
    unsubscribe: str = ""
    close: str = ""
    sub_close: str = ""
    acks_subs: str = ""
    node_id: str = ""


@dataclass(slots=True)
class ClientInfo:
    """``spb.ClientInfo``: a registered client."""

    client_id: str
    hb_inbox: str = ""
    conn_id: bytes = b""
    protocol: int = 0
    #: Seconds.
    ping_interval: int = 0
    ping_max_out: int = 0


@dataclass(slots=True)
class Clients:
    """clients.dat replayed: the clients registered at shutdown, in order of
    registration, and every record as ``(kind, client_id)``."""

    live: dict[str, ClientInfo] = field(default_factory=dict)
    records: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class SubState:
    """``spb.SubState`` after replay, with its pending (sent, unacked) set."""

    sub_id: int
    client_id: str = ""
    #: ``"<durable>:<group>"`` for a durable queue group.
    qgroup: str = ""
    inbox: str = ""
    ack_inbox: str = ""
    max_inflight: int = 0
    #: Seconds.
    ack_wait: int = 0
    #: Set for plain durables only.
    durable_name: str = ""
    last_sent: int = 0
    is_durable: bool = False
    is_closed: bool = False
    pending: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Subscriptions:
    """subs.dat replayed: live subscriptions by ID, the highest ID ever seen
    (deleted ones included), and how many records of each type were read."""

    subs: dict[int, SubState] = field(default_factory=dict)
    max_id: int = 0
    record_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Slice:
    number: int
    dat: Path
    #: None when the index file is missing.
    idx: Path | None


@dataclass(slots=True)
class Message:
    """One stored message, as read from a slice."""

    seq: int
    timestamp: int
    subject: str
    reply: str
    data: bytes
    #: Size of the MsgProto record payload in the file.
    size: int
    #: Offset of the record in its slice's data file.
    offset: int = 0


@dataclass(slots=True)
class ChannelSummary:
    """What a full read of a channel's messages found."""

    name: str
    slices: int = 0
    #: Messages read intact.
    msgs: int = 0
    #: Sum of the MsgProto payload sizes of those messages.
    payload_bytes: int = 0
    #: Lowest and highest sequence read intact (0 when none).
    first_seq: int = 0
    last_seq: int = 0
    #: Highest sequence the store knows of, counting messages that could not
    #: be read but whose index entry names their sequence.
    highest_seq: int = 0
    #: Sequences known (from the index) to be lost.
    lost_seqs: list[int] = field(default_factory=list)

    @property
    def reference_bytes(self) -> int:
        """Bytes as the reference's monitoring reports them (payload + 8 + 32 each)."""
        return self.payload_bytes + self.msgs * REFERENCE_MSG_OVERHEAD


# ---------------------------------------------------------------------------
# Protobuf wire format (the few spb messages the store holds)
# ---------------------------------------------------------------------------


class ProtoError(ValueError):
    """A record payload that is not the protobuf message it should be."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ProtoError("bad varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def wire_fields(buf: bytes) -> dict[int, int | bytes]:
    """Field number -> last value (varints as int, length-delimited as bytes)."""
    out: dict[int, int | bytes] = {}
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            out[num], pos = read_varint(buf, pos)
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > end:
                raise ProtoError("field runs past the record")
            out[num] = bytes(buf[pos : pos + size])
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtoError(f"wire type {wire}")
        if pos > end:
            raise ProtoError("field runs past the record")
    return out


def field_str(f: dict[int, int | bytes], num: int) -> str:
    v = f.get(num, b"")
    if not isinstance(v, bytes):
        raise ProtoError(f"field {num} is not a string")
    try:
        return v.decode()
    except UnicodeDecodeError as exc:
        raise ProtoError(f"field {num} is not UTF-8") from exc


def field_bytes(f: dict[int, int | bytes], num: int) -> bytes:
    v = f.get(num, b"")
    if not isinstance(v, bytes):
        raise ProtoError(f"field {num} is not bytes")
    return v


def field_uint(f: dict[int, int | bytes], num: int) -> int:
    v = f.get(num, 0)
    if not isinstance(v, int):
        raise ProtoError(f"field {num} is not a number")
    return v


def field_int32(f: dict[int, int | bytes], num: int) -> int:
    v = field_uint(f, num) & 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def field_bool(f: dict[int, int | bytes], num: int) -> bool:
    return field_uint(f, num) != 0


def parse_server_info(payload: bytes) -> ServerInfo:
    f = wire_fields(payload)
    return ServerInfo(*(field_str(f, n) for n in range(1, 10)))


def parse_client_info(payload: bytes) -> ClientInfo:
    f = wire_fields(payload)
    return ClientInfo(
        client_id=field_str(f, 1),
        hb_inbox=field_str(f, 2),
        conn_id=field_bytes(f, 3),
        protocol=field_int32(f, 4),
        ping_interval=field_int32(f, 5),
        ping_max_out=field_int32(f, 6),
    )


def parse_sub_state(payload: bytes) -> SubState:
    f = wire_fields(payload)
    return SubState(
        sub_id=field_uint(f, 1),
        client_id=field_str(f, 2),
        qgroup=field_str(f, 3),
        inbox=field_str(f, 4),
        ack_inbox=field_str(f, 5),
        max_inflight=field_int32(f, 6),
        ack_wait=field_int32(f, 7),
        durable_name=field_str(f, 8),
        last_sent=field_uint(f, 9),
        is_durable=field_bool(f, 10),
        is_closed=field_bool(f, 11),
    )


# ---------------------------------------------------------------------------
# What the reference server recovers (FILESTORE.md §6.1)
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class SubDecision:
    """One subscription of the store and what becomes of it."""

    channel: str
    sub: SubState
    #: Imported at all.
    keep: bool
    #: Imported closed: an offline durable or a durable queue group's shadow.
    offline: bool = False
    #: Why it is offline or left out.
    reason: str = ""

    @property
    def kind(self) -> str:
        s = self.sub
        if s.qgroup:
            return "durable queue" if s.is_durable else "queue"
        return "durable" if s.durable_name else "plain"


def decide_subscription(channel: str, sub: SubState, clients: set[str]) -> SubDecision:
    """What the reference server does with a recovered subscription."""
    registered = sub.client_id in clients
    if sub.durable_name:
        if sub.is_closed:
            return SubDecision(channel, sub, True, True, "closed by its client")
        if not registered:
            return SubDecision(channel, sub, True, True, "its client is not registered")
        return SubDecision(channel, sub, True)
    if sub.qgroup and sub.is_durable:
        if not sub.client_id:
            return SubDecision(channel, sub, True, True, "shadow of an offline durable queue group")
        if not registered:
            return SubDecision(
                channel, sub, False, reason="durable queue member of a client that is gone"
            )
        return SubDecision(channel, sub, True)
    if not registered:
        return SubDecision(channel, sub, False, reason="non-durable, its client is gone")
    return SubDecision(channel, sub, True)
