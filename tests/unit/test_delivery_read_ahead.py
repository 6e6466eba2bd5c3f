"""Delivery to a subscription held at MaxInflight reads the store by pages.

Each ack of such a subscription makes room for one message. The messages sent
must be exactly the stored ones, in order, whatever the store does meanwhile
(drops its oldest messages to limits, has gaps from an import); and the store
must be read once per page, not once per ack.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from cluster.delivery import PAGE, Delivery, SubView
from protocol.messages import MsgProto
from store import ChannelLimits, Store, SubRecord, open_store

UNLIMITED = ChannelLimits(max_msgs=0, max_bytes=0, max_age=0, max_subs=0, max_inactivity=0)


class Rig:
    """A Delivery over a real store; records what it sends and what it reads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.sent: list[tuple[str, int]] = []
        self.reads = 0
        read_msgs = store.read_msgs

        def counting_read(*args: Any, **kw: Any) -> Any:
            self.reads += 1
            return read_msgs(*args, **kw)

        store.read_msgs = counting_read  # type: ignore[method-assign]
        self.delivery = Delivery(self.loop, store, self._send, lambda: None)

    def _send(self, inbox: str, raw: bytes) -> None:
        msg = MsgProto()
        msg.ParseFromString(raw)
        self.sent.append((inbox, msg.sequence))

    def subscribe(self, sub_id: int, max_inflight: int, qgroup: str = "") -> SubView:
        rec = SubRecord(
            channel="foo",
            sub_id=sub_id,
            client_id=f"c{sub_id}",
            inbox=f"_INBOX.d{sub_id}",
            ack_inbox=f"_INBOX.a{sub_id}",
            max_inflight=max_inflight,
            ack_wait=30,
            qgroup=qgroup,
        )
        view = self.delivery.add(rec, [], startup=False)
        self.delivery.start(view)
        return view

    def ack_oldest(self, view: SubView) -> None:
        self.delivery.on_ack(view.ack_inbox, "foo", min(view.pending))

    def close(self) -> None:
        self.delivery.clear()
        self.loop.close()


@pytest.fixture(params=["MEMORY", "LMDB"])
def rig(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[Rig]:
    store = open_store(request.param, os.path.join(tmp_path, "db"), sync=False, map_size=1 << 28)
    r = Rig(store)
    try:
        yield r
    finally:
        r.close()
        store.close()


def make_channel(store: Store, limits: ChannelLimits = UNLIMITED) -> None:
    with store.write() as txn:
        txn.create_channel("foo", 1, limits, 1000, 0)


def publish(store: Store, n: int, size: int = 100) -> None:
    with store.write() as txn:
        for i in range(n):
            txn.store_msg("foo", "", b"x" * size, 1000 + i)


def sent_seqs(rig: Rig) -> list[int]:
    return [seq for _, seq in rig.sent]


def test_held_subscription_reads_a_page_at_a_time(rig: Rig) -> None:
    make_channel(rig.store)
    publish(rig.store, 1000)
    view = rig.subscribe(1, max_inflight=1)
    while len(rig.sent) < 1000:
        before = len(rig.sent)
        rig.ack_oldest(view)
        assert len(rig.sent) == before + 1
    assert sent_seqs(rig) == list(range(1, 1001))
    # 100-byte messages: a page is PAGE messages (well under READ_AHEAD_BYTES).
    assert rig.reads <= 1000 // PAGE + 2, rig.reads


def test_messages_dropped_by_limits_are_not_sent_from_the_read_ahead(rig: Rig) -> None:
    make_channel(rig.store, replace(UNLIMITED, max_msgs=500))
    publish(rig.store, 300)
    view = rig.subscribe(1, max_inflight=1)
    for _ in range(9):
        rig.ack_oldest(view)
    assert sent_seqs(rig) == list(range(1, 11))
    publish(rig.store, 400)  # 700 stored in all: 1..200 dropped
    assert rig.store.channels()["foo"].first_seq == 201
    rig.ack_oldest(view)
    while len(rig.sent) < 10 + 500:
        rig.ack_oldest(view)
    assert sent_seqs(rig) == list(range(1, 11)) + list(range(201, 701))


def test_new_messages_after_the_read_ahead_are_read(rig: Rig) -> None:
    make_channel(rig.store)
    publish(rig.store, 5)
    view = rig.subscribe(1, max_inflight=2)
    assert sent_seqs(rig) == [1, 2]
    rig.ack_oldest(view)
    publish(rig.store, 5)
    rig.delivery.on_stored("foo", [])  # (held: sends nothing)
    while len(rig.sent) < 10:
        rig.ack_oldest(view)
    assert sent_seqs(rig) == list(range(1, 11))


def test_gaps_of_an_imported_channel_are_skipped(rig: Rig) -> None:
    make_channel(rig.store)
    stored = [s for s in range(1, 400) if s % 7 and not 100 <= s < 150]
    with rig.store.write() as txn:
        for seq in stored:
            txn.import_msg("foo", seq, 1000 + seq, "", b"y" * 50)
    view = rig.subscribe(1, max_inflight=3)
    while len(rig.sent) < len(stored):
        rig.ack_oldest(view)
    assert sent_seqs(rig) == stored
    assert rig.reads <= len(stored) // PAGE + 3, rig.reads


def test_queue_group_held_members_share_one_cursor(rig: Rig) -> None:
    make_channel(rig.store)
    publish(rig.store, 600)
    a = rig.subscribe(1, max_inflight=1, qgroup="g")
    b = rig.subscribe(2, max_inflight=1, qgroup="g")
    turn = 0
    while len(rig.sent) < 600:
        rig.ack_oldest((a, b)[turn % 2])
        turn += 1
    assert sorted(sent_seqs(rig)) == list(range(1, 601))
    assert sent_seqs(rig) == list(range(1, 601))  # one cursor: in order overall
    assert {inbox for inbox, _ in rig.sent} == {a.inbox, b.inbox}
    assert rig.reads <= 600 // PAGE + 3, rig.reads
