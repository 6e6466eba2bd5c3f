"""The storage contract (store/api.py), run against every store implementation.

One parametrized suite, in the way nats-streaming-server's
``stores/common_msg_test.go`` loops over its store types. LMDB stores live in
``tmp_path``. Tests that only make sense for one kind narrow the ``kind`` parameter.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import pytest

from protocol import errors
from protocol.messages import MsgProto
from store import (
    ChannelLimits,
    ClientRecord,
    MemoryStore,
    ServerInfo,
    Store,
    StoredMsg,
    StoreError,
    SubRecord,
    open_store,
)
from store.lmdb_store import LmdbStore
from store.memory_store import ITER_PAGE

KINDS = ["MEMORY", "LMDB"]
UNLIMITED = ChannelLimits(max_msgs=0, max_bytes=0, max_age=0, max_subs=0, max_inactivity=0)

Opener = Callable[[str], Store]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(kind: str, tmp_path: os.PathLike[str]) -> Iterator[Opener]:
    """Opens stores of the current kind under tmp_path; closes them at teardown."""
    opened: list[Store] = []

    def open_(name: str) -> Store:
        s = open_store(kind, os.path.join(tmp_path, name), sync=False, map_size=1 << 30)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener("db")


def make_channel(
    store: Store,
    name: str = "foo",
    channel_id: int = 1,
    limits: ChannelLimits = UNLIMITED,
    now: int = 1000,
) -> None:
    with store.write() as txn:
        txn.create_channel(name, channel_id, limits, now, 0)


def publish(store: Store, channel: str, n: int, now: int = 1000, size: int = 10) -> list[int]:
    """Store n messages (payload ``size`` bytes, time ``now + i``); return their seqs."""
    with store.write() as txn:
        return [txn.store_msg(channel, "", b"x" * size, now + i).seq for i in range(n)]


def new_sub(channel: str = "foo", client_id: str = "me", **kw: object) -> SubRecord:
    fields: dict[str, object] = dict(
        channel=channel,
        sub_id=0,
        client_id=client_id,
        inbox="_INBOX.deliver",
        ack_inbox="_INBOX.ack",
        max_inflight=10,
        ack_wait=30,
    )
    fields.update(kw)
    return SubRecord(**fields)  # type: ignore[arg-type]


def seqs(msgs: Iterable[StoredMsg]) -> list[int]:
    return [m.seq for m in msgs]


def lmdb_entries(store: Store, db: bytes) -> int:
    assert isinstance(store, LmdbStore)
    with store._env.begin() as txn:
        return int(txn.stat(store._dbs[db])["entries"])


# ---------------------------------------------------------------------------
# Fresh store, server info, applied index
# ---------------------------------------------------------------------------


def test_fresh_store_is_empty(store: Store, kind: str) -> None:
    assert store.kind == kind
    assert store.applied_index() == 0
    assert store.server_info() is None
    assert dict(store.clients()) == {}
    assert dict(store.channels()) == {}
    assert dict(store.subs("foo")) == {}
    assert store.pending("foo", 1) == frozenset()
    assert store.get_msg("foo", 1) is None
    assert store.read_msgs("foo", 1, 10) == []
    assert store.seq_at_time("foo", 0) == 0
    assert list(store.iter_msgs("foo")) == []
    assert store.client_by_conn_id(b"abc") is None


def test_server_info_round_trip(store: Store) -> None:
    info = ServerInfo(cluster_id="c1", node_id="a", discover_prefix="_X.discover")
    with store.write() as txn:
        txn.put_server_info(info)
    assert store.server_info() == info
    with store.write() as txn:
        txn.put_server_info(replace(info, node_id="b"))
    got = store.server_info()
    assert got is not None and got.node_id == "b" and got.cluster_id == "c1"


def test_applied_index(store: Store) -> None:
    with store.write() as txn:
        txn.set_applied_index(7)
        assert store.applied_index() == 7
    with store.write() as txn:
        txn.set_applied_index(12)
    assert store.applied_index() == 12


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


def test_clients_put_replace_delete_and_conn_index(store: Store) -> None:
    a = ClientRecord("a", "_INBOX.hb.a", conn_id=b"conn-a1", protocol=1, ping_interval=5)
    b = ClientRecord("b", "_INBOX.hb.b")  # protocol 0: no conn_id
    with store.write() as txn:
        txn.put_client(a)
        txn.put_client(b)
    assert set(store.clients()) == {"a", "b"}
    assert store.clients()["a"] == a
    assert store.client_by_conn_id(b"conn-a1") == a
    assert store.client_by_conn_id(b"") is None

    a2 = replace(a, conn_id=b"conn-a2", hb_inbox="_INBOX.hb.a2")
    with store.write() as txn:
        txn.put_client(a2)
    assert store.clients()["a"].hb_inbox == "_INBOX.hb.a2"
    assert store.client_by_conn_id(b"conn-a1") is None
    assert store.client_by_conn_id(b"conn-a2") == a2

    with store.write() as txn:
        txn.delete_client("a")
        txn.delete_client("nobody")  # no-op
    assert set(store.clients()) == {"b"}
    assert store.client_by_conn_id(b"conn-a2") is None


# ---------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------


def test_create_channel_record(store: Store) -> None:
    limits = ChannelLimits(max_msgs=5, max_bytes=100, max_age=7, max_subs=3, max_inactivity=9)
    with store.write() as txn:
        ch = txn.create_channel("foo", 42, limits, 1234, 0)
    assert ch is store.channels()["foo"] or ch == store.channels()["foo"]
    got = store.channels()["foo"]
    assert (got.name, got.channel_id, got.limits) == ("foo", 42, limits)
    assert (got.first_seq, got.last_seq, got.msgs, got.bytes) == (0, 0, 0, 0)
    assert got.next_sub_id == 1
    assert got.last_activity == 1234
    assert dict(store.subs("foo")) == {}


def test_create_channel_errors(store: Store) -> None:
    with store.write() as txn:
        txn.create_channel("foo", 1, UNLIMITED, 0, 2)
    with pytest.raises(StoreError) as exc:
        with store.write() as txn:
            txn.create_channel("FOO", 2, UNLIMITED, 0, 0)
    assert str(exc.value) == errors.channel_case_conflict("FOO", "foo")
    assert str(exc.value) == (
        'rejecting channel "FOO" because channel "foo" alreay exists (different cases not allowed)'
    )
    with pytest.raises(ValueError):
        with store.write() as txn:
            txn.create_channel("foo", 3, UNLIMITED, 0, 0)
    with store.write() as txn:
        txn.create_channel("bar", 4, UNLIMITED, 0, 2)
    with pytest.raises(StoreError) as exc:
        with store.write() as txn:
            txn.create_channel("baz", 5, UNLIMITED, 0, 2)
    assert str(exc.value) == errors.TOO_MANY_CHANNELS == "too many channels"
    assert sorted(store.channels()) == ["bar", "foo"]
    # 0 = unlimited
    with store.write() as txn:
        txn.create_channel("baz", 5, UNLIMITED, 0, 0)
    assert len(store.channels()) == 3


def test_delete_channel_removes_messages_subs_and_pending(store: Store) -> None:
    make_channel(store, "foo", channel_id=1)
    make_channel(store, "other", channel_id=2)
    publish(store, "foo", 5)
    publish(store, "other", 2)
    with store.write() as txn:
        sub = txn.create_sub(new_sub("foo"), 0)
        txn.add_pending("foo", sub.sub_id, [1, 2])
        txn.create_sub(new_sub("other"), 0)
    with store.write() as txn:
        txn.delete_channel("foo")
        txn.delete_channel("unknown")  # no-op
    assert "foo" not in store.channels()
    assert dict(store.subs("foo")) == {}
    assert store.pending("foo", sub.sub_id) == frozenset()
    assert store.get_msg("foo", 1) is None
    assert store.read_msgs("foo", 0, 100) == []
    # The other channel is untouched.
    assert seqs(store.read_msgs("other", 0, 100)) == [1, 2]
    assert list(store.subs("other")) == [1]
    if store.kind == "LMDB":
        assert lmdb_entries(store, b"msgs") == 2
        assert lmdb_entries(store, b"subs") == 1
        assert lmdb_entries(store, b"pending") == 0
        assert lmdb_entries(store, b"channels") == 1

    # Re-created (new incarnation): starts again at sequence 1, no subs.
    make_channel(store, "foo", channel_id=10)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.next_sub_id) == (0, 0, 0, 1)
    assert publish(store, "foo", 1) == [1]
    assert dict(store.subs("foo")) == {}
    # A different case is allowed again once the old name is gone.
    with store.write() as txn:
        txn.delete_channel("foo")
        txn.create_channel("Foo", 11, UNLIMITED, 0, 0)
    assert sorted(store.channels()) == ["Foo", "other"]


def test_delete_and_recreate_in_one_txn(store: Store) -> None:
    make_channel(store, "foo", channel_id=1)
    publish(store, "foo", 3)
    with store.write() as txn:
        txn.delete_channel("foo")
        txn.create_channel("foo", 2, UNLIMITED, 5, 0)
        assert txn.store_msg("foo", "", b"new", 9).seq == 1
    assert seqs(store.read_msgs("foo", 0, 10)) == [1]
    msg = store.get_msg("foo", 1)
    assert msg is not None
    parsed = MsgProto()
    parsed.ParseFromString(msg.raw)
    assert parsed.data == b"new"


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def test_store_msg_encoding_sequences_and_timestamps(store: Store) -> None:
    make_channel(store, "foo", now=1)
    with store.write() as txn:
        m1 = txn.store_msg("foo", "_INBOX.reply", b"hello", 100)
        m2 = txn.store_msg("foo", "", b"", 90)  # clock went back
        m3 = txn.store_msg("foo", "", b"abc", 150)
    assert (m1.seq, m2.seq, m3.seq) == (1, 2, 3)
    assert (m1.timestamp, m2.timestamp, m3.timestamp) == (100, 100, 150)
    parsed = MsgProto()
    parsed.ParseFromString(m1.raw)
    assert (parsed.sequence, parsed.subject, parsed.reply, parsed.data, parsed.timestamp) == (
        1,
        "foo",
        "_INBOX.reply",
        b"hello",
        100,
    )
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (1, 3, 3)
    assert ch.bytes == len(m1.raw) + len(m2.raw) + len(m3.raw)
    assert ch.last_timestamp == 150
    assert ch.last_activity == 150
    with store.write() as txn:
        m4 = txn.store_msg("foo", "", b"", 120)
    assert m4.timestamp == 150
    assert store.channels()["foo"].last_activity == 120
    got = store.get_msg("foo", 1)
    assert got is not None and (got.seq, got.timestamp, got.raw) == (1, 100, m1.raw)
    with pytest.raises(ValueError):
        with store.write() as txn:
            txn.store_msg("nope", "", b"", 0)


def test_touch_channel(store: Store) -> None:
    make_channel(store, "foo", now=5)
    with store.write() as txn:
        txn.touch_channel("foo", 77)
        txn.touch_channel("unknown", 77)  # no-op
    assert store.channels()["foo"].last_activity == 77


def test_max_msgs_drops_oldest(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=3))
    with store.write() as txn:
        stored = [txn.store_msg("foo", "", b"m%d" % i, 1000 + i) for i in range(5)]
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (3, 5, 3)
    assert ch.bytes == sum(len(m.raw) for m in stored[2:])
    assert store.get_msg("foo", 1) is None and store.get_msg("foo", 2) is None
    assert seqs(store.read_msgs("foo", 0, 100)) == [3, 4, 5]
    publish(store, "foo", 2)
    assert seqs(store.read_msgs("foo", 0, 100)) == [5, 6, 7]
    if store.kind == "LMDB":
        assert lmdb_entries(store, b"msgs") == 3


def test_max_bytes_drops_oldest_but_keeps_newest(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        size = len(txn.store_msg("foo", "", b"x" * 10, 1).raw)
    with store.write() as txn:
        txn.delete_channel("foo")
        txn.create_channel("foo", 2, replace(UNLIMITED, max_bytes=3 * size), 0, 0)
        for i in range(5):
            txn.store_msg("foo", "", b"x" * 10, 1 + i)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.bytes) == (3, 5, 3, 3 * size)
    # A message bigger than max_bytes on its own is kept: never drop the newest.
    with store.write() as txn:
        big = txn.store_msg("foo", "", b"y" * (4 * size), 10)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.bytes) == (6, 6, 1, len(big.raw))
    assert seqs(store.read_msgs("foo", 0, 10)) == [6]
    # Next small message drops the big one.
    with store.write() as txn:
        txn.store_msg("foo", "", b"x" * 10, 11)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.bytes) == (7, 7, 1, size)


def test_limits_warning_logged_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=2))
    caplog.set_level(logging.WARNING)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "Reached limits" in r.getMessage()]

    with store.write() as txn:
        sizes = [len(txn.store_msg("foo", "", b"abc", 1000 + i).raw) for i in range(2)]
    assert warnings() == []
    with store.write() as txn:
        sizes.append(len(txn.store_msg("foo", "", b"abc", 1002).raw))
        txn.store_msg("foo", "", b"abc", 1003)
    publish(store, "foo", 3)
    assert warnings() == [
        f'Reached limits for store "foo" (msgs=3/2 bytes={sum(sizes)}/0), '
        "dropping old messages to make room for new ones"
    ]


def test_expire_msgs(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_age=100))
    with store.write() as txn:
        for ts in (1000, 1010, 1020, 1030):
            txn.store_msg("foo", "", b"abc", ts)
    sizes = {m.seq: len(m.raw) for m in store.iter_msgs("foo")}
    with store.write() as txn:
        assert txn.expire_msgs("foo", 1109) == 1  # 1109 - 1010 < 100
        assert txn.expire_msgs("foo", 1110) == 1  # now - ts >= max_age: 1010 goes
        assert txn.expire_msgs("foo", 1110) == 0
        assert txn.expire_msgs("unknown", 1110) == 0
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (3, 4, 2)
    assert ch.bytes == sizes[3] + sizes[4]
    assert seqs(store.read_msgs("foo", 0, 10)) == [3, 4]

    with store.write() as txn:
        assert txn.expire_msgs("foo", 10_000) == 2
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.bytes) == (5, 4, 0, 0)
    assert store.read_msgs("foo", 0, 10) == []
    assert store.seq_at_time("foo", 0) == 0
    with store.write() as txn:
        assert txn.expire_msgs("foo", 20_000) == 0
    # Sequences continue after an emptied channel.
    assert publish(store, "foo", 1, now=20_000) == [5]
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (5, 5, 1)
    if store.kind == "LMDB":
        assert lmdb_entries(store, b"msgs") == 1


def test_expire_msgs_without_max_age_is_noop(store: Store) -> None:
    make_channel(store, "foo")
    publish(store, "foo", 3, now=0)
    with store.write() as txn:
        assert txn.expire_msgs("foo", 10**18) == 0
    assert store.channels()["foo"].msgs == 3


def test_read_msgs_paging_and_max_bytes(store: Store) -> None:
    make_channel(store, "foo")
    publish(store, "foo", 10, size=20)
    size = len(store.read_msgs("foo", 1, 1)[0].raw)
    assert seqs(store.read_msgs("foo", 1, 4)) == [1, 2, 3, 4]
    assert seqs(store.read_msgs("foo", 5, 4)) == [5, 6, 7, 8]
    assert seqs(store.read_msgs("foo", 9, 4)) == [9, 10]
    assert store.read_msgs("foo", 11, 4) == []
    assert seqs(store.read_msgs("foo", 0, 2)) == [1, 2]
    assert store.read_msgs("foo", 1, 0) == []
    # max_bytes: whole messages up to the budget...
    assert seqs(store.read_msgs("foo", 1, 100, max_bytes=3 * size)) == [1, 2, 3]
    assert seqs(store.read_msgs("foo", 1, 100, max_bytes=3 * size + 1)) == [1, 2, 3]
    assert seqs(store.read_msgs("foo", 1, 100, max_bytes=3 * size - 1)) == [1, 2]
    # ...but always the first one.
    assert seqs(store.read_msgs("foo", 4, 100, max_bytes=1)) == [4]
    assert store.read_msgs("foo", 1, 1)[0].timestamp == 1000
    # Another channel's messages never leak into a read.
    make_channel(store, "bar", channel_id=2)
    publish(store, "bar", 3)
    assert seqs(store.read_msgs("foo", 9, 100)) == [9, 10]
    assert seqs(store.read_msgs("bar", 0, 100)) == [1, 2, 3]


def test_mapped_reads_count_what_was_read_through_the_map(store: Store, kind: str) -> None:
    make_channel(store, "foo")
    publish(store, "foo", 10, size=20)
    before = store.mapped_reads()
    got = store.read_msgs("foo", 1, 4)
    read = sum(len(m.raw) for m in got)
    if kind == "LMDB":
        assert store.mapped_reads() - before >= read > 0
        store.release_memory()  # drops mappings, not data
        assert [m.raw for m in store.read_msgs("foo", 1, 4)] == [m.raw for m in got]
    else:
        assert store.mapped_reads() == before == 0


def test_read_msgs_start_below_first(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=3))
    publish(store, "foo", 6)
    assert seqs(store.read_msgs("foo", 1, 2)) == [4, 5]


def test_get_msg_dropped_and_unknown(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=2))
    publish(store, "foo", 3)
    assert store.get_msg("foo", 1) is None  # dropped
    assert store.get_msg("foo", 0) is None
    assert store.get_msg("foo", 4) is None  # not yet stored
    assert store.get_msg("bar", 1) is None  # unknown channel
    got = store.get_msg("foo", 3)
    assert got is not None and got.seq == 3 and got.timestamp == 1002


def test_seq_at_time(store: Store) -> None:
    make_channel(store, "foo")
    assert store.seq_at_time("foo", 0) == 0  # no message
    with store.write() as txn:
        for ts in (100, 200, 200, 300, 400):
            txn.store_msg("foo", "", b"", ts)
    assert store.seq_at_time("foo", 0) == 1
    assert store.seq_at_time("foo", 100) == 1
    assert store.seq_at_time("foo", 101) == 2
    assert store.seq_at_time("foo", 200) == 2
    assert store.seq_at_time("foo", 201) == 4
    assert store.seq_at_time("foo", 400) == 5
    assert store.seq_at_time("foo", 401) == 6  # none qualifies: last_seq + 1
    assert store.seq_at_time("unknown", 0) == 0
    # With the oldest dropped, the answer never goes below first_seq.
    with store.write() as txn:
        txn.delete_channel("foo")
        txn.create_channel("foo", 2, replace(UNLIMITED, max_msgs=2), 0, 0)
        for ts in (100, 200, 300, 400):
            txn.store_msg("foo", "", b"", ts)
    assert store.seq_at_time("foo", 0) == 3
    assert store.seq_at_time("foo", 350) == 4
    assert store.seq_at_time("foo", 500) == 5


def test_seq_at_time_long_channel(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        for i in range(1000):
            txn.store_msg("foo", "", b"", i // 3)
    for t in (0, 1, 2, 150, 332, 333):
        expected = next((m.seq for m in store.iter_msgs("foo") if m.timestamp >= t), 1001)
        assert store.seq_at_time("foo", t) == expected


def test_iter_msgs(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=2 * ITER_PAGE + 5))
    n = 2 * ITER_PAGE + 10
    publish(store, "foo", n, size=3)
    got = list(store.iter_msgs("foo"))
    assert seqs(got) == list(range(6, n + 1))
    assert all(m.timestamp == 1000 + m.seq - 1 for m in got)


# ---------------------------------------------------------------------------
# Subscriptions and pending sets
# ---------------------------------------------------------------------------


def test_subs_create_put_delete(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        a = txn.create_sub(new_sub(sub_id=99, durable_name="dur", is_durable=True), 0)
        b = txn.create_sub(new_sub(client_id="other", qgroup="q"), 0)
    assert (a.sub_id, b.sub_id) == (1, 2)
    assert a.durable_name == "dur" and a.is_durable and a.client_id == "me"
    assert store.subs("foo")[1] == a
    assert store.subs("foo")[2].qgroup == "q"
    assert store.channels()["foo"].next_sub_id == 3

    with store.write() as txn:
        txn.put_sub(replace(store.subs("foo")[1], last_sent=42, is_closed=True, client_id=""))
    got = store.subs("foo")[1]
    assert (got.last_sent, got.is_closed, got.client_id) == (42, True, "")

    with store.write() as txn:
        txn.delete_sub("foo", 2)
        txn.delete_sub("foo", 2)  # no-op
        txn.delete_sub("unknown", 1)  # no-op
    assert list(store.subs("foo")) == [1]
    # IDs are never reused in an incarnation.
    with store.write() as txn:
        c = txn.create_sub(new_sub(), 0)
    assert c.sub_id == 3
    assert sorted(store.subs("foo")) == [1, 3]

    with pytest.raises(ValueError):
        with store.write() as txn:
            txn.put_sub(replace(a, sub_id=77))
    with pytest.raises(ValueError):
        with store.write() as txn:
            txn.create_sub(new_sub("unknown"), 0)


def test_too_many_subs(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        txn.create_sub(new_sub(), 2)
        txn.create_sub(new_sub(), 2)
    with pytest.raises(StoreError) as exc:
        with store.write() as txn:
            txn.create_sub(new_sub(), 2)
    assert str(exc.value) == errors.TOO_MANY_SUBS == "too many subscriptions per channel"
    assert len(store.subs("foo")) == 2
    with store.write() as txn:
        txn.delete_sub("foo", 1)
        assert txn.create_sub(new_sub(), 2).sub_id == 3
        assert txn.create_sub(new_sub(), 0).sub_id == 4  # 0 = unlimited


def test_pending_add_remove(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        sub = txn.create_sub(new_sub(), 0)
        txn.add_pending("foo", sub.sub_id, [1, 2, 3])
        txn.add_pending("foo", sub.sub_id, [3, 4])
    got = store.pending("foo", sub.sub_id)
    assert got == frozenset({1, 2, 3, 4}) and isinstance(got, frozenset)
    with store.write() as txn:
        txn.remove_pending("foo", sub.sub_id, [2, 4, 99])
        txn.remove_pending("foo", 12345, [1])  # unknown sub: ignored
    assert store.pending("foo", sub.sub_id) == frozenset({1, 3})
    assert got == frozenset({1, 2, 3, 4})  # a copy, not a view
    with store.write() as txn:
        txn.remove_pending("foo", sub.sub_id, [1, 3])
    assert store.pending("foo", sub.sub_id) == frozenset()
    with store.write() as txn:
        txn.add_pending("foo", sub.sub_id, [7])
        txn.delete_sub("foo", sub.sub_id)
    assert store.pending("foo", sub.sub_id) == frozenset()
    if store.kind == "LMDB":
        assert lmdb_entries(store, b"pending") == 0
    with pytest.raises(ValueError):
        with store.write() as txn:
            txn.add_pending("foo", 999, [1])


# ---------------------------------------------------------------------------
# Views, nesting, factory
# ---------------------------------------------------------------------------


def test_views_are_live_and_read_only(store: Store) -> None:
    channels = store.channels()
    clients = store.clients()
    make_channel(store, "foo")
    subs = store.subs("foo")
    with store.write() as txn:
        txn.put_client(ClientRecord("c", "_INBOX.hb"))
        txn.create_sub(new_sub(), 0)
    assert "foo" in channels and "c" in clients and 1 in subs
    with pytest.raises(TypeError):
        channels["bar"] = channels["foo"]  # type: ignore[index]
    with pytest.raises(TypeError):
        subs[5] = subs[1]  # type: ignore[index]


def test_nested_write_is_refused(store: Store) -> None:
    with store.write():
        with pytest.raises(RuntimeError):
            with store.write():
                pass
    with store.write() as txn:  # usable again afterwards
        txn.set_applied_index(1)
    assert store.applied_index() == 1


def test_open_store_factory(tmp_path: os.PathLike[str]) -> None:
    assert isinstance(open_store("memory", None), MemoryStore)
    with pytest.raises(ValueError):
        open_store("LMDB", None)
    with pytest.raises(ValueError):
        open_store("FILE", str(tmp_path))
    path = os.path.join(tmp_path, "new", "db")
    s = open_store("LMDB", path, sync=False, map_size=1 << 24)
    try:
        assert isinstance(s, LmdbStore) and s.kind == "LMDB"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    finally:
        s.close()


def test_disk_size(store: Store) -> None:
    make_channel(store, "foo")
    publish(store, "foo", 2000, size=100)
    if store.kind == "LMDB":
        assert store.disk_size() > 2000 * 100
    else:
        assert store.disk_size() == 0


def test_free_disk(store: Store, tmp_path: os.PathLike[str]) -> None:
    free = store.free_disk()
    if store.kind == "LMDB":
        st = os.statvfs(tmp_path)
        # Same filesystem as the test's directory; others write meanwhile.
        assert free is not None and 0 < free <= st.f_blocks * st.f_frsize
    else:
        assert free is None


# ---------------------------------------------------------------------------
# Durability: reopen, rollback
# ---------------------------------------------------------------------------


def populate(store: Store) -> None:
    """A bit of everything, ending at applied index 9."""
    with store.write() as txn:
        txn.put_server_info(ServerInfo("cid", node_id="n1"))
        txn.put_client(ClientRecord("a", "_INBOX.a", conn_id=b"ca", protocol=1, ping_max_out=3))
        txn.put_client(ClientRecord("b", "_INBOX.b"))
        txn.create_channel("foo", 3, replace(UNLIMITED, max_msgs=4, max_subs=10), 50, 0)
        txn.create_channel("bar", 4, UNLIMITED, 60, 0)
        for i in range(6):
            txn.store_msg("foo", "r" if i % 2 else "", b"data%d" % i, 100 + i)
        txn.store_msg("bar", "", b"b", 200)
        s1 = txn.create_sub(new_sub("foo", durable_name="d", is_durable=True), 0)
        s2 = txn.create_sub(new_sub("foo", qgroup="d:q", is_durable=True), 0)
        txn.create_sub(new_sub("bar"), 0)
        txn.delete_sub("foo", s2.sub_id)
        txn.put_sub(replace(s1, last_sent=6))
        txn.add_pending("foo", s1.sub_id, [5, 6])
        txn.set_applied_index(9)


def assert_populated(store: Store) -> None:
    assert store.applied_index() == 9
    assert store.server_info() == ServerInfo("cid", node_id="n1")
    assert dict(store.clients()) == {
        "a": ClientRecord("a", "_INBOX.a", conn_id=b"ca", protocol=1, ping_max_out=3),
        "b": ClientRecord("b", "_INBOX.b"),
    }
    assert store.client_by_conn_id(b"ca") == store.clients()["a"]
    foo = store.channels()["foo"]
    assert (foo.channel_id, foo.first_seq, foo.last_seq, foo.msgs) == (3, 3, 6, 4)
    assert foo.limits == replace(UNLIMITED, max_msgs=4, max_subs=10)
    assert (foo.last_timestamp, foo.next_sub_id, foo.last_activity) == (105, 3, 105)
    assert foo.bytes == sum(len(m.raw) for m in store.iter_msgs("foo"))
    assert seqs(list(store.iter_msgs("foo"))) == [3, 4, 5, 6]
    m = store.get_msg("foo", 4)
    assert m is not None
    parsed = MsgProto()
    parsed.ParseFromString(m.raw)
    assert (parsed.sequence, parsed.reply, parsed.data, parsed.timestamp) == (4, "r", b"data3", 103)
    assert seqs(store.read_msgs("bar", 0, 10)) == [1]
    assert dict(store.subs("foo")) == {
        1: replace(new_sub("foo", durable_name="d", is_durable=True), sub_id=1, last_sent=6)
    }
    assert list(store.subs("bar")) == [1]
    assert store.pending("foo", 1) == frozenset({5, 6})
    assert store.seq_at_time("foo", 104) == 5


def test_populated_state(store: Store) -> None:
    populate(store)
    assert_populated(store)


@pytest.mark.parametrize("kind", ["LMDB"])
def test_persistence_across_reopen(store: Store, opener: Opener) -> None:
    populate(store)
    assert isinstance(store, LmdbStore)
    path = store.path
    store.close()
    reopened = LmdbStore(path, sync=False, map_size=1 << 30)
    try:
        assert_populated(reopened)
        # Continues where it left off.
        with reopened.write() as txn:
            assert txn.store_msg("foo", "", b"", 0).seq == 7
            assert txn.create_sub(new_sub("foo"), 0).sub_id == 3
    finally:
        reopened.close()


@pytest.mark.parametrize("kind", ["LMDB"])
def test_rollback_on_exception(store: Store) -> None:
    populate(store)
    views = (store.channels(), store.clients(), store.subs("foo"))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.write() as txn:
            txn.set_applied_index(10)
            txn.put_server_info(ServerInfo("other"))
            txn.put_client(replace(store.clients()["a"], conn_id=b"new"))
            txn.delete_client("b")
            txn.create_channel("baz", 20, UNLIMITED, 0, 0)
            for _ in range(3):
                txn.store_msg("foo", "", b"zzz", 999)
            txn.expire_msgs("foo", 10**9)
            txn.delete_channel("bar")
            txn.create_sub(new_sub("foo"), 0)
            txn.put_sub(replace(store.subs("foo")[1], last_sent=99))
            txn.remove_pending("foo", 1, [5])
            txn.add_pending("foo", 1, [7])
            txn.touch_channel("foo", 12345)
            assert store.applied_index() == 10  # read-your-writes inside the txn
            raise Boom()
    assert_populated(store)
    assert "baz" not in store.channels()
    assert store.client_by_conn_id(b"new") is None
    # Views taken before the failed block still show the live (restored) data.
    assert "bar" in views[0] and "b" in views[1] and views[2][1].last_sent == 6
    # And the disk agrees.
    assert isinstance(store, LmdbStore)
    path = store.path
    store.close()
    reopened = LmdbStore(path, sync=False, map_size=1 << 30)
    try:
        assert_populated(reopened)
    finally:
        reopened.close()


@pytest.mark.parametrize("kind", ["LMDB"])
def test_store_error_rolls_back_lmdb(store: Store) -> None:
    make_channel(store, "foo")
    with pytest.raises(StoreError):
        with store.write() as txn:
            txn.store_msg("foo", "", b"", 1)
            txn.create_channel("FOO", 2, UNLIMITED, 0, 0)
    assert store.channels()["foo"].last_seq == 0
    assert store.get_msg("foo", 1) is None


@pytest.mark.parametrize("kind", ["MEMORY"])
def test_memory_store_cannot_roll_back(store: Store) -> None:
    make_channel(store, "foo")
    with pytest.raises(RuntimeError):
        with store.write() as txn:
            txn.store_msg("foo", "", b"", 1)
            raise RuntimeError("boom")
    # Documented: what was done before the exception stays.
    assert store.channels()["foo"].last_seq == 1


# ---------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------


def test_snapshot_restore_round_trip(
    store: Store, opener: Opener, tmp_path: os.PathLike[str]
) -> None:
    populate(store)
    snap = os.path.join(tmp_path, "snap.bin")
    store.snapshot(snap)
    assert os.path.isfile(snap)
    # Changes after the snapshot are not in it.
    with store.write() as txn:
        txn.store_msg("foo", "", b"later", 500)
        txn.set_applied_index(10)

    other = opener("other")
    assert other.snapshot_applied_index(snap) == 9
    # The restored content replaces whatever the target had.
    with other.write() as txn:
        txn.create_channel("gone", 1, UNLIMITED, 0, 0)
        txn.store_msg("gone", "", b"x", 1)
        txn.put_client(ClientRecord("zz", "_INBOX.zz", conn_id=b"zz"))
        txn.set_applied_index(3)
    channels_view = other.channels()
    other.restore(snap)
    assert_populated(other)
    assert "gone" not in channels_view and "foo" in channels_view
    assert other.client_by_conn_id(b"zz") is None
    assert other.read_msgs("gone", 0, 10) == []
    # The restored store keeps working.
    with other.write() as txn:
        assert txn.store_msg("foo", "", b"", 0).seq == 7
    if other.kind == "LMDB":
        assert lmdb_entries(other, b"msgs") == 4 + 1  # foo 4..7 (max 4) + bar 1
    # Restoring into the store that took the snapshot rolls it back.
    store.restore(snap)
    assert_populated(store)


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------


def test_reads_from_another_thread_during_write(store: Store) -> None:
    make_channel(store, "foo")
    publish(store, "foo", 3)
    results: dict[str, object] = {}

    def reader() -> None:
        results["msgs"] = seqs(store.read_msgs("foo", 0, 100))
        results["get"] = store.get_msg("foo", 2) is not None
        results["seq_at_time"] = store.seq_at_time("foo", 1001)
        results["iter"] = len(list(store.iter_msgs("foo")))
        results["channels"] = sorted(store.channels())

    with store.write() as txn:
        for i in range(5):
            txn.store_msg("foo", "", b"pending", 2000 + i)
        t = threading.Thread(target=reader)
        t.start()
        t.join(timeout=10)
        assert not t.is_alive(), "reader blocked by the open write transaction"
    assert results["get"] is True
    assert results["seq_at_time"] == 2
    assert results["channels"] == ["foo"]
    if store.kind == "LMDB":
        # Message reads see committed data only.
        assert results["msgs"] == [1, 2, 3]
        assert results["iter"] == 3
    else:
        assert results["msgs"] == list(range(1, 9))
    # After commit everybody sees everything.
    assert seqs(store.read_msgs("foo", 0, 100)) == list(range(1, 9))


def test_writer_thread_reads_its_own_writes(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        txn.store_msg("foo", "", b"a", 10)
        txn.store_msg("foo", "", b"b", 20)
        assert seqs(store.read_msgs("foo", 0, 10)) == [1, 2]
        assert store.get_msg("foo", 2) is not None
        assert store.seq_at_time("foo", 15) == 2


def test_concurrent_readers_while_writing(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=500))
    stop = threading.Event()
    failures: list[str] = []

    def reader() -> None:
        parsed = MsgProto()
        while not stop.is_set():
            page = store.read_msgs("foo", 0, 50)
            got = seqs(page)
            if got and got != list(range(got[0], got[0] + len(got))):
                failures.append(f"non-contiguous page {got[:5]}...")
            for m in page:
                parsed.ParseFromString(m.raw)
                if parsed.sequence != m.seq or parsed.timestamp != m.timestamp:
                    failures.append(f"raw of {m.seq} says {parsed.sequence}")
                    break

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            publish(store, "foo", 100)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not failures, failures[:3]
    assert store.channels()["foo"].last_seq == 2000


# ---------------------------------------------------------------------------
# Performance
# ---------------------------------------------------------------------------


def test_store_100k_messages_in_batches(opener: Opener) -> None:
    store = opener("perf")
    make_channel(store, "foo", limits=ChannelLimits(max_msgs=50_000))
    data = b"x" * 128
    start = time.perf_counter()
    for batch in range(200):
        with store.write() as txn:
            for i in range(500):
                txn.store_msg("foo", "", data, batch * 500 + i)
            txn.set_applied_index(batch + 1)
    elapsed = time.perf_counter() - start
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (50_001, 100_000, 50_000)
    assert elapsed < 5.0, f"storing 100k messages took {elapsed:.2f}s"


def test_long_names_round_trip(opener: Opener) -> None:
    """Names longer than an LMDB key can be are stored and recovered whole."""
    store = opener("db")
    long_client = "c" * 5000
    long_channel = "x." * 2000 + "end"
    with store.write() as txn:
        txn.put_client(ClientRecord(long_client, "hb"))
        txn.create_channel(long_channel, 1, UNLIMITED, 10, 0)
        txn.store_msg(long_channel, "", b"data", 11)
    if store.kind == "LMDB":
        store.close()
        store = opener("db")
    assert long_client in store.clients()
    assert store.channels()[long_channel].last_seq == 1
    with store.write() as txn:
        txn.delete_client(long_client)
        txn.delete_channel(long_channel)
    assert long_client not in store.clients()
    assert long_channel not in store.channels()


# ---------------------------------------------------------------------------
# Imports: explicit sequences, gaps, advanced counters, preset subscription IDs
# ---------------------------------------------------------------------------


def import_msgs(store: Store, channel: str, *pairs: tuple[int, int]) -> list[StoredMsg]:
    """Import ``(seq, timestamp)`` messages with data ``b"m<seq>"``."""
    with store.write() as txn:
        return [txn.import_msg(channel, q, ts, "", b"m%d" % q) for q, ts in pairs]


def test_import_msg_keeps_sequence_and_timestamp(store: Store) -> None:
    make_channel(store, "foo", now=7)
    with store.write() as txn:
        m = txn.import_msg("foo", 5, 500, "_INBOX.r", b"hello")
    parsed = MsgProto()
    parsed.ParseFromString(m.raw)
    assert (parsed.sequence, parsed.subject, parsed.reply, parsed.data, parsed.timestamp) == (
        5,
        "foo",
        "_INBOX.r",
        b"hello",
        500,
    )
    import_msgs(store, "foo", (6, 400), (9, 900))  # an older timestamp is kept as given
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (5, 9, 3)
    assert ch.last_timestamp == 900 and ch.last_activity == 7
    assert ch.bytes == sum(len(x.raw) for x in store.iter_msgs("foo"))
    got = store.get_msg("foo", 6)
    assert got is not None and got.timestamp == 400
    for bad in (9, 8, 1):
        with pytest.raises(ValueError):
            with store.write() as txn:
                txn.import_msg("foo", bad, 1000, "", b"")
    # Publishing continues the sequence; timestamps never go below the last one.
    with store.write() as txn:
        m10 = txn.store_msg("foo", "", b"new", 800)
    assert (m10.seq, m10.timestamp) == (10, 900)


def test_gaps_are_skipped_by_reads(store: Store) -> None:
    make_channel(store, "foo")
    import_msgs(store, "foo", (3, 30), (4, 40), (7, 70), (8, 80), (12, 120))
    assert seqs(store.read_msgs("foo", 0, 100)) == [3, 4, 7, 8, 12]
    assert seqs(store.read_msgs("foo", 5, 100)) == [7, 8, 12]
    assert seqs(store.read_msgs("foo", 5, 2)) == [7, 8]
    assert seqs(store.read_msgs("foo", 9, 100)) == [12]
    assert seqs(store.iter_msgs("foo")) == [3, 4, 7, 8, 12]
    assert store.get_msg("foo", 5) is None
    assert store.seq_at_time("foo", 0) == 3
    assert store.seq_at_time("foo", 41) == 7
    assert store.seq_at_time("foo", 70) == 7
    assert store.seq_at_time("foo", 81) == 12
    assert store.seq_at_time("foo", 121) == 13


def test_limits_drop_oldest_across_gaps(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_msgs=2))
    import_msgs(store, "foo", (1, 10), (2, 20), (5, 50), (9, 90))
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (5, 9, 2)
    assert seqs(store.read_msgs("foo", 0, 10)) == [5, 9]
    with store.write() as txn:
        assert txn.store_msg("foo", "", b"x", 100).seq == 10
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (9, 10, 2)
    assert ch.bytes == sum(len(m.raw) for m in store.iter_msgs("foo"))


def test_expiry_across_gaps(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_age=100))
    import_msgs(store, "foo", (1, 10), (4, 40), (8, 80), (9, 500))
    with store.write() as txn:
        assert txn.expire_msgs("foo", 145) == 2  # 10 and 40 are >= 100 old
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (8, 9, 2)
    with store.write() as txn:
        assert txn.expire_msgs("foo", 10_000) == 2
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.bytes) == (10, 9, 0, 0)


def test_advance_channel(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        txn.advance_channel("foo", last_seq=100, next_sub_id=5)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.next_sub_id) == (101, 100, 0, 5)
    with store.write() as txn:
        txn.advance_channel("foo", last_seq=50, next_sub_id=2)  # never backwards
        assert txn.create_sub(new_sub("foo"), 0).sub_id == 5
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.next_sub_id) == (101, 100, 6)
    import_msgs(store, "foo", (101, 1), (102, 2))
    with store.write() as txn:
        txn.advance_channel("foo", last_seq=110)  # the last two could not be imported
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (101, 110, 2)
    assert seqs(store.read_msgs("foo", 0, 10)) == [101, 102]
    assert store.seq_at_time("foo", 3) > 102
    assert publish(store, "foo", 1, now=5) == [111]


def test_import_sub_with_its_id(store: Store) -> None:
    make_channel(store, "foo")
    with store.write() as txn:
        rec = txn.import_sub(new_sub("foo", sub_id=7, durable_name="d", is_durable=True))
        txn.add_pending("foo", 7, [3, 4])
    assert rec.sub_id == 7 and store.subs("foo")[7].durable_name == "d"
    assert store.channels()["foo"].next_sub_id == 8
    assert store.pending("foo", 7) == frozenset({3, 4})
    for bad in (7, 0):
        with pytest.raises(ValueError):
            with store.write() as txn:
                txn.import_sub(new_sub("foo", sub_id=bad))
    with store.write() as txn:
        txn.import_sub(new_sub("foo", sub_id=2))  # below next_sub_id: kept as is
        assert txn.create_sub(new_sub("foo"), 0).sub_id == 8


def test_import_sub_ignores_max_subs(store: Store) -> None:
    make_channel(store, "foo", limits=replace(UNLIMITED, max_subs=1))
    with store.write() as txn:
        txn.import_sub(new_sub("foo", sub_id=1))
        txn.import_sub(new_sub("foo", sub_id=2))
    assert sorted(store.subs("foo")) == [1, 2]
    with pytest.raises(StoreError):
        with store.write() as txn:
            txn.create_sub(new_sub("foo"), 1)


@pytest.mark.parametrize("kind", ["LMDB"])
def test_imports_survive_reopen(store: Store) -> None:
    make_channel(store, "foo")
    import_msgs(store, "foo", (10, 1), (12, 2))
    with store.write() as txn:
        txn.advance_channel("foo", last_seq=15, next_sub_id=3)
        txn.import_sub(new_sub("foo", sub_id=9))
        txn.add_pending("foo", 9, [12])
    assert isinstance(store, LmdbStore)
    path = store.path
    store.close()
    reopened = LmdbStore(path, sync=False, map_size=1 << 30)
    try:
        ch = reopened.channels()["foo"]
        assert (ch.first_seq, ch.last_seq, ch.msgs, ch.next_sub_id) == (10, 15, 2, 10)
        assert seqs(reopened.read_msgs("foo", 0, 10)) == [10, 12]
        assert reopened.pending("foo", 9) == frozenset({12})
    finally:
        reopened.close()


def test_gaps_survive_snapshot_restore(opener: Opener, tmp_path: os.PathLike[str]) -> None:
    a = opener("a")
    make_channel(a, "foo")
    import_msgs(a, "foo", (1, 1), (3, 3), (4, 4), (9, 9))
    snap = os.path.join(tmp_path, "snap.bin")
    a.snapshot(snap)
    b = opener("b")
    b.restore(snap)
    assert seqs(b.read_msgs("foo", 0, 10)) == [1, 3, 4, 9]
    assert seqs(b.read_msgs("foo", 5, 10)) == [9]


def test_release_memory_keeps_data(opener: Opener) -> None:
    """Dropping mapped pages loses nothing: reads afterwards see the same data."""
    store = opener("db")
    make_channel(store)
    with store.write() as txn:
        for i in range(500):
            txn.store_msg("foo", "", b"%d" % i * 50, 2000 + i)
    before = [m.raw for m in store.iter_msgs("foo")]
    store.release_memory()
    assert [m.raw for m in store.iter_msgs("foo")] == before
    with store.write() as txn:
        txn.store_msg("foo", "", b"after", 9999)
    assert store.get_msg("foo", 501) is not None


@pytest.mark.parametrize(
    ("sync", "journaled", "metasync"),
    [(True, False, True), (True, True, False), (False, True, False), (False, False, False)],
)
def test_lmdb_sync_flags(tmp_path: object, sync: bool, journaled: bool, metasync: bool) -> None:
    """A synced store fsyncs its meta page too, unless a synced journal in
    front of it replays what a crash undoes (one fsync per commit, not two)."""
    st = open_store("LMDB", str(tmp_path), sync=sync, journaled=journaled)  # type: ignore[arg-type]
    try:
        flags = st._env.flags()  # type: ignore[attr-defined]
        assert (flags["sync"], flags["metasync"]) == (sync, metasync)
    finally:
        st.close()


@pytest.mark.parametrize("kind", ["LMDB"])
@pytest.mark.parametrize("damage", ["cut short", "piece missing", "not a store"])
def test_damaged_snapshot_image_is_refused_before_it_is_read(
    opener: Opener, tmp_path: os.PathLike[str], damage: str
) -> None:
    """A snapshot that arrived incomplete must be refused with SnapshotError:
    opened, it would make LMDB read past the end of the file (SIGBUS)."""
    from store import SnapshotError

    src = opener("src")
    make_channel(src)
    for _ in range(20):
        publish(src, "foo", 100, size=1000)
    path = os.path.join(tmp_path, "image")
    src.snapshot(path)
    with open(path, "rb") as f:
        data = f.read()
    assert src.snapshot_applied_index(path) == src.applied_index()  # whole: fine
    piece = 1 << 16
    damaged = {
        "cut short": data[: len(data) // 2],
        "piece missing": data[:piece] + data[2 * piece :],
        "not a store": b"\0" * len(data),
    }[damage]
    with open(path, "wb") as f:
        f.write(damaged)
    dst = opener("dst")
    with pytest.raises(SnapshotError):
        dst.snapshot_applied_index(path)
    with pytest.raises(SnapshotError):
        dst.restore(path)
    assert dst.channels() == {}
