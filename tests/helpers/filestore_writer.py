"""Writes stores in the reference server's FILE format (spec/FILESTORE.md), for tests.

An independent encoder of the format (it shares no code with
``store/filestore_reader.py`` except the MsgProto class), so that synthetic
stores can have many slices, deleted first slices, both compaction shapes,
and any damage a test wants to make. Files are written sequentially through
buffered writers, so a store of millions of messages takes little memory.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from protocol.messages import MsgProto

_U32 = struct.Struct("<I")
_HDR = struct.Struct("<II")
_IDX = struct.Struct("<QqqI")

# Record types (FILESTORE.md §4 and §6).
CLIENT_ADD = 1
CLIENT_DELETE = 2
SUB_NEW = 1
SUB_UPDATE = 2
SUB_DELETE = 3
SUB_ACK = 4
SUB_SENT = 5


# -- protobuf encoding ---------------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _vfield(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value) if value else b""


def _sfield(num: int, value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _varint((num << 3) | 2) + _varint(len(raw)) + raw if raw else b""


@dataclass(slots=True)
class ClientSpec:
    client_id: str
    hb_inbox: str
    conn_id: bytes = b""
    protocol: int = 1
    ping_interval: int = 5
    ping_max_out: int = 3

    def encode(self) -> bytes:
        return (
            _sfield(1, self.client_id)
            + _sfield(2, self.hb_inbox)
            + _sfield(3, self.conn_id)
            + _vfield(4, self.protocol)
            + _vfield(5, self.ping_interval)
            + _vfield(6, self.ping_max_out)
        )


@dataclass(slots=True)
class SubSpec:
    sub_id: int
    client_id: str = ""
    qgroup: str = ""
    inbox: str = ""
    ack_inbox: str = ""
    max_inflight: int = 1024
    ack_wait: int = 30
    durable_name: str = ""
    last_sent: int = 0
    is_durable: bool = False
    is_closed: bool = False

    def encode(self) -> bytes:
        return (
            _vfield(1, self.sub_id)
            + _sfield(2, self.client_id)
            + _sfield(3, self.qgroup)
            + _sfield(4, self.inbox)
            + _sfield(5, self.ack_inbox)
            + _vfield(6, self.max_inflight)
            + _vfield(7, self.ack_wait)
            + _sfield(8, self.durable_name)
            + _vfield(9, self.last_sent)
            + _vfield(10, int(self.is_durable))
            + _vfield(11, int(self.is_closed))
        )


def sub_update_payload(sub_id: int, seq: int) -> bytes:
    return _vfield(1, sub_id) + _vfield(2, seq)


# -- framing -------------------------------------------------------------------------------


def record(payload: bytes, rtype: int | None = None) -> bytes:
    """One framed record: header word (with the type in the top byte when
    typed), CRC-32 of the payload, payload."""
    word = len(payload) if rtype is None else (rtype << 24) | len(payload)
    return _HDR.pack(word, zlib.crc32(payload)) + payload


def write_framed(path: Path, records: Iterable[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(_U32.pack(1))
        for rec in records:
            f.write(rec)


class FileStoreWriter:
    """A store directory: ``server()``, ``clients()``, ``channel(name)``."""

    def __init__(self, root: Path, cluster_id: str = "test-cluster") -> None:
        self.root = Path(root)
        self.cluster_id = cluster_id
        self.root.mkdir(parents=True, exist_ok=True)

    def server(self, **overrides: str) -> None:
        cid = self.cluster_id
        fields = {
            "cluster_id": cid,
            "discovery": f"_STAN.discover.{cid}",
            "publish": f"_STAN.pub.{cid}",
            "subscribe": f"_STAN.sub.{cid}",
            "unsubscribe": f"_STAN.unsub.{cid}",
            "close": f"_STAN.close.{cid}",
            "sub_close": f"_STAN.subclose.{cid}",
            "acks_subs": f"_STAN.ack.{cid}",
            "node_id": "",
        }
        fields.update(overrides)
        payload = b"".join(_sfield(i + 1, v) for i, v in enumerate(fields.values()))
        write_framed(self.root / "server.dat", [record(payload)])

    def clients(self, ops: Iterable[ClientSpec | str]) -> None:
        """A ClientSpec adds (or replaces) a client; a string deletes that ID."""
        recs = []
        for op in ops:
            if isinstance(op, ClientSpec):
                recs.append(record(op.encode(), CLIENT_ADD))
            else:
                recs.append(record(_sfield(1, op), CLIENT_DELETE))
        write_framed(self.root / "clients.dat", recs)

    def channel(self, name: str, **kw: int | bool) -> ChannelWriter:
        return ChannelWriter(self.root / name, name, **kw)  # type: ignore[arg-type]


class ChannelWriter:
    """Message slices and subs.dat of one channel. Use as a context manager
    (or call ``close``) so the last slice is flushed."""

    def __init__(
        self,
        folder: Path,
        name: str,
        *,
        slice_max_msgs: int = 0,
        first_slice: int = 1,
        index: bool = True,
    ) -> None:
        self.folder = folder
        self.name = name
        self.slice_max_msgs = slice_max_msgs
        self.index = index
        self.slice_number = first_slice - 1
        self.folder.mkdir(parents=True, exist_ok=True)
        self._dat: BinaryIO | None = None
        self._idx: BinaryIO | None = None
        self._in_slice = 0
        self._offset = 0
        #: (slice number, seq, offset, size) of every message written.
        self.positions: list[tuple[int, int, int, int]] = []

    def _roll(self) -> None:
        self._close_slice()
        self.slice_number += 1
        n = self.slice_number
        self._dat = open(self.folder / f"msgs.{n}.dat", "wb")
        self._dat.write(_U32.pack(1))
        if self.index:
            self._idx = open(self.folder / f"msgs.{n}.idx", "wb")
            self._idx.write(_U32.pack(1))
        self._offset = 4
        self._in_slice = 0

    def empty_slice(self) -> None:
        """Start a new slice and leave it with its header only."""
        self._roll()
        self._close_slice()

    def append(self, seq: int, data: bytes, timestamp: int, reply: str = "") -> None:
        if self._dat is None or (self.slice_max_msgs and self._in_slice >= self.slice_max_msgs):
            self._roll()
        assert self._dat is not None
        payload = MsgProto(
            sequence=seq, subject=self.name, reply=reply, data=data, timestamp=timestamp
        ).SerializeToString()
        self._dat.write(record(payload))
        if self._idx is not None:
            entry = _IDX.pack(seq, self._offset, timestamp, len(payload))
            self._idx.write(entry + _U32.pack(zlib.crc32(entry)))
        self.positions.append((self.slice_number, seq, self._offset, len(payload)))
        self._offset += 8 + len(payload)
        self._in_slice += 1

    def _close_slice(self) -> None:
        for f in (self._dat, self._idx):
            if f is not None:
                f.close()
        self._dat = self._idx = None

    def subs(self, records: Iterable[tuple[int, bytes]]) -> None:
        """subs.dat from ``(type, payload)`` records."""
        write_framed(self.folder / "subs.dat", [record(p, t) for t, p in records])

    def close(self) -> None:
        self._close_slice()
        if not (self.folder / "subs.dat").exists():
            write_framed(self.folder / "subs.dat", [])

    def __enter__(self) -> ChannelWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def compacted_subs(subs: Iterable[tuple[SubSpec, Iterable[int]]]) -> list[tuple[int, bytes]]:
    """subs.dat as compaction writes it: one ``new`` per live subscription,
    then a ``sent`` record per pending sequence."""
    out: list[tuple[int, bytes]] = []
    for spec, pending in subs:
        out.append((SUB_NEW, spec.encode()))
        out += [(SUB_SENT, sub_update_payload(spec.sub_id, seq)) for seq in pending]
    return out
