"""Publishes on the leader: group commit (many publishes per replicated entry,
a few entries in flight) and the PubAcks. A mixin of ``cluster.server.Server``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nats.aio.msg import Msg

from cluster import commands as c
from cluster.fsm import Outcome, PublishResult
from cluster.server_clients import PROPOSAL_TIMEOUT
from cluster.server_state import ServerState
from protocol import errors
from protocol.messages import CtrlMsg, PubMsg, decode, encode_pub_ack
from protocol.subjects import is_valid_channel

log = logging.getLogger("stanchion.server")

#: Payload bytes in one replicated publish entry (a larger message goes alone).
MAX_BATCH_BYTES = 256 * 1024
#: Free disk (bytes) below which publishes are acknowledged only once stored.
ACK_AT_COMMIT_MIN_FREE = 64 * 1024 * 1024


class PublishMixin(ServerState):
    """Publish intake, batching and acknowledgement (see the module text)."""

    # -- publish (group commit) ---------------------------------------------------------------

    def handle_publish(self, msg: Msg) -> None:
        """A publish (handled as nats-py parses it: must not block)."""
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
            self._propose_publishes(now=True)
        elif self._pub_inflight < self.cfg.max_pub_proposals:
            self._pub_scheduled = True
            self.loop.call_soon(self._propose_publishes)

    def _propose_publishes(self, now: bool = False) -> None:
        """Replicate the queued publishes, in batches, as far as the proposals
        in flight allow; ``now``: send them to the followers right away."""
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
            acked = [False]
            self.raft.propose_with(
                blob,
                lambda out, err, b=batch, t=start, a=acked: self._publish_done(b, out, err, t, a),
                timeout=PROPOSAL_TIMEOUT,
                on_commit=lambda b=batch, a=acked: self._ack_committed(b, a),
                send_now=now,
            )

    def _ack_committed(
        self, batch: list[tuple[str, str, bytes, str, str]], acked: list[bool]
    ) -> None:
        """The batch is committed (on a majority; standalone, in the synced
        journal) and is the next entry to apply. When its outcome is already
        certain, acknowledge it now rather than after the store write: storing
        into a channel that exists cannot be refused (limits drop old
        messages), so with every channel present and the store writable each
        publish of the batch succeeds; a write that fails anyway (the disk
        filled meanwhile) is retried from the log until it succeeds; with little
        disk left, the batch is answered after its write as usual. The ack
        leaves in the same tick as the write, before anything else is served."""
        if self.fsm.storage_error or not self._is_serving:
            return
        free = self.store.free_disk()
        if free is not None and free < ACK_AT_COMMIT_MIN_FREE:
            return  # a write could fail for space: answer after it instead
        channels = self.store.channels()
        for item in batch:
            if item[0] not in channels:
                return  # creating a channel may be refused (max_channels)
        acked[0] = True
        send = self.outbox.send_now  # the first directly, the rest queued behind it
        for _ch, _reply, _data, guid, ack_subject in batch:
            if ack_subject:
                send(ack_subject, encode_pub_ack(guid, ""))

    def _publish_done(
        self,
        batch: list[tuple[str, str, bytes, str, str]],
        out: Outcome | None,
        failure: str,
        started: float,
        acked: list[bool],
    ) -> None:
        """Answer a batch of publishes. Called where the batch is applied (in
        a Raft tick) or when its proposal failed."""
        self._pub_inflight -= 1
        if self.commit_latency_observer is not None:
            self.commit_latency_observer(self.loop.time() - started)
        if acked[0] and (out is None or out.error or len(out.value or []) != len(batch)):
            # Acknowledged at commit: the entry is in the log of a majority
            # and the store takes it when it can write again.
            log.warning(
                "a committed publish batch is not stored yet (%s); it is applied again "
                "from the Raft log",
                failure or (out.error if out is not None else ""),
            )
            return
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
                if not acked[0]:
                    for res, item in zip(results, batch, strict=True):
                        self._pub_ack(item[4], item[3], res.error)
        if self._pub_queue and not self._pub_scheduled:
            self._pub_scheduled = True
            self.loop.call_soon(self._propose_publishes)

    def _pub_ack(self, subject: str, guid: str, error: str = "") -> None:
        if subject:
            self.outbox.send_now(subject, encode_pub_ack(guid, error))
