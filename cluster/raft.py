"""Glue between pysyncobj (Raft) and the asyncio side of a node.

pysyncobj's ticks run on the node's event loop (``cluster.raft_io``):
replicated calls, their callbacks, state changes and applies all happen on the
loop thread. Only the ``cluster.raft*`` modules touch pysyncobj's internals;
the pysyncobj node itself is ``cluster.raft_node.RaftNode``. This module offers the event loop three things:

* ``propose(blob, timeout)``: an awaitable that resolves with the apply
  ``Outcome`` once the entry is committed and applied here, or raises
  ``ProposalError`` with a stable text (not leader, leadership lost, timeout).
* ``on_role_change``: called on the loop whenever the Raft role changes.
* ``status()``: role, term, leader, commit and applied indexes for monitoring.

A single server is a one-node group: the same code, no partners.

Settings that matter (``RaftNode``; see PARTS.md): pysyncobj's own entry batching is off
(it adds ~100 ms per commit; we batch publishes ourselves), the pickle protocol
is raised to 5 (bytes travel without a latin-1 round trip), and a leader that
cannot reach a majority steps down after about a second.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON, SyncObjException
from pysyncobj.config import SERIALIZER_STATE

from cluster.fsm import Outcome, StateMachine
from cluster.raft_io import LoopPoller, TickDriver
from cluster.raft_node import RaftNode, RaftSettings
from cluster.raft_storage import SnapshotMixin
from protocol import errors

log = logging.getLogger("stanchion.raft")

ROLE_LEADER = "Leader"
ROLE_FOLLOWER = "Follower"
ROLE_CANDIDATE = "Candidate"
_ROLES = {0: ROLE_FOLLOWER, 1: ROLE_CANDIDATE, 2: ROLE_LEADER}


class ProposalError(Exception):
    """A proposal that did not commit; the text goes to the client."""


class RaftBindError(Exception):
    """The Raft address cannot be listened on (the text says why)."""


#: Seconds between checks for proposals past their deadline.
SWEEP_PERIOD = 0.25

#: Seconds a node keeps trying to listen on its Raft address at startup.
BIND_PATIENCE = 5.0


#: A fail reason of our own: the proposal's deadline passed.
_TIMED_OUT = -1

_FAIL_TEXT = {
    _TIMED_OUT: errors.REPLICATION_TIMEOUT,
    FAIL_REASON.QUEUE_FULL: "raft commands queue is full",
    FAIL_REASON.MISSING_LEADER: errors.NOT_LEADER,
    FAIL_REASON.DISCARDED: errors.LEADERSHIP_LOST,
    FAIL_REASON.NOT_LEADER: errors.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED: errors.LEADERSHIP_LOST,
    FAIL_REASON.REQUEST_DENIED: "raft request denied",
    FAIL_REASON.UNKNOWN_OUTCOME: errors.LEADERSHIP_LOST,
}


class RaftGlue(SnapshotMixin):
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
        self.driver: TickDriver | None = None
        #: ``propose_with`` proposals not answered yet: key -> (deadline, done).
        self._deadlines: dict[int, tuple[float, Callable[[Any, int], None]]] = {}
        self._next_key = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        #: Snapshots carry the store only when it is persistent.
        self.snapshot_store = settings.data_dir is not None
        pso_log = logging.getLogger("pysyncobj")
        if not settings.raft_logging:
            pso_log.setLevel(logging.CRITICAL)
        pso_log.addFilter(_quiet_replays)
        poller = LoopPoller()
        try:
            self.node = self._create_node(settings, fsm, poller)
        except BaseException:
            poller.close()
            raise
        self.driver = TickDriver(
            loop, poller, self.node._onTick, period=settings.heartbeat_period / 2
        )
        self.driver.start()

    def _create_node(
        self, settings: RaftSettings, fsm: StateMachine, poller: LoopPoller
    ) -> RaftNode:
        """Build the pysyncobj node, waiting up to BIND_PATIENCE seconds for its
        Raft address to be free (a node restarted in place may find its
        predecessor still holding it)."""
        deadline = time.monotonic() + BIND_PATIENCE
        while True:
            problem = _bind_problem(settings.self_addr)
            if problem is None:
                try:
                    return RaftNode(settings, fsm, self, poller)
                except SyncObjException as exc:
                    problem = str(exc)
            if time.monotonic() >= deadline:
                raise RaftBindError(
                    f"cannot listen on the Raft address {settings.self_addr}: {problem}"
                )
            time.sleep(0.25)

    def wake(self) -> None:
        """Run a tick soon."""
        if self.driver is not None:
            self.driver.schedule()

    # -- proposals ----------------------------------------------------------------

    def propose(self, blob: bytes, timeout: float = 10.0) -> asyncio.Future[Outcome]:
        """Replicate ``blob``; the future resolves on this loop after local apply."""
        loop = self.loop
        fut: asyncio.Future[Outcome] = loop.create_future()

        def done(result: Any, err: int) -> None:  # in a tick, on the loop
            _settle(fut, result, err)

        self.node.apply_command(blob, callback=done)
        handle = loop.call_later(timeout, _expire, fut)
        fut.add_done_callback(lambda _f: handle.cancel())
        return fut

    def propose_with(
        self,
        blob: bytes,
        on_done: Callable[[Outcome | None, str], None],
        timeout: float = 10.0,
        on_commit: Callable[[], None] | None = None,
        send_now: bool = False,
    ) -> None:
        """Replicate ``blob`` and call ``on_done(outcome, "")`` right where it
        is applied here (inside the tick, on the loop), or ``on_done(None,
        error text)`` once it fails or times out. Exactly one call. Saves the
        loop turn a future needs; ``on_done`` must not raise or block.

        ``on_commit`` (optional) runs once the entry is committed, just before
        it is applied, if it is then the next entry to apply: nothing is
        applied between the two, so it sees the state the entry applies to.
        It may not run (several entries committed at once, leadership lost).

        ``send_now`` sends the entry to the followers before returning, for a
        proposal nothing else will join (otherwise the appends of one loop
        turn go out together, after it)."""
        key = self._next_key
        self._next_key += 1
        deadlines = self._deadlines

        def done(result: Any, err: int) -> None:
            if deadlines.pop(key, None) is None:
                return  # answered already (applied, failed or expired)
            text = "" if err == FAIL_REASON.SUCCESS else _FAIL_TEXT.get(err, f"raft error {err}")
            try:
                on_done(result if not text else None, text)
            except Exception:
                log.exception("proposal callback failed")

        deadlines[key] = (self.loop.time() + timeout, done)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_PERIOD, self._sweep)
        node = self.node
        node._next_hook = on_commit
        node._send_now = send_now
        try:
            node.apply_command(blob, callback=done)
        finally:
            node._next_hook = None
            node._send_now = False

    def _sweep(self) -> None:
        """Fail the ``propose_with`` proposals whose deadline has passed (one
        timer for all of them rather than one per proposal)."""
        self._sweeper = None
        now = self.loop.time()
        for _deadline, done in [d for d in self._deadlines.values() if d[0] <= now]:
            done(None, _TIMED_OUT)
        if self._deadlines:
            self._sweeper = self.loop.call_later(SWEEP_PERIOD, self._sweep)

    # -- state -------------------------------------------------------------------

    def on_state_changed(self, old: int, new: int) -> None:  # in a tick
        role = _ROLES.get(new, ROLE_FOLLOWER)
        self.loop.call_soon(self._on_role_change, role)

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
        """Stop ticking and close the Raft sockets and journal (on the loop).
        A leader first hands the followers what they have not been sent yet
        (entries and commit index), so they apply what it acknowledged."""
        if self.driver is not None:
            self.driver.stop()
        self.node.stop_sending()
        self.node.destroy()
        if self.driver is not None:
            self.driver.poller.close()

    def scratch_dir(self) -> str:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="stanchion-raft-")
        return self._scratch.name


def _bind_problem(addr: str) -> str | None:
    """Why ``addr`` (host:port) cannot be listened on now, or None."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


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
