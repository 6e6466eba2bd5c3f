"""One stanchion node: NATS requests in, replicated commands out, deliveries.

The node always runs Raft (a single server is a one-node group). Only the
leader subscribes to the client subjects; it validates requests, proposes
commands, and answers clients once the commands are committed and applied
here. Followers apply the log and stay silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from cluster import commands as c
from cluster.config import ServerConfig
from cluster.delivery import Delivery
from cluster.fsm import (
    ChannelRemoved,
    ClientRemoved,
    Event,
    Outcome,
    PendingMoved,
    StateMachine,
    SubRemoved,
)
from cluster.import_admin import handler as import_handler
from cluster.import_admin import import_subject
from cluster.nats_direct import subscribe_direct
from cluster.outbox import Outbox
from cluster.raft import (
    ROLE_FOLLOWER,
    ROLE_LEADER,
    ProposalError,
    RaftBindError,
    RaftGlue,
    RaftSettings,
)
from cluster.server_clients import PROPOSAL_TIMEOUT, ClientsMixin
from cluster.server_publish import PublishMixin
from cluster.server_subs import SubscriptionsMixin
from protocol import errors
from protocol.subjects import Subjects
from store import open_store
from store.api import ServerInfo, Store

log = logging.getLogger("stanchion.server")

VERSION = "0.1.0"
#: Reference server version reported to tools that compare it.
REFERENCE_VERSION = "0.25.6"
#: Attempts per NATS URL at startup, 0.25 s apart, before the node gives up
#: and exits (the reference exits at once when it cannot connect; a second
#: and third try ride out a nats-server that is still binding its port).
#: Once connected, the node reconnects forever.
NATS_FIRST_CONNECT_TRIES = 3
#: Seconds one attempt may take to open the connection (TCP, TLS, CONNECT).
NATS_CONNECT_TIMEOUT = 2.0
_SUB_PENDING_MSGS = 4_000_000
_SUB_PENDING_BYTES = 1 << 30


def ack_prefix_for(cluster_id: str) -> str:
    """Subject prefix of the ack inboxes this cluster hands out.

    Ack inboxes are ``<prefix>.<nuid>``, under ``_INBOX.`` like the
    reference's, so NATS permissions written for it still apply. A fixed
    prefix per cluster lets the leader take all acks with one wildcard
    subscription, whoever generated them.
    """
    digest = hashlib.sha256(cluster_id.encode()).hexdigest()[:16]
    return f"_INBOX.STANACK{digest}"


class Server(ClientsMixin, PublishMixin, SubscriptionsMixin):
    """A running node. ``await start()``, then ``await stop()``."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.subjects = Subjects.for_cluster(cfg.cluster_id, cfg.discover_prefix)
        self.ack_prefix = ack_prefix_for(cfg.cluster_id)
        self.server_id = NUID().next().decode()
        self.start_time = time.time()
        self.loop = asyncio.get_running_loop()
        self.nuid = NUID()
        self.role = ROLE_FOLLOWER
        self.ready = asyncio.Event()
        self.store: Store
        self.fsm: StateMachine
        self.raft: RaftGlue
        self.nc: NATS
        self.outbox: Outbox
        self.delivery: Delivery
        self._leader_subs: list[Subscription] = []
        self._extra_ack_subs: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._periodic: list[asyncio.Task[Any]] = []
        self._role_lock = asyncio.Lock()
        self._role_gen = 0
        self._is_serving = False
        self._hb_timers: dict[str, asyncio.TimerHandle] = {}
        self._hb_failed: dict[str, int] = {}
        self._probing: set[str] = set()
        # Publish pipeline (group commit).
        self._pub_queue: list[tuple[str, str, bytes, str, str]] = []
        self._pub_inflight = 0
        self._pub_scheduled = False
        self._flush_requested = False
        self.in_msgs = 0
        self.in_bytes = 0
        self.stopping = False
        #: Called with the seconds from proposing a command to its local
        #: apply (set by the metrics endpoint).
        self.commit_latency_observer: Callable[[float], None] | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        log.info(
            "Starting stanchion[%s] version %s (nats-streaming %s compatible)",
            cfg.cluster_id,
            VERSION,
            REFERENCE_VERSION,
        )
        log.info("ServerID: %s", self.server_id)
        log.info("Recovering the state...")
        path = None if cfg.store == "MEMORY" else os.path.join(cfg.dir, "store")
        if path is not None:
            os.makedirs(cfg.dir, mode=0o700, exist_ok=True)
        # Standalone, each store commit is fsynced (the reference's file_sync).
        # Clustered, durability comes from replication to a majority, and only
        # --cluster_sync fsyncs (the reference's default as well).
        # The Raft journal is synced along with the store and is ahead of it: a
        # commit the store loses in a crash is applied again from the journal.
        sync = cfg.cluster.sync if cfg.cluster.enabled else cfg.store_sync
        self.store = open_store(cfg.store, path, sync=sync, journaled=True)
        self._check_server_info()
        # Operators grep for the reference's store names: LMDB plays FILE.
        log.info("Message store is %s", "MEMORY" if self.store.kind == "MEMORY" else "FILE (LMDB)")
        if path is not None:
            log.info("Store location: %s", cfg.dir)
        self.fsm = StateMachine(self.store, cfg.limits)
        self.nc = await self._connect_nats()
        self.outbox = Outbox(self.nc)
        self.delivery = Delivery(
            self.loop,
            self.store,
            self.outbox.send_now,
            self._request_flush,
            cfg.sent_ack_flush_events,
            # Clustered, a queue member's message is redelivered to that same
            # member (as the reference does); standalone, to the best member.
            same_member_redelivery=cfg.cluster.enabled,
        )
        try:
            self.raft = RaftGlue(self._raft_settings(), self.fsm, self.loop, self._on_role_change)
        except RaftBindError as exc:
            raise StartupError(str(exc)) from None

    def _check_server_info(self) -> None:
        info = self.store.server_info()
        if info is None:
            with self.store.write() as txn:
                txn.put_server_info(
                    ServerInfo(
                        cluster_id=self.cfg.cluster_id,
                        node_id=self.cfg.cluster.node_id,
                        discover_prefix=self.cfg.discover_prefix,
                    )
                )
            log.info("No recovered state")
            return
        if info.cluster_id != self.cfg.cluster_id:
            raise StartupError(errors.cluster_id_mismatch(self.cfg.cluster_id, info.cluster_id))
        log.info("Recovered %d channel(s)", len(self.store.channels()))

    def _raft_settings(self) -> RaftSettings:
        cl = self.cfg.cluster
        if cl.enabled:
            self_addr = cl.peers[cl.node_id]
            partners = [a for n, a in sorted(cl.peers.items()) if n != cl.node_id]
            if not cl.secret:
                log.warning(
                    "the Raft transport is neither authenticated nor encrypted: set "
                    "STANCHION_CLUSTER_SECRET (or cluster { secret }) on every node, or keep "
                    "the Raft addresses on a trusted network"
                )
        else:
            self_addr = f"127.0.0.1:{_free_port()}"
            partners = []
        data_dir = None
        if self.cfg.store != "MEMORY":
            data_dir = cl.log_path or os.path.join(self.cfg.dir, "raft")
        return RaftSettings(
            self_addr=self_addr,
            partners=partners,
            data_dir=data_dir,
            # The journal must never be behind the store: standalone, the
            # store is fsynced per commit, so the journal entry is too (after
            # a power loss a journal missing applied entries would hand their
            # indexes to new commands, which the store would take as done).
            sync=cl.sync if cl.enabled else self.cfg.store_sync,
            password=cl.secret,
            election_min=cl.election_min if cl.enabled else 0.2,
            election_max=cl.election_max if cl.enabled else 0.3,
            heartbeat_period=cl.heartbeat_period,
            leader_fallback=cl.leader_fallback,
            compaction_bytes=cl.compact_bytes,
            raft_logging=cl.raft_logging,
        )

    async def _connect_nats(self) -> NATS:
        """Connect, or raise StartupError after NATS_FIRST_CONNECT_TRIES per URL.

        nats-py applies ``max_reconnect_attempts`` to the first connect too:
        with -1 a wrong password or an absent server would keep the node
        retrying forever instead of failing. The limit is lifted once connected.
        The whole attempt also has a deadline: after a failed TLS handshake
        (a server certificate we do not trust, a client certificate it does not)
        nats-py 2.16 waits forever for the socket to close (nats.py issue 718).
        """
        cfg = self.cfg
        #: Errors while the first connect is under way: the latest that says
        #: why (refused credentials, TLS) is the reason given at exit, rather
        #: than the connection reset that often follows it.
        first_errors: list[Exception] = []
        connecting = True

        async def on_error(exc: Exception) -> None:
            if connecting:
                first_errors.append(exc)
            await self._nats_error(exc)

        opts: dict[str, Any] = {
            "servers": cfg.nats_urls,
            "name": f"_NSS-{cfg.cluster_id}-general",
            "connect_timeout": NATS_CONNECT_TIMEOUT,
            "max_reconnect_attempts": NATS_FIRST_CONNECT_TRIES - 1,
            "reconnect_time_wait": 0.25,
            "allow_reconnect": True,
            "pending_size": 64 * 1024 * 1024,
            "error_cb": on_error,
            "disconnected_cb": self._nats_disconnected,
            "reconnected_cb": self._nats_reconnected,
        }
        if cfg.nats_user:
            opts["user"] = cfg.nats_user
            opts["password"] = cfg.nats_pass
        if cfg.nats_token:
            opts["token"] = cfg.nats_token
        opts.update(cfg.nats_connect_extra)
        deadline = (
            NATS_FIRST_CONNECT_TRIES * len(cfg.nats_urls) * (NATS_CONNECT_TIMEOUT + 0.25) + 2.0
        )
        try:
            nc = await asyncio.wait_for(nats.connect(**opts), deadline)
        except Exception as exc:  # noqa: BLE001 - reported as the startup failure
            telling = [e for e in first_errors if isinstance(e, nats.errors.Error | ssl.SSLError)]
            cause = (telling or first_errors or [exc])[-1]
            urls = ", ".join(redact_url(u) for u in cfg.nats_urls)
            raise StartupError(f"cannot connect to NATS at {urls}: {cause}") from None
        connecting = False
        nc.options["max_reconnect_attempts"] = -1
        return nc

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s", exc)

    async def _nats_disconnected(self) -> None:
        log.warning("disconnected from NATS")

    async def _nats_reconnected(self) -> None:
        url = self.nc.connected_url
        log.info("reconnected to NATS url=%s", redact_url(url.geturl()) if url else "")

    async def stop(self) -> None:
        """Stop taking requests, finish in-flight commits, close everything."""
        if self.stopping:
            return
        self.stopping = True
        log.info("Shutting down.")
        await self._unsubscribe_all()
        deadline = self.loop.time() + 5
        while (self._pub_inflight or self._pub_queue) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._is_serving:
            # Keep the delivery progress of the last moments (cursors, acks):
            # replicate it before leaving, as a failover would not.
            updates = self.delivery.take_updates()
            if updates:
                with contextlib.suppress(ProposalError, asyncio.TimeoutError):
                    await self.raft.propose(c.encode(c.SentAck(updates)), timeout=2)
        self._stop_leader_work()
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.outbox.drain()
            if self.nc.is_connected:
                await asyncio.wait_for(self.nc.drain(), 2)
            else:  # (nats-server gone too, as when both are stopped at once)
                await self.nc.close()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        self.raft.destroy()
        await asyncio.sleep(0.1)
        self.store.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed: %r", task.exception(), exc_info=task.exception())

    # -- leadership --------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role == ROLE_LEADER and self._is_serving

    def _on_role_change(self, role: str) -> None:
        if self.stopping:
            return
        self.role = role
        self._role_gen += 1
        self._spawn(self._follow_role(self._role_gen))

    async def _follow_role(self, gen: int) -> None:
        async with self._role_lock:
            if gen != self._role_gen:
                return
            if self.role == ROLE_LEADER and not self._is_serving:
                await self.on_leadership_acquired(gen)
            elif self.role != ROLE_LEADER and self._is_serving:
                await self.on_leadership_lost()

    async def on_leadership_acquired(self, gen: int) -> None:
        clustered = self.cfg.cluster.enabled
        if clustered:
            log.info("server became leader, performing leader promotion actions")
        # Barrier: once our no-op is applied, every earlier entry is too.
        while True:
            if gen != self._role_gen or self.stopping:
                return
            try:
                await self.raft.propose(c.encode(c.Noop(self.server_id)), timeout=5)
                break
            except ProposalError as exc:
                log.warning("leader barrier failed, retrying: %s", exc)
                await asyncio.sleep(0.1)
        if gen != self._role_gen:
            return
        clients = self.store.clients()
        views = []
        for name in list(self.store.channels()):
            for rec in list(self.store.subs(name).values()):
                if rec.is_closed or rec.client_id not in clients:
                    continue
                views.append(
                    self.delivery.add(rec, self.store.pending(name, rec.sub_id), startup=True)
                )
        for client_id in list(clients):
            self._start_hb(client_id)
        await self._subscribe_leader_subjects()
        for view in views:
            if not view.ack_inbox.startswith(self.ack_prefix + "."):
                await self._subscribe_ack_inbox(view.ack_inbox)
        await self.nc.flush()
        self._is_serving = True
        for view in views:
            self.delivery.start(view)
        self._periodic = [
            asyncio.ensure_future(self._flush_loop()),
            asyncio.ensure_future(self._channel_timers_loop()),
        ]
        if clustered:
            log.info("finished leader promotion actions")
        log.info("Streaming Server is ready")
        self.ready.set()

    async def on_leadership_lost(self) -> None:
        if self.cfg.cluster.enabled:
            log.info("server lost leadership, performing leader stepdown actions")
        self._is_serving = False
        await self._unsubscribe_all()
        self._stop_leader_work()
        if self.cfg.cluster.enabled:
            log.info("finished leader stepdown actions")

    def _stop_leader_work(self) -> None:
        self._is_serving = False
        for handle in self._hb_timers.values():
            handle.cancel()
        self._hb_timers.clear()
        self._hb_failed.clear()
        self.delivery.clear()
        for task in self._periodic:
            task.cancel()
        self._periodic = []
        queued, self._pub_queue = self._pub_queue, []
        for _ch, _reply, _data, guid, ack_subject in queued:
            self._pub_ack(ack_subject, guid, errors.NOT_LEADER)

    async def _subscribe_leader_subjects(self) -> None:
        s = self.subjects
        sub = self.nc.subscribe
        limits = {
            "pending_msgs_limit": _SUB_PENDING_MSGS,
            "pending_bytes_limit": _SUB_PENDING_BYTES,
        }
        self._leader_subs = [
            await sub(s.discover, cb=self._spawner(self.handle_connect), **limits),
            await sub(s.pings, cb=self.handle_ping, **limits),
            await subscribe_direct(self.nc, s.pub_wildcard, self.handle_publish),
            await sub(s.sub, cb=self._spawner(self.handle_subscribe), **limits),
            await sub(s.unsub, cb=self._spawner(self.handle_unsubscribe), **limits),
            await sub(s.subclose, cb=self._spawner(self.handle_subclose), **limits),
            await sub(s.close, cb=self._spawner(self.handle_close), **limits),
            await subscribe_direct(self.nc, self.ack_prefix + ".*", self.handle_ack),
            await sub(import_subject(self.cfg.cluster_id), cb=import_handler(self), **limits),
        ]

    async def _subscribe_ack_inbox(self, ack_inbox: str) -> None:
        if ack_inbox not in self._extra_ack_subs:
            self._extra_ack_subs[ack_inbox] = await subscribe_direct(
                self.nc, ack_inbox, self.handle_ack
            )

    async def _unsubscribe_all(self) -> None:
        subs = self._leader_subs + list(self._extra_ack_subs.values())
        self._leader_subs = []
        self._extra_ack_subs = {}
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection may be gone
                pass

    def _spawner(
        self, handler: Callable[[Msg], Awaitable[None]]
    ) -> Callable[[Msg], Awaitable[None]]:
        """Run each request of a subject in its own task, so a slow one
        (a duplicate-client probe, a commit) does not hold up the next."""

        async def cb(msg: Msg) -> None:
            self._spawn(handler(msg))

        return cb

    # -- proposals ------------------------------------------------------------------------

    async def _propose(self, cmd: c.Command) -> Outcome:
        start = self.loop.time()
        out = await self.raft.propose(c.encode(cmd), timeout=PROPOSAL_TIMEOUT)
        if self.commit_latency_observer is not None:
            self.commit_latency_observer(self.loop.time() - start)
        return out

    def _apply_events(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, SubRemoved):
                view = self.delivery.remove(ev.channel, ev.sub_id)
                if view is not None:
                    extra = self._extra_ack_subs.pop(view.ack_inbox, None)
                    if extra is not None:
                        self._spawn(extra.unsubscribe())
            elif isinstance(ev, PendingMoved):
                self.delivery.pending_moved(ev.channel, ev.sub_id, ev.seqs)
            elif isinstance(ev, ClientRemoved):
                self._stop_hb(ev.client_id)
            elif isinstance(ev, ChannelRemoved):
                self.delivery.remove_channel(ev.channel)

    def _flush_delivery_state(self, views: list[Any] | None = None) -> None:
        """Propose the unreplicated sends/acks (all, or of ``views``) now.

        Proposals from this loop are appended to the log in call order, so a
        command proposed right after this sees the flushed state on every node.
        """
        updates = self.delivery.take_updates(views)
        if updates:
            fut = self.raft.propose(c.encode(c.SentAck(updates)), timeout=PROPOSAL_TIMEOUT)
            fut.add_done_callback(_ignore_failure)

    def _request_flush(self) -> None:
        if not self._flush_requested:
            self._flush_requested = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_requested = False
        if self.is_leader:
            self._flush_delivery_state()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sent_ack_flush_interval)
            if self.is_leader:
                self._flush_delivery_state()

    async def _channel_timers_loop(self) -> None:
        """Max-age expiry and inactivity deletion, checked every second."""
        while True:
            await asyncio.sleep(1.0)
            if not self.is_leader:
                continue
            now = time.time_ns()
            expire: list[str] = []
            for name, rec in list(self.store.channels().items()):
                lim = rec.limits
                if lim.max_age > 0 and rec.msgs > 0:
                    first = self.store.get_msg(name, rec.first_seq)
                    if first is not None and now - first.timestamp >= lim.max_age:
                        expire.append(name)
                if (
                    lim.max_inactivity > 0
                    and name not in self.delivery.channels
                    and now - rec.last_activity >= lim.max_inactivity
                ):
                    try:
                        out = await self._propose(c.DeleteChannel(name, rec.channel_id))
                        self._apply_events(out.events)
                    except ProposalError as exc:
                        log.warning("channel delete failed channel=%s err=%s", name, exc)
            if expire:
                try:
                    await self._propose(c.Expire(now, expire))
                except ProposalError as exc:
                    log.warning("expiry failed err=%s", exc)

    # -- helpers --------------------------------------------------------------------------------

    def _reply(self, msg: Msg, resp: Any) -> None:
        if msg.reply:
            self.outbox.send(msg.reply, resp.SerializeToString())


class StartupError(Exception):
    """A configuration or state problem that stops the node at startup."""


def _ignore_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("delivery state flush failed: %s", fut.exception())


def redact_url(url: str) -> str:
    """``url`` without the password or token it may carry (``nats://u:p@h`` -> ``nats://u:***@h``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _secret = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}@{host}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
