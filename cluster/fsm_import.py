"""Applying the import commands (``ImportChannel``, ``ImportMsgs``,
``ImportClient``, ``ImportSub``) to the store.

These load a store written by another server into the replicated state. Like
every ``apply_<op>`` they read only the command, the store and the configured
limits, and they validate before they change anything (the memory store
cannot roll back). Each one also recognises a repeat of itself (the importer
proposes again when an answer was lost) and then changes nothing, so a
repeated proposal is as harmless as a replayed entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from cluster import commands as c
from cluster.fsm import Outcome, StateMachine, SubAdded
from protocol.subjects import is_valid_channel, is_valid_client_id
from store.api import ChannelLimits, ClientRecord, StoreError, SubRecord, WriteTxn

log = logging.getLogger("stanchion.fsm")

#: Error texts of the import commands (for the importer, not STAN clients).
ERR_CHANNEL_EXISTS = "channel already exists"
ERR_INVALID_CHANNEL = "invalid channel name"
ERR_UNKNOWN_CHANNEL = "unknown channel"
ERR_OUT_OF_ORDER = "channel changed during the import"
ERR_BAD_BATCH = "message sequences of a batch must increase"
ERR_INVALID_CLIENT = "invalid client ID"
ERR_SUB_EXISTS = "a different subscription with this ID exists"
ERR_BAD_SUB = "invalid subscription"


def handlers(fsm: StateMachine) -> dict[type[c.Command], Callable[[WriteTxn, Any, int], Outcome]]:
    """The apply functions of the import ops, bound to ``fsm``, for its dispatch table."""
    return {
        c.ImportChannel: partial(apply_import_channel, fsm),
        c.ImportMsgs: partial(apply_import_msgs, fsm),
        c.ImportClient: partial(apply_import_client, fsm),
        c.ImportSub: partial(apply_import_sub, fsm),
    }


def _outcome(error: str = "", value: Any = None) -> Outcome:
    return Outcome(error=error, value=value)


def _typed(values: Any, types: tuple[type, ...]) -> bool:
    """``values`` is a sequence of exactly these types (bool is not an int here)."""
    return (
        isinstance(values, tuple | list)
        and len(values) == len(types)
        and all(
            isinstance(v, t) and (t is bool or not isinstance(v, bool))
            for v, t in zip(values, types, strict=True)
        )
    )


def _is_msg(m: Any) -> bool:
    """``(seq, timestamp, reply, data)`` with a positive sequence (per message
    of every batch on every node: kept cheap)."""
    return (
        type(m) is tuple
        and len(m) == 4
        and type(m[0]) is int
        and type(m[1]) is int
        and type(m[2]) is str
        and type(m[3]) is bytes
        and m[0] > 0
    )


def apply_import_channel(
    fsm: StateMachine, txn: WriteTxn, cmd: c.ImportChannel, index: int
) -> Outcome:
    """Create the channel (incarnation ID = ``index``) with its first sequence
    and reserved subscription IDs. Value: the channel ID."""
    if not isinstance(cmd.channel, str) or not is_valid_channel(cmd.channel):
        return _outcome(f"{ERR_INVALID_CHANNEL}: {cmd.channel!r}")
    if cmd.channel in fsm.store.channels():
        return _outcome(f"{ERR_CHANNEL_EXISTS}: {cmd.channel!r}")
    if not _typed((cmd.first_seq, cmd.next_sub_id, cmd.now), (int, int, int)):
        return _outcome(f"invalid import of channel {cmd.channel!r}")
    if cmd.limits:
        if not _typed(cmd.limits, (int,) * 5) or any(v < 0 for v in cmd.limits):
            return _outcome(f"invalid limits for channel {cmd.channel!r}: {cmd.limits!r}")
        limits = ChannelLimits(*cmd.limits)
    else:
        limits = fsm.limits.resolve(cmd.channel)
    try:
        ch = txn.create_channel(cmd.channel, index, limits, cmd.now, fsm.limits.max_channels)
    except StoreError as exc:
        return _outcome(str(exc))
    txn.advance_channel(
        cmd.channel, last_seq=max(cmd.first_seq - 1, 0), next_sub_id=cmd.next_sub_id
    )
    log.info('Channel "%s" has been created (import, first_seq=%d)', cmd.channel, cmd.first_seq)
    return _outcome(value=ch.channel_id)


def apply_import_msgs(fsm: StateMachine, txn: WriteTxn, cmd: c.ImportMsgs, index: int) -> Outcome:
    """Append a batch. Value: ``(stored, last_seq)`` (stored is 0 for a repeat);
    a refused batch's error text ends with the channel's last sequence."""
    ch = fsm.store.channels().get(cmd.channel)
    if ch is None:
        return _outcome(f"{ERR_UNKNOWN_CHANNEL}: {cmd.channel!r}")
    msgs = cmd.msgs
    if ch.last_seq >= (msgs[-1][0] if msgs else cmd.last_seq) > 0:
        return _outcome(value=(0, ch.last_seq))  # a repeat of an applied batch
    if ch.last_seq != cmd.after_seq:
        return _outcome(
            f"{ERR_OUT_OF_ORDER}: {cmd.channel!r} expected last sequence {cmd.after_seq}, "
            f"has {ch.last_seq}"
        )
    prev = cmd.after_seq
    for m in msgs:
        if not _is_msg(m) or m[0] <= prev:
            return _outcome(f"{ERR_BAD_BATCH}: {cmd.channel!r} after {prev}")
        prev = m[0]
    name = cmd.channel
    for seq, timestamp, reply, data in msgs:
        txn.import_msg(name, seq, timestamp, reply, data)
    if cmd.last_seq:
        txn.advance_channel(name, last_seq=cmd.last_seq)
    if cmd.now:
        txn.touch_channel(name, cmd.now)
    return _outcome(value=(len(msgs), fsm.store.channels()[name].last_seq))


def apply_import_client(
    fsm: StateMachine, txn: WriteTxn, cmd: c.ImportClient, index: int
) -> Outcome:
    """Register clients. Value: the IDs registered by this command (a client
    ID already registered keeps its registration and is not listed)."""
    registered = fsm.store.clients()
    new: list[ClientRecord] = []
    for entry in cmd.clients:
        if not _typed(entry, (str, str, bytes, int, int, int)):
            return _outcome(f"{ERR_INVALID_CLIENT}: {entry!r:.80}")
        client_id, hb_inbox, conn_id, protocol, ping_interval, ping_max_out = entry
        if not is_valid_client_id(client_id) or not hb_inbox:
            return _outcome(f"{ERR_INVALID_CLIENT}: {client_id!r}")
        if client_id in registered or any(r.client_id == client_id for r in new):
            continue
        new.append(
            ClientRecord(client_id, hb_inbox, conn_id, protocol, ping_interval, ping_max_out)
        )
    for rec in new:
        txn.put_client(rec)
    return _outcome(value=[r.client_id for r in new])


def apply_import_sub(fsm: StateMachine, txn: WriteTxn, cmd: c.ImportSub, index: int) -> Outcome:
    """Store one subscription. Value: the stored record (the existing one for
    a repeat), or None when it was left out (a non-durable one whose client is
    not registered, a durable queue member whose client is gone); a newly
    stored open one gets a ``SubAdded`` event."""
    ch = fsm.store.channels().get(cmd.channel)
    if ch is None:
        return _outcome(f"{ERR_UNKNOWN_CHANNEL}: {cmd.channel!r}")
    fields = (
        cmd.sub_id,
        cmd.client_id,
        cmd.inbox,
        cmd.ack_inbox,
        cmd.max_inflight,
        cmd.ack_wait,
        cmd.qgroup,
        cmd.durable_name,
        cmd.last_sent,
        cmd.is_durable,
        cmd.is_closed,
    )
    if (
        not _typed(fields, (int, str, str, str, int, int, str, str, int, bool, bool))
        or not all(isinstance(q, int) for q in cmd.pending)
        or cmd.sub_id <= 0
        or not cmd.inbox
        or (cmd.durable_name and cmd.qgroup)
    ):
        return _outcome(f"{ERR_BAD_SUB}: {cmd.channel!r} id {cmd.sub_id}")
    rec = SubRecord(
        channel=cmd.channel,
        sub_id=cmd.sub_id,
        client_id=cmd.client_id,
        inbox=cmd.inbox,
        ack_inbox=cmd.ack_inbox,
        max_inflight=cmd.max_inflight,
        ack_wait=cmd.ack_wait,
        qgroup=cmd.qgroup,
        durable_name=cmd.durable_name,
        last_sent=cmd.last_sent,
        is_durable=cmd.is_durable,
        is_closed=cmd.is_closed,
    )
    existing = fsm.store.subs(cmd.channel).get(cmd.sub_id)
    if existing is not None:
        same = (existing.inbox, existing.qgroup, existing.durable_name) == (
            rec.inbox,
            rec.qgroup,
            rec.durable_name,
        )
        return _outcome(value=existing) if same else _outcome(f"{ERR_SUB_EXISTS}: {cmd.sub_id}")
    if not rec.is_closed and rec.client_id not in fsm.store.clients():
        if rec.durable_name:
            rec.is_closed = True  # an offline durable, resumed by its client ID
        elif rec.qgroup and rec.is_durable and not rec.client_id:
            rec.is_closed = True  # the shadow of an offline durable queue group
        else:
            return _outcome(value=None)
    if rec.qgroup and rec.is_durable and not rec.client_id:
        rec.is_closed = True
    stored = txn.import_sub(rec)
    pending = [s for s in cmd.pending if ch.first_seq <= s <= ch.last_seq]
    if pending:
        txn.add_pending(cmd.channel, stored.sub_id, sorted(set(pending)))
    out = _outcome(value=stored)
    if not stored.is_closed:
        out.events.append(SubAdded(stored.channel, stored.sub_id))
    return out
