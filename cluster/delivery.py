"""Delivery on the leader: sending messages to subscriptions, acks, redelivery.

The replicated state (store) says which subscriptions exist, their cursors and
pending sets as of the last flush. The leader keeps a live view of each active
subscription that runs ahead of it: exact ack deadlines, redelivery counters,
stalled flags and the sends and acks not yet replicated. Those are gathered per
subscription and replicated lazily as ``SentAck`` commands (at most every
``flush_interval`` seconds, or sooner once ``flush_events`` have accumulated), as the
reference does: after a failover a few messages may be delivered again.

Everything here runs on the event loop thread. Sending is a plain callable
(``send(subject, payload)``) so that this module does no I/O of its own.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from protocol.messages import redelivered
from store.api import Store, StoredMsg, SubRecord

log = logging.getLogger("stanchion.delivery")

#: A pending message whose deadline is this close is redelivered now (s).
DEADLINE_SLACK = 0.015
#: Messages read from the store per page when a subscription catches up.
PAGE = 256
#: Bytes a cursor keeps read ahead of what it may send now (see ReadAhead).
READ_AHEAD_BYTES = 64 * 1024


@dataclass(slots=True, eq=False)
class ReadAhead:
    """Messages read from the store past what a cursor could send at the time.

    A subscription held at MaxInflight gets room for one message per ack;
    reading the store for each would cost a transaction per message. Instead a
    read fetches a page and keeps the rest here. Contract: every message the
    store held with a sequence in ``[start, msgs[-1].seq]`` is in ``msgs``.
    That stays true as messages never change once stored and the store only
    drops them from the front (callers first move a cursor below the first
    stored message up to it).
    """

    start: int
    msgs: list[StoredMsg]

    def take(self, start: int, count: int) -> list[StoredMsg] | None:
        """Up to ``count`` messages from ``start`` on, or None if not covered."""
        msgs = self.msgs
        if start < self.start or start > msgs[-1].seq:
            return None
        i = start - msgs[0].seq
        if not (0 <= i < len(msgs) and msgs[i].seq == start):
            i = bisect_left(msgs, start, key=_seq)  # gaps (imported channels)
        return msgs[i : i + count]


@dataclass(slots=True, eq=False)
class SubView:
    """The leader's live state of one active subscription."""

    channel: str
    sub_id: int
    client_id: str
    inbox: str
    ack_inbox: str
    max_inflight: int
    ack_wait: float
    is_durable: bool
    qgroup: str
    last_sent: int
    #: Sequence -> ack deadline (loop time), for messages sent and not acked.
    pending: dict[int, float] = field(default_factory=dict)
    redeliveries: dict[int, int] = field(default_factory=dict)
    stalled: bool = False
    ahead: ReadAhead | None = None
    #: Pending messages must be redelivered before any new one is sent.
    new_on_hold: bool = False
    #: Set once the subscription response went out; nothing is sent before.
    initialized: bool = False
    group: QueueGroup | None = None
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0
    # Not yet replicated:
    sent: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    dirty: bool = False


@dataclass(slots=True, eq=False)
class QueueGroup:
    name: str
    members: list[SubView] = field(default_factory=list)
    last_sent: int = 0
    redeliveries: dict[int, int] = field(default_factory=dict)
    ahead: ReadAhead | None = None


@dataclass(slots=True, eq=False)
class ChannelView:
    name: str
    subs: list[SubView] = field(default_factory=list)
    groups: dict[str, QueueGroup] = field(default_factory=dict)


class Delivery:
    """All active subscriptions of the leader and how messages reach them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        store: Store,
        send: Callable[[str, bytes], None],
        on_flush_needed: Callable[[], None],
        flush_events: int = 100,
        same_member_redelivery: bool = False,
    ) -> None:
        self.loop = loop
        self.same_member_redelivery = same_member_redelivery
        self.store = store
        self.send = send
        self.on_flush_needed = on_flush_needed
        self.flush_events = flush_events
        self.channels: dict[str, ChannelView] = {}
        self.by_ack_inbox: dict[str, SubView] = {}
        self.by_key: dict[tuple[str, int], SubView] = {}
        #: Clients whose heartbeats currently fail.
        self.failed_clients: set[str] = set()
        self._dirty: set[SubView] = set()
        self.out_msgs = 0
        self.out_bytes = 0
        self.redelivered_msgs = 0

    # -- structure ----------------------------------------------------------------

    def add(self, rec: SubRecord, pending: Iterable[int], *, startup: bool) -> SubView:
        """Create the view of an active subscription from its stored record.

        Pending messages get deadlines: at startup (promotion) from the message
        time plus ack wait, as the exact deadlines were not replicated; on a
        durable resume or shadow take-over they are due at once.
        """
        old = self.by_key.get((rec.channel, rec.sub_id))
        if old is not None:
            self.remove(rec.channel, rec.sub_id)
        view = SubView(
            channel=rec.channel,
            sub_id=rec.sub_id,
            client_id=rec.client_id,
            inbox=rec.inbox,
            ack_inbox=rec.ack_inbox,
            max_inflight=max(1, rec.max_inflight),
            ack_wait=float(max(1, rec.ack_wait)),
            is_durable=rec.is_durable,
            qgroup=rec.qgroup,
            last_sent=rec.last_sent,
        )
        now = self.loop.time()
        wall = _wall_ns()
        for seq in sorted(pending):
            if startup:
                msg = self.store.get_msg(rec.channel, seq)
                ts = msg.timestamp if msg is not None else wall
                view.pending[seq] = now + (ts - wall) / 1e9 + view.ack_wait
            else:
                view.pending[seq] = now
        view.new_on_hold = bool(view.pending)
        view.stalled = len(view.pending) >= view.max_inflight
        ch = self.channels.setdefault(rec.channel, ChannelView(rec.channel))
        if rec.qgroup:
            group = ch.groups.get(rec.qgroup)
            if group is None:
                group = ch.groups[rec.qgroup] = QueueGroup(rec.qgroup, last_sent=rec.last_sent)
            group.members.append(view)
            group.last_sent = max(group.last_sent, rec.last_sent)
            view.group = group
        else:
            ch.subs.append(view)
        self.by_ack_inbox[view.ack_inbox] = view
        self.by_key[(view.channel, view.sub_id)] = view
        return view

    def remove(self, channel: str, sub_id: int) -> SubView | None:
        """Forget an active subscription (unsubscribed, closed, gone offline)."""
        view = self.by_key.pop((channel, sub_id), None)
        if view is None:
            return None
        if self.by_ack_inbox.get(view.ack_inbox) is view:
            del self.by_ack_inbox[view.ack_inbox]
        self._cancel_timer(view)
        self._dirty.discard(view)
        ch = self.channels.get(channel)
        if ch is not None:
            if view.group is not None:
                group = view.group
                if view in group.members:
                    group.members.remove(view)
                if not group.members:
                    ch.groups.pop(group.name, None)
                else:
                    keeper = min(group.members, key=lambda v: v.sub_id)
                    keeper.last_sent = max(keeper.last_sent, view.last_sent)
            elif view in ch.subs:
                ch.subs.remove(view)
            if not ch.subs and not ch.groups:
                del self.channels[channel]
        return view

    def remove_channel(self, channel: str) -> None:
        ch = self.channels.get(channel)
        if ch is None:
            return
        for view in list(ch.subs) + [m for g in ch.groups.values() for m in g.members]:
            self.remove(channel, view.sub_id)

    def clear(self) -> None:
        """Drop every view (leadership lost)."""
        for view in list(self.by_key.values()):
            self._cancel_timer(view)
        self.channels.clear()
        self.by_ack_inbox.clear()
        self.by_key.clear()
        self._dirty.clear()
        self.failed_clients.clear()

    def views_of_client(self, client_id: str) -> list[SubView]:
        return [v for v in self.by_key.values() if v.client_id == client_id]

    # -- starting -------------------------------------------------------------------

    def start(self, view: SubView) -> None:
        """The subscription is live: redeliver what is due, then send new messages."""
        view.initialized = True
        if view.pending:
            now = self.loop.time()
            for seq in sorted(view.pending):
                if view.pending[seq] <= now + DEADLINE_SLACK:
                    self._redeliver_seq(view, seq, force_to=view)
            self._arm_next(view)
        view.new_on_hold = False
        self.send_available(view)

    def pending_moved(self, channel: str, sub_id: int, seqs: Iterable[int]) -> None:
        """A leaving queue member's messages now belong to ``sub_id``: redeliver soon."""
        view = self.by_key.get((channel, sub_id))
        if view is None:
            return
        past = self.loop.time() - 1.0
        for seq in seqs:
            view.pending[seq] = past
        if len(view.pending) >= view.max_inflight:
            view.stalled = True
        self._arm(view, self.loop.time() + 0.1)

    # -- new messages -----------------------------------------------------------------

    def on_stored(self, channel: str, msgs: list[StoredMsg]) -> None:
        """Messages were committed to ``channel``: send them to whoever is caught up."""
        ch = self.channels.get(channel)
        if ch is None:
            return
        for view in ch.subs:
            self._send_available_sub(view, msgs)
        for group in ch.groups.values():
            self._send_available_group(group, msgs)

    def send_available(self, view: SubView) -> None:
        if view.group is not None:
            self._send_available_group(view.group, None)
        else:
            self._send_available_sub(view, None)

    def _send_available_sub(self, view: SubView, hint: list[StoredMsg] | None) -> None:
        if not view.initialized or view.new_on_hold or view.stalled:
            return
        while len(view.pending) < view.max_inflight:
            room = view.max_inflight - len(view.pending)
            page = self._next_page(view.channel, view.last_sent + 1, hint, room, view)
            if not page:
                return
            hint = None
            for msg in page:
                self._send_new(view, msg)
                if view.stalled:
                    return

    def _send_available_group(self, group: QueueGroup, hint: list[StoredMsg] | None) -> None:
        if not group.members:
            return
        channel = group.members[0].channel
        while self._can_take(group):
            room = sum(
                max(0, m.max_inflight - len(m.pending))
                for m in group.members
                if m.initialized and not m.new_on_hold
            )
            page = self._next_page(channel, group.last_sent + 1, hint, room, None, group)
            if not page:
                return
            hint = None
            for msg in page:
                member = self._pick(group)
                if member is None or member.stalled:
                    return
                group.last_sent = msg.seq
                self._send_new(member, msg)

    def _can_take(self, group: QueueGroup) -> bool:
        """Some member can take a new message (without rotating the group)."""
        return any(m.initialized and not m.new_on_hold and not m.stalled for m in group.members)

    def _next_page(
        self,
        channel: str,
        start: int,
        hint: list[StoredMsg] | None,
        room: int,
        view: SubView | None,
        group: QueueGroup | None = None,
    ) -> list[StoredMsg]:
        """At most ``room`` messages from ``start`` on (never more than a page);
        jumps a cursor that fell below the first stored message."""
        rec = self.store.channels().get(channel)
        if rec is None or start > rec.last_seq:
            return []
        if start < rec.first_seq:
            if view is not None:
                view.last_sent = rec.first_seq - 1
            if group is not None:
                group.last_sent = rec.first_seq - 1
            start = rec.first_seq
        count = max(1, min(room, PAGE))
        owner = group if group is not None else view
        if owner is not None and owner.ahead is not None:
            page = owner.ahead.take(start, count)
            if page is None or page[-1].seq >= owner.ahead.msgs[-1].seq:
                owner.ahead = None  # used up or left behind
            if page:
                return page
        if hint and hint[0].seq <= start <= hint[-1].seq:
            first = start - hint[0].seq
            if first < len(hint) and hint[first].seq == start:
                return hint[first : first + count]
        if owner is None or count >= PAGE:
            return self.store.read_msgs(channel, start, count)
        msgs = self.store.read_msgs(channel, start, PAGE, READ_AHEAD_BYTES)
        if len(msgs) > count:
            owner.ahead = ReadAhead(start, msgs)
            return msgs[:count]
        return msgs

    def _pick(self, group: QueueGroup, *, force: bool = False) -> SubView | None:
        """Queue member selection (SEMANTICS §5.6)."""
        members = [m for m in group.members if m.initialized and not m.new_on_hold]
        if not members:
            return None
        best: SubView | None = None
        for m in members:
            if m.stalled or m.client_id in self.failed_clients:
                continue
            if best is None or len(m.pending) < len(best.pending):
                best = m
        if best is None:
            best = members[0]
        if len(group.members) > 1 and group.members[0] is best:
            group.members.append(group.members.pop(0))
        return best

    # -- sending ------------------------------------------------------------------------

    def _send_new(self, view: SubView, msg: StoredMsg) -> None:
        now = self.loop.time()
        view.pending[msg.seq] = now + view.ack_wait
        if msg.seq > view.last_sent:
            view.last_sent = msg.seq
        if len(view.pending) >= view.max_inflight:
            view.stalled = True
        self._note_sent(view, msg.seq)
        self.send(view.inbox, msg.raw)
        self.out_msgs += 1
        self.out_bytes += len(msg.raw)
        if view.timer is None:
            self._arm(view, now + view.ack_wait)

    def _redeliver_seq(self, view: SubView, seq: int, force_to: SubView | None = None) -> None:
        """Redeliver one pending sequence of ``view`` (to another member if a queue)."""
        msg = self.store.get_msg(view.channel, seq)
        if msg is None:
            # Gone (limits): counts as acknowledged.
            self._forget(view, seq)
            return
        target = view
        if force_to is None and view.group is not None and not self.same_member_redelivery:
            picked = self._pick(view.group, force=True)
            if picked is not None and picked.client_id not in self.failed_clients:
                target = picked
        deadline = view.pending.pop(seq, self.loop.time())
        if target is not view:
            view.redeliveries.pop(seq, None)
            self._note_acked(view, seq)
            self._note_sent(target, seq)
            if view.stalled and len(view.pending) < view.max_inflight:
                view.stalled = False
        # Next deadline: one ack wait after the previous one, but never in the
        # past (a message overdue for long would be redelivered twice at once).
        target.pending[seq] = max(deadline, self.loop.time()) + target.ack_wait
        counters = target.group.redeliveries if target.group is not None else target.redeliveries
        count = counters.get(seq, 0) + 1
        counters[seq] = count
        payload = redelivered(msg.raw, count)
        self.send(target.inbox, payload)
        self.out_msgs += 1
        self.out_bytes += len(payload)
        self.redelivered_msgs += 1
        if target is not view:
            self._arm_next(target)

    # -- acks -----------------------------------------------------------------------------

    def on_ack(self, ack_inbox: str, channel: str, seq: int) -> None:
        view = self.by_ack_inbox.get(ack_inbox)
        if view is None or view.channel != channel:
            return
        holder: SubView | None = view if seq in view.pending else None
        if holder is None and view.group is not None:
            holder = next((m for m in view.group.members if seq in m.pending), None)
        if holder is None:
            return
        self._forget(holder, seq)
        if not holder.pending:
            self._cancel_timer(holder)
        if holder.stalled and len(holder.pending) < holder.max_inflight:
            holder.stalled = False
            self.send_available(holder)
        elif holder.group is not None:
            self._send_available_group(holder.group, None)

    def _forget(self, view: SubView, seq: int) -> None:
        view.pending.pop(seq, None)
        view.redeliveries.pop(seq, None)
        if view.group is not None:
            view.group.redeliveries.pop(seq, None)
        self._note_acked(view, seq)

    # -- ack timers ---------------------------------------------------------------------

    def _arm(self, view: SubView, when: float) -> None:
        if view.timer is not None:
            if view.timer_at <= when:
                return
            view.timer.cancel()
        view.timer_at = when
        view.timer = self.loop.call_at(when, self._on_timer, view)

    def _arm_next(self, view: SubView) -> None:
        if not view.pending:
            self._cancel_timer(view)
            return
        when = min(view.pending.values())
        self._cancel_timer(view)
        self._arm(view, max(when, self.loop.time() + 0.001))

    def _cancel_timer(self, view: SubView) -> None:
        if view.timer is not None:
            view.timer.cancel()
            view.timer = None

    def _on_timer(self, view: SubView) -> None:
        view.timer = None
        if self.by_key.get((view.channel, view.sub_id)) is not view:
            return
        if view.group is None and view.client_id in self.failed_clients:
            self._arm(view, self.loop.time() + view.ack_wait)
            return
        now = self.loop.time()
        for seq, deadline in sorted(view.pending.items(), key=lambda kv: (kv[1], kv[0])):
            if deadline > now + DEADLINE_SLACK:
                break
            if seq in view.pending:
                self._redeliver_seq(view, seq)
        self._arm_next(view)
        if view.stalled and len(view.pending) < view.max_inflight:
            view.stalled = False
            self.send_available(view)

    # -- lazy replication of sends and acks ---------------------------------------------

    def _note_sent(self, view: SubView, seq: int) -> None:
        view.sent.add(seq)
        self._mark(view)

    def _note_acked(self, view: SubView, seq: int) -> None:
        if seq in view.sent:
            view.sent.discard(seq)
        else:
            view.acked.add(seq)
        self._mark(view)

    def _mark(self, view: SubView) -> None:
        view.dirty = True
        self._dirty.add(view)
        if len(view.sent) + len(view.acked) >= self.flush_events:
            self.on_flush_needed()

    def take_updates(
        self, views: Iterable[SubView] | None = None
    ) -> list[tuple[str, int, int, list[int], list[int]]]:
        """Unreplicated delivery state, as ``SentAck`` updates, and reset it."""
        chosen = list(self._dirty) if views is None else [v for v in views if v.dirty]
        updates = []
        for view in chosen:
            updates.append(
                (view.channel, view.sub_id, view.last_sent, sorted(view.sent), sorted(view.acked))
            )
            view.sent.clear()
            view.acked.clear()
            view.dirty = False
            self._dirty.discard(view)
        return updates


def _seq(msg: StoredMsg) -> int:
    return msg.seq


def _wall_ns() -> int:
    import time

    return time.time_ns()
