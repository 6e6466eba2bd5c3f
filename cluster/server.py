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
    PublishResult,
    StateMachine,
    SubAdded,
    SubRemoved,
)
from cluster.import_admin import handler as import_handler
from cluster.import_admin import import_subject
from cluster.outbox import Outbox
from cluster.raft import (
    ROLE_FOLLOWER,
    ROLE_LEADER,
    ProposalError,
    RaftBindError,
    RaftGlue,
    RaftSettings,
)
from protocol import errors
from protocol.messages import (
    Ack,
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    CtrlMsg,
    Ping,
    PingResponse,
    PubMsg,
    SubscriptionRequest,
    SubscriptionResponse,
    UnsubscribeRequest,
    decode,
    encode_pub_ack,
)
from protocol.subjects import Subjects, is_valid_channel, is_valid_client_id
from store import open_store
from store.api import ServerInfo, Store, SubRecord

log = logging.getLogger("stanchion.server")

VERSION = "0.1.0"
#: Reference server version reported to tools that compare it.
REFERENCE_VERSION = "0.25.6"
#: Duplicate client ID probe timeout (s).
DUP_PROBE_TIMEOUT = 0.5
#: Attempts per NATS URL at startup, 0.25 s apart, before the node gives up
#: and exits (the reference exits at once when it cannot connect; a second
#: and third try ride out a nats-server that is still binding its port).
#: Once connected, the node reconnects forever.
NATS_FIRST_CONNECT_TRIES = 3
#: Seconds one attempt may take to open the connection (TCP, TLS, CONNECT).
NATS_CONNECT_TIMEOUT = 2.0
#: Deadline of a replicated proposal (s).
PROPOSAL_TIMEOUT = 10.0
#: Payload bytes in one replicated publish entry (a larger message goes alone).
MAX_BATCH_BYTES = 256 * 1024
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


class Server:
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
        sync = cfg.cluster.sync if cfg.cluster.enabled else cfg.store_sync
        self.store = open_store(cfg.store, path, sync=sync)
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
            self.outbox.send,
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
            await asyncio.wait_for(self.nc.drain(), 2)
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
            await sub(s.pub_wildcard, cb=self.handle_publish, **limits),
            await sub(s.sub, cb=self._spawner(self.handle_subscribe), **limits),
            await sub(s.unsub, cb=self._spawner(self.handle_unsubscribe), **limits),
            await sub(s.subclose, cb=self._spawner(self.handle_subclose), **limits),
            await sub(s.close, cb=self._spawner(self.handle_close), **limits),
            await sub(self.ack_prefix + ".*", cb=self.handle_ack, **limits),
            await sub(import_subject(self.cfg.cluster_id), cb=import_handler(self), **limits),
        ]

    async def _subscribe_ack_inbox(self, ack_inbox: str) -> None:
        if ack_inbox not in self._extra_ack_subs:
            self._extra_ack_subs[ack_inbox] = await self.nc.subscribe(
                ack_inbox, cb=self.handle_ack, pending_msgs_limit=_SUB_PENDING_MSGS
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

    # -- connect / ping / close ---------------------------------------------------------------

    async def handle_connect(self, msg: Msg) -> None:
        if not msg.reply:
            return
        req = decode(ConnectRequest, msg.data)
        if req is None or not req.heartbeatInbox:
            return self._reply(msg, ConnectResponse(error=errors.INVALID_CONN_REQ))
        if not is_valid_client_id(req.clientID):
            return self._reply(msg, ConnectResponse(error=errors.INVALID_CLIENT_ID))
        if self.fsm.storage_error:
            return self._reply(msg, ConnectResponse(error=self.fsm.storage_error))
        refresh = False
        old = self.store.clients().get(req.clientID)
        if old is not None:
            if req.clientID in self._probing:
                return self._reply(msg, ConnectResponse(error=errors.CLIENT_ID_REGISTERED))
            self._probing.add(req.clientID)
            try:
                alive = await self._probe(old.hb_inbox, DUP_PROBE_TIMEOUT)
            finally:
                self._probing.discard(req.clientID)
            if alive:
                return self._reply(msg, ConnectResponse(error=errors.CLIENT_ID_REGISTERED))
            refresh = True
            log.debug("[Client:%s] replacing a client that did not answer", req.clientID)
            self._flush_delivery_state(self.delivery.views_of_client(req.clientID))
        cmd = c.Connect(
            client_id=req.clientID,
            hb_inbox=req.heartbeatInbox,
            conn_id=bytes(req.connID),
            protocol=req.protocol,
            ping_interval=req.pingInterval,
            ping_max_out=req.pingMaxOut,
            refresh=refresh,
        )
        try:
            out = await self._propose(cmd)
        except ProposalError as exc:
            return self._reply(msg, ConnectResponse(error=str(exc)))
        self._apply_events(out.events)
        if out.error:
            return self._reply(msg, ConnectResponse(error=out.error))
        self._start_hb(req.clientID)
        s = self.subjects
        resp = ConnectResponse(
            pubPrefix=s.pub_prefix,
            subRequests=s.sub,
            unsubRequests=s.unsub,
            closeRequests=s.close,
            subCloseRequests=s.subclose,
            protocol=1,
        )
        if req.protocol >= 1:
            resp.pingRequests = s.pings
            resp.pingInterval = req.pingInterval
            resp.pingMaxOut = req.pingMaxOut
        log.debug("[Client:%s] Connected (Inbox=%s)", req.clientID, req.heartbeatInbox)
        self._reply(msg, resp)

    async def handle_ping(self, msg: Msg) -> None:
        if not msg.reply or not msg.data:
            return
        ping = decode(Ping, msg.data)
        if ping is None:
            return
        client = self.store.client_by_conn_id(bytes(ping.connID))
        if client is None:
            self.outbox.send(
                msg.reply, PingResponse(error=errors.CLIENT_REPLACED).SerializeToString()
            )
            return
        self.outbox.send(msg.reply, b"")
        if self._hb_failed.get(client.client_id):
            self._start_hb(client.client_id, delay=0.001)

    async def handle_close(self, msg: Msg) -> None:
        req = decode(CloseRequest, msg.data)
        if req is None:
            return self._reply(msg, CloseResponse(error=errors.INVALID_CLOSE_REQ))
        if req.clientID not in self.store.clients():
            return self._reply(msg, CloseResponse(error=errors.UNKNOWN_CLIENT))
        err = await self._close_client(req.clientID)
        self._reply(msg, CloseResponse(error=err))

    async def _close_client(self, client_id: str) -> str:
        self._flush_delivery_state(self.delivery.views_of_client(client_id))
        try:
            out = await self._propose(c.Disconnect(client_id))
        except ProposalError as exc:
            return str(exc)
        self._apply_events(out.events)
        log.debug("[Client:%s] Closed", client_id)
        return out.error

    # -- heartbeats ------------------------------------------------------------------------------

    def _start_hb(self, client_id: str, delay: float | None = None) -> None:
        self._stop_hb(client_id, keep_count=True)
        wait = self.cfg.hb_interval / 1e9 if delay is None else delay
        self._hb_timers[client_id] = self.loop.call_later(wait, self._hb_fire, client_id)

    def _stop_hb(self, client_id: str, keep_count: bool = False) -> None:
        handle = self._hb_timers.pop(client_id, None)
        if handle is not None:
            handle.cancel()
        if not keep_count:
            self._hb_failed.pop(client_id, None)
            self.delivery.failed_clients.discard(client_id)

    def _hb_fire(self, client_id: str) -> None:
        self._hb_timers.pop(client_id, None)
        self._spawn(self._hb_check(client_id))

    async def _hb_check(self, client_id: str) -> None:
        client = self.store.clients().get(client_id)
        if client is None or not self.is_leader:
            return
        alive = await self._probe(client.hb_inbox, self.cfg.hb_timeout / 1e9)
        if not self.is_leader or self.store.clients().get(client_id) is not client:
            return
        if alive:
            if self._hb_failed.pop(client_id, 0):
                self.delivery.failed_clients.discard(client_id)
            self._start_hb(client_id)
            return
        failed = self._hb_failed.get(client_id, 0) + 1
        self._hb_failed[client_id] = failed
        self.delivery.failed_clients.add(client_id)
        if failed > self.cfg.hb_fail_count:
            log.info("[Client:%s] Timed out on heartbeats", client_id)
            await self._close_client(client_id)
            return
        self._start_hb(client_id)

    async def _probe(self, inbox: str, timeout: float) -> bool:
        """An empty request to a client inbox; any reply means alive."""
        try:
            await self.nc.request(inbox, b"", timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - timeout, no responders, connection trouble
            return False

    # -- publish (group commit) ---------------------------------------------------------------

    async def handle_publish(self, msg: Msg) -> None:
        pm = decode(PubMsg, msg.data)
        if pm is None:
            # A control message of the reference's servers is ignored silently.
            if decode(CtrlMsg, msg.data) is None:
                self._pub_ack(msg.reply, "", errors.INVALID_PUB_REQ)
            return
        self.in_msgs += 1
        self.in_bytes += len(pm.data)
        guid = pm.guid
        channel = pm.subject
        if not guid or not is_valid_channel(channel):
            return self._pub_ack(msg.reply, guid, errors.INVALID_PUB_REQ)
        if pm.connID:
            known = self.store.client_by_conn_id(pm.connID) is not None
        else:
            known = pm.clientID in self.store.clients()
        if not known:
            return self._pub_ack(msg.reply, guid, errors.INVALID_PUB_REQ)
        if self.fsm.storage_error:
            # The store cannot write now (disk full): say so at once instead
            # of letting the publish wait for a commit that cannot be applied.
            return self._pub_ack(msg.reply, guid, self.fsm.storage_error)
        self._pub_queue.append((channel, pm.reply, pm.data, guid, msg.reply))
        if self._pub_scheduled:
            return
        if self._pub_inflight == 0:
            # Nothing in flight: replicate at once (lowest latency). Otherwise
            # gather what arrives until this loop turn ends (group commit).
            self._propose_publishes()
        elif self._pub_inflight < self.cfg.max_pub_proposals:
            self._pub_scheduled = True
            self.loop.call_soon(self._propose_publishes)

    def _propose_publishes(self) -> None:
        self._pub_scheduled = False
        if not self.is_leader:
            queued, self._pub_queue = self._pub_queue, []
            for _ch, _reply, _data, guid, ack_subject in queued:
                self._pub_ack(ack_subject, guid, errors.NOT_LEADER)
            return
        size = self.cfg.io_batch_size
        queue = self._pub_queue
        while queue and self._pub_inflight < self.cfg.max_pub_proposals:
            # At most io_batch_size messages and about MAX_BATCH_BYTES per
            # entry (a larger single message goes alone).
            count = 0
            total = 0
            for item in queue[:size]:
                total += len(item[2])
                if count and total > MAX_BATCH_BYTES:
                    break
                count += 1
            batch = queue[:count]
            del queue[:count]
            blob = c.encode_publish(time.time_ns(), [(m[0], m[1], m[2]) for m in batch])
            self._pub_inflight += 1
            start = self.loop.time()
            self.raft.propose_with(
                blob,
                lambda out, err, b=batch, t=start: self._publish_done(b, out, err, t),
                timeout=PROPOSAL_TIMEOUT,
            )

    def _publish_done(
        self,
        batch: list[tuple[str, str, bytes, str, str]],
        out: Outcome | None,
        failure: str,
        started: float,
    ) -> None:
        """Answer a batch of publishes. Called where the batch is applied (in
        a Raft tick) or when its proposal failed."""
        self._pub_inflight -= 1
        if self.commit_latency_observer is not None:
            self.commit_latency_observer(self.loop.time() - started)
        if out is None:
            for _ch, _reply, _data, guid, ack_subject in batch:
                self._pub_ack(ack_subject, guid, failure)
        else:
            results: list[PublishResult] = out.value or []
            if out.error or len(results) != len(batch):
                for _ch, _reply, _data, guid, ack_subject in batch:
                    self._pub_ack(ack_subject, guid, out.error or "store error")
            else:
                per_channel: dict[str, list[Any]] = {}
                for res in results:
                    if res.msg is not None:
                        per_channel.setdefault(res.channel, []).append(res.msg)
                if self._is_serving:
                    for channel, msgs in per_channel.items():
                        self.delivery.on_stored(channel, msgs)
                for res, item in zip(results, batch, strict=True):
                    self._pub_ack(item[4], item[3], res.error)
        if self._pub_queue and not self._pub_scheduled:
            self._pub_scheduled = True
            self.loop.call_soon(self._propose_publishes)

    def _pub_ack(self, subject: str, guid: str, error: str = "") -> None:
        if subject:
            self.outbox.send(subject, encode_pub_ack(guid, error))

    # -- subscriptions ---------------------------------------------------------------------------

    async def handle_subscribe(self, msg: Msg) -> None:
        req = decode(SubscriptionRequest, msg.data)
        if req is None:
            return self._reply(msg, SubscriptionResponse(error=errors.INVALID_SUB_REQ))
        err = _check_sub_request(req)
        if err:
            return self._reply(msg, SubscriptionResponse(error=err))
        if req.clientID not in self.store.clients():
            return self._reply(msg, SubscriptionResponse(error=errors.UNKNOWN_CLIENT))
        if self.fsm.storage_error:
            return self._reply(msg, SubscriptionResponse(error=self.fsm.storage_error))
        cmd = c.Subscribe(
            client_id=req.clientID,
            channel=req.subject,
            qgroup=req.qGroup,
            inbox=req.inbox,
            max_inflight=req.maxInFlight,
            ack_wait=req.ackWaitInSecs,
            durable_name=req.durableName,
            start_position=int(req.startPosition),
            start_sequence=req.startSequence,
            start_time_delta=req.startTimeDelta,
            ack_inbox=f"{self.ack_prefix}.{self.nuid.next().decode()}",
            now=time.time_ns(),
            replace_durable=self.cfg.replace_durable,
        )
        if cmd.replace_durable and cmd.durable_name and not cmd.qgroup:
            self._flush_delivery_state()
        try:
            out = await self._propose(cmd)
        except ProposalError as exc:
            return self._reply(msg, SubscriptionResponse(error=str(exc)))
        self._apply_events([e for e in out.events if not isinstance(e, SubAdded)])
        if out.error:
            return self._reply(msg, SubscriptionResponse(error=out.error))
        rec: SubRecord = out.value
        view = self.delivery.add(rec, self.store.pending(rec.channel, rec.sub_id), startup=False)
        self._reply(msg, SubscriptionResponse(ackInbox=rec.ack_inbox))
        log.debug(
            "[Client:%s] Started new subscription channel=%s sub_id=%d inbox=%s",
            rec.client_id,
            rec.channel,
            rec.sub_id,
            rec.inbox,
        )
        self.delivery.start(view)

    async def handle_unsubscribe(self, msg: Msg) -> None:
        await self._unsub_or_close(msg, close=False)

    async def handle_subclose(self, msg: Msg) -> None:
        await self._unsub_or_close(msg, close=True)

    async def _unsub_or_close(self, msg: Msg, *, close: bool) -> None:
        req = decode(UnsubscribeRequest, msg.data)
        if req is None:
            return self._reply(msg, SubscriptionResponse(error=errors.INVALID_UNSUB_REQ))
        view = self.delivery.by_ack_inbox.get(req.inbox)
        if view is None:
            ch = self.delivery.channels.get(req.subject)
            if ch is not None:
                members = list(ch.subs) + [m for g in ch.groups.values() for m in g.members]
                view = next((v for v in members if v.inbox == req.inbox), None)
        if view is not None:
            self._flush_delivery_state([view])
        cls = c.CloseSub if close else c.Unsubscribe
        try:
            out = await self._propose(cls(req.clientID, req.subject, req.inbox))
        except ProposalError as exc:
            return self._reply(msg, SubscriptionResponse(error=str(exc)))
        self._apply_events(out.events)
        self._reply(msg, SubscriptionResponse(error=out.error))

    async def handle_ack(self, msg: Msg) -> None:
        ack = decode(Ack, msg.data)
        if ack is None:
            return  # ignored, as the reference does
        if self._is_serving:
            self.delivery.on_ack(msg.subject, ack.subject, ack.sequence)

    # -- helpers --------------------------------------------------------------------------------

    def _reply(self, msg: Msg, resp: Any) -> None:
        if msg.reply:
            self.outbox.send(msg.reply, resp.SerializeToString())


class StartupError(Exception):
    """A configuration or state problem that stops the node at startup."""


def _check_sub_request(req: SubscriptionRequest) -> str:
    """Stateless checks of a subscription request, in the reference's order."""
    if not req.clientID:
        return errors.MISSING_CLIENT_ID
    if req.ackWaitInSecs <= 0:
        return errors.INVALID_ACK_WAIT
    if req.maxInFlight <= 0:
        return errors.INVALID_MAX_INFLIGHT
    if not 0 <= int(req.startPosition) <= 4:
        return errors.INVALID_START_POSITION
    if not is_valid_channel(req.subject):
        return errors.INVALID_SUBJECT
    return ""


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
