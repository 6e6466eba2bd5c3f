"""The Raft journal: pysyncobj's journal interface over a file of records.

The file keeps pysyncobj's ``FileJournal`` layout, so a data directory
written by either reads back with the other:

* a header: the application name and version (padded), the format version
  and the offset just past the last record (little-endian u32 each);
* records: ``u32 size | u64 index | u64 term | command | u32 size``, where
  ``size`` counts index, term and command.

What differs is what the process holds and how the file is rewritten:

* Only each record's offset, index and term are kept in memory; a command is
  read from the file's map when pysyncobj asks for it. The stock journal holds
  every command since the last compaction (tens of MB under load).
* Dropping the entries a snapshot covers (``deleteEntriesTo``) writes the
  entries kept into a new file and renames it over the journal. The stock
  journal rewrote the file in place from its start, so a process killed in the
  middle left a journal that had lost committed entries the store had not
  applied yet.
* The file grows with ``posix_fallocate``: blocks exist before the map writes
  into them (a write through a map into a hole on a full disk is a SIGBUS).
* With ``sync``, the map is flushed to disk after every entry (``cluster_sync``).

Indexes in pysyncobj's calls are positions in the journal (0 = the oldest
entry kept), not Raft log indexes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from pysyncobj.journal import (
    APP_NAME,
    APP_VERSION,
    FIRST_RECORD_OFFSET,
    JOURNAL_FORMAT_VERSION,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
    Journal,
    MemoryJournal,
    MetaStorer,
)

Entry = tuple[bytes, int, int]

#: Record head: size (of index + term + command), index, term.
_HEAD = struct.Struct("<IQQ")
_U32 = struct.Struct("<I")
#: Bytes a record adds around its command: the head and the trailing size.
_FRAME = _HEAD.size + 4
#: The smallest file: the header and room for a few records.
_MIN_SIZE = 1 << 16


def _header() -> bytes:
    name = APP_NAME + b"\0" * (NAME_SIZE - len(APP_NAME))
    version = APP_VERSION + b"\0" * (VERSION_SIZE - len(APP_VERSION))
    return name + version + struct.pack("<II", JOURNAL_FORMAT_VERSION, FIRST_RECORD_OFFSET)


class StanJournal(Journal):  # type: ignore[misc]
    """A file journal holding only record positions in memory (see module)."""

    def __init__(self, path: str, sync: bool = False) -> None:
        self._path = path
        self._sync = sync
        self._meta_storer = MetaStorer(path + ".meta")
        self._meta: dict[str, Any] = self._meta_storer.getMeta()
        self._meta_saved = True
        # Per entry kept: where its record starts, its index and its term.
        self._offsets = array("Q")
        self._indexes = array("Q")
        self._terms = array("Q")
        self._end = FIRST_RECORD_OFFSET
        # The first and last entries, asked for all the time (pysyncobj reads
        # the log's last index and first index from them): kept once read.
        self._first: Entry | None = None
        self._last: Entry | None = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + ".compact")  # a rewrite that did not finish
        if not os.path.exists(path):
            self._write_new_file(path, b"")
        self._open()
        self._load()

    # -- file ------------------------------------------------------------------------------

    def _open(self) -> None:
        self._file = open(self._path, "r+b")  # noqa: SIM115 - kept open with the map
        size = os.fstat(self._file.fileno()).st_size
        if size < _MIN_SIZE:
            os.posix_fallocate(self._file.fileno(), 0, _MIN_SIZE)
            size = _MIN_SIZE
        self._map = mmap.mmap(self._file.fileno(), size)
        self._size = size

    def _close(self, flush: bool = True) -> None:
        if flush:
            self._map.flush()
        self._map.close()
        self._file.close()

    def _load(self) -> None:
        """Read every record's position; a record cut short or whose two sizes
        differ ends the journal there."""
        (last,) = _U32.unpack_from(self._map, LAST_RECORD_OFFSET_OFFSET)
        last = min(last, self._size)
        at = FIRST_RECORD_OFFSET
        while at + _FRAME <= last:
            size, idx, term = _HEAD.unpack_from(self._map, at)
            end = at + 4 + size + 4
            if size < 16 or end > last or _U32.unpack_from(self._map, end - 4)[0] != size:
                break
            self._offsets.append(at)
            self._indexes.append(idx)
            self._terms.append(term)
            at = end
        self._end = at
        if at != last:
            self._set_end(at)

    def _set_end(self, end: int) -> None:
        self._end = end
        _U32.pack_into(self._map, LAST_RECORD_OFFSET_OFFSET, end)

    def _grow(self, needed: int) -> None:
        """Allocate blocks for at least ``needed`` bytes, then map them."""
        size = max(self._size * 2, needed)
        os.posix_fallocate(self._file.fileno(), 0, size)  # OSError (ENOSPC): nothing changed
        self._map.resize(size)
        self._size = size

    @staticmethod
    def _write_new_file(path: str, records: bytes | memoryview) -> None:
        """Write a journal holding ``records`` at ``path`` and flush it to disk."""
        header = bytearray(_header())
        _U32.pack_into(header, LAST_RECORD_OFFSET_OFFSET, FIRST_RECORD_OFFSET + len(records))
        with open(path, "wb") as out:
            out.write(header)
            out.write(records)
            out.flush()
            os.fsync(out.fileno())

    # -- pysyncobj's interface ---------------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        start = self._end
        end = start + _FRAME + len(command)
        if end > self._size:
            self._grow(end)
        mapped = self._map
        _HEAD.pack_into(mapped, start, len(command) + 16, idx, term)
        body = start + _HEAD.size
        mapped[body : end - 4] = command
        mapped[end - 4 : end] = mapped[start : start + 4]
        self._offsets.append(start)
        self._indexes.append(idx)
        self._terms.append(term)
        self._set_end(end)
        self._last = (command, idx, term)
        if len(self._offsets) == 1:
            self._first = self._last
        if self._sync:
            mapped.flush()

    def clear(self) -> None:
        self._first = self._last = None
        self._offsets = array("Q")
        self._indexes = array("Q")
        self._terms = array("Q")
        self._set_end(FIRST_RECORD_OFFSET)

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        """Drop the entries from position ``entryFrom`` on (a conflicting leader)."""
        if entryFrom >= len(self._offsets):
            return
        end = self._offsets[entryFrom]
        self._first = self._last = None
        del self._offsets[entryFrom:]
        del self._indexes[entryFrom:]
        del self._terms[entryFrom:]
        self._set_end(end)
        if self._sync:
            self._map.flush()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803 - pysyncobj's names
        """Drop the entries before position ``entryTo`` (a snapshot holds them).

        The entries kept go to a new file first, renamed over the journal once
        on disk: a kill at any point leaves either journal whole."""
        if entryTo <= 0:
            return
        count = len(self._offsets)
        first = self._offsets[entryTo] if entryTo < count else self._end
        shift = first - FIRST_RECORD_OFFSET
        self._first = self._last = None
        partial = self._path + ".compact"
        with memoryview(self._map) as view:
            self._write_new_file(partial, view[first : self._end])
        self._close(flush=False)  # (the file being replaced: no need to write it back)
        os.replace(partial, self._path)
        _fsync_dir(os.path.dirname(self._path) or ".")
        self._open()
        self._offsets = array("Q", (o - shift for o in self._offsets[entryTo:]))
        self._indexes = self._indexes[entryTo:]
        self._terms = self._terms[entryTo:]
        self._end -= shift

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> Sequence[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | Sequence[Entry]:
        count = len(self._offsets)
        if isinstance(item, slice):
            start, stop, step = item.indices(count)
            if step != 1:
                return [self.entry(i) for i in range(start, stop, step)]
            return _Entries(self.entry, start, max(start, stop))
        if item < 0:
            item += count
        if not 0 <= item < count:
            raise IndexError("journal position out of range")
        if item == count - 1:
            if self._last is None:
                self._last = self.entry(item)
            return self._last
        if item == 0:
            if self._first is None:
                self._first = self.entry(0)
            return self._first
        return self.entry(item)

    def entry(self, pos: int) -> Entry:
        """The entry at position ``pos`` (0 <= pos < len), its command read from the file."""
        start = self._offsets[pos]
        end = self._offsets[pos + 1] if pos + 1 < len(self._offsets) else self._end
        return self._map[start + _HEAD.size : end - 4], self._indexes[pos], self._terms[pos]

    def __len__(self) -> int:
        return len(self._offsets)

    def _destroy(self) -> None:
        self._close()

    def flush(self) -> None:
        self._map.flush()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_saved = False

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return int(self._meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802, N803
        # Raft needs the term and vote on disk before any message that shows them.
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._meta_storer.storeMeta(self._meta)
        self._meta_saved = True

    def getCurrentTerm(self) -> int:  # noqa: N802
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._meta.get("votedForNodeId", None)

    def onOneSecondTimer(self) -> None:  # noqa: N802
        if not self._meta_saved:
            self._meta_storer.storeMeta(self._meta)
            self._meta_saved = True

    # -- for the node: space and memory ------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the file in use (header and records)."""
        return self._end

    def file_size(self) -> int:
        """Bytes of the file, allocated on disk."""
        return self._size

    def reserve(self, size: int) -> None:
        """Allocate blocks for the first ``size`` bytes now and map them;
        raises OSError (ENOSPC) when the disk cannot hold them."""
        if size > self._size:
            self._grow(size)

    def release_pages(self) -> None:
        """Drop the map's pages from the resident set (they are page cache:
        the next access maps them again from the file)."""
        with contextlib.suppress(OSError, ValueError):
            self._map.madvise(mmap.MADV_DONTNEED)


class _Entries(Sequence[Entry]):
    """Entries ``start`` to ``stop`` of a journal, read when asked for.

    pysyncobj slices the journal to the end for the entries after an index
    and then looks at the first few: the commands it never reads stay on disk.
    A slice of this view is a list (it goes into messages, pickled)."""

    __slots__ = ("_read", "_start", "_stop")

    def __init__(self, read: Callable[[int], Entry], start: int, stop: int) -> None:
        self._read = read
        self._start = start
        self._stop = stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        count = self._stop - self._start
        if isinstance(item, slice):
            return [self._read(self._start + i) for i in range(*item.indices(count))]
        if item < 0:
            item += count
        if not 0 <= item < count:
            raise IndexError("journal slice position out of range")
        return self._read(self._start + item)

    def __iter__(self) -> Iterator[Entry]:
        read = self._read
        for pos in range(self._start, self._stop):
            yield read(pos)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        return (list, (list(self),))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_journal(sync: bool) -> Callable[[str | None], Journal]:
    """pysyncobj's journal factory: ours on a file, pysyncobj's in memory."""

    def create(path: str | None) -> Journal:
        if path is None:
            return MemoryJournal()
        return StanJournal(path, sync=sync)

    return create
