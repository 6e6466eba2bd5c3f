"""Glue between pysyncobj (Raft) and the asyncio side of a node.

pysyncobj runs its own tick thread: replicated calls, their callbacks, state
changes and snapshots all happen there. This module is the only place that
touches pysyncobj. It offers the event loop three things:

* ``propose(blob, timeout)``: an awaitable that resolves with the apply
  ``Outcome`` once the entry is committed and applied here, or raises
  ``ProposalError`` with a stable text (not leader, leadership lost, timeout).
* ``on_role_change``: called on the loop whenever the Raft role changes.
* ``status()``: role, term, leader, commit and applied indexes for monitoring.

A single server is a one-node group: the same code, no partners.

Settings that matter (see PARTS.md): pysyncobj's own entry batching is off
(it adds ~100 ms per commit; we batch publishes ourselves), the pickle protocol
is raised to 5 (bytes travel without a latin-1 round trip), and a leader that
cannot reach a majority steps down after about a second.
"""

from __future__ import annotations

import asyncio
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
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pysyncobj.pickle as _pso_pickle
import pysyncobj.syncobj as _pso_syncobj
import pysyncobj.tcp_connection as _pso_tcp
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import FileJournal, createJournal

from cluster.fsm import Outcome, StateMachine
from protocol import errors

log = logging.getLogger("stanchion.raft")

# pysyncobj pickles commands with protocol 2, which sends bytes through a
# latin-1 round trip (larger and much slower). Every node runs this code, so
# all of them speak protocol 5. pysyncobj 0.3.17 is pinned for this reason.
_PICKLE_PROTOCOL = 5
setattr(_pso_pickle, "__protocol", _PICKLE_PROTOCOL)  # noqa: B010 - private module global


class _StoredZlib:
    """Stands in for ``zlib`` in pysyncobj's TCP transport.

    pysyncobj compresses every message at level 3, which costs the leader a
    good share of a core at high publish rates for no gain on a local network.
    Level 0 keeps the zlib framing (any node can still decompress it) without
    the work.
    """

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)

    decompress = staticmethod(zlib.decompress)


_pso_tcp.zlib = _StoredZlib  # type: ignore[assignment]


def pickle_protocol_in_use() -> int:
    """The protocol pysyncobj pickles with (tested, so an upgrade cannot drop it)."""
    return int(getattr(_pso_pickle, "__protocol"))  # noqa: B009


ROLE_LEADER = "Leader"
ROLE_FOLLOWER = "Follower"
ROLE_CANDIDATE = "Candidate"
_ROLES = {0: ROLE_FOLLOWER, 1: ROLE_CANDIDATE, 2: ROLE_LEADER}


#: Seconds between releases of mapped file pages from the resident set.
TRIM_INTERVAL = 5.0


class ProposalError(Exception):
    """A proposal that did not commit; the text goes to the client."""


_FAIL_TEXT = {
    FAIL_REASON.QUEUE_FULL: "raft commands queue is full",
    FAIL_REASON.MISSING_LEADER: errors.NOT_LEADER,
    FAIL_REASON.DISCARDED: errors.LEADERSHIP_LOST,
    FAIL_REASON.NOT_LEADER: errors.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED: errors.LEADERSHIP_LOST,
    FAIL_REASON.REQUEST_DENIED: "raft request denied",
    FAIL_REASON.UNKNOWN_OUTCOME: errors.LEADERSHIP_LOST,
}


@dataclass(slots=True)
class RaftSettings:
    """Raft configuration of one node.

    ``self_addr`` and ``partners`` are ``host:port`` addresses of pysyncobj's
    TCP transport. ``data_dir`` None keeps the journal in memory (memory store).
    """

    self_addr: str
    partners: list[str] = field(default_factory=list)
    data_dir: str | None = None
    #: fsync the Raft journal on every write (reference ``cluster_sync``).
    sync: bool = False
    password: str | None = None
    #: Seconds; a follower starts an election after a random timeout in this range.
    election_min: float = 0.4
    election_max: float = 0.8
    #: Seconds between leader heartbeats.
    heartbeat_period: float = 0.05
    #: A leader without a majority for this long steps down.
    leader_fallback: float = 1.0
    #: Compact the log (snapshot the store) after this many entries or seconds.
    compaction_min_entries: int = 20_000
    compaction_min_time: float = 600.0
    #: ... or after this many bytes of commands.
    compaction_bytes: int = 64 * 1024 * 1024
    raft_logging: bool = False


class SyncedFileJournal(FileJournal):  # type: ignore[misc]
    """pysyncobj's file journal, flushed to disk (msync) after every entry.

    The stock journal writes through mmap and never syncs: a killed process
    loses nothing, a power loss can. This is what ``cluster_sync`` turns on.
    """

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.flush()


def _create_journal(sync: bool) -> Callable[[str | None], Any]:
    def create(path: str | None) -> Any:
        if path is not None and sync:
            return SyncedFileJournal(path)
        return createJournal(path)

    return create


class _Node(SyncObj):  # type: ignore[misc]
    """The replicated object: one replicated method carrying an encoded command."""

    def __init__(self, settings: RaftSettings, fsm: StateMachine, glue: RaftGlue) -> None:
        self._fsm = fsm
        self._glue = glue
        self._single = not settings.partners
        self._next_trim = 0.0
        self._journal_reserved = 0
        self._journal_retry_at = 0.0
        self._log_bytes = 0
        # Members reach the same log position together: stagger their
        # snapshots by giving each its own threshold.
        members = sorted([settings.self_addr, *settings.partners])
        self._compact_bytes = int(
            settings.compaction_bytes * (1 + 0.2 * members.index(settings.self_addr))
        )
        journal = None
        if settings.data_dir is not None:
            os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
            journal = os.path.join(settings.data_dir, "raft.journal")
            dump = os.path.join(settings.data_dir, "raft.dump")
        else:
            # A memory store keeps nothing across restarts, but the in-memory
            # journal must still be compacted; its snapshots hold Raft data only.
            dump = os.path.join(glue.scratch_dir(), "raft.dump")
        conf = SyncObjConf(
            password=settings.password,
            autoTick=True,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=settings.heartbeat_period,
            raftMinTimeout=settings.election_min,
            raftMaxTimeout=settings.election_max,
            connectionTimeout=max(0.5, settings.election_max * 1.5),
            connectionRetryTime=0.5,
            leaderFallbackTimeout=settings.leader_fallback,
            commandsWaitLeader=False,
            journalFile=journal,
            fullDumpFile=dump,
            logCompactionMinEntries=settings.compaction_min_entries,
            logCompactionMinTime=settings.compaction_min_time,
            logCompactionSplit=False,
            # Entries are at most about 256 KB (publish batches are capped), so
            # they travel whole, never split into pysyncobj's slow reassembled
            # chunks; and a lagging follower gets its backlog in messages small
            # enough to handle well within an election timeout.
            appendEntriesBatchSizeBytes=1024 * 1024,
            # Snapshots travel to a lagging follower in chunks of this size,
            # one per heartbeat: 64 KB (the default) would take minutes.
            logCompactionBatchSize=4 * 1024 * 1024,
            serializer=glue.serialize,
            deserializer=glue.deserialize,
            serializeChecker=glue.serialize_state,
            onStateChanged=glue.on_state_changed,
            dynamicMembershipChange=False,
            bindAddress=None,
        )
        # pysyncobj builds its journal inside __init__ from a module-level factory.
        _pso_syncobj.createJournal = _create_journal(settings.sync)
        try:
            super().__init__(settings.self_addr, settings.partners, conf)
        finally:
            _pso_syncobj.createJournal = createJournal

    def _checkCommandsToApply(self) -> None:  # noqa: N802 - pysyncobj's name
        # Only the leader appends commands. pysyncobj would forward a command
        # queued on a node that has just lost leadership to the new leader,
        # which would then commit a publish this node answered with an error
        # (or will never answer): refuse them instead, as the reference does.
        if not self._isLeader():
            self._refuse_queued_commands()
        # pysyncobj appends new commands at the end of a tick and commits them
        # in the next one, which waits for socket activity or the tick period
        # (50 ms). A leader without partners gets no socket activity, so wake
        # the next tick at once when this one appended something uncommitted.
        super()._checkCommandsToApply()
        self._reserve_journal_space()
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_INTERVAL
            self._trim_journal_pages()
            self._fsm.store.release_memory()
        if self._single and self._isLeader():
            last = self._SyncObj__getCurrentLogIndex()
            if self._SyncObj__raftCommitIndex < last:
                # A group of one: whatever the leader appended in its current
                # term is committed. Commit and apply it now instead of in the
                # next tick (this is what the next tick would do).
                if self._SyncObj__getCurrentLogTerm() == self._SyncObj__raftCurrentTerm:
                    self._SyncObj__raftCommitIndex = last
                    self._SyncObj__leaderCommitIndex = last
                    self._SyncObj__raftLog.setRaftCommitIndex(last)
                    self._SyncObj__applyLogEntries()
                else:
                    self._SyncObj__pipeNotifier.notify()

    def _refuse_queued_commands(self) -> None:
        queue = self._SyncObj__commandsQueue
        while True:
            try:
                _command, callback = queue.get_nowait()
            except Exception:  # noqa: BLE001 - queue.Empty
                return
            if callback is not None and not isinstance(callback, tuple):
                callback(None, FAIL_REASON.NOT_LEADER)

    def _reserve_journal_space(self) -> None:
        """Allocate disk blocks for the journal ahead of its growth.

        pysyncobj grows its journal file without allocating blocks and writes
        it through a memory map: on a full disk the write would kill the
        process with SIGBUS. Blocks for the next doubling are allocated once
        the journal is half full; when that fails the store refuses new work
        (like a full store) while the remaining half takes what is in flight.
        """
        journal = self._SyncObj__raftLog
        rfile = getattr(journal, "_FileJournal__journalFile", None)
        if rfile is None:
            return
        size = rfile._ResizableFile__mm.size()
        used = journal._FileJournal__currentOffset
        if used * 2 < size or size <= self._journal_reserved // 2:
            return
        now = time.monotonic()
        if now < self._journal_retry_at:
            return
        try:
            _reserve_blocks(rfile._ResizableFile__f.fileno(), size * 2)
        except OSError as exc:
            self._journal_retry_at = now + 1.0
            if not self._fsm.storage_error:
                log.error("cannot grow the Raft journal: %s", exc)
            self._fsm.storage_error = f"raft journal: {exc.strerror or exc}"
            return
        self._journal_reserved = size * 2
        if self._fsm.storage_error.startswith("raft journal:"):
            self._fsm.storage_error = ""

    def _trim_journal_pages(self) -> None:
        """Drop the journal's pages from this process's resident set.

        pysyncobj writes its journal through a shared file mapping, and every
        page written stays mapped (it counts in RSS although it is page cache
        the kernel can reclaim). Unmapping the pages from the page tables does
        not lose data: the next access maps them again from the file.
        """
        journal = self._SyncObj__raftLog
        mapped = getattr(
            getattr(journal, "_FileJournal__journalFile", None), "_ResizableFile__mm", None
        )
        if mapped is not None:
            with contextlib.suppress(OSError, ValueError):
                mapped.madvise(mmap.MADV_DONTNEED)

    @replicated  # type: ignore[misc]
    def apply_command(self, blob: bytes) -> Outcome:
        # Inside apply, the entry being applied is the one after the last applied.
        out = self._fsm.apply(self.raftLastApplied + 1, blob)
        # pysyncobj compacts by entry count or time only, and keeps every entry
        # of the journal in memory too: bound the journal by size as well.
        self._log_bytes += len(blob)
        if self._log_bytes >= self._compact_bytes:
            self._log_bytes = 0
            self.forceLogCompaction()
        return out


class RaftGlue:
    """Owns the pysyncobj node and bridges it to the asyncio loop."""

    def __init__(
        self,
        settings: RaftSettings,
        fsm: StateMachine,
        loop: asyncio.AbstractEventLoop,
        on_role_change: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.fsm = fsm
        self.loop = loop
        self._on_role_change = on_role_change
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        #: Snapshots carry the store only when it is persistent.
        self.snapshot_store = settings.data_dir is not None
        pso_log = logging.getLogger("pysyncobj")
        if not settings.raft_logging:
            pso_log.setLevel(logging.CRITICAL)
        pso_log.addFilter(_quiet_replays)
        self.node = _Node(settings, fsm, self)

    # -- proposals ----------------------------------------------------------------

    def propose(self, blob: bytes, timeout: float = 10.0) -> asyncio.Future[Outcome]:
        """Replicate ``blob``; the future resolves on this loop after local apply."""
        loop = self.loop
        fut: asyncio.Future[Outcome] = loop.create_future()

        def done(result: Any, err: int) -> None:  # Raft thread
            loop.call_soon_threadsafe(_settle, fut, result, err)

        self.node.apply_command(blob, callback=done)
        handle = loop.call_later(timeout, _expire, fut)
        fut.add_done_callback(lambda _f: handle.cancel())
        return fut

    # -- state -------------------------------------------------------------------

    def on_state_changed(self, old: int, new: int) -> None:  # Raft thread
        role = _ROLES.get(new, ROLE_FOLLOWER)
        self.loop.call_soon_threadsafe(self._on_role_change, role)

    def role(self) -> str:
        return ROLE_LEADER if self.node._isLeader() else self._status_role()

    def _status_role(self) -> str:
        try:
            return _ROLES.get(int(self.node.getStatus()["state"]), ROLE_FOLLOWER)
        except Exception:  # noqa: BLE001 - during shutdown
            return ROLE_FOLLOWER

    def status(self) -> dict[str, Any]:
        st = self.node.getStatus()
        leader = st.get("leader")
        return {
            "role": _ROLES.get(int(st.get("state", 0)), ROLE_FOLLOWER),
            "term": st.get("raft_term", 0),
            "leader": str(leader.address) if leader is not None else "",
            "commit_index": st.get("commit_idx", 0),
            "last_applied": st.get("last_applied", 0),
            "has_quorum": bool(st.get("has_quorum", False)),
            "log_len": st.get("log_len", 0),
            "partners": {
                k.replace("partner_node_status_server_", ""): v
                for k, v in st.items()
                if str(k).startswith("partner_node_status_server_")
            },
        }

    def destroy(self) -> None:
        self.node.destroy()

    def scratch_dir(self) -> str:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="stanchion-raft-")
        return self._scratch.name

    # -- snapshots (log compaction) ----------------------------------------------------

    def serialize(self, filename: str, raft_data: Any) -> None:  # Raft thread
        """Start writing a snapshot; pysyncobj polls ``serialize_state``.

        The copy runs in its own thread so the Raft thread keeps sending
        heartbeats. Its LMDB read transaction begins after the entry pysyncobj
        records (``raft_data``) was applied, so the image holds that state or a
        later one, and records its own applied index: a node restoring it skips
        the entries the image already contains. pysyncobj then tries to rename
        its temporary name and fails (nothing is written there); the result
        comes from ``serialize_state`` instead.
        """
        final = filename[: -len(".tmp")] if filename.endswith(".tmp") else filename
        head = pickle.dumps(raft_data, protocol=_PICKLE_PROTOCOL)
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

    def serialize_state(self) -> int:  # Raft thread
        thread = self._snapshot_thread
        if thread is not None and thread.is_alive():
            return int(SERIALIZER_STATE.SERIALIZING)
        state = self._snapshot_state
        if state != SERIALIZER_STATE.SERIALIZING:
            self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        return int(state)

    def deserialize(self, filename: str) -> Any:  # Raft thread
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


def _reserve_blocks(fd: int, length: int) -> None:
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


def _quiet_replays(record: logging.LogRecord) -> bool:
    """pysyncobj logs at critical level whenever a follower receives again
    entries it has applied; Raft guarantees those are the same entries (only
    committed entries are applied), so the line is noise."""
    return not str(record.msg).startswith("truncating already-applied log entries")


def _settle(fut: asyncio.Future[Outcome], result: Any, err: int) -> None:
    if fut.done():
        return
    if err == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(ProposalError(_FAIL_TEXT.get(err, f"raft error {err}")))


def _expire(fut: asyncio.Future[Outcome]) -> None:
    if not fut.done():
        fut.set_exception(ProposalError(errors.REPLICATION_TIMEOUT))
