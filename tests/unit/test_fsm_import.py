"""The import commands applied by the state machine (cluster/fsm_import.py).

Validation before change, recognised repeats, the reference's recovery rules
for subscriptions, and what normal commands do with imported state afterwards
(durables resume, queue shadows are taken over, sequences continue).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster import commands as c
from cluster.fsm import SKIPPED, Outcome, StateMachine, SubAdded
from cluster.fsm_import import (
    ERR_BAD_BATCH,
    ERR_CHANNEL_EXISTS,
    ERR_OUT_OF_ORDER,
    ERR_SUB_EXISTS,
)
from protocol import errors
from store import open_store
from store.api import Store
from store.limits import PerChannelLimits, StoreLimits

SEC = 1_000_000_000


@pytest.fixture
def store(fsm_store: Store) -> Store:
    return fsm_store


class Harness:
    """Feeds commands with increasing Raft indexes and keeps the encoded log."""

    def __init__(self, store: Store, limits: StoreLimits | None = None) -> None:
        self.fsm = StateMachine(store, limits or StoreLimits())
        self.store = store
        self.index = 0
        self.log: list[bytes] = []

    def run(self, cmd: c.Command) -> Outcome:
        self.index += 1
        blob = c.encode(cmd)
        self.log.append(blob)
        return self.fsm.apply(self.index, blob)

    def channel(self, name: str = "foo", first: int = 1, next_sub_id: int = 1) -> Outcome:
        return self.run(c.ImportChannel(name, first, next_sub_id, [], 1000 * SEC))

    def msgs(self, name: str, after: int, seqs: list[int], last: int = 0, now: int = 0) -> Outcome:
        batch = [(q, (1000 + q) * SEC, "", b"m%d" % q) for q in seqs]
        return self.run(c.ImportMsgs(name, after, batch, last, now))

    def client(self, *ids: str) -> Outcome:
        return self.run(c.ImportClient([(i, f"hb.{i}", i.encode(), 1, 5, 3) for i in ids]))

    def sub(self, **kw: Any) -> Outcome:
        args: dict[str, Any] = dict(
            channel="foo",
            sub_id=1,
            client_id="a",
            inbox="in.1",
            ack_inbox="ack.1",
            max_inflight=5,
            ack_wait=60,
        )
        args.update(kw)
        return self.run(c.ImportSub(**args))


def state(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {"clients": dict(store.clients()), "channels": {}}
    for name, ch in store.channels().items():
        out["channels"][name] = (
            ch,
            [(m.seq, m.timestamp, m.raw) for m in store.iter_msgs(name)],
            dict(store.subs(name)),
            {sid: store.pending(name, sid) for sid in store.subs(name)},
        )
    return out


def test_channel_is_created_with_its_first_sequence(store: Store) -> None:
    h = Harness(store)
    out = h.channel("foo", first=1001, next_sub_id=4)
    assert out.error == "" and out.value == 1  # channel ID = the entry's index
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs, ch.next_sub_id) == (1001, 1000, 0, 4)
    assert ch.last_activity == 1000 * SEC
    assert ERR_CHANNEL_EXISTS in h.channel("foo").error
    assert "invalid channel name" in h.channel("a..b").error
    assert h.run(c.ImportChannel("zero", 0, 1, [], 0)).error == ""
    zero = store.channels()["zero"]
    assert (zero.first_seq, zero.last_seq) == (0, 0)


def test_channel_limits_configured_or_given(store: Store) -> None:
    limits = StoreLimits(max_channels=2, channels={"foo": PerChannelLimits(max_msgs=10)})
    h = Harness(store, limits)
    h.channel("foo")
    assert store.channels()["foo"].limits.max_msgs == 10
    h.run(c.ImportChannel("bar", 1, 1, [7, 0, 0, 3, 0], 0))
    lim = store.channels()["bar"].limits
    assert (lim.max_msgs, lim.max_bytes, lim.max_subs) == (7, 0, 3)
    assert h.channel("third").error == errors.TOO_MANY_CHANNELS
    assert "invalid limits" in h.run(c.ImportChannel("x", 1, 1, [1, 2], 0)).error


def test_message_batches_chain_and_repeat(store: Store) -> None:
    h = Harness(store)
    h.channel("foo", first=5)
    assert h.msgs("foo", 4, [5, 6, 7]).value == (3, 7)
    # A repeat of the same batch (its answer was lost) changes nothing.
    assert h.msgs("foo", 4, [5, 6, 7]).value == (0, 7)
    # A batch that does not follow is refused.
    out = h.msgs("foo", 8, [9, 10])
    assert ERR_OUT_OF_ORDER in out.error and out.error.endswith("has 7")
    # Gaps are kept; sequences must increase within the batch.
    before = state(store)
    assert ERR_BAD_BATCH in h.msgs("foo", 7, [9, 8]).error
    assert ERR_BAD_BATCH in h.msgs("foo", 7, [7, 8]).error
    bad_types = [(9, 1, "", b"ok"), (10, 1, "", "not bytes")]
    assert ERR_BAD_BATCH in h.run(c.ImportMsgs("foo", 7, bad_types, 0)).error  # type: ignore[list-item]
    assert state(store) == before  # validated before anything changed
    assert h.msgs("foo", 7, [10, 11], last=14).value == (2, 14)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (5, 14, 5)
    assert [m.seq for m in store.iter_msgs("foo")] == [5, 6, 7, 10, 11]
    m = store.get_msg("foo", 10)
    assert m is not None and m.timestamp == 1010 * SEC
    assert "unknown channel" in h.msgs("nope", 0, [1]).error


def test_closing_batch_and_activity(store: Store) -> None:
    h = Harness(store)
    h.channel("foo")
    assert h.msgs("foo", 0, [1, 2], now=5000 * SEC).value == (2, 2)
    assert store.channels()["foo"].last_activity == 5000 * SEC
    # An empty batch only moves the last sequence; repeated, it changes nothing.
    assert h.msgs("foo", 2, [], last=4).value == (0, 4)
    assert h.msgs("foo", 2, [], last=4).value == (0, 4)
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (1, 4, 2)


def test_configured_limits_apply_to_imported_messages(store: Store) -> None:
    h = Harness(store, StoreLimits(max_msgs=3))
    h.channel("foo")
    h.msgs("foo", 0, list(range(1, 11)))
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (8, 10, 3)


def test_clients(store: Store) -> None:
    h = Harness(store)
    h.run(c.Connect("b", "hb.live", b"live", 1, 5, 3))
    out = h.client("a", "b")
    assert out.value == ["a"]  # b keeps its own registration
    assert store.clients()["b"].hb_inbox == "hb.live"
    a = store.clients()["a"]
    assert (a.hb_inbox, a.conn_id, a.protocol, a.ping_interval, a.ping_max_out) == (
        "hb.a",
        b"a",
        1,
        5,
        3,
    )
    assert store.client_by_conn_id(b"a") is a
    assert h.client("a").value == []  # a repeat
    assert "invalid client ID" in h.client("a b").error
    bad = c.ImportClient([("c", "hb.c", "not bytes", 1, 5, 3)])  # type: ignore[list-item]
    assert "invalid client ID" in h.run(bad).error
    assert "c" not in store.clients()


def test_subscription_kinds(store: Store) -> None:
    h = Harness(store)
    h.channel("foo")
    h.msgs("foo", 0, list(range(1, 11)))
    h.client("a")
    durable = h.sub(sub_id=3, durable_name="d", is_durable=True, last_sent=8, pending=[0, 7, 8, 12])
    assert durable.error == "" and durable.events == [SubAdded("foo", 3)]
    assert durable.value.is_closed is False
    assert store.pending("foo", 3) == frozenset({7, 8})  # sequences not in the channel dropped
    offline = h.sub(sub_id=4, client_id="gone", inbox="in.4", durable_name="d", is_durable=True)
    assert offline.value.is_closed and offline.events == []
    shadow = h.sub(sub_id=5, client_id="", inbox="in.5", qgroup="d:q", is_durable=True)
    assert shadow.value.is_closed and shadow.value.client_id == ""
    member = h.sub(sub_id=6, inbox="in.6", qgroup="d2:q", is_durable=True)
    assert member.events == [SubAdded("foo", 6)]
    ghost = h.sub(sub_id=7, client_id="gone", inbox="in.7", qgroup="d3:q", is_durable=True)
    plain_gone = h.sub(sub_id=8, client_id="gone", inbox="in.8")
    assert ghost.value is None and plain_gone.value is None
    assert sorted(store.subs("foo")) == [3, 4, 5, 6]
    assert store.channels()["foo"].next_sub_id == 7
    # A repeat is recognised; another subscription with the same ID is refused.
    repeat = h.sub(sub_id=3, durable_name="d", is_durable=True)
    assert repeat.value.sub_id == 3 and repeat.events == []
    assert ERR_SUB_EXISTS in h.sub(sub_id=3, inbox="other").error
    assert "unknown channel" in h.sub(channel="nope").error
    assert "invalid subscription" in h.sub(sub_id=9, max_inflight="5").error
    assert "invalid subscription" in h.sub(sub_id=9, pending=["x"]).error


def test_imported_durable_resumes(store: Store) -> None:
    h = Harness(store)
    h.channel("orders")
    h.msgs("orders", 0, list(range(1, 201)))
    h.client("orders-worker")
    h.sub(
        channel="orders",
        sub_id=1,
        client_id="orders-worker",
        durable_name="orders-durable",
        is_durable=True,
        last_sent=125,
        pending=[121, 122, 123, 124, 125],
    )
    # The client comes back on a new connection: the old one is replaced and
    # its durable goes offline, then the durable is resumed where it was.
    h.run(c.Connect("orders-worker", "hb.new", b"new", 1, 5, 3, refresh=True))
    assert store.subs("orders")[1].is_closed
    out = h.run(
        c.Subscribe(
            "orders-worker", "orders", "", "in.new", 5, 60, "orders-durable", 4, 0, 0, "ack.new"
        )
    )
    assert out.error == "" and out.value.sub_id == 1
    assert (out.value.last_sent, out.value.inbox) == (125, "in.new")
    assert store.pending("orders", 1) == frozenset(range(121, 126))
    pub = h.run(c.Publish(2000 * SEC, [("orders", "", b"order-201")]))
    assert pub.value[0].msg.seq == 201


def test_imported_queue_shadow_is_taken_over(store: Store) -> None:
    h = Harness(store)
    h.channel("events")
    h.msgs("events", 0, list(range(1, 51)))
    h.sub(
        channel="events",
        client_id="",
        qgroup="events-durable:workers",
        is_durable=True,
        last_sent=50,
        pending=[48, 49, 50],
    )
    h.run(c.Connect("w", "hb.w", b"w", 1, 5, 3))
    out = h.run(
        c.Subscribe("w", "events", "workers", "in.w", 50, 60, "events-durable", 0, 0, 0, "ack.w")
    )
    assert out.error == "" and out.value.sub_id == 1 and out.value.client_id == "w"
    assert store.pending("events", 1) == frozenset({48, 49, 50})
    # A new subscription gets an ID after the imported ones.
    plain = h.run(c.Subscribe("w", "events", "", "in.p", 5, 30, "", 0, 0, 0, "ack.p"))
    assert plain.value.sub_id == 2


def test_replay_is_skipped_and_every_node_gets_the_same_state(store: Store, tmp_path: Path) -> None:
    h = Harness(store)
    h.channel("foo", first=3, next_sub_id=9)
    h.msgs("foo", 2, [3, 4, 6])
    h.msgs("foo", 6, [7], last=9)
    h.client("a", "b")
    h.sub(sub_id=2, durable_name="d", is_durable=True, last_sent=7, pending=[6, 7])
    h.sub(sub_id=5, client_id="", inbox="in.5", qgroup="g:q", is_durable=True, pending=[4])
    assert h.fsm.apply(3, h.log[2]) is SKIPPED
    other = open_store("LMDB", str(tmp_path / "other"), sync=False)
    try:
        replica = StateMachine(other, StoreLimits())
        for i, blob in enumerate(h.log, start=1):
            replica.apply(i, blob)
        assert state(other) == state(store)
    finally:
        other.close()
