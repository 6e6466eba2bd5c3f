"""Subscription requests of the leader: subscribe, unsubscribe, close and acks.
A mixin of ``cluster.server.Server``.
"""

from __future__ import annotations

import logging
import time

from nats.aio.msg import Msg

from cluster import commands as c
from cluster.fsm import SubAdded
from cluster.raft import ProposalError
from cluster.server_state import ServerState
from protocol import errors
from protocol.messages import (
    Ack,
    SubscriptionRequest,
    SubscriptionResponse,
    UnsubscribeRequest,
    decode,
)
from protocol.subjects import is_valid_channel
from store.api import SubRecord

log = logging.getLogger("stanchion.server")


class SubscriptionsMixin(ServerState):
    """Subscription requests and acks (see the module text)."""

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

    def handle_ack(self, msg: Msg) -> None:
        """A subscriber's ack (handled as nats-py parses it: must not block)."""
        ack = decode(Ack, msg.data)
        if ack is None:
            return  # ignored, as the reference does
        if self._is_serving:
            self.delivery.on_ack(msg.subject, ack.subject, ack.sequence)


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
