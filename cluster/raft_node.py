"""The pysyncobj node of a stanchion server, and the changes to pysyncobj it needs.

``RaftNode`` is pysyncobj's ``SyncObj`` with one replicated method (an encoded
command) and the overrides that make it fit a node whose ticks run on the
asyncio loop (``cluster.raft_io``): commands appended as they are proposed and
sent at the end of the loop turn, commit hooks (a reply sent once an entry is
committed), a lone node committing without waiting for a tick, followers
outside the fast majority fed less often, and a log padded when it ends
before the store. ``RaftGlue`` (``cluster.raft``) owns it.

Importing this module also adjusts pysyncobj's transport for every node:
pickle protocol 5, stored zlib frames, fewer system calls per received
message, no wake-up pipe. Every member runs the same code, so all agree.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pysyncobj.pickle as _pso_pickle
import pysyncobj.serializer as _pso_serializer
import pysyncobj.syncobj as _pso_syncobj
import pysyncobj.tcp_connection as _pso_tcp
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import createJournal

from cluster.fsm import Outcome, StateMachine
from cluster.raft_io import LoopPoller, StoredZlib
from cluster.raft_journal import StanJournal, create_journal
from cluster.raft_storage import (
    PICKLE_PROTOCOL,
    JournalSpace,
    received_snapshot_problem,
    trim_journal_pages,
)

if TYPE_CHECKING:
    from cluster.raft import RaftGlue

log = logging.getLogger("stanchion.raft")

# pysyncobj pickles commands with protocol 2, which sends bytes through a
# latin-1 round trip (larger and much slower). Every node runs this code, so
# all of them speak protocol 5. pysyncobj 0.3.17 is pinned for this reason.
setattr(_pso_pickle, "__protocol", PICKLE_PROTOCOL)  # noqa: B010 - private module global


# pysyncobj compresses every message; ours are framed as stored zlib blocks.
_pso_tcp.zlib = StoredZlib  # type: ignore[assignment]

_pso_set_transmission = _pso_serializer.Serializer.setTransmissionData


def _set_transmission_data(serializer: Any, data: Any) -> bool:
    """pysyncobj's receipt of a snapshot chunk, with the whole file checked
    before it replaces our snapshot: a snapshot missing chunks (lost with a
    dropped connection: pysyncobj sends no offsets) is refused, our previous
    snapshot stays, and the leader, finding us behind, sends it again."""
    incoming = serializer._Serializer__incomingTransmissionFile
    filename = serializer._Serializer__fileName
    if data is None or data[1] or not data[2] or incoming is None or filename is None:
        return bool(_pso_set_transmission(serializer, data))
    incoming.write(data[0])
    incoming.flush()
    tmp = filename + ".1.tmp"
    problem = received_snapshot_problem(tmp)
    if problem is not None:
        incoming.close()
        serializer._Serializer__incomingTransmissionFile = None
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.error("snapshot from the leader refused, incomplete: %s", problem)
        return False
    return bool(_pso_set_transmission(serializer, (b"", data[1], True)))


_pso_serializer.Serializer.setTransmissionData = _set_transmission_data


def _read_available(conn: Any) -> None:
    """pysyncobj's TcpConnection read step, with fewer system calls.

    The stock one asks the socket's error status after every receive and
    receives until the socket says it has nothing more (an EAGAIN): three
    calls besides the one that gets the data, for every Raft message. Here a
    short read ends the step (the poller is level-triggered: data that
    arrives meanwhile wakes it again), and a socket error shows as the
    receive's own error or end of stream, which disconnect as before.
    """
    sock = conn._TcpConnection__socket
    size = conn._TcpConnection__recvBufferSize
    while True:
        try:
            incoming = sock.recv(size)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                conn.disconnect()
            break
        if not incoming:
            conn.disconnect()
            break
        conn._TcpConnection__readBuffer += incoming
        if len(incoming) < size:
            break
    conn._TcpConnection__lastReadTime = _pso_tcp.monotonicTime()


_pso_tcp.TcpConnection._TcpConnection__tryReadBuffer = _read_available

_STOCK_PROCESS_CONNECTION = _pso_tcp.TcpConnection._TcpConnection__processConnection
_CONNECTED = _pso_tcp.CONNECTION_STATE.CONNECTED
_DISCONNECTED = _pso_tcp.CONNECTION_STATE.DISCONNECTED
_READ_EVENT = _pso_tcp.POLL_EVENT_TYPE.READ


def _process_connection(conn: Any, descr: int, event: int) -> None:
    """pysyncobj's per-event connection step, short for the common event:
    data to read on an established connection. The stock step first asks the
    socket's error status (a system call; a pending error shows as the
    receive's own error anyway) and checks the read timeout (data is
    arriving, so it has not passed); every other event takes the stock way."""
    if (
        event != _READ_EVENT
        or descr != conn._TcpConnection__fileno
        or conn._TcpConnection__state != _CONNECTED
    ):
        _STOCK_PROCESS_CONNECTION(conn, descr, event)
        return
    _read_available(conn)
    parse = conn._TcpConnection__processParseMessage
    while conn._TcpConnection__state != _DISCONNECTED:
        message = parse()
        if message is None:
            return
        received = conn._TcpConnection__onMessageReceived
        if received is not None:
            received(message)


_pso_tcp.TcpConnection._TcpConnection__processConnection = _process_connection

_FRAME_LEN = struct.Struct("i")
_WRITE_INTEREST = (
    _pso_tcp.POLL_EVENT_TYPE.READ | _pso_tcp.POLL_EVENT_TYPE.WRITE | _pso_tcp.POLL_EVENT_TYPE.ERROR
)


def _send(conn: Any, message: Any) -> None:
    """pysyncobj's TcpConnection.send (same frame), with a send buffer that
    does not copy itself.

    The stock one keeps unsent bytes in a ``bytes`` object, appends each new
    message by concatenation and drops what the socket took by slicing: both
    copy the whole backlog. A follower that falls behind a stream of
    publishes leaves megabytes there, and the leader spent its time copying
    them. Here the backlog is a bytearray appended in place and consumed from
    the front (``del``, no copy). When bytes remain, the poller is asked to
    report the socket writable, so they go as soon as the peer reads rather
    than with the next message (the stock connection only asks that while
    connecting).
    """
    if conn.sendRandKey:
        message = (conn.sendRandKey, message)
    data = _pso_tcp.zlib.compress(_pso_tcp.pickle.dumps(message), 3)
    if conn.encryptor:
        data = conn.encryptor.encrypt_at_time(data, int(_pso_tcp.monotonicTime()))
    buf = conn._TcpConnection__writeBuffer
    if type(buf) is not bytearray:
        buf = conn._TcpConnection__writeBuffer = bytearray(buf)
    buf += _FRAME_LEN.pack(len(data))
    buf += data
    conn._TcpConnection__trySendBuffer()
    if buf and conn._TcpConnection__state == _CONNECTED:
        conn._TcpConnection__poller.subscribe(
            conn._TcpConnection__fileno, conn._TcpConnection__processConnection, _WRITE_INTEREST
        )


def _process_send(conn: Any) -> bool:
    """One send of the backlog; False always: either everything went, or the
    socket is full and a second try would only fail (pysyncobj loops while
    this returns True)."""
    buf = conn._TcpConnection__writeBuffer
    if not buf:
        return False
    try:
        sent = conn._TcpConnection__socket.send(buf)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            conn.disconnect()
        return False
    if sent < 0:
        conn.disconnect()
    elif type(buf) is bytearray:
        del buf[:sent]
    else:
        conn._TcpConnection__writeBuffer = buf[sent:]
    return False


_pso_tcp.TcpConnection.send = _send
_pso_tcp.TcpConnection._TcpConnection__processSend = _process_send

# pysyncobj wakes its tick thread through a pipe whenever a command is queued.
# Our ticks run on the event loop, which is told directly (TickDriver.schedule).
_pso_syncobj.PIPE_NOTIFIER_ENABLED = False


def pickle_protocol_in_use() -> int:
    """The protocol pysyncobj pickles with (tested, so an upgrade cannot drop it)."""
    return int(getattr(_pso_pickle, "__protocol"))  # noqa: B009


#: Seconds between releases of mapped file pages from the resident set.
TRIM_INTERVAL = 5.0
#: Journal growth (bytes) that releases the mapped pages before the interval
#: is up: under a stream of publishes the pages written (journal and store)
#: would otherwise pile up in the resident set between two releases.
TRIM_BYTES = 16 << 20
#: Seconds between releases while a snapshot copies the store (it reads every
#: page of the store through the map).
SNAPSHOT_TRIM_INTERVAL = 0.5


#: Seconds a leader waits for an append to carry a new commit index to the
#: followers before sending one just for that.
COMMIT_NOTIFY_DELAY = 0.02

#: Seconds before the followers outside the fast majority get new entries.
LAZY_SEND_DELAY = 0.02

#: Seconds the choice of fast followers is kept before it is made again.
FAST_SET_TTL = 0.005


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


class RaftNode(SyncObj):  # type: ignore[misc]
    """The replicated object: one replicated method carrying an encoded command."""

    def __init__(
        self, settings: RaftSettings, fsm: StateMachine, glue: RaftGlue, poller: LoopPoller
    ) -> None:
        self._fsm = fsm
        self._glue = glue
        self._single = not settings.partners
        self._trimmed_at = 0.0
        self._trimmed_at_offset = 0
        self._trimmed_at_reads = 0
        self._journal_space = JournalSpace(fsm)
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
            # Ticks are run by the event loop (cluster.raft_io), and a port
            # that cannot be bound is an error at once (RaftGlue says which).
            autoTick=False,
            maxBindRetries=1,
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
        # pysyncobj builds its journal and poller inside __init__ from
        # module-level factories.
        _pso_syncobj.createJournal = create_journal(settings.sync)
        _pso_syncobj.createPoller = lambda _kind: poller
        try:
            super().__init__(settings.self_addr, settings.partners, conf)
        finally:
            _pso_syncobj.createJournal = createJournal
            _pso_syncobj.createPoller = _ORIGINAL_CREATE_POLLER
        # With batching "on", pysyncobj neither sends an append per queued
        # command nor a round of appends right after every apply just to tell
        # the followers the new commit index. We send once per tick for all the
        # commands it appended, and the commit index travels with the next
        # append, or after COMMIT_NOTIFY_DELAY when none comes. This halves the
        # Raft messages (and the wake-ups of three processes) per commit; the
        # followers apply a few milliseconds later, which nothing waits for.
        self._SyncObj__conf.appendEntriesUseBatch = True
        self._commit_sent = 0
        self._commit_notify: Any = None
        self._send_scheduled = False
        #: Set while a proposal that must go out at once is appended.
        self._send_now = False
        #: The last log index ``_send_appended`` sent (this leadership).
        self._sent_upto = 0
        self._fast_set: set[Any] | None = None
        self._fast_until = 0.0
        self._lazy_send: Any = None
        self._stopped = False
        #: log index -> (term, hook): run when that entry is committed and is
        #: the next to apply (``RaftGlue.propose_with``'s ``on_commit``).
        self._commit_hooks: dict[int, tuple[int, Callable[[], None]]] = {}
        self._next_hook: Callable[[], None] | None = None

    def _checkCommandsToApply(self) -> None:  # noqa: N802 - pysyncobj's name
        # Only the leader appends commands. pysyncobj would forward a command
        # queued on a node that has just lost leadership to the new leader,
        # which would then commit a publish this node answered with an error
        # (or will never answer): refuse them instead, as the reference does.
        leader = self._isLeader()
        if not leader:
            self._refuse_queued_commands()
        before = self._SyncObj__getCurrentLogIndex()
        super()._checkCommandsToApply()
        if leader and not self._single:
            if self._SyncObj__getCurrentLogIndex() != before:
                self._SyncObj__sendAppendEntries()
            elif self._SyncObj__raftCommitIndex > self._commit_sent and self._commit_notify is None:
                self._commit_notify = self._glue.loop.call_later(
                    COMMIT_NOTIFY_DELAY, self._notify_commit
                )
        self._reserve_journal_space()
        now = time.monotonic()
        journal = self._SyncObj__raftLog
        offset = journal.used_bytes() if isinstance(journal, StanJournal) else 0
        if offset < self._trimmed_at_offset:
            self._trimmed_at_offset = offset  # the journal was compacted
        reads = self._fsm.store.mapped_reads()
        if (
            now - self._trimmed_at >= TRIM_INTERVAL
            or offset - self._trimmed_at_offset >= TRIM_BYTES
            or reads - self._trimmed_at_reads >= TRIM_BYTES
            or (now - self._trimmed_at >= SNAPSHOT_TRIM_INTERVAL and self._glue.snapshot_running())
        ):
            self._trimmed_at = now
            self._trimmed_at_offset = offset
            self._trimmed_at_reads = reads
            self._trim_journal_pages()
            self._fsm.store.release_memory()
        if self._single and self._isLeader():
            self._commit_alone()

    def _SyncObj__onBecomeLeader(self) -> None:  # noqa: N802 - overrides pysyncobj's
        self._sent_upto = 0
        self._fast_until = 0.0
        SyncObj._SyncObj__onBecomeLeader(self)
        if self._single:
            self._pad_log_to_store()

    def _pad_log_to_store(self) -> None:
        """A group of one whose log ends before what its store has applied
        fills the gap with no-op entries, so its next command gets a new index.

        The log can end early: pysyncobj drops the journal's entries after a
        snapshot point when it is killed between writing the snapshot and
        trimming the journal (or in the middle of the trim), and an unsynced
        journal can lose its tail on a power loss while the synced store keeps
        it. Those entries are in the store; but new commands would get their
        indexes, and apply skips an index it has applied, so they would be
        acknowledged and dropped. In a group of several nodes the leader sends
        a lagging follower the entries themselves (skipped as applied: they are
        the same entries), and a log that short cannot win an election."""
        last = self._SyncObj__getCurrentLogIndex()
        applied = self._fsm.store.applied_index()
        if applied <= last:
            return
        log.warning(
            "the Raft log ends at index %d but the store has applied up to %d; "
            "padding the log with no-op entries",
            last,
            applied,
        )
        term = self._SyncObj__raftCurrentTerm
        journal = self._SyncObj__raftLog
        for idx in range(last + 1, applied + 1):
            journal.add(_NOOP_ENTRY, idx, term)

    def _commit_alone(self) -> None:
        """A group of one: whatever the leader appended in its current term is
        committed. Commit and apply it now instead of in the next tick (which
        would do the same, but waits for socket activity or the tick period)."""
        last = self._SyncObj__getCurrentLogIndex()
        if self._SyncObj__raftCommitIndex < last:
            if self._SyncObj__getCurrentLogTerm() == self._SyncObj__raftCurrentTerm:
                self._SyncObj__raftCommitIndex = last
                self._SyncObj__leaderCommitIndex = last
                self._SyncObj__raftLog.setRaftCommitIndex(last)
                self._SyncObj__applyLogEntries()
            else:
                self._glue.wake()

    def _applyCommand(self, command: bytes, callback: Any, commandType: int | None = None) -> None:  # noqa: N802, N803 - pysyncobj's names
        """Append a local command to the log now, instead of queueing it for
        the next tick; the appends of one loop turn go out together right
        after it (``_send_appended``). A node that is not the leader refuses
        it (see ``_checkCommandsToApply``). Anything else takes pysyncobj's way."""
        if isinstance(callback, tuple) or commandType != _REGULAR_COMMAND:
            super()._applyCommand(command, callback, commandType)
            return
        if not self._isLeader():
            if callback is not None:
                callback(None, FAIL_REASON.NOT_LEADER)
            return
        idx = self._SyncObj__getCurrentLogIndex() + 1
        term = self._SyncObj__raftCurrentTerm
        self._SyncObj__raftLog.add(_REGULAR_PREFIX + command, idx, term)
        if callback is not None:
            self._SyncObj__commandsWaitingCommit[idx].append((term, callback))
        hook, self._next_hook = self._next_hook, None
        if hook is not None:
            self._commit_hooks[idx] = (term, hook)
        if self._send_now and not self._single:
            # (A group of one commits, with its fsync, where it "sends": that
            # waits for the loop turn, so the publishes parsed meanwhile join
            # the next entry instead of each paying a commit of its own.)
            self._send_appended()
        elif not self._send_scheduled:
            self._send_scheduled = True
            self._glue.loop.call_soon(self._send_appended)

    def _send_appended(self) -> None:
        self._send_scheduled = False
        if self._stopped or not self._isLeader():
            return  # the entries are the new leader's to keep or overwrite
        last = self._SyncObj__getCurrentLogIndex()
        if last <= self._sent_upto:
            return  # sent already (a proposal that went at once)
        self._sent_upto = last
        self._reserve_journal_space()
        if self._single:
            self._commit_alone()
            return
        # New entries go at once only to the followers needed for a majority
        # (the most caught-up ones), the others get them a few milliseconds
        # later in one append: each append costs a wake-up, a send and a reply
        # on a machine where every process competes for a few cores. A fast
        # follower that stalls falls behind and is replaced at the next send.
        fast = self._fast_followers()
        if fast is None:
            self._SyncObj__sendAppendEntries()
            return
        others = self._SyncObj__otherNodes
        self._SyncObj__otherNodes = fast
        try:
            SyncObj._SyncObj__sendAppendEntries(self)
        finally:
            self._SyncObj__otherNodes = others
        if self._lazy_send is None:
            self._lazy_send = self._glue.loop.call_later(LAZY_SEND_DELAY, self._send_lazy)

    def _fast_followers(self) -> set[Any] | None:
        """The most caught-up connected followers that make a majority with
        the leader, or None when all connected followers are needed. The
        choice is kept for FAST_SET_TTL (it costs a sort on every send)."""
        now = time.monotonic()
        if now < self._fast_until:
            return self._fast_set
        self._fast_set = self._choose_fast_followers()
        self._fast_until = now + FAST_SET_TTL
        return self._fast_set

    def _choose_fast_followers(self) -> set[Any] | None:
        others = self._SyncObj__otherNodes
        need = (len(others) + 1) // 2  # followers that make a majority with us
        connected = [n for n in others if n in self._SyncObj__connectedNodes]
        if len(connected) <= need:
            return None
        match = self._SyncObj__raftMatchIndex
        connected.sort(key=lambda n: (-match.get(n, 0), n.id))
        return set(connected[:need])

    def stop_sending(self) -> None:
        """Last appends before destroy; no timer of ours runs afterwards."""
        self._stopped = True
        for handle in (self._lazy_send, self._commit_notify):
            if handle is not None:
                handle.cancel()
        self._lazy_send = self._commit_notify = None
        if self._isLeader() and not self._single:
            with contextlib.suppress(Exception):
                SyncObj._SyncObj__sendAppendEntries(self)

    def _send_lazy(self) -> None:
        self._lazy_send = None
        if not self._stopped and self._isLeader():
            self._SyncObj__sendAppendEntries()

    def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802 - overrides pysyncobj's
        # The commit hook of the next entry to apply runs first (see
        # ``propose_with``); hooks of entries applied without theirs are dropped.
        hooks = self._commit_hooks
        if hooks:
            nxt = self._SyncObj__raftLastApplied + 1
            got = hooks.pop(nxt, None) if nxt <= self._SyncObj__raftCommitIndex else None
            if got is not None:
                entries = self._SyncObj__getEntries(nxt, 1)
                if entries and entries[0][2] == got[0]:
                    try:
                        got[1]()
                    except Exception:
                        log.exception("commit hook failed index=%d", nxt)
        applied = bool(SyncObj._SyncObj__applyLogEntries(self))
        if hooks:
            last = self._SyncObj__raftLastApplied
            for idx in [i for i in hooks if i <= last]:
                del hooks[idx]
        return applied

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802 - overrides pysyncobj's
        # Every append (heartbeats too) carries the leader's commit index.
        self._commit_sent = self._SyncObj__raftCommitIndex
        SyncObj._SyncObj__sendAppendEntries(self)

    def _notify_commit(self) -> None:
        self._commit_notify = None
        if (
            not self._stopped
            and self._isLeader()
            and self._SyncObj__raftCommitIndex > self._commit_sent
        ):
            self._SyncObj__sendAppendEntries()

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
        self._journal_space.reserve(self._SyncObj__raftLog)

    def _trim_journal_pages(self) -> None:
        trim_journal_pages(self._SyncObj__raftLog)

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


_ORIGINAL_CREATE_POLLER = _pso_syncobj.createPoller
#: pysyncobj's command type byte for a replicated method call.
_REGULAR_COMMAND = 0
_REGULAR_PREFIX = bytes([_REGULAR_COMMAND])
#: pysyncobj's no-op entry (a command type byte alone; apply ignores it).
_NOOP_ENTRY = bytes([1])
