"""Reader of the reference server's FILE store (nats-streaming-server 0.25.6).

Follows ``spec/FILESTORE.md``: a root directory with ``server.dat`` and
``clients.dat``, and one directory per channel holding message slices
(``msgs.<N>.dat`` with their ``msgs.<N>.idx``) and ``subs.dat``. Every record
is CRC-checked. Files are only ever opened for reading. The records, their
decoding and the recovery rules are in ``store/filestore_format.py``.

Damage is reported, not raised: every method takes a :class:`Report` and
records a *problem* (something stored could not be read and is left out,
with the file and the byte offset of the record) or a *note* (an anomaly that
loses nothing, e.g. an index that disagrees with its data file, which the
reference server would rebuild). The caller decides whether problems are
fatal. Reading goes on past a damaged record wherever the framing allows it:
a record whose CRC fails is skipped; when a length field itself is damaged,
the slice's index gives the offset of the next record.

Messages are streamed (``messages``) from memory-mapped files, so reading a
store takes memory in proportion to its subscriptions and clients, not to
its messages. Pure: no network, no clock.
"""

from __future__ import annotations

import mmap
import os
import re
import zlib
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

from protocol.messages import DecodeError, MsgProto
from protocol.subjects import is_valid_channel
from store.filestore_format import (
    CLIENT_ADD,
    CLIENT_DELETE,
    CLIENTS_FILE,
    FILE_VERSION,
    HEADER_STRUCT,
    IDX_ENTRY,
    IDX_STRUCT,
    RECORD_HEADER,
    REFERENCE_MSG_OVERHEAD,
    SERVER_FILE,
    SUB_ACK,
    SUB_DELETE,
    SUB_NEW,
    SUB_RECORD_NAMES,
    SUB_UPDATE,
    SUBS_FILE,
    U32_STRUCT,
    ChannelSummary,
    ClientInfo,
    Clients,
    Finding,
    Message,
    ProtoError,
    Report,
    ServerInfo,
    Slice,
    SubDecision,
    Subscriptions,
    SubState,
    decide_subscription,
    field_str,
    field_uint,
    parse_client_info,
    parse_server_info,
    parse_sub_state,
    wire_fields,
)

__all__ = [
    "REFERENCE_MSG_OVERHEAD",
    "ChannelSummary",
    "ClientInfo",
    "Clients",
    "FileStoreReader",
    "Finding",
    "Message",
    "Report",
    "ServerInfo",
    "Slice",
    "SubDecision",
    "SubState",
    "Subscriptions",
    "decide_subscription",
]

_SLICE_RE = re.compile(r"^msgs\.(\d+)\.dat$")


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


@contextmanager
def _mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, memory-mapped read-only (small files are read)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < mmap.PAGESIZE:
            yield f.read()
            return
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield m
        finally:
            m.close()


def _check_version(data: bytes | mmap.mmap, path: str, report: Report, what: str) -> bool:
    """True if the file starts with the supported version word."""
    if len(data) < 4:
        if len(data):
            report.problem(path, 0, f"file version header cut short ({len(data)} bytes)", what)
        return False
    (version,) = U32_STRUCT.unpack_from(data, 0)
    if version != FILE_VERSION:
        report.problem(path, 0, f"unsupported file version {version}", what)
        return False
    return True


def _iter_framed(
    data: bytes | mmap.mmap, path: str, typed: bool, report: Report
) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, type, payload)`` of every intact record of a framed file
    without index (server.dat, clients.dat, subs.dat)."""
    if not _check_version(data, path, report, "file skipped"):
        return
    size = len(data)
    off = 4
    while off < size:
        if size - off < RECORD_HEADER:
            if any(data[off:]):
                report.problem(
                    path,
                    off,
                    f"record header cut short ({size - off} of {RECORD_HEADER} bytes)",
                    "rest of the file skipped",
                )
            return
        word, crc = HEADER_STRUCT.unpack_from(data, off)
        if word == 0 and crc == 0:
            _end_marker(data, off, path, report)
            return
        length = word & 0xFFFFFF if typed else word
        rtype = word >> 24 if typed else 0
        end = off + RECORD_HEADER + length
        if end > size:
            report.problem(
                path,
                off,
                f"record of {length} bytes runs past the end of the file ({size} bytes)",
                "rest of the file skipped",
            )
            return
        payload = data[off + RECORD_HEADER : end]
        computed = zlib.crc32(payload)
        if computed != crc:
            report.problem(
                path,
                off,
                f"CRC mismatch (stored {crc:#010x}, computed {computed:#010x})",
                "record skipped",
            )
        else:
            yield off, rtype, payload
        off = end


def _end_marker(data: bytes | mmap.mmap, off: int, path: str, report: Report) -> None:
    """An all-zero header ends the data; anything but zeros after it is not read."""
    rest = data[off:]
    if any(rest):
        report.problem(
            path,
            off,
            f"end-of-data marker followed by {len(rest) - RECORD_HEADER} more bytes",
            "rest of the file not read (the reference server cuts it off too)",
        )


def _load_index(data: bytes | mmap.mmap, path: str, report: Report) -> bytes:
    """The entries of a slice's index (a copy: it is bounded by the slice, not
    by the store), or nothing when the index is missing or unusable."""
    if len(data) == 0 or not _check_version(data, path, report, "index ignored"):
        return b""
    count = (len(data) - 4) // IDX_ENTRY
    return bytes(data[4 : 4 + count * IDX_ENTRY])


def _entry_intact(raw: bytes, i: int, crc: int) -> bool:
    at = i * IDX_ENTRY
    return zlib.crc32(raw[at : at + 28]) == crc


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


class FileStoreReader:
    """A reference FILE store directory, read-only."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- server and clients ------------------------------------------------------

    def server_info(self, report: Report) -> ServerInfo | None:
        """The server record; None (with a problem) when missing or unreadable."""
        path = self._path(SERVER_FILE)
        if not path.is_file():
            report.problem(str(path), 0, "missing: not a FILE store root", "nothing to import")
            return None
        damaged = len(report.problems)
        with _mapped(path) as data:
            records = list(_iter_framed(data, str(path), False, report))
            size = len(data)
        if not records:
            if len(report.problems) == damaged:
                report.problem(str(path), 4, "no server record: the store holds no state")
            return None
        off, _, payload = records[0]
        if len(records) > 1 or size != 4 + RECORD_HEADER + len(payload):
            report.note(str(path), off, f"file size {size} does not match one record")
        try:
            return parse_server_info(payload)
        except ProtoError as exc:
            report.problem(str(path), off, f"undecodable server record: {exc}")
            return None

    def clients(self, report: Report) -> Clients:
        """clients.dat replayed in order."""
        out = Clients()
        path = self._path(CLIENTS_FILE)
        if not path.is_file():
            report.note(str(path), 0, "missing", "no clients")
            return out
        with _mapped(path) as data:
            for off, rtype, payload in _iter_framed(data, str(path), True, report):
                try:
                    if rtype == CLIENT_ADD:
                        info = parse_client_info(payload)
                        out.live.pop(info.client_id, None)
                        out.live[info.client_id] = info
                        out.records.append(("add", info.client_id))
                    elif rtype == CLIENT_DELETE:
                        client_id = field_str(wire_fields(payload), 1)
                        out.live.pop(client_id, None)
                        out.records.append(("delete", client_id))
                    else:
                        report.problem(
                            str(path), off, f"unknown record type {rtype}", "record skipped"
                        )
                except ProtoError as exc:
                    report.problem(str(path), off, f"undecodable record: {exc}", "record skipped")
        return out

    # -- channels ----------------------------------------------------------------------

    def channel_names(self, report: Report) -> list[str]:
        """Every directory directly under the root, sorted."""
        names = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            if not is_valid_channel(entry.name):
                report.note(entry.path, 0, "not a valid channel name", "directory ignored")
                continue
            names.append(entry.name)
        return names

    def slices(self, channel: str, report: Report) -> list[Slice]:
        """The channel's message slices in increasing number (``.bak`` and
        other files ignored)."""
        folder = self._path(channel)
        found: list[Slice] = []
        for entry in os.scandir(folder):
            m = _SLICE_RE.match(entry.name)
            if m is None or not entry.is_file():
                continue
            n = int(m.group(1))
            idx = folder / f"msgs.{n}.idx"
            if not idx.is_file():
                report.note(str(idx), 0, "index missing", "data file read alone")
            found.append(Slice(n, Path(entry.path), idx if idx.is_file() else None))
        found.sort(key=lambda s: s.number)
        return found

    def subscriptions(self, channel: str, report: Report) -> Subscriptions:
        """subs.dat of ``channel`` replayed (FILESTORE.md §6)."""
        out = Subscriptions()
        path = self._path(channel, SUBS_FILE)
        if not path.is_file():
            report.note(str(path), 0, "missing", "no subscriptions")
            return out
        subs = out.subs
        with _mapped(path) as data:
            for off, rtype, payload in _iter_framed(data, str(path), True, report):
                name = SUB_RECORD_NAMES.get(rtype)
                if name is None:
                    report.problem(str(path), off, f"unknown record type {rtype}", "record skipped")
                    continue
                try:
                    if rtype in (SUB_NEW, SUB_UPDATE):
                        state = parse_sub_state(payload)
                        old = subs.get(state.sub_id)
                        if rtype == SUB_UPDATE and old is not None:
                            state.pending = old.pending
                        subs[state.sub_id] = state
                        out.max_id = max(out.max_id, state.sub_id)
                    else:
                        f = wire_fields(payload)
                        sub_id = field_uint(f, 1)
                        out.max_id = max(out.max_id, sub_id)
                        sub = subs.get(sub_id)
                        if rtype == SUB_DELETE:
                            subs.pop(sub_id, None)
                        elif sub is not None:
                            seq = field_uint(f, 2)
                            if rtype == SUB_ACK:
                                sub.pending.discard(seq)
                            else:
                                sub.pending.add(seq)
                                sub.last_sent = max(sub.last_sent, seq)
                except ProtoError as exc:
                    report.problem(str(path), off, f"undecodable record: {exc}", "record skipped")
                    continue
                out.record_counts[name] = out.record_counts.get(name, 0) + 1
        return out

    def messages(
        self,
        channel: str,
        report: Report,
        *,
        after_seq: int = 0,
        summary: ChannelSummary | None = None,
    ) -> Generator[Message, None, None]:
        """The channel's intact messages with seq > ``after_seq``, in order.

        Streams slice by slice. ``summary``, if given, is filled in along the
        way (counting every intact message, also those at or below
        ``after_seq``).
        """
        return self._read(channel, report, summary, after_seq, True)

    def summarize(self, channel: str, report: Report) -> ChannelSummary:
        """Read every record of ``channel`` (CRCs checked) and sum it up."""
        summary = ChannelSummary(channel)
        for _ in self._read(channel, report, summary, 0, False):
            pass
        return summary

    def _read(
        self,
        channel: str,
        report: Report,
        summary: ChannelSummary | None,
        after_seq: int,
        full: bool,
    ) -> Generator[Message, None, None]:
        prev = 0
        for sl in self.slices(channel, report):
            if summary is not None:
                summary.slices += 1
            prev = yield from self._read_slice(channel, sl, report, summary, after_seq, full, prev)

    def _read_slice(
        self,
        channel: str,
        sl: Slice,
        report: Report,
        summary: ChannelSummary | None,
        after_seq: int,
        full: bool,
        prev: int,
    ) -> Generator[Message, None, int]:
        """One slice; returns the last sequence read (``prev`` if none)."""
        path = str(sl.dat)
        idx_path = str(sl.idx)
        with _mapped(sl.dat) as dat, _maybe_mapped(sl.idx) as idx_data:
            if len(dat) == 0:
                report.note(path, 0, "empty file", "ignored")
                return prev
            if not _check_version(dat, path, report, "slice skipped"):
                return prev
            index = _load_index(idx_data, idx_path, report)
            has_index = bool(index)
            entries = IDX_STRUCT.iter_unpack(index)
            # The next index entry not yet matched, (seq, offset, ts, size, crc), at pos.
            pos = 0
            up = next(entries, None)
            size = len(dat)
            off = 4
            unindexed = 0
            parse = MsgProto.FromString
            crc32 = zlib.crc32
            unpack_header = HEADER_STRUCT.unpack_from

            def trusted(entry: tuple[int, int, int, int, int], i: int) -> bool:
                if _entry_intact(index, i, entry[4]):
                    return True
                report.note(idx_path, 4 + i * IDX_ENTRY, "index entry CRC mismatch", "ignored")
                return False

            def resume_after(at: int) -> int | None:
                """Offset of the next record after ``at`` per the index."""
                nonlocal up, pos
                while up is not None:
                    if up[1] > at and trusted(up, pos) and up[1] < size:
                        return int(up[1])
                    up = next(entries, None)
                    pos += 1
                return None

            def lost(reason: str, entry: tuple[int, ...] | None, resume: int | None) -> None:
                if entry is not None:
                    reason += f"; the index names it sequence {entry[0]}"
                    if summary is not None:
                        summary.lost_seqs.append(entry[0])
                        summary.highest_seq = max(summary.highest_seq, entry[0])
                if resume is None:
                    action = "rest of the slice skipped"
                else:
                    action = f"message skipped, reading on at offset {resume}"
                report.problem(path, off, reason, action)

            while off < size:
                # The index entry of the record at off, if the index has one.
                while up is not None and up[1] < off:
                    up = next(entries, None)
                    pos += 1
                if up is not None and up[1] == 0:
                    up = None  # an all-zero entry ends the index
                entry = None
                if up is not None and up[1] == off:
                    entry, entry_pos = up, pos
                    up = next(entries, None)
                    pos += 1
                if size - off < RECORD_HEADER:
                    if any(dat[off:]):
                        lost(f"record header cut short ({size - off} bytes)", entry, None)
                    break
                word, crc = unpack_header(dat, off)
                if word == 0 and crc == 0:
                    _end_marker(dat, off, path, report)
                    break
                end = off + RECORD_HEADER + word
                if entry is not None and entry[3] != word and not trusted(entry, entry_pos):
                    entry = None
                if (entry is not None and entry[3] != word) or end > size:
                    # The length field is damaged or the file was cut: only
                    # the index knows where the next record starts.
                    if end > size:
                        why = f"record of {word} bytes runs past the end of the file ({size})"
                    else:
                        why = f"record length {word} does not match the index ({entry[3]})"  # type: ignore[index]
                    nxt = resume_after(off)
                    lost(why, entry, nxt)
                    if nxt is None:
                        break
                    off = nxt
                    continue
                payload = dat[off + RECORD_HEADER : end]
                computed = crc32(payload)
                if computed != crc:
                    if entry is not None and not trusted(entry, entry_pos):
                        entry = None
                    lost(
                        f"CRC mismatch (stored {crc:#010x}, computed {computed:#010x})", entry, end
                    )
                    off = end
                    continue
                try:
                    pm = parse(payload)
                except (DecodeError, ValueError, RuntimeError) as exc:
                    lost(f"undecodable message: {exc}", None, end)
                    off = end
                    continue
                seq = pm.sequence
                if entry is None:
                    unindexed += 1
                elif entry[0] != seq or entry[2] != pm.timestamp:
                    if trusted(entry, entry_pos):
                        report.note(
                            path,
                            off,
                            f"index entry (seq {entry[0]}) disagrees with the record (seq {seq})",
                            "record used",
                        )
                if seq <= prev:
                    report.problem(
                        path,
                        off,
                        f"sequence {seq} is not above the previous one ({prev})",
                        "message skipped",
                    )
                    off = end
                    continue
                prev = seq
                if summary is not None:
                    summary.msgs += 1
                    summary.payload_bytes += word
                    if not summary.first_seq:
                        summary.first_seq = seq
                    summary.last_seq = seq
                    if seq > summary.highest_seq:
                        summary.highest_seq = seq
                if full and seq > after_seq:
                    subject = pm.subject
                    if subject != channel and subject:
                        report.note(path, off, f"message subject {subject!r} is not the channel")
                    yield Message(seq, pm.timestamp, subject, pm.reply, pm.data, word, off)
                off = end
            if has_index and unindexed:
                report.note(idx_path, 0, f"{unindexed} record(s) of {path} have no index entry")
        return prev


@contextmanager
def _maybe_mapped(path: Path | None) -> Iterator[bytes | mmap.mmap]:
    if path is None:
        yield b""
        return
    with _mapped(path) as data:
        yield data
