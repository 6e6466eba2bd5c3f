"""Subscribing: start positions, validation order and texts, the four kinds of subscription."""

from __future__ import annotations

import asyncio
import time

from client import StanConnection
from protocol.messages import SubscriptionRequest
from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    DUPLICATE_DURABLE,
    DURABLE_QUEUE_COLON,
    INVALID_ACK_WAIT,
    INVALID_MAX_INFLIGHT,
    INVALID_START_POSITION,
    INVALID_SUBJECT,
    MISSING_CLIENT_ID,
    QUIET,
    TOO_MANY_SUBS,
    UNKNOWN_CLIENT,
    Collector,
    case_conflict,
    channel_info,
    hold_for,
    sub_request,
)

#: A start position (keyword arguments of ``subscribe``) and the first sequence it
#: must deliver, or None for "nothing until a new message is published".
StartCase = tuple[dict[str, object], int | None]


async def _check_starts(
    sc: StanConnection, channel: str, cases: dict[str, StartCase]
) -> dict[str, Collector]:
    """Subscribe once per case, then check each one's first delivery."""
    subs: dict[str, Collector] = {}
    for name, (start, _first) in cases.items():
        subs[name] = Collector(name)
        await sc.subscribe(channel, subs[name].on_msg, **start)  # type: ignore[arg-type]
    for name, (_start, first) in cases.items():
        if first is not None:
            await subs[name].wait_count(1)
            assert subs[name].msgs[0].sequence == first, (name, subs[name].seqs())
    silent = [subs[name] for name, (_start, first) in cases.items() if first is None]
    await hold_for(
        lambda: not any(got.msgs for got in silent),
        QUIET,
        "nothing delivered before a new message",
        state=lambda: {got.name: got.seqs() for got in silent},
    )
    return subs


async def test_start_positions(start_node: NodeStarter, clients: Clients, store: str) -> None:
    start_node(store=store)
    sc = await clients.connect("starter")
    for i in range(1, 6):
        await sc.publish("pos", f"m{i}".encode())

    subs = await _check_starts(
        sc,
        "pos",
        {
            "new only (default)": ({}, None),
            "new only (0)": ({"start_at": 0}, None),
            "last received": ({"start_at": "last_received"}, 5),
            "sequence 3": ({"start_sequence": 3}, 3),
            "sequence 1": ({"start_sequence": 1}, 1),
            "first": ({"start_at": "first"}, 1),
            # Above the last sequence: clamped to "new only".
            "sequence 99": ({"start_at": "sequence", "start_sequence": 99}, None),
            # Everything is newer than an hour ago.
            "an hour ago": ({"start_time_delta": 3600.0}, 1),
        },
    )
    await sc.publish("pos", b"m6")
    expected_from = {
        "new only (default)": 6,
        "new only (0)": 6,
        "last received": 5,
        "sequence 3": 3,
        "sequence 1": 1,
        "first": 1,
        "sequence 99": 6,
        "an hour ago": 1,
    }
    for name, start in expected_from.items():
        got = subs[name]
        await got.wait_count(7 - start)
        assert got.seqs() == list(range(start, 7)), (name, got.seqs())
        assert got.datas() == [f"m{i}".encode() for i in range(start, 7)]


async def test_sequence_start_below_the_first_available_message(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    """With ``-mm 3`` only the last 3 of 6 messages remain: a start below them is
    clamped to the first available one."""
    node = start_node("-mm", "3", store=store)
    sc = await clients.connect("clamp")
    for i in range(1, 7):
        await sc.publish("short", f"m{i}".encode())
    info = await channel_info(node, "short")
    assert (info["first_seq"], info["last_seq"], info["msgs"]) == (4, 6, 3)

    subs = await _check_starts(
        sc,
        "short",
        {
            "sequence 2": ({"start_sequence": 2}, 4),
            "sequence 0": ({"start_at": "sequence", "start_sequence": 0}, 4),
            "first": ({"start_at": "first"}, 4),
            "sequence 5": ({"start_sequence": 5}, 5),
        },
    )
    for name, expected in [
        ("sequence 2", [4, 5, 6]),
        ("sequence 0", [4, 5, 6]),
        ("first", [4, 5, 6]),
        ("sequence 5", [5, 6]),
    ]:
        await subs[name].wait_count(len(expected))
        assert subs[name].seqs() == expected, name


async def test_start_positions_on_an_empty_channel(
    start_node: NodeStarter, clients: Clients
) -> None:
    start_node()
    sc = await clients.connect("empty")
    subs = await _check_starts(
        sc,
        "void",
        {
            "new only": ({}, None),
            "last received": ({"start_at": "last_received"}, None),
            "first": ({"start_at": "first"}, None),
            "sequence 5": ({"start_sequence": 5}, None),
            "a minute ago": ({"start_time_delta": 60.0}, None),
        },
    )
    await sc.publish("void", b"first ever")
    for got in subs.values():
        await got.wait_count(1)
        assert got.seqs() == [1], got.name


async def test_time_delta_start(start_node: NodeStarter, clients: Clients, store: str) -> None:
    """Two batches 300 ms apart; a start time in the gap delivers the second batch only."""
    start_node(store=store)
    sc = await clients.connect("timer")
    for i in range(3):
        await sc.publish("timed", f"old{i}".encode())
    probe = Collector()
    sub = await sc.subscribe("timed", probe.on_msg, start_at="first")
    await probe.wait_count(3)
    old_last_ns = probe.msgs[-1].timestamp
    await sub.unsubscribe()

    # Let the clock move 300 ms past the last old message.
    await wait_for(lambda: time.time_ns() > old_last_ns + 300_000_000, 2, "a 300 ms gap")
    for i in range(3):
        await sc.publish("timed", f"new{i}".encode())

    got = Collector()
    gap_start_s = (old_last_ns + 150_000_000) / 1e9
    await sc.subscribe("timed", got.on_msg, start_time=gap_start_s)
    await got.wait_count(3)
    await hold_for(lambda: len(got.msgs) == 3, QUIET, "only the new batch")
    assert got.datas() == [b"new0", b"new1", b"new2"]
    assert got.seqs() == [4, 5, 6]


async def test_subscription_request_validation_order(
    start_node: NodeStarter, clients: Clients
) -> None:
    """Each request breaks several rules; the first failing check (PROTOCOL.md §6)
    decides the text."""
    start_node()
    wire = await clients.wire()
    assert (await wire.connect("owner"))[0].error == ""
    sc = await clients.connect("publisher")
    await sc.publish("Val.Case", b"x")

    everything_wrong = SubscriptionRequest(subject="a.*", startPosition=7)  # type: ignore[arg-type]
    cases: list[tuple[str, SubscriptionRequest, str]] = [
        ("no client ID, nothing else right either", everything_wrong, MISSING_CLIENT_ID),
        (
            "ack wait 0 comes before max inflight, start position and subject",
            sub_request("nobody", "a.*", ack_wait=0, max_inflight=0, start_position=7),
            INVALID_ACK_WAIT,
        ),
        ("negative ack wait", sub_request("owner", "ok", ack_wait=-1), INVALID_ACK_WAIT),
        (
            "max inflight 0 comes before start position and subject",
            sub_request("nobody", "a.*", max_inflight=0, start_position=7),
            INVALID_MAX_INFLIGHT,
        ),
        (
            "negative max inflight",
            sub_request("owner", "ok", max_inflight=-5),
            INVALID_MAX_INFLIGHT,
        ),
        (
            "start position 7 comes before the subject",
            sub_request("nobody", "a.*", start_position=7),
            INVALID_START_POSITION,
        ),
        ("start position 5", sub_request("owner", "ok", start_position=5), INVALID_START_POSITION),
        (
            "invalid subject comes before the unknown client",
            sub_request("nobody", "a.*"),
            INVALID_SUBJECT,
        ),
        *[
            (f"invalid subject {name!r}", sub_request("owner", name), INVALID_SUBJECT)
            for name in ["", ">", "*", "a.>", "a..b", ".a", "a.", "a/b"]
        ],
        (
            "unknown client comes before channel errors",
            sub_request("nobody", "VAL.CASE"),
            UNKNOWN_CLIENT,
        ),
        (
            "unknown client comes before the durable queue name",
            sub_request("nobody", "ok", queue="q", durable="a:b"),
            UNKNOWN_CLIENT,
        ),
        (
            "channel case conflict comes before the durable queue name",
            sub_request("owner", "VAL.CASE", queue="q", durable="a:b"),
            case_conflict("VAL.CASE", "Val.Case"),
        ),
        (
            "':' in the durable name of a durable queue",
            sub_request("owner", "ok", queue="q", durable="a:b"),
            DURABLE_QUEUE_COLON,
        ),
    ]
    wrong: list[tuple[str, str, str]] = []
    for what, req, expected in cases:
        resp = await wire.subscribe(req)
        if resp.error != expected or resp.ackInbox:
            wrong.append((what, expected, resp.error or f"accepted ({resp.ackInbox})"))
    assert not wrong, "\n".join(f"{w}: expected {e!r}, got {g!r}" for w, e, g in wrong)


async def test_durable_registrations(start_node: NodeStarter, clients: Clients) -> None:
    start_node()
    wire = await clients.wire()
    assert (await wire.connect("owner"))[0].error == ""
    assert (await wire.connect("other"))[0].error == ""

    plain_colon = await wire.subscribe(sub_request("owner", "dur", durable="a:b"))
    assert plain_colon.error == "", "':' is fine in a non-queue durable name"

    first = await wire.subscribe(sub_request("owner", "dur", durable="d"))
    assert first.error == "" and first.ackInbox
    again = await wire.subscribe(sub_request("owner", "dur", durable="d"))
    assert (again.error, again.ackInbox) == (DUPLICATE_DURABLE, "")
    # The durable is per (client ID, channel, name).
    assert (await wire.subscribe(sub_request("other", "dur", durable="d"))).error == ""
    assert (await wire.subscribe(sub_request("owner", "dur2", durable="d"))).error == ""
    # Durable queue members share a group whatever their client.
    assert (await wire.subscribe(sub_request("owner", "dur", queue="g", durable="d"))).error == ""
    assert (await wire.subscribe(sub_request("other", "dur", queue="g", durable="d"))).error == ""
    assert (await wire.subscribe(sub_request("owner", "dur", queue="g", durable="d"))).error == ""

    # Once closed, the same registration resumes it, with a new ack inbox.
    closed = await wire.unsubscribe("owner", "dur", first.ackInbox, close=True)
    assert closed.error == ""
    resumed = await wire.subscribe(sub_request("owner", "dur", durable="d"))
    assert resumed.error == "" and resumed.ackInbox not in ("", first.ackInbox)


async def test_too_many_subscriptions_per_channel(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node("-msu", "1", store=store)
    wire = await clients.wire()
    assert (await wire.connect("subber"))[0].error == ""

    assert (await wire.subscribe(sub_request("subber", "plain"))).error == ""
    assert (await wire.subscribe(sub_request("subber", "plain"))).error == TOO_MANY_SUBS
    assert (await wire.subscribe(sub_request("subber", "plain", queue="q"))).error == TOO_MANY_SUBS

    # An offline durable still counts; resuming it creates no new record.
    dur = await wire.subscribe(sub_request("subber", "durable", durable="d"))
    assert dur.error == ""
    assert (await wire.unsubscribe("subber", "durable", dur.ackInbox, close=True)).error == ""
    assert (await wire.subscribe(sub_request("subber", "durable"))).error == TOO_MANY_SUBS
    assert (await wire.subscribe(sub_request("subber", "durable", durable="d"))).error == ""

    # Every queue member is a record.
    assert (await wire.subscribe(sub_request("subber", "queue", queue="q"))).error == ""
    assert (await wire.subscribe(sub_request("subber", "queue", queue="q"))).error == TOO_MANY_SUBS

    for channel in ("plain", "durable", "queue"):
        assert (await channel_info(node, channel))["subs_count"] == 1, channel


async def test_the_four_kinds_of_subscription(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("kinds")
    plain, durable, q1, q2, dq1, dq2 = (
        Collector(n) for n in ("plain", "durable", "q1", "q2", "dq1", "dq2")
    )
    await sc.subscribe("kinds", plain.on_msg)
    await sc.subscribe("kinds", durable.on_msg, durable_name="dur")
    await sc.subscribe("kinds", q1.on_msg, queue="grp")
    await sc.subscribe("kinds", q2.on_msg, queue="grp")
    await sc.subscribe("kinds", dq1.on_msg, queue="grp", durable_name="dur")
    await sc.subscribe("kinds", dq2.on_msg, queue="grp", durable_name="dur")

    subs = (await channel_info(node, "kinds"))["subscriptions"]
    summary = sorted(
        (s.get("durable_name", ""), s.get("queue_name", ""), s["is_durable"], s["is_offline"])
        for s in subs
    )
    assert summary == sorted(
        [
            ("", "dur:grp", True, False),
            ("", "dur:grp", True, False),
            ("", "grp", False, False),
            ("", "grp", False, False),
            ("", "", False, False),
            ("dur", "", True, False),
        ]
    )
    assert all(s["client_id"] == "kinds" and s["ack_inbox"] for s in subs)

    for i in range(1, 11):
        await sc.publish("kinds", f"m{i}".encode())
    everything = list(range(1, 11))
    await plain.wait_count(10)
    await durable.wait_count(10)
    await wait_for(lambda: len(q1.msgs) + len(q2.msgs) >= 10, 5, "the queue group to get 10")
    await wait_for(lambda: len(dq1.msgs) + len(dq2.msgs) >= 10, 5, "the durable group to get 10")
    await hold_for(
        lambda: len(q1.msgs) + len(q2.msgs) == 10 and len(dq1.msgs) + len(dq2.msgs) == 10,
        QUIET,
        "each queue message delivered once",
    )
    assert plain.seqs() == everything and durable.seqs() == everything
    assert sorted(q1.seqs() + q2.seqs()) == everything
    assert sorted(dq1.seqs() + dq2.seqs()) == everything
    assert q1.msgs and q2.msgs, "both members of a queue group get work"
    assert dq1.msgs and dq2.msgs, "both members of a durable queue group get work"


async def test_subscribers_of_different_channels_are_independent(
    start_node: NodeStarter, clients: Clients
) -> None:
    start_node()
    sc = await clients.connect("chans")
    a, b = Collector("a"), Collector("b")
    await sc.subscribe("chan.a", a.on_msg)
    await sc.subscribe("chan.b", b.on_msg)
    await asyncio.gather(*(sc.publish("chan.a", b"a") for _ in range(3)))
    await sc.publish("chan.b", b"b")
    await a.wait_count(3)
    await b.wait_count(1)
    await hold_for(lambda: len(a.msgs) == 3 and len(b.msgs) == 1, QUIET, "no cross-talk")
    assert a.seqs() == [1, 2, 3] and b.seqs() == [1]
