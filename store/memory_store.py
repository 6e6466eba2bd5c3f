"""The in-memory store, and the metadata cache layer every store shares.

``CachedStore`` and ``CachedWriteTxn`` implement the whole metadata side of
the contract (clients, channels, subscriptions, pending sets, limits) on
plain dicts; a store subclasses them and fills in the hooks that persist a
change and keep the message log. ``MemoryStore`` is that layer plus a dict
per channel for the messages; ``LmdbStore`` (``lmdb_store.py``) adds
write-through to LMDB. See ``DESIGN.md``.

The memory store cannot roll back: when a ``with store.write()`` block
raises, the changes made before the exception stay. Its message reads also
see messages as soon as ``store_msg`` returns, not only after the block exits.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from protocol import errors
from protocol.messages import encode_msg
from store.api import (
    ChannelLimits,
    ChannelRecord,
    ClientRecord,
    ServerInfo,
    StoredMsg,
    StoreError,
    SubRecord,
)

log = logging.getLogger(__name__)

#: Messages per page read by ``iter_msgs``.
ITER_PAGE = 256

_EMPTY_SUBS: Mapping[int, SubRecord] = MappingProxyType({})


def _sync_dict(dst: dict[Any, Any], src: dict[Any, Any]) -> None:
    """Make ``dst`` equal to ``src`` in place, so that views on it stay live.

    Keys present in both are never absent in between (readers on other
    threads see either the old or the new record of a surviving key).
    """
    for key in [k for k in dst if k not in src]:
        del dst[key]
    dst.update(src)


@dataclasses.dataclass(slots=True)
class MetaState:
    """A full copy of the metadata, as loaded from disk or a snapshot."""

    applied: int = 0
    server_info: ServerInfo | None = None
    clients: dict[str, ClientRecord] = dataclasses.field(default_factory=dict)
    channels: dict[str, ChannelRecord] = dataclasses.field(default_factory=dict)
    subs: dict[str, dict[int, SubRecord]] = dataclasses.field(default_factory=dict)
    pending: dict[tuple[str, int], set[int]] = dataclasses.field(default_factory=dict)


class CachedStore:
    """Metadata held in memory, and the reads of it (any thread)."""

    kind: str = ""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._applied = 0
        self._server_info: ServerInfo | None = None
        self._clients: dict[str, ClientRecord] = {}
        self._by_conn: dict[bytes, ClientRecord] = {}
        self._channels: dict[str, ChannelRecord] = {}
        #: Lower-cased name -> name, for the case-conflict check.
        self._lower: dict[str, str] = {}
        self._subs: dict[str, dict[int, SubRecord]] = {}
        self._pending: dict[tuple[str, int], set[int]] = {}
        self._clients_view = MappingProxyType(self._clients)
        self._channels_view = MappingProxyType(self._channels)
        #: Channels for which the "reached limits" warning was logged.
        self._warned: set[str] = set()
        #: Thread holding the open write transaction (None when there is none).
        self._writer: int | None = None

    # -- metadata reads -------------------------------------------------------

    def applied_index(self) -> int:
        return self._applied

    def server_info(self) -> ServerInfo | None:
        return self._server_info

    def clients(self) -> Mapping[str, ClientRecord]:
        return self._clients_view

    def client_by_conn_id(self, conn_id: bytes) -> ClientRecord | None:
        return self._by_conn.get(conn_id)

    def channels(self) -> Mapping[str, ChannelRecord]:
        return self._channels_view

    def subs(self, channel: str) -> Mapping[int, SubRecord]:
        subs = self._subs.get(channel)
        return _EMPTY_SUBS if subs is None else MappingProxyType(subs)

    def pending(self, channel: str, sub_id: int) -> frozenset[int]:
        seqs = self._pending.get((channel, sub_id))
        # frozenset(set) copies in C without releasing the GIL: atomic.
        return frozenset(seqs) if seqs else frozenset()

    # -- message reads built on read_msgs -------------------------------------

    def read_msgs(
        self, channel: str, start_seq: int, max_count: int, max_bytes: int = 1 << 20
    ) -> list[StoredMsg]:
        raise NotImplementedError

    def iter_msgs(self, channel: str) -> Iterator[StoredMsg]:
        start = 0
        while True:
            page = self.read_msgs(channel, start, ITER_PAGE)
            if not page:
                return
            yield from page
            start = page[-1].seq + 1

    # -- helpers for subclasses -------------------------------------------------

    def _install(self, state: MetaState) -> None:
        """Replace every cache with ``state`` (in place: views stay live)."""
        self._applied = state.applied
        self._server_info = state.server_info
        _sync_dict(self._clients, state.clients)
        _sync_dict(self._by_conn, {c.conn_id: c for c in state.clients.values() if c.conn_id})
        _sync_dict(self._channels, state.channels)
        _sync_dict(self._lower, {name.lower(): name for name in state.channels})
        subs: dict[str, dict[int, SubRecord]] = {}
        for name in state.channels:
            new = state.subs.get(name, {})
            old = self._subs.get(name)
            if old is not None:
                _sync_dict(old, new)
                new = old
            subs[name] = new
        _sync_dict(self._subs, subs)
        _sync_dict(self._pending, {k: set(v) for k, v in state.pending.items() if v})


class CachedWriteTxn:
    """The WriteTxn logic on the caches; subclasses persist and keep messages.

    Hooks (``_h_*``) are called after the cache has been changed.
    """

    def __init__(self, store: CachedStore) -> None:
        self._s = store

    # -- hooks --------------------------------------------------------------------

    def _h_applied(self, index: int) -> None:
        pass

    def _h_server_info(self, info: ServerInfo) -> None:
        pass

    def _h_put_client(self, client: ClientRecord) -> None:
        pass

    def _h_delete_client(self, client_id: str) -> None:
        pass

    def _h_channel_changed(self, ch: ChannelRecord) -> None:
        pass

    def _h_channel_deleted(
        self, ch: ChannelRecord, subs: dict[int, SubRecord], pending: dict[int, set[int]]
    ) -> None:
        pass

    def _h_put_sub(self, ch: ChannelRecord, sub: SubRecord) -> None:
        pass

    def _h_delete_sub(self, ch: ChannelRecord, sub_id: int, pending: set[int] | None) -> None:
        pass

    def _h_add_pending(self, ch: ChannelRecord, sub_id: int, seqs: list[int]) -> None:
        pass

    def _h_remove_pending(self, ch: ChannelRecord, sub_id: int, seqs: list[int]) -> None:
        pass

    def _h_put_msg(self, ch: ChannelRecord, seq: int, timestamp: int, raw: bytes) -> None:
        raise NotImplementedError

    def _h_drop_first(self, ch: ChannelRecord) -> tuple[int, int]:
        """Delete message ``ch.first_seq`` (stored, and not the only one);
        return its raw length and the next stored sequence."""
        raise NotImplementedError

    def _h_expire(self, ch: ChannelRecord, cutoff: int) -> tuple[int, int, int]:
        """Delete messages from ``ch.first_seq`` on while timestamp <= cutoff;
        return (count, raw bytes) deleted and the first sequence still stored
        (``ch.last_seq + 1`` when none is left)."""
        raise NotImplementedError

    # -- WriteTxn -----------------------------------------------------------------

    def _channel(self, name: str) -> ChannelRecord:
        ch = self._s._channels.get(name)
        if ch is None:
            raise ValueError(f"unknown channel {name!r}")
        return ch

    def set_applied_index(self, index: int) -> None:
        self._s._applied = index
        self._h_applied(index)

    def put_server_info(self, info: ServerInfo) -> None:
        self._s._server_info = info
        self._h_server_info(info)

    def put_client(self, client: ClientRecord) -> None:
        s = self._s
        old = s._clients.get(client.client_id)
        if old is not None and old.conn_id and old.conn_id != client.conn_id:
            if s._by_conn.get(old.conn_id) is old:
                del s._by_conn[old.conn_id]
        s._clients[client.client_id] = client
        if client.conn_id:
            s._by_conn[client.conn_id] = client
        self._h_put_client(client)

    def delete_client(self, client_id: str) -> None:
        s = self._s
        old = s._clients.pop(client_id, None)
        if old is None:
            return
        if old.conn_id and s._by_conn.get(old.conn_id) is old:
            del s._by_conn[old.conn_id]
        self._h_delete_client(client_id)

    def create_channel(
        self, name: str, channel_id: int, limits: ChannelLimits, now: int, max_channels: int
    ) -> ChannelRecord:
        s = self._s
        if name in s._channels:
            raise ValueError(f"channel {name!r} already exists")
        if max_channels > 0 and len(s._channels) >= max_channels:
            raise StoreError(errors.TOO_MANY_CHANNELS)
        existing = s._lower.get(name.lower())
        if existing is not None:
            raise StoreError(errors.channel_case_conflict(name, existing))
        ch = ChannelRecord(
            name=name,
            channel_id=channel_id,
            limits=dataclasses.replace(limits),
            last_activity=now,
        )
        s._subs[name] = {}
        s._lower[name.lower()] = name
        s._channels[name] = ch
        self._h_channel_changed(ch)
        return ch

    def delete_channel(self, name: str) -> None:
        s = self._s
        ch = s._channels.pop(name, None)
        if ch is None:
            return
        s._lower.pop(name.lower(), None)
        subs = s._subs.pop(name, {})
        pending: dict[int, set[int]] = {}
        for sub_id in subs:
            seqs = s._pending.pop((name, sub_id), None)
            if seqs is not None:
                pending[sub_id] = seqs
        s._warned.discard(name)
        self._h_channel_deleted(ch, subs, pending)

    def store_msg(self, channel: str, reply: str, data: bytes, now: int) -> StoredMsg:
        ch = self._s._channels.get(channel)
        if ch is None:
            raise ValueError(f"unknown channel {channel!r}")
        seq = ch.last_seq + 1
        ts = now if now > ch.last_timestamp else ch.last_timestamp
        raw = encode_msg(seq, channel, reply, data, ts)
        self._h_put_msg(ch, seq, ts, raw)
        if ch.msgs == 0:
            ch.first_seq = seq
        ch.last_seq = seq
        ch.msgs += 1
        ch.bytes += len(raw)
        ch.last_timestamp = ts
        ch.last_activity = now
        lim = ch.limits
        if (lim.max_msgs > 0 and ch.msgs > lim.max_msgs) or (
            lim.max_bytes > 0 and ch.bytes > lim.max_bytes
        ):
            self._enforce(ch)
        self._h_channel_changed(ch)
        return StoredMsg(seq, ts, raw)

    def _enforce(self, ch: ChannelRecord) -> None:
        lim = ch.limits
        max_msgs = lim.max_msgs
        max_bytes = lim.max_bytes
        if ch.name not in self._s._warned:
            self._s._warned.add(ch.name)
            self._s._log.warning(
                "Reached limits for store %s (msgs=%d/%d bytes=%d/%d), "
                "dropping old messages to make room for new ones",
                errors.go_quote(ch.name),
                ch.msgs,
                max_msgs,
                ch.bytes,
                max_bytes,
            )
        while ch.msgs > 1 and (
            (max_msgs > 0 and ch.msgs > max_msgs) or (max_bytes > 0 and ch.bytes > max_bytes)
        ):
            size, next_seq = self._h_drop_first(ch)
            ch.first_seq = next_seq
            ch.msgs -= 1
            ch.bytes -= size

    def expire_msgs(self, channel: str, now: int) -> int:
        ch = self._s._channels.get(channel)
        if ch is None or ch.limits.max_age <= 0 or ch.msgs == 0:
            return 0
        count, size, next_seq = self._h_expire(ch, now - ch.limits.max_age)
        if count:
            ch.first_seq = next_seq
            ch.msgs -= count
            ch.bytes -= size
            if ch.msgs == 0:
                ch.first_seq = ch.last_seq + 1
                ch.bytes = 0
            self._h_channel_changed(ch)
        return count

    def touch_channel(self, channel: str, now: int) -> None:
        ch = self._s._channels.get(channel)
        if ch is None:
            return
        ch.last_activity = now
        self._h_channel_changed(ch)

    def create_sub(self, sub: SubRecord, max_subs: int) -> SubRecord:
        ch = self._channel(sub.channel)
        subs = self._s._subs[ch.name]
        if max_subs > 0 and len(subs) >= max_subs:
            raise StoreError(errors.TOO_MANY_SUBS)
        rec = dataclasses.replace(sub, sub_id=ch.next_sub_id)
        ch.next_sub_id += 1
        subs[rec.sub_id] = rec
        self._h_channel_changed(ch)
        self._h_put_sub(ch, rec)
        return rec

    def import_msg(
        self, channel: str, seq: int, timestamp: int, reply: str, data: bytes
    ) -> StoredMsg:
        ch = self._channel(channel)
        if seq <= ch.last_seq:
            raise ValueError(
                f"imported sequence {seq} is not above channel {channel!r}'s last {ch.last_seq}"
            )
        raw = encode_msg(seq, channel, reply, data, timestamp)
        self._h_put_msg(ch, seq, timestamp, raw)
        if ch.msgs == 0:
            ch.first_seq = seq
        ch.last_seq = seq
        ch.msgs += 1
        ch.bytes += len(raw)
        if timestamp > ch.last_timestamp:
            ch.last_timestamp = timestamp
        lim = ch.limits
        if (lim.max_msgs > 0 and ch.msgs > lim.max_msgs) or (
            lim.max_bytes > 0 and ch.bytes > lim.max_bytes
        ):
            self._enforce(ch)
        self._h_channel_changed(ch)
        return StoredMsg(seq, timestamp, raw)

    def advance_channel(self, channel: str, last_seq: int = 0, next_sub_id: int = 0) -> None:
        ch = self._channel(channel)
        changed = False
        if last_seq > ch.last_seq:
            ch.last_seq = last_seq
            if ch.msgs == 0:
                ch.first_seq = last_seq + 1
            changed = True
        if next_sub_id > ch.next_sub_id:
            ch.next_sub_id = next_sub_id
            changed = True
        if changed:
            self._h_channel_changed(ch)

    def import_sub(self, sub: SubRecord) -> SubRecord:
        ch = self._channel(sub.channel)
        subs = self._s._subs[ch.name]
        if sub.sub_id <= 0 or sub.sub_id in subs:
            raise ValueError(f"cannot import subscription {sub.sub_id} on channel {ch.name!r}")
        rec = dataclasses.replace(sub)
        subs[rec.sub_id] = rec
        if rec.sub_id >= ch.next_sub_id:
            ch.next_sub_id = rec.sub_id + 1
            self._h_channel_changed(ch)
        self._h_put_sub(ch, rec)
        return rec

    def put_sub(self, sub: SubRecord) -> None:
        ch = self._channel(sub.channel)
        subs = self._s._subs[ch.name]
        if sub.sub_id not in subs:
            raise ValueError(f"unknown subscription {sub.sub_id} on channel {ch.name!r}")
        subs[sub.sub_id] = sub
        self._h_put_sub(ch, sub)

    def delete_sub(self, channel: str, sub_id: int) -> None:
        s = self._s
        ch = s._channels.get(channel)
        if ch is None:
            return
        subs = s._subs[channel]
        if subs.pop(sub_id, None) is None:
            return
        pending = s._pending.pop((channel, sub_id), None)
        self._h_delete_sub(ch, sub_id, pending)

    def add_pending(self, channel: str, sub_id: int, seqs: list[int]) -> None:
        ch = self._channel(channel)
        if sub_id not in self._s._subs[channel]:
            raise ValueError(f"unknown subscription {sub_id} on channel {channel!r}")
        if not seqs:
            return
        key = (channel, sub_id)
        pending = self._s._pending.get(key)
        if pending is None:
            self._s._pending[key] = set(seqs)
        else:
            pending.update(seqs)
        self._h_add_pending(ch, sub_id, seqs)

    def remove_pending(self, channel: str, sub_id: int, seqs: list[int]) -> None:
        key = (channel, sub_id)
        pending = self._s._pending.get(key)
        if not pending:
            return
        removed = [q for q in seqs if q in pending]
        if not removed:
            return
        pending.difference_update(removed)
        if not pending:
            del self._s._pending[key]
        self._h_remove_pending(self._s._channels[channel], sub_id, removed)


# ---------------------------------------------------------------------------
# The memory store
# ---------------------------------------------------------------------------

#: Snapshot file format version of the memory store.
_SNAPSHOT_VERSION = 1


class _MemoryWriteTxn(CachedWriteTxn):
    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self._msgs = store._msgs
        self._gaps = store._gaps

    def _h_channel_changed(self, ch: ChannelRecord) -> None:
        if ch.name not in self._msgs:
            self._msgs[ch.name] = {}

    def _h_channel_deleted(
        self, ch: ChannelRecord, subs: dict[int, SubRecord], pending: dict[int, set[int]]
    ) -> None:
        self._msgs.pop(ch.name, None)
        self._gaps.discard(ch.name)

    def _h_put_msg(self, ch: ChannelRecord, seq: int, timestamp: int, raw: bytes) -> None:
        if ch.msgs and seq != ch.last_seq + 1:
            self._gaps.add(ch.name)
        self._msgs[ch.name][seq] = (timestamp, raw)

    def _h_drop_first(self, ch: ChannelRecord) -> tuple[int, int]:
        log_ = self._msgs[ch.name]
        size = len(log_.pop(ch.first_seq)[1])
        return size, _next_stored(log_, ch.first_seq + 1, ch.last_seq)

    def _h_expire(self, ch: ChannelRecord, cutoff: int) -> tuple[int, int, int]:
        log_ = self._msgs[ch.name]
        count = size = 0
        seq = ch.first_seq
        last = ch.last_seq
        while seq <= last:
            entry = log_.get(seq)
            if entry is None:  # a gap of an imported channel
                seq += 1
                continue
            if entry[0] > cutoff:
                break
            del log_[seq]
            count += 1
            size += len(entry[1])
            seq += 1
        return count, size, _next_stored(log_, seq, last)


class MemoryStore(CachedStore):
    """Everything in dicts; nothing survives the process. Cannot roll back."""

    kind = "MEMORY"

    def __init__(self) -> None:
        super().__init__(log)
        #: Channel name -> seq -> (timestamp, raw MsgProto).
        self._msgs: dict[str, dict[int, tuple[int, bytes]]] = {}
        #: Channels with gaps (imported): reads skip missing sequences there.
        self._gaps: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[CachedWriteTxn]:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("a write transaction is already open")
        self._writer = threading.get_ident()
        try:
            yield _MemoryWriteTxn(self)
        finally:
            self._writer = None
            self._lock.release()

    def close(self) -> None:
        pass

    # -- message reads ------------------------------------------------------------

    def get_msg(self, channel: str, seq: int) -> StoredMsg | None:
        entry = self._msgs.get(channel, {}).get(seq)
        return None if entry is None else StoredMsg(seq, entry[0], entry[1])

    def read_msgs(
        self, channel: str, start_seq: int, max_count: int, max_bytes: int = 1 << 20
    ) -> list[StoredMsg]:
        ch = self._channels.get(channel)
        msgs = self._msgs.get(channel)
        out: list[StoredMsg] = []
        if ch is None or msgs is None or max_count <= 0:
            return out
        seq = max(start_seq, ch.first_seq)
        last = ch.last_seq
        total = 0
        while seq <= last and len(out) < max_count:
            entry = msgs.get(seq)
            if entry is None:
                if seq >= ch.first_seq and channel in self._gaps:
                    seq += 1  # a gap of an imported channel
                    continue
                # Dropped while we read: jump to the first one left, but only
                # before the first hit (a page never has a gap).
                if not out and seq < ch.first_seq:
                    seq = ch.first_seq
                    continue
                break
            total += len(entry[1])
            if out and total > max_bytes:
                break
            out.append(StoredMsg(seq, entry[0], entry[1]))
            seq += 1
        return out

    def seq_at_time(self, channel: str, timestamp: int) -> int:
        ch = self._channels.get(channel)
        msgs = self._msgs.get(channel)
        if ch is None or msgs is None or ch.msgs == 0:
            return 0
        # Binary search on "the first stored message at or after x qualifies"
        # (true at last + 1), which holds gaps of imported channels too.
        last = ch.last_seq
        lo, hi = ch.first_seq, last + 1
        while lo < hi:
            mid = (lo + hi) // 2
            probe = _next_stored(msgs, mid, last)
            entry = msgs.get(probe) if probe <= last else None
            if probe <= last and (entry is None or entry[0] < timestamp):
                lo = probe + 1
            else:
                hi = mid
        return _next_stored(msgs, lo, last)

    # -- snapshots -----------------------------------------------------------------

    def snapshot(self, path: str) -> None:
        if self._writer == threading.get_ident():
            raise RuntimeError("snapshot inside a write transaction")
        # Holding the write lock keeps the dicts still while pickle walks them.
        with self._lock, open(path, "wb") as f:
            state = MetaState(
                self._applied,
                self._server_info,
                self._clients,
                self._channels,
                self._subs,
                self._pending,
            )
            # The applied index first, so that snapshot_applied_index reads
            # only that.
            pickle.dump((_SNAPSHOT_VERSION, state.applied), f, protocol=5)
            pickle.dump((state, self._msgs), f, protocol=5)

    def snapshot_applied_index(self, path: str) -> int:
        with open(path, "rb") as f:
            version, applied = pickle.load(f)
        _check_version(version)
        return int(applied)

    def restore(self, path: str) -> None:
        with open(path, "rb") as f:
            version, _ = pickle.load(f)
            _check_version(version)
            state, msgs = pickle.load(f)
        if self._writer == threading.get_ident():
            raise RuntimeError("restore inside a write transaction")
        with self._lock:
            self._install(state)
            _sync_dict(self._msgs, msgs)
            self._gaps.clear()
            self._gaps.update(
                name
                for name, ch in state.channels.items()
                if ch.msgs and ch.msgs != ch.last_seq - ch.first_seq + 1
            )
            self._warned.clear()

    def disk_size(self) -> int:
        return 0

    def free_disk(self) -> int | None:
        return None

    def mapped_reads(self) -> int:
        return 0  # nothing is mapped

    def release_memory(self) -> None:
        """Nothing is mapped: the memory store's data is its memory."""


def _next_stored(log_: dict[int, tuple[int, bytes]], seq: int, last: int) -> int:
    """The first sequence >= ``seq`` present in ``log_``, or ``last + 1``."""
    while seq <= last and seq not in log_:
        seq += 1
    return seq


def _check_version(version: object) -> None:
    if version != _SNAPSHOT_VERSION:
        raise ValueError(f"unsupported memory store snapshot version {version!r}")
