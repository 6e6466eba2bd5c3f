"""The state machine on real stores: subscription kinds, queue groups, replay."""

from __future__ import annotations

import pytest

from cluster import commands as c
from cluster.fsm import (
    SKIPPED,
    ClientRemoved,
    PendingMoved,
    StateMachine,
    SubAdded,
    SubRemoved,
)
from protocol import errors
from protocol.messages import FIRST, LAST_RECEIVED, NEW_ONLY, SEQUENCE_START, TIME_DELTA_START
from store.api import Store
from store.limits import StoreLimits

SEC = 1_000_000_000


@pytest.fixture
def store(fsm_store: Store) -> Store:
    return fsm_store


class Harness:
    """Feeds commands with increasing Raft indexes, as the log would."""

    def __init__(self, store: Store, limits: StoreLimits | None = None) -> None:
        self.fsm = StateMachine(store, limits or StoreLimits())
        self.store = store
        self.index = 0

    def run(self, cmd: c.Command):  # type: ignore[no-untyped-def]
        self.index += 1
        return self.fsm.apply(self.index, c.encode(cmd))

    def connect(self, cid: str, refresh: bool = False):  # type: ignore[no-untyped-def]
        return self.run(c.Connect(cid, f"hb.{cid}", cid.encode(), 1, 5, 3, refresh))

    def publish(self, channel: str, *datas: bytes, now: int = 1000 * SEC):  # type: ignore[no-untyped-def]
        return self.run(c.Publish(now, [(channel, "", d) for d in datas]))

    def sub(self, cid: str, channel: str, **kw):  # type: ignore[no-untyped-def]
        args = dict(
            client_id=cid,
            channel=channel,
            inbox=f"in.{cid}.{self.index}",
            max_inflight=10,
            ack_wait=30,
            ack_inbox=f"ack.{cid}.{self.index}",
            now=1000 * SEC,
        )
        args.update(kw)
        return self.run(c.Subscribe(**args))


def test_publish_assigns_sequences_and_creates_channel(store: Store) -> None:
    h = Harness(store)
    out = h.publish("foo", b"a", b"b", b"c")
    assert [r.msg.seq for r in out.value] == [1, 2, 3]
    assert [r.error for r in out.value] == ["", "", ""]
    ch = store.channels()["foo"]
    assert (ch.first_seq, ch.last_seq, ch.msgs) == (1, 3, 3)
    assert ch.channel_id == 1  # the index of the entry that created it


def test_publish_too_many_channels_fails_only_that_message(store: Store) -> None:
    h = Harness(store, StoreLimits(max_channels=1))
    out = h.run(c.Publish(5, [("a", "", b"1"), ("b", "", b"2"), ("a", "", b"3")]))
    assert [r.error for r in out.value] == ["", errors.TOO_MANY_CHANNELS, ""]
    assert [r.msg.seq for r in out.value if r.msg] == [1, 2]


def test_replayed_entry_is_skipped(store: Store) -> None:
    h = Harness(store)
    blob = c.encode(c.Publish(5, [("foo", "", b"x")]))
    h.fsm.apply(1, blob)
    assert h.fsm.apply(1, blob) is SKIPPED
    assert store.channels()["foo"].msgs == 1
    assert store.applied_index() == 1


def test_connect_duplicate_and_refresh(store: Store) -> None:
    h = Harness(store)
    assert h.connect("a").error == ""
    assert h.connect("a").error == errors.CLIENT_ID_REGISTERED
    h.sub("a", "foo", durable_name="d")
    out = h.connect("a", refresh=True)
    assert out.error == ""
    assert ClientRemoved("a") in out.events
    (sub,) = store.subs("foo").values()
    assert sub.is_closed  # the durable went offline with the replaced client


def test_subscribe_unknown_client(store: Store) -> None:
    assert Harness(store).sub("nobody", "foo").error == errors.UNKNOWN_CLIENT


@pytest.mark.parametrize(
    "position,kw,expected",
    [
        (NEW_ONLY, {}, 5),
        (LAST_RECEIVED, {}, 4),
        (FIRST, {}, 0),
        (SEQUENCE_START, {"start_sequence": 3}, 2),
        (SEQUENCE_START, {"start_sequence": 99}, 5),
        (SEQUENCE_START, {"start_sequence": 0}, 0),
        (TIME_DELTA_START, {"start_time_delta": 3 * SEC, "now": 1004 * SEC}, 1),
    ],
)
def test_start_positions(store: Store, position: int, kw: dict, expected: int) -> None:
    h = Harness(store)
    h.connect("a")
    for i in range(5):
        h.publish("foo", b"m", now=(1000 + i) * SEC)
    out = h.sub("a", "foo", start_position=position, **kw)
    assert out.error == ""
    assert out.value.last_sent == expected


def test_durable_duplicate_resume_and_unsubscribe(store: Store) -> None:
    h = Harness(store)
    h.connect("a")
    first = h.sub("a", "foo", durable_name="d").value
    assert h.sub("a", "foo", durable_name="d").error == errors.DUPLICATE_DURABLE
    h.run(c.SentAck([("foo", first.sub_id, 7, [5, 6, 7], [5])]))
    close = h.run(c.CloseSub("a", "foo", first.ack_inbox))
    assert close.error == "" and SubRemoved("foo", first.sub_id) in close.events
    resumed = h.sub("a", "foo", durable_name="d", ack_inbox="ack.new")
    assert resumed.value.sub_id == first.sub_id
    assert resumed.value.last_sent == 7
    assert resumed.value.ack_inbox == "ack.new"
    assert store.pending("foo", first.sub_id) == {6, 7}
    assert h.run(c.Unsubscribe("a", "foo", "ack.new")).error == ""
    assert store.subs("foo") == {}


def test_plain_sub_close_deletes(store: Store) -> None:
    h = Harness(store)
    h.connect("a")
    s = h.sub("a", "foo").value
    assert h.run(c.CloseSub("a", "foo", s.ack_inbox)).error == ""
    assert store.subs("foo") == {}


def test_unsub_errors(store: Store) -> None:
    h = Harness(store)
    h.connect("a")
    h.connect("b")
    s = h.sub("a", "foo").value
    assert h.run(c.Unsubscribe("a", "nochan", s.ack_inbox)).error == errors.UNKNOWN_CHANNEL
    assert h.run(c.Unsubscribe("a", "foo", "nope")).error == errors.INVALID_SUB
    assert h.run(c.Unsubscribe("b", "foo", s.ack_inbox)).error == errors.UNKNOWN_CLIENT
    # The delivery inbox works too (clients' clean-up after a timeout).
    assert h.run(c.Unsubscribe("a", "foo", s.inbox)).error == ""


def test_queue_member_leaving_hands_pending_to_others(store: Store) -> None:
    h = Harness(store)
    h.connect("a")
    h.connect("b")
    m1 = h.sub("a", "foo", qgroup="q").value
    m2 = h.sub("b", "foo", qgroup="q").value
    h.run(c.SentAck([("foo", m1.sub_id, 4, [1, 3, 4], [])]))
    out = h.run(c.Unsubscribe("a", "foo", m1.ack_inbox))
    assert PendingMoved("foo", m2.sub_id, (1, 3, 4)) in out.events
    assert store.pending("foo", m2.sub_id) == {1, 3, 4}
    assert store.subs("foo")[m2.sub_id].last_sent == 4  # group cursor kept
    m3 = h.sub("a", "foo", qgroup="q").value
    assert m3.last_sent == 4  # joins at the group's cursor


def test_durable_queue_shadow(store: Store) -> None:
    h = Harness(store)
    h.connect("a")
    assert h.sub("a", "foo", qgroup="q", durable_name="d:x").error == (
        errors.DURABLE_QUEUE_NAME_COLON
    )
    m = h.sub("a", "foo", qgroup="q", durable_name="d").value
    assert m.qgroup == "d:q" and m.is_durable and m.durable_name == ""
    h.run(c.SentAck([("foo", m.sub_id, 9, [8, 9], [])]))
    h.run(c.Disconnect("a"))
    (shadow,) = store.subs("foo").values()
    assert shadow.client_id == "" and shadow.is_closed and shadow.last_sent == 9
    h.connect("b")
    out = h.sub("b", "foo", qgroup="q", durable_name="d", start_position=FIRST)
    assert out.value.sub_id == m.sub_id and out.value.last_sent == 9
    assert SubAdded("foo", m.sub_id) in out.events
    assert store.pending("foo", m.sub_id) == {8, 9}


def test_non_durable_queue_last_member_close_deletes_group(store: Store) -> None:
    h = Harness(store)
    h.connect("a")
    h.sub("a", "foo", qgroup="q")
    h.run(c.Disconnect("a"))
    assert store.subs("foo") == {}


def test_max_subs(store: Store) -> None:
    h = Harness(store, StoreLimits(max_subs=1))
    h.connect("a")
    assert h.sub("a", "foo").error == ""
    assert h.sub("a", "foo").error == errors.TOO_MANY_SUBS


def test_delete_channel_matches_incarnation(store: Store) -> None:
    h = Harness(store)
    h.publish("foo", b"x")
    cid = store.channels()["foo"].channel_id
    assert h.run(c.DeleteChannel("foo", cid + 100)).value is False
    assert h.run(c.DeleteChannel("foo", cid)).value is True
    assert "foo" not in store.channels()
    out = h.publish("foo", b"y")
    assert out.value[0].msg.seq == 1


def test_disconnect_unknown(store: Store) -> None:
    assert Harness(store).run(c.Disconnect("x")).error == errors.UNKNOWN_CLIENT


def test_undecodable_entry_is_recorded_and_skipped(store: Store) -> None:
    h = Harness(store)
    out = h.fsm.apply(1, b"\xc1garbage")
    assert out.error
    assert store.applied_index() == 1
