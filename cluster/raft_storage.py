"""Storage side of the Raft glue: pysyncobj's journal and our snapshots.

* ``create_journal``: pysyncobj's file journal, flushed per entry when the
  node runs with ``cluster_sync`` (``SyncedFileJournal``).
* ``reserve_blocks``: disk blocks for the journal ahead of its growth.
* ``SnapshotMixin``: the serializer pysyncobj calls to compact its log. The
  copy of the store runs in its own thread so the ticks go on meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import pickle
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import LAST_RECORD_OFFSET_OFFSET, FileJournal, createJournal

from cluster.fsm import StateMachine

log = logging.getLogger("stanchion.raft")

#: The pickle protocol of pysyncobj's messages and of our snapshots' header.
PICKLE_PROTOCOL = 5


class StanJournal(FileJournal):  # type: ignore[misc]
    """pysyncobj's file journal, same format, with a cheaper ``add``.

    The stock ``add`` writes a record and then the header's end offset
    through a resizable map that asks the file's size (an ``fstat``) on every
    write, twice per entry on every node. Here the size last seen is kept: it
    only grows, so a record that fits below it is written straight into the
    map, and anything else takes the stock way (which grows the file).
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._mapped = 0

    def add(self, command: bytes, idx: int, term: int) -> None:
        if not isinstance(command, bytes):
            super().add(command, idx, term)
            return
        end = self._FileJournal__currentOffset
        head = _RECORD_HEAD.pack(len(command) + 16, idx, term)
        start = end
        end += len(head) + len(command) + 4
        if end > self._mapped:
            super().add(command, idx, term)
            rfile = self._FileJournal__journalFile
            self._mapped = rfile._ResizableFile__mm.size()
            return
        self._FileJournal__journal.append((command, idx, term))
        mapped = self._FileJournal__journalFile._ResizableFile__mm
        body = start + len(head)
        mapped[start:body] = head
        mapped[body : end - 4] = command
        mapped[end - 4 : end] = head[:4]
        self._FileJournal__currentOffset = end
        mapped[_END_OFFSET_AT : _END_OFFSET_AT + 4] = _U32.pack(end)


#: A journal record starts with its size (4 bytes), then index and term.
_RECORD_HEAD = struct.Struct("<IQQ")
_U32 = struct.Struct("<I")
#: Where pysyncobj's journal header keeps the offset after the last record.
_END_OFFSET_AT = LAST_RECORD_OFFSET_OFFSET


class SyncedFileJournal(StanJournal):
    """The journal flushed to disk (msync) after every entry.

    The stock journal writes through mmap and never syncs: a killed process
    loses nothing, a power loss can. This is what ``cluster_sync`` turns on.
    """

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.flush()


def create_journal(sync: bool) -> Callable[[str | None], Any]:
    def create(path: str | None) -> Any:
        if path is None:
            return createJournal(None)
        return SyncedFileJournal(path) if sync else StanJournal(path)

    return create


class JournalSpace:
    """Allocates disk blocks for pysyncobj's journal ahead of its growth.

    pysyncobj grows its journal file without allocating blocks and writes
    it through a memory map: on a full disk the write would kill the
    process with SIGBUS. Blocks for the next doubling are allocated once
    the journal is half full; when that fails the store refuses new work
    (like a full store, through ``fsm.storage_error``) while the remaining
    half takes what is in flight.
    """

    def __init__(self, fsm: StateMachine) -> None:
        self._fsm = fsm
        self._reserved = 0
        self._retry_at = 0.0
        self._known_size = 0

    def reserve(self, journal: Any) -> None:
        used = getattr(journal, "_FileJournal__currentOffset", None)
        if used is None or used * 2 < self._known_size:
            return  # (the file never shrinks: no need to ask its size, a syscall)
        rfile = journal._FileJournal__journalFile
        size = self._known_size = rfile._ResizableFile__mm.size()
        if used * 2 < size or size <= self._reserved // 2:
            return
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            reserve_blocks(rfile._ResizableFile__f.fileno(), size * 2)
        except OSError as exc:
            self._retry_at = now + 1.0
            if not self._fsm.storage_error:
                log.error("cannot grow the Raft journal: %s", exc)
            self._fsm.storage_error = f"raft journal: {exc.strerror or exc}"
            return
        self._reserved = size * 2
        if self._fsm.storage_error.startswith("raft journal:"):
            self._fsm.storage_error = ""


def trim_journal_pages(journal: Any) -> None:
    """Drop the journal's pages from this process's resident set.

    pysyncobj writes its journal through a shared file mapping, and every
    page written stays mapped (it counts in RSS although it is page cache
    the kernel can reclaim). Unmapping the pages from the page tables does
    not lose data: the next access maps them again from the file.
    """
    mapped = getattr(
        getattr(journal, "_FileJournal__journalFile", None), "_ResizableFile__mm", None
    )
    if mapped is not None:
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED)


class SnapshotMixin:
    """Snapshots of the store for pysyncobj's log compaction (see RaftGlue)."""

    fsm: StateMachine
    #: Snapshots carry the store only when it is persistent.
    snapshot_store: bool
    _snapshot_thread: threading.Thread | None = None
    _snapshot_state: int = SERIALIZER_STATE.NOT_SERIALIZING

    def serialize(self, filename: str, raft_data: Any) -> None:  # in a tick
        """Start writing a snapshot; pysyncobj polls ``serialize_state``.

        The copy runs in its own thread so the ticks keep sending
        heartbeats. Its LMDB read transaction begins after the entry pysyncobj
        records (``raft_data``) was applied, so the image holds that state or a
        later one, and records its own applied index: a node restoring it skips
        the entries the image already contains. pysyncobj then tries to rename
        its temporary name and fails (nothing is written there); the result
        comes from ``serialize_state`` instead.
        """
        final = filename[: -len(".tmp")] if filename.endswith(".tmp") else filename
        head = pickle.dumps(raft_data, protocol=PICKLE_PROTOCOL)
        self._snapshot_state = SERIALIZER_STATE.SERIALIZING
        self._snapshot_thread = threading.Thread(
            target=self._write_snapshot, args=(final, head), name="snapshot", daemon=True
        )
        self._snapshot_thread.start()

    def _write_snapshot(self, final: str, head: bytes) -> None:  # snapshot thread
        """File layout: 8-byte big-endian length of the pickled raft data, the
        pickle, then the store image. Written aside and renamed into place."""
        partial = final + ".partial"
        fd, image = tempfile.mkstemp(dir=os.path.dirname(final), prefix=".snap-")
        os.close(fd)
        started = time.monotonic()
        try:
            if self.snapshot_store:
                self.fsm.store.snapshot(image)
            with open(partial, "wb") as out, open(image, "rb") as src:
                out.write(struct.pack(">Q", len(head)))
                out.write(head)
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
            self._snapshot_state = SERIALIZER_STATE.SUCCESS
            log.info(
                "snapshot written file=%s bytes=%d seconds=%.3f",
                final,
                os.path.getsize(final),
                time.monotonic() - started,
            )
        except Exception:
            self._snapshot_state = SERIALIZER_STATE.FAILED
            log.exception("snapshot failed file=%s", final)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(image)
            if self.snapshot_store:
                # The copy read every page of the store through its map: drop
                # them from the resident set now rather than at the next trim.
                with contextlib.suppress(Exception):
                    self.fsm.store.release_memory()

    def serialize_state(self) -> int:  # in a tick
        thread = self._snapshot_thread
        if thread is not None and thread.is_alive():
            return int(SERIALIZER_STATE.SERIALIZING)
        state = self._snapshot_state
        if state != SERIALIZER_STATE.SERIALIZING:
            self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        return int(state)

    def deserialize(self, filename: str) -> Any:  # in a tick
        """Load a snapshot: ours at startup, or one sent by the leader.

        The store is replaced only when the snapshot is ahead of it (a node
        that fell behind); at startup the store is normally ahead or equal and
        is kept, and pysyncobj replays the journal past the snapshot.
        """
        with open(filename, "rb") as src:
            (n,) = struct.unpack(">Q", src.read(8))
            raft_data = pickle.loads(src.read(n))
            fd, image = tempfile.mkstemp(dir=os.path.dirname(filename), prefix=".restore-")
            with os.fdopen(fd, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        try:
            store = self.fsm.store
            if not self.snapshot_store or os.path.getsize(image) == 0:
                return raft_data
            snap_index = store.snapshot_applied_index(image)
            if snap_index > store.applied_index():
                log.info(
                    "restoring store from snapshot index=%d local=%d",
                    snap_index,
                    store.applied_index(),
                )
                store.restore(image)
        finally:
            os.unlink(image)
        return raft_data


_FALLOC_FL_KEEP_SIZE = 1
_libc: Any = None


def reserve_blocks(fd: int, length: int) -> None:
    """Allocate disk blocks for the first ``length`` bytes of a file without
    changing its size (fallocate with FALLOC_FL_KEEP_SIZE: pysyncobj reads the
    file size as its map size). Raises OSError, e.g. ENOSPC."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if _libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
