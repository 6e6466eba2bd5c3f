"""The persistent store: metadata cached in memory, everything written to LMDB.

Layout, threading and durability are explained in ``DESIGN.md``. In short:
one environment per process (never reopened while running), one LMDB write
transaction per ``with store.write()`` block, short read transactions for
message reads, and every record keyed by the channel's incarnation ID so that
a re-created channel never meets keys of its predecessor.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import lmdb
import msgpack  # type: ignore[import-untyped]

from store.api import (
    ChannelLimits,
    ChannelRecord,
    ClientRecord,
    ServerInfo,
    SnapshotError,
    StorageError,
    StoredMsg,
    SubRecord,
)
from store.memory_store import CachedStore, CachedWriteTxn, MetaState

log = logging.getLogger(__name__)

#: Version written first in every msgpack record.
RECORD_VERSION = 1
#: Named databases. Keys: see DESIGN.md.
DB_NAMES = (b"meta", b"clients", b"channels", b"subs", b"pending", b"msgs")
MAX_DBS = 16
MAX_READERS = 256

_META_APPLIED = b"applied"
_META_SERVER = b"server_info"

_Q = struct.Struct(">Q")
_QQ = struct.Struct(">QQ")
_QQQ = struct.Struct(">QQQ")
#: Length of the timestamp that prefixes every stored message value.
_TS_LEN = 8

_Txn = lmdb.Transaction


# ---------------------------------------------------------------------------
# Record encoding (msgpack lists, version first)
# ---------------------------------------------------------------------------


def _pack(obj: list[Any]) -> bytes:
    out = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def _unpack(raw: bytes, what: str) -> list[Any]:
    rec = msgpack.unpackb(raw, raw=False, use_list=True)
    if not isinstance(rec, list) or not rec or rec[0] != RECORD_VERSION:
        raise ValueError(f"unsupported {what} record: {rec!r:.80}")
    return rec


def _enc_server(info: ServerInfo) -> bytes:
    return _pack([RECORD_VERSION, info.cluster_id, info.node_id, info.discover_prefix])


def _dec_server(raw: bytes) -> ServerInfo:
    _, cluster_id, node_id, prefix = _unpack(raw, "server info")
    return ServerInfo(cluster_id=cluster_id, node_id=node_id, discover_prefix=prefix)


def _enc_client(c: ClientRecord) -> bytes:
    return _pack(
        [
            RECORD_VERSION,
            c.hb_inbox,
            c.conn_id,
            c.protocol,
            c.ping_interval,
            c.ping_max_out,
            c.client_id,
        ]
    )


def _dec_client(raw: bytes) -> ClientRecord:
    _, hb_inbox, conn_id, protocol, ping_interval, ping_max_out, client_id = _unpack(raw, "client")
    return ClientRecord(client_id, hb_inbox, conn_id, protocol, ping_interval, ping_max_out)


def _enc_channel(c: ChannelRecord) -> bytes:
    lim = c.limits
    return _pack(
        [
            RECORD_VERSION,
            c.channel_id,
            lim.max_msgs,
            lim.max_bytes,
            lim.max_age,
            lim.max_subs,
            lim.max_inactivity,
            c.first_seq,
            c.last_seq,
            c.msgs,
            c.bytes,
            c.last_timestamp,
            c.next_sub_id,
            c.last_activity,
            c.name,
        ]
    )


def _dec_channel(raw: bytes) -> ChannelRecord:
    r = _unpack(raw, "channel")
    return ChannelRecord(
        name=r[14],
        channel_id=r[1],
        limits=ChannelLimits(r[2], r[3], r[4], r[5], r[6]),
        first_seq=r[7],
        last_seq=r[8],
        msgs=r[9],
        bytes=r[10],
        last_timestamp=r[11],
        next_sub_id=r[12],
        last_activity=r[13],
    )


def _enc_sub(s: SubRecord) -> bytes:
    return _pack(
        [
            RECORD_VERSION,
            s.client_id,
            s.inbox,
            s.ack_inbox,
            s.max_inflight,
            s.ack_wait,
            s.qgroup,
            s.durable_name,
            s.last_sent,
            s.is_durable,
            s.is_closed,
        ]
    )


def _dec_sub(channel: str, sub_id: int, raw: bytes) -> SubRecord:
    r = _unpack(raw, "subscription")
    return SubRecord(channel, sub_id, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])


def _delete_prefix(cur: lmdb.Cursor[bytes], prefix: bytes) -> int:
    """Delete every key starting with ``prefix``; return how many."""
    n = 0
    if not cur.set_range(prefix):
        return 0
    while cur.key()[: len(prefix)] == prefix:
        cur.delete()
        n += 1
    return n


def _load_state(txn: _Txn[bytes], dbs: dict[bytes, Any]) -> MetaState:
    state = MetaState()
    raw = txn.get(_META_APPLIED, db=dbs[b"meta"])
    if raw is not None:
        state.applied = _Q.unpack(raw)[0]
    raw = txn.get(_META_SERVER, db=dbs[b"meta"])
    if raw is not None:
        state.server_info = _dec_server(raw)
    for val in txn.cursor(db=dbs[b"clients"]).iternext(keys=False):
        client = _dec_client(val)
        state.clients[client.client_id] = client
    by_id: dict[int, str] = {}
    for val in txn.cursor(db=dbs[b"channels"]).iternext(keys=False):
        ch = _dec_channel(val)
        state.channels[ch.name] = ch
        state.subs[ch.name] = {}
        by_id[ch.channel_id] = ch.name
    for key, val in txn.cursor(db=dbs[b"subs"]):
        channel_id, sub_id = _QQ.unpack(key)
        name = by_id.get(channel_id)
        if name is None:
            log.warning("Ignoring subscription of unknown channel id=%d sub=%d", channel_id, sub_id)
            continue
        state.subs[name][sub_id] = _dec_sub(name, sub_id, val)
    for key in txn.cursor(db=dbs[b"pending"]).iternext(values=False):
        channel_id, sub_id, seq = _QQQ.unpack(key)
        name = by_id.get(channel_id)
        if name is None:
            continue
        state.pending.setdefault((name, sub_id), set()).add(seq)
    return state


# ---------------------------------------------------------------------------
# Write transaction
# ---------------------------------------------------------------------------


class _LmdbWriteTxn(CachedWriteTxn):
    """One LMDB write transaction; channel and sub records are written at flush."""

    def __init__(self, store: LmdbStore, txn: _Txn[bytes]) -> None:
        super().__init__(store)
        self.txn = txn
        dbs = store._dbs
        self._meta = dbs[b"meta"]
        self._clients_db = dbs[b"clients"]
        self._channels_db = dbs[b"channels"]
        self._subs_db = dbs[b"subs"]
        self._pending_db = dbs[b"pending"]
        self._msgs_db = dbs[b"msgs"]
        self._msgs_cur = txn.cursor(db=self._msgs_db)
        self._dirty_channels: set[str] = set()
        self._dirty_subs: set[tuple[str, int]] = set()

    def flush(self) -> None:
        """Write the channel and subscription records changed in this txn."""
        s = self._s
        put = self.txn.put
        for name in self._dirty_channels:
            ch = s._channels.get(name)
            if ch is not None:
                put(_name_key(name), _enc_channel(ch), db=self._channels_db)
        for name, sub_id in self._dirty_subs:
            ch = s._channels.get(name)
            sub = s._subs.get(name, {}).get(sub_id)
            if ch is not None and sub is not None:
                put(_QQ.pack(ch.channel_id, sub_id), _enc_sub(sub), db=self._subs_db)
        self._dirty_channels.clear()
        self._dirty_subs.clear()

    def _h_applied(self, index: int) -> None:
        self.txn.put(_META_APPLIED, _Q.pack(index), db=self._meta)

    def _h_server_info(self, info: ServerInfo) -> None:
        self.txn.put(_META_SERVER, _enc_server(info), db=self._meta)

    def _h_put_client(self, client: ClientRecord) -> None:
        self.txn.put(_name_key(client.client_id), _enc_client(client), db=self._clients_db)

    def _h_delete_client(self, client_id: str) -> None:
        self.txn.delete(_name_key(client_id), db=self._clients_db)

    def _h_channel_changed(self, ch: ChannelRecord) -> None:
        self._dirty_channels.add(ch.name)

    def _h_channel_deleted(
        self, ch: ChannelRecord, subs: dict[int, SubRecord], pending: dict[int, set[int]]
    ) -> None:
        self._dirty_channels.discard(ch.name)
        for sub_id in subs:
            self._dirty_subs.discard((ch.name, sub_id))
        txn = self.txn
        txn.delete(_name_key(ch.name), db=self._channels_db)
        prefix = _Q.pack(ch.channel_id)
        _delete_prefix(self._msgs_cur, prefix)
        _delete_prefix(txn.cursor(db=self._subs_db), prefix)
        _delete_prefix(txn.cursor(db=self._pending_db), prefix)

    def _h_put_sub(self, ch: ChannelRecord, sub: SubRecord) -> None:
        self._dirty_subs.add((ch.name, sub.sub_id))

    def _h_delete_sub(self, ch: ChannelRecord, sub_id: int, pending: set[int] | None) -> None:
        self._dirty_subs.discard((ch.name, sub_id))
        txn = self.txn
        txn.delete(_QQ.pack(ch.channel_id, sub_id), db=self._subs_db)
        if pending:
            pack = _QQQ.pack
            cid = ch.channel_id
            for seq in pending:
                txn.delete(pack(cid, sub_id, seq), db=self._pending_db)

    def _h_add_pending(self, ch: ChannelRecord, sub_id: int, seqs: list[int]) -> None:
        pack = _QQQ.pack
        cid = ch.channel_id
        self.txn.cursor(db=self._pending_db).putmulti([(pack(cid, sub_id, q), b"") for q in seqs])

    def _h_remove_pending(self, ch: ChannelRecord, sub_id: int, seqs: list[int]) -> None:
        pack = _QQQ.pack
        cid = ch.channel_id
        delete = self.txn.delete
        for seq in seqs:
            delete(pack(cid, sub_id, seq), db=self._pending_db)

    def _h_put_msg(self, ch: ChannelRecord, seq: int, timestamp: int, raw: bytes) -> None:
        # Not append=True: channels share the DB, so a key is only the
        # greatest one for the newest channel (PARTS.md trap).
        self._msgs_cur.put(_QQ.pack(ch.channel_id, seq), _Q.pack(timestamp) + raw)

    def _h_drop_first(self, ch: ChannelRecord) -> tuple[int, int]:
        cur = self._msgs_cur
        key = _QQ.pack(ch.channel_id, ch.first_seq)
        if not cur.set_key(key):
            raise RuntimeError(f"message {ch.first_seq} of channel {ch.name!r} is missing")
        size = len(cur.value()) - _TS_LEN
        cur.delete()
        # The cursor now rests on the next record: the next stored sequence
        # (not always first_seq + 1 in an imported channel with gaps).
        nxt = cur.key()
        if nxt[:8] == key[:8]:
            return size, _Q.unpack_from(nxt, 8)[0]
        return size, ch.last_seq + 1

    def _h_expire(self, ch: ChannelRecord, cutoff: int) -> tuple[int, int, int]:
        cur = self._msgs_cur
        prefix = _Q.pack(ch.channel_id)
        count = size = 0
        if not cur.set_range(_QQ.pack(ch.channel_id, ch.first_seq)):
            return 0, 0, ch.first_seq
        while True:
            key, val = cur.item()
            if key[:8] != prefix:
                return count, size, ch.last_seq + 1
            if _Q.unpack_from(val)[0] > cutoff:
                return count, size, _Q.unpack_from(key, 8)[0]
            count += 1
            size += len(val) - _TS_LEN
            cur.delete()


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


class LmdbStore(CachedStore):
    """A store in the LMDB environment (a directory) at ``path``.

    Open it once per process and close it only at shutdown: python-lmdb
    refuses a second open of the same files, and closing while other threads
    read breaks them.
    """

    kind = "LMDB"

    def __init__(
        self, path: str, *, sync: bool = True, journaled: bool = False, map_size: int = 1 << 40
    ) -> None:
        super().__init__(log)
        self.path = path
        self._free: int | None = None
        self._mapped_reads = 0
        self._free_checked = -_FREE_DISK_CACHE
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._env = lmdb.open(
            path,
            subdir=True,
            map_size=map_size,
            max_dbs=MAX_DBS,
            max_readers=MAX_READERS,
            sync=sync,
            # Without the meta page's own fsync, a system crash can undo the
            # last commit (never corrupt the file): fine when a journal holds it.
            metasync=sync and not journaled,
            writemap=False,
            lock=True,
            mode=0o600,
        )
        try:
            self._dbs = {name: self._env.open_db(name, create=True) for name in DB_NAMES}
            self._wtxn: _LmdbWriteTxn | None = None
            self._write_lock = threading.Lock()
            self._load()
        except BaseException:
            self._env.close()
            raise

    def _load(self) -> None:
        with self._env.begin() as txn:
            state = _load_state(txn, self._dbs)
        self._install(state)

    @contextmanager
    def write(self) -> Iterator[CachedWriteTxn]:
        if not self._write_lock.acquire(blocking=False):
            raise RuntimeError("a write transaction is already open")
        try:
            txn = self._env.begin(write=True)
            wt = _LmdbWriteTxn(self, txn)
            self._wtxn = wt
            self._writer = threading.get_ident()
            committed = False
            try:
                try:
                    yield wt
                    wt.flush()
                    txn.commit()
                except lmdb.Error as exc:
                    # Map full, disk full, I/O error: nothing is kept (below)
                    # and the caller may retry once space returns.
                    raise StorageError(f"store write failed: {exc}") from exc
                committed = True
            finally:
                self._wtxn = None
                self._writer = None
                if not committed:
                    try:
                        txn.abort()
                    except lmdb.Error:
                        log.exception("Aborting the write transaction failed")
                    self._load()
        finally:
            self._write_lock.release()

    def close(self) -> None:
        self._env.close()

    # -- message reads ------------------------------------------------------------

    def _reader(self) -> AbstractContextManager[_Txn[bytes]]:
        """The open write txn on the writer thread (read-your-writes), else a
        short read transaction."""
        wt = self._wtxn
        if wt is not None and self._writer == threading.get_ident():
            return nullcontext(wt.txn)
        return self._env.begin()

    def get_msg(self, channel: str, seq: int) -> StoredMsg | None:
        ch = self._channels.get(channel)
        if ch is None or seq <= 0:
            return None
        with self._reader() as txn:
            val = txn.get(_QQ.pack(ch.channel_id, seq), db=self._dbs[b"msgs"])
        if val is None:
            return None
        return StoredMsg(seq, _Q.unpack_from(val)[0], val[_TS_LEN:])

    def read_msgs(
        self, channel: str, start_seq: int, max_count: int, max_bytes: int = 1 << 20
    ) -> list[StoredMsg]:
        out: list[StoredMsg] = []
        ch = self._channels.get(channel)
        if ch is None or max_count <= 0:
            return out
        cid = ch.channel_id
        prefix = _Q.pack(cid)
        unpack_from = _Q.unpack_from
        total = 0
        with self._reader() as txn:
            cur = txn.cursor(db=self._dbs[b"msgs"])
            if not cur.set_range(_QQ.pack(cid, max(start_seq, 0))):
                return out
            for key, val in cur.iternext():
                if key[:8] != prefix:
                    break
                raw = val[_TS_LEN:]
                total += len(raw)
                if out and total > max_bytes:
                    break
                out.append(StoredMsg(unpack_from(key, 8)[0], unpack_from(val)[0], raw))
                if len(out) >= max_count:
                    break
        self._mapped_reads += total
        return out

    def seq_at_time(self, channel: str, timestamp: int) -> int:
        ch = self._channels.get(channel)
        if ch is None:
            return 0
        cid = ch.channel_id
        prefix = _Q.pack(cid)
        with self._reader() as txn:
            cur = txn.cursor(db=self._dbs[b"msgs"])
            # First and last stored sequences as this transaction sees them.
            if not cur.set_range(prefix) or cur.key()[:8] != prefix:
                return 0
            lo: int = _Q.unpack_from(cur.key(), 8)[0]
            if cid < (1 << 64) - 1 and cur.set_range(_Q.pack(cid + 1)):
                cur.prev()
            else:
                cur.last()
            hi: int = _Q.unpack_from(cur.key(), 8)[0] + 1
            last_stored = hi - 1
            # Timestamps never decrease along sequences: binary search on "the
            # first stored message at or after mid qualifies" (set_range skips
            # the gaps an imported channel may have).
            while lo < hi:
                mid = (lo + hi) // 2
                if not cur.set_range(_QQ.pack(cid, mid)):
                    break
                if _Q.unpack_from(cur.value())[0] < timestamp:
                    lo = _Q.unpack_from(cur.key(), 8)[0] + 1
                else:
                    hi = mid
            if lo <= last_stored and cur.set_range(_QQ.pack(cid, lo)):
                lo = _Q.unpack_from(cur.key(), 8)[0]
        return lo

    # -- snapshots -----------------------------------------------------------------

    def snapshot(self, path: str) -> None:
        with self._env.begin() as txn, open(path, "wb") as f:
            self._env.copyfd(f.fileno(), compact=True, txn=txn)
            f.flush()
            os.fsync(f.fileno())

    def snapshot_applied_index(self, path: str) -> int:
        image = _open_image(path)
        try:
            with image.begin() as txn:
                meta = image.open_db(b"meta", txn=txn, create=False)
                raw = txn.get(_META_APPLIED, db=meta)
        finally:
            image.close()
        return 0 if raw is None else int(_Q.unpack(raw)[0])

    def restore(self, path: str) -> None:
        if self._wtxn is not None and self._writer == threading.get_ident():
            raise RuntimeError("restore inside a write transaction")
        image = _open_image(path)
        try:
            with (
                self._write_lock,
                image.begin(buffers=True) as src,
                self._env.begin(write=True) as dst,
            ):
                for name, db in self._dbs.items():
                    dst.drop(db, delete=False)
                    try:
                        src_db = image.open_db(name, txn=src, create=False)
                    except lmdb.NotFoundError:
                        continue
                    # Sorted source into an emptied DB: append is safe here, and
                    # the count check catches any record append would skip.
                    n_src = src.stat(src_db)["entries"]
                    _, added = dst.cursor(db=db).putmulti(
                        src.cursor(db=src_db).iternext(), append=True
                    )
                    if added != n_src:
                        raise RuntimeError(
                            f"restore of {name.decode()} copied {added} of {n_src} records"
                        )
        finally:
            image.close()
        self._load()
        self._warned.clear()

    def disk_size(self) -> int:
        return os.stat(os.path.join(self.path, "data.mdb")).st_size

    def free_disk(self) -> int | None:
        now = time.monotonic()
        if now >= self._free_checked + _FREE_DISK_CACHE:
            st = os.statvfs(self.path)
            self._free = st.f_bavail * st.f_frsize
            self._free_checked = now
        return self._free

    def mapped_reads(self) -> int:
        return self._mapped_reads

    def release_memory(self) -> None:
        data = os.path.realpath(os.path.join(self.path, "data.mdb"))
        size = self.disk_size()
        for start, end in _mapped_ranges(data):
            length = min(end - start, size)
            if length > 0:
                _madvise_dontneed(start, length)


def _mapped_ranges(path: str) -> list[tuple[int, int]]:
    """Address ranges where this process maps ``path`` (from /proc/self/maps)."""
    out: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].rstrip("\n") == path:
                    lo, _, hi = parts[0].partition("-")
                    out.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return out


#: Seconds a free-space reading of the store's filesystem is reused.
_FREE_DISK_CACHE = 0.1

_MADV_DONTNEED = 4
_libc: Any = None


def _madvise_dontneed(addr: int, length: int) -> None:
    """Unmap the pages of a read-only shared file mapping from the page tables.

    LMDB (without MDB_WRITEMAP) maps its file read-only and shared, so the
    pages are page cache: the next read maps them again from the file."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    length = (length + page - 1) // page * page
    if _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(length), _MADV_DONTNEED) != 0:
        log.debug("madvise failed errno=%d", ctypes.get_errno())


#: LMDB keys are at most 511 bytes; longer names are keyed by their digest.
_MAX_NAME_KEY = 400


def _name_key(name: str) -> bytes:
    """The key of a client or channel record (the record holds the full name).

    Records are found through the in-memory caches, loaded by scanning, so a
    key only has to be unique and stable: the name itself when it fits, else
    a NUL byte and its SHA-256 (no valid name starts with NUL and is 33 bytes).
    """
    raw = name.encode()
    if len(raw) <= _MAX_NAME_KEY:
        return raw
    return b"\x00" + hashlib.sha256(raw).digest()


def _open_image(path: str) -> lmdb.Environment:
    """Open a snapshot file (a compacted data.mdb image) read-only, after
    :func:`check_image`."""
    check_image(path)
    return lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=MAX_DBS)


#: In each of the two meta pages (after the 16-byte page header): magic,
#: version, address, map size, then two 48-byte database records (the first
#: one's first field holds the page size), last page number, transaction ID.
_META_MAGIC = 0xBEEFC0DE
_META_HEAD = struct.Struct("<IIQQI")
_META_TAIL = struct.Struct("<QQ")
_META_TAIL_AT = 16 + 4 + 4 + 8 + 8 + 2 * 48


def check_image(path: str, offset: int = 0) -> None:
    """SnapshotError unless the image at ``offset`` of ``path`` holds every
    page its newest meta page names.

    LMDB maps the file and would read past its end (the process dies of
    SIGBUS) if a snapshot arrived cut short or with pieces missing.
    """
    size = os.path.getsize(path) - offset
    with open(path, "rb") as f:
        f.seek(offset)
        head = f.read(2 * 65536)
    best: tuple[int, int, int] | None = None  # (txnid, last page, page size)
    for at in {0, *(p for p in (4096, 8192, 16384, 32768, 65536) if p < len(head))}:
        if len(head) < at + _META_TAIL_AT + _META_TAIL.size:
            continue
        magic, _version, _addr, _mapsize, psize = _META_HEAD.unpack_from(head, at + 16)
        if magic != _META_MAGIC or psize < 512:
            continue
        last_pg, txnid = _META_TAIL.unpack_from(head, at + _META_TAIL_AT)
        if best is None or txnid > best[0]:
            best = (txnid, last_pg, psize)
    if best is None:
        raise SnapshotError(f"snapshot image {path} is not an LMDB file")
    _txnid, last_pg, psize = best
    if size < (last_pg + 1) * psize:
        raise SnapshotError(
            f"snapshot image {path} is incomplete: {size} bytes, its last page ends at "
            f"{(last_pg + 1) * psize}"
        )
