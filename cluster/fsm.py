"""The replicated state machine: applies commands to the store.

Every node applies the same committed commands in the same order, and each
``apply_<op>`` is deterministic: it reads only the command, the store and the
node's configured limits (which every node of a cluster must share). Apply is
idempotent through the applied index kept in the store: an entry at or below it
was applied before (journal replay after a restart) and is skipped.

Apply returns a result for the proposer (only the leader proposes) together
with a list of events that tell the leader's delivery engine what changed in
the subscription structure (added, removed, pending moved). Followers drop
both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster import commands as c
from protocol import errors
from protocol.messages import FIRST, LAST_RECEIVED, NEW_ONLY, SEQUENCE_START, TIME_DELTA_START
from store.api import (
    ChannelRecord,
    ClientRecord,
    StorageError,
    Store,
    StoredMsg,
    StoreError,
    SubRecord,
    WriteTxn,
)
from store.limits import StoreLimits

log = logging.getLogger("stanchion.fsm")


# ---------------------------------------------------------------------------
# Events for the leader's engine
# ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SubAdded:
    """A subscription became active (new, resumed durable, shadow taken over)."""

    channel: str
    sub_id: int


@dataclass(slots=True, frozen=True)
class SubRemoved:
    """A subscription stopped being active (deleted, or closed and kept offline)."""

    channel: str
    sub_id: int


@dataclass(slots=True, frozen=True)
class PendingMoved:
    """Pending sequences handed to a remaining queue member."""

    channel: str
    sub_id: int
    seqs: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class ClientRemoved:
    client_id: str


@dataclass(slots=True, frozen=True)
class ChannelRemoved:
    channel: str


Event = SubAdded | SubRemoved | PendingMoved | ClientRemoved | ChannelRemoved


@dataclass(slots=True)
class Outcome:
    """What apply hands back to the proposer."""

    #: Error text for the client, empty on success.
    error: str = ""
    #: Command-specific value (e.g. the stored messages of a publish).
    value: Any = None
    events: list[Event] = field(default_factory=list)


#: Result for an entry that was applied before (journal replay).
SKIPPED = Outcome(error="", value=None)


@dataclass(slots=True)
class PublishResult:
    """Per message of a Publish command, in order: the stored message or an error."""

    channel: str
    msg: StoredMsg | None
    error: str = ""


class StateMachine:
    """Applies commands to a store. Runs in Raft ticks, on the event loop."""

    def __init__(self, store: Store, limits: StoreLimits) -> None:
        self.store = store
        self.limits = limits
        #: Set while the store cannot write (disk or map full); the leader
        #: refuses new work meanwhile.
        self.storage_error = ""
        self._handlers: dict[type[c.Command], Callable[[WriteTxn, Any, int], Outcome]] = {
            c.Noop: self.apply_noop,
            c.Connect: self.apply_connect,
            c.Disconnect: self.apply_disconnect,
            c.Publish: self.apply_publish,
            c.Subscribe: self.apply_subscribe,
            c.Unsubscribe: self.apply_unsubscribe,
            c.CloseSub: self.apply_close_sub,
            c.SentAck: self.apply_sent_ack,
            c.DeleteChannel: self.apply_delete_channel,
            c.Expire: self.apply_expire,
        }
        from cluster import fsm_import  # imports this module: bound late

        self._handlers.update(fsm_import.handlers(self))

    # -- entry point -----------------------------------------------------------

    def apply(self, index: int, blob: bytes) -> Outcome:
        """Apply the entry at Raft ``index`` unless it was applied already."""
        if index <= self.store.applied_index():
            return SKIPPED
        try:
            cmd = c.decode(blob)
        except c.CommandError as exc:
            log.error("skipping undecodable entry index=%d err=%s", index, exc)
            with self.store.write() as txn:
                txn.set_applied_index(index)
            return Outcome(error=str(exc))
        handler = self._handlers[type(cmd)]
        try:
            with self.store.write() as txn:
                out = handler(txn, cmd, index)
                txn.set_applied_index(index)
            if self.storage_error:
                log.warning("store writes work again after: %s", self.storage_error)
                self.storage_error = ""
            return out
        except StorageError as exc:
            # Out of space or an I/O error: nothing was kept. Skipping the
            # entry would leave this node different from the others, so the
            # entry is applied again on the next Raft tick (the exception goes
            # up to pysyncobj, which retries), until space returns.
            if not self.storage_error:
                log.error("cannot write the store, will retry index=%d: %s", index, exc)
            self.storage_error = str(exc)
            raise
        except Exception as exc:
            # A committed entry that cannot be applied is a bug or a storage
            # failure. The store rolled back; record the index so that replay
            # does not loop, and tell the proposer.
            log.exception("failed to apply entry index=%d op=%s", index, cmd.op.name)
            with self.store.write() as txn:
                txn.set_applied_index(index)
            return Outcome(error=f"store error: {exc}")

    # -- clients -----------------------------------------------------------------

    def apply_noop(self, txn: WriteTxn, cmd: c.Noop, index: int) -> Outcome:
        return Outcome(value=cmd.token)

    def apply_connect(self, txn: WriteTxn, cmd: c.Connect, index: int) -> Outcome:
        out = Outcome()
        if cmd.client_id in self.store.clients():
            if not cmd.refresh:
                out.error = errors.CLIENT_ID_REGISTERED
                return out
            self._close_client(txn, cmd.client_id, out)
        txn.put_client(
            ClientRecord(
                client_id=cmd.client_id,
                hb_inbox=cmd.hb_inbox,
                conn_id=cmd.conn_id,
                protocol=cmd.protocol,
                ping_interval=cmd.ping_interval,
                ping_max_out=cmd.ping_max_out,
            )
        )
        return out

    def apply_disconnect(self, txn: WriteTxn, cmd: c.Disconnect, index: int) -> Outcome:
        out = Outcome()
        if cmd.client_id not in self.store.clients():
            out.error = errors.UNKNOWN_CLIENT
            return out
        self._close_client(txn, cmd.client_id, out)
        return out

    def _close_client(self, txn: WriteTxn, client_id: str, out: Outcome) -> None:
        """Unregister a client and close its subscriptions (SEMANTICS §2.5)."""
        txn.delete_client(client_id)
        out.events.append(ClientRemoved(client_id))
        for name in list(self.store.channels()):
            owned = [
                s
                for s in self.store.subs(name).values()
                if s.client_id == client_id and not s.is_closed
            ]
            for sub in sorted(owned, key=lambda s: s.sub_id):
                self._remove_sub(txn, sub, close=True, out=out)

    # -- messages ------------------------------------------------------------------

    def apply_publish(self, txn: WriteTxn, cmd: c.Publish, index: int) -> Outcome:
        results: list[PublishResult] = []
        channels = self.store.channels()
        for channel, reply, data in cmd.msgs:
            if channel not in channels:
                try:
                    self._create_channel(txn, channel, index, cmd.now)
                except StoreError as exc:
                    results.append(PublishResult(channel, None, str(exc)))
                    continue
            results.append(PublishResult(channel, txn.store_msg(channel, reply, data, cmd.now)))
        return Outcome(value=results)

    def apply_expire(self, txn: WriteTxn, cmd: c.Expire, index: int) -> Outcome:
        dropped = 0
        for name in cmd.channels:
            if name in self.store.channels():
                dropped += txn.expire_msgs(name, cmd.now)
        return Outcome(value=dropped)

    def apply_delete_channel(self, txn: WriteTxn, cmd: c.DeleteChannel, index: int) -> Outcome:
        ch = self.store.channels().get(cmd.channel)
        if ch is None or (cmd.channel_id and ch.channel_id != cmd.channel_id):
            return Outcome(value=False)
        out = Outcome(value=True)
        for sub in list(self.store.subs(cmd.channel).values()):
            if not sub.is_closed:
                out.events.append(SubRemoved(cmd.channel, sub.sub_id))
        txn.delete_channel(cmd.channel)
        out.events.append(ChannelRemoved(cmd.channel))
        log.info('Channel "%s" has been deleted', cmd.channel)
        return out

    def _create_channel(self, txn: WriteTxn, name: str, index: int, now: int) -> ChannelRecord:
        rec = txn.create_channel(
            name, index, self.limits.resolve(name), now, self.limits.max_channels
        )
        log.info('Channel "%s" has been created', name)
        return rec

    # -- subscriptions -------------------------------------------------------------

    def apply_subscribe(self, txn: WriteTxn, cmd: c.Subscribe, index: int) -> Outcome:
        out = Outcome()
        if cmd.client_id not in self.store.clients():
            out.error = errors.UNKNOWN_CLIENT
            return out
        ch = self.store.channels().get(cmd.channel)
        if ch is None:
            try:
                ch = self._create_channel(txn, cmd.channel, index, cmd.now)
            except StoreError as exc:
                out.error = str(exc)
                return out
        if cmd.qgroup and cmd.durable_name and ":" in cmd.durable_name:
            out.error = errors.DURABLE_QUEUE_NAME_COLON
            return out
        subs = self.store.subs(cmd.channel)
        try:
            if cmd.qgroup:
                sub = self._subscribe_queue(txn, cmd, ch, subs, out)
            elif cmd.durable_name:
                sub = self._subscribe_durable(txn, cmd, ch, subs, out)
            else:
                sub = self._new_sub(txn, cmd, ch, self._start_cursor(cmd, ch))
        except StoreError as exc:
            out.error = str(exc)
            return out
        if sub is None:
            return out
        out.value = sub
        out.events.append(SubAdded(cmd.channel, sub.sub_id))
        return out

    def _subscribe_durable(
        self,
        txn: WriteTxn,
        cmd: c.Subscribe,
        ch: ChannelRecord,
        subs: Any,
        out: Outcome,
    ) -> SubRecord | None:
        existing = next(
            (
                s
                for s in subs.values()
                if not s.qgroup
                and s.durable_name == cmd.durable_name
                and s.client_id == cmd.client_id
            ),
            None,
        )
        if existing is None:
            return self._new_sub(txn, cmd, ch, self._start_cursor(cmd, ch), durable=True)
        if not existing.is_closed:
            if not cmd.replace_durable:
                out.error = errors.DUPLICATE_DURABLE
                return None
            out.events.append(SubRemoved(cmd.channel, existing.sub_id))
        return self._resume(txn, cmd, existing)

    def _subscribe_queue(
        self,
        txn: WriteTxn,
        cmd: c.Subscribe,
        ch: ChannelRecord,
        subs: Any,
        out: Outcome,
    ) -> SubRecord:
        durable = bool(cmd.durable_name)
        group = f"{cmd.durable_name}:{cmd.qgroup}" if durable else cmd.qgroup
        members = [s for s in subs.values() if s.qgroup == group and s.is_durable == durable]
        shadow = next((s for s in members if s.is_closed), None)
        if shadow is not None:
            return self._resume(txn, cmd, shadow)
        if members:
            cursor = max(s.last_sent for s in members)
        else:
            cursor = self._start_cursor(cmd, ch)
        return self._new_sub(txn, cmd, ch, cursor, durable=durable, qgroup=group)

    def _new_sub(
        self,
        txn: WriteTxn,
        cmd: c.Subscribe,
        ch: ChannelRecord,
        cursor: int,
        *,
        durable: bool = False,
        qgroup: str = "",
    ) -> SubRecord:
        rec = SubRecord(
            channel=cmd.channel,
            sub_id=0,
            client_id=cmd.client_id,
            inbox=cmd.inbox,
            ack_inbox=cmd.ack_inbox,
            max_inflight=cmd.max_inflight,
            ack_wait=cmd.ack_wait,
            qgroup=qgroup,
            durable_name=cmd.durable_name if durable and not qgroup else "",
            last_sent=cursor,
            is_durable=durable,
            is_closed=False,
        )
        return txn.create_sub(rec, ch.limits.max_subs)

    def _resume(self, txn: WriteTxn, cmd: c.Subscribe, sub: SubRecord) -> SubRecord:
        sub.client_id = cmd.client_id
        sub.inbox = cmd.inbox
        sub.ack_inbox = cmd.ack_inbox
        sub.max_inflight = cmd.max_inflight
        sub.ack_wait = cmd.ack_wait
        sub.is_closed = False
        txn.put_sub(sub)
        return sub

    def _start_cursor(self, cmd: c.Subscribe, ch: ChannelRecord) -> int:
        """``last_sent`` of a new subscription from its start position (SEMANTICS §5.3)."""
        first, last = ch.first_seq, ch.last_seq
        pos = cmd.start_position
        if pos == NEW_ONLY:
            return last
        if pos == LAST_RECEIVED:
            return last - 1 if last > 0 else 0
        if pos == TIME_DELTA_START:
            seq = self.store.seq_at_time(cmd.channel, cmd.now - cmd.start_time_delta)
            return seq - 1 if seq > 0 else 0
        if pos == SEQUENCE_START:
            start = cmd.start_sequence
            if start < first:
                return first - 1
            if start > last:
                return last
            return max(start - 1, 0)
        if pos == FIRST:
            return first - 1 if first > 0 else 0
        return last

    def apply_unsubscribe(self, txn: WriteTxn, cmd: c.Unsubscribe, index: int) -> Outcome:
        return self._unsub_or_close(txn, cmd.client_id, cmd.channel, cmd.inbox, close=False)

    def apply_close_sub(self, txn: WriteTxn, cmd: c.CloseSub, index: int) -> Outcome:
        return self._unsub_or_close(txn, cmd.client_id, cmd.channel, cmd.inbox, close=True)

    def _unsub_or_close(
        self, txn: WriteTxn, client_id: str, channel: str, inbox: str, *, close: bool
    ) -> Outcome:
        out = Outcome()
        if channel not in self.store.channels():
            out.error = errors.UNKNOWN_CHANNEL
            return out
        sub = self.find_sub(channel, inbox)
        if sub is None:
            out.error = errors.INVALID_SUB
            return out
        if sub.client_id != client_id or client_id not in self.store.clients():
            out.error = errors.UNKNOWN_CLIENT
            return out
        self._remove_sub(txn, sub, close=close, out=out)
        return out

    def find_sub(self, channel: str, inbox: str) -> SubRecord | None:
        """The active subscription whose ack inbox, or failing that delivery inbox, is ``inbox``."""
        subs = [s for s in self.store.subs(channel).values() if not s.is_closed]
        for s in subs:
            if s.ack_inbox == inbox:
                return s
        for s in subs:
            if s.inbox == inbox:
                return s
        return None

    def _remove_sub(self, txn: WriteTxn, sub: SubRecord, *, close: bool, out: Outcome) -> None:
        """Unsubscribe or close one active subscription (SEMANTICS §5.10)."""
        out.events.append(SubRemoved(sub.channel, sub.sub_id))
        if not sub.qgroup:
            if sub.is_durable and close:
                sub.is_closed = True
                txn.put_sub(sub)
            else:
                txn.delete_sub(sub.channel, sub.sub_id)
            return
        others = sorted(
            (
                s
                for s in self.store.subs(sub.channel).values()
                if s.qgroup == sub.qgroup
                and s.is_durable == sub.is_durable
                and s.sub_id != sub.sub_id
                and not s.is_closed
            ),
            key=lambda s: s.sub_id,
        )
        if not others:
            if sub.is_durable and close:
                sub.client_id = ""
                sub.is_closed = True
                txn.put_sub(sub)
            else:
                txn.delete_sub(sub.channel, sub.sub_id)
            return
        # Hand the leaving member's unacknowledged messages round-robin to the
        # others, and keep the group's cursor on one that stays.
        moved: dict[int, list[int]] = {}
        for i, seq in enumerate(sorted(self.store.pending(sub.channel, sub.sub_id))):
            moved.setdefault(others[i % len(others)].sub_id, []).append(seq)
        for sub_id, seqs in moved.items():
            txn.add_pending(sub.channel, sub_id, seqs)
            out.events.append(PendingMoved(sub.channel, sub_id, tuple(seqs)))
        if sub.last_sent > max(s.last_sent for s in others):
            keeper = others[0]
            keeper.last_sent = sub.last_sent
            txn.put_sub(keeper)
        txn.delete_sub(sub.channel, sub.sub_id)

    def apply_sent_ack(self, txn: WriteTxn, cmd: c.SentAck, index: int) -> Outcome:
        for channel, sub_id, last_sent, sent, acked in cmd.updates:
            sub = self.store.subs(channel).get(sub_id)
            if sub is None:
                continue
            if last_sent > sub.last_sent:
                sub.last_sent = last_sent
                txn.put_sub(sub)
            if sent:
                txn.add_pending(channel, sub_id, sent)
            if acked:
                txn.remove_pending(channel, sub_id, acked)
        return Outcome()
