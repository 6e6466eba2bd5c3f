"""Client requests of the leader: connect, ping and close, and the heartbeats
that find dead clients. A mixin of ``cluster.server.Server``.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from cluster import commands as c
from cluster.raft import ProposalError
from cluster.server_state import ServerState
from protocol import errors
from protocol.messages import (
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    Ping,
    PingResponse,
    decode,
)
from protocol.subjects import is_valid_client_id

log = logging.getLogger("stanchion.server")

#: Duplicate client ID probe timeout (s).
DUP_PROBE_TIMEOUT = 0.5
#: Deadline of a replicated proposal (s).
PROPOSAL_TIMEOUT = 10.0


class ClientsMixin(ServerState):
    """Connect, ping, close and heartbeats (see the module text)."""

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
