"""Storage side of the Raft glue: pysyncobj's journal and our snapshots.

* ``JournalSpace``: disk blocks for the journal ahead of its growth.
* ``SnapshotMixin``: the serializer pysyncobj calls to compact its log. The
  copy of the store runs in its own thread so the ticks go on meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import tempfile
import threading
import time
from typing import Any

from pysyncobj.config import SERIALIZER_STATE

from cluster.fsm import StateMachine
from cluster.raft_journal import StanJournal
from store import SnapshotError
from store.lmdb_store import check_image

log = logging.getLogger("stanchion.raft")

#: The pickle protocol of pysyncobj's messages and of our snapshots' header.
PICKLE_PROTOCOL = 5


class JournalSpace:
    """Allocates disk blocks for the Raft journal ahead of its growth.

    Once the journal file is half full, blocks for twice its size are
    allocated. When that fails the store refuses new work (like a full store,
    through ``fsm.storage_error``) while the remaining half takes what is in
    flight, instead of the journal failing in the middle of an append.
    """

    def __init__(self, fsm: StateMachine) -> None:
        self._fsm = fsm
        self._retry_at = 0.0

    def reserve(self, journal: Any) -> None:
        if not isinstance(journal, StanJournal):
            return  # (in memory)
        size = journal.file_size()
        if journal.used_bytes() * 2 < size:
            return
        now = time.monotonic()
        if now < self._retry_at:
            return
        try:
            journal.reserve(size * 2)
        except OSError as exc:
            self._retry_at = now + 1.0
            if not self._fsm.storage_error:
                log.error("cannot grow the Raft journal: %s", exc)
            self._fsm.storage_error = f"raft journal: {exc.strerror or exc}"
            return
        if self._fsm.storage_error.startswith("raft journal:"):
            self._fsm.storage_error = ""


def align_journal(journal: Any, raft_data: Any) -> None:
    """Finish a journal trim that a kill interrupted, before pysyncobj loads
    the snapshot described by ``raft_data``.

    A snapshot is written (and renamed into place) before the journal drops
    the entries it covers. Killed in between, the journal still starts before
    the snapshot's two entries, and pysyncobj, seeing a journal that does not
    start with them, would replace the whole journal by those two: every entry
    after them would be gone, although committed and maybe acknowledged and
    not yet in the store. When the journal holds the two entries, dropping
    what comes before them is the trim that was meant to happen.

    ``raft_data`` is pysyncobj's: (the last applied entry, the one before it,
    the members); a trimmed journal starts with the one before, then the last.
    """
    if len(journal) < 3:
        return
    second, first = tuple(raft_data[0]), tuple(raft_data[1])
    pos = first[1] - journal[0][1]
    if 0 < pos < len(journal) - 1 and journal[pos] == first and journal[pos + 1] == second:
        log.warning(
            "finishing an interrupted journal trim: dropping %d entries before index %d",
            pos,
            first[1],
        )
        journal.deleteEntriesTo(pos)


def trim_journal_pages(journal: Any) -> None:
    """Drop the journal's pages from this process's resident set.

    The journal is written through a shared file mapping, and every page
    written stays mapped (it counts in RSS although it is page cache the
    kernel can reclaim)."""
    if isinstance(journal, StanJournal):
        journal.release_pages()


class SnapshotMixin:
    """Snapshots of the store for pysyncobj's log compaction (see RaftGlue)."""

    fsm: StateMachine
    #: Snapshots carry the store only when it is persistent.
    snapshot_store: bool
    #: The pysyncobj node (its journal is aligned with a snapshot being loaded).
    node: Any
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

    def snapshot_running(self) -> bool:
        thread = self._snapshot_thread
        return thread is not None and thread.is_alive()

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
            has_image = self.snapshot_store and os.path.getsize(image) > 0
            try:
                # Checked before anything changes (one from the leader was
                # checked on arrival: see check_received_snapshot).
                snap_index = store.snapshot_applied_index(image) if has_image else 0
            except SnapshotError as exc:
                log.error("snapshot %s is damaged, not loaded: %s", filename, exc)
                raise
            journal = getattr(getattr(self, "node", None), "_SyncObj__raftLog", None)
            if journal is not None:
                align_journal(journal, raft_data)
            if not has_image:
                return raft_data
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


def received_snapshot_problem(path: str) -> str | None:
    """Why the snapshot file ``path`` (header, then the store image) is not
    whole, or None. pysyncobj sends a snapshot in chunks without offsets: the
    chunks it had queued on a connection that dropped are simply missing."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack(">Q", f.read(8))
            pickle.loads(f.read(n))
        if os.path.getsize(path) > 8 + n:
            check_image(path, 8 + n)
    except (OSError, struct.error, pickle.UnpicklingError, EOFError, SnapshotError) as exc:
        return str(exc) or type(exc).__name__
    return None
