"""Restarting a node on the same data directory: SIGTERM, SIGKILL, and the memory store.

Clients keep their NATS connections across the restart (the nats-server keeps running),
as real applications do: they carry on without reconnecting to STAN.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from client import AckHandler, Msg, StanConnection, StanError
from tests.helpers import StanNodeFactory, wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    CLIENT_REPLACED,
    INVALID_PUB_REQ,
    QUIET,
    UNKNOWN_CLIENT,
    Collector,
    channel_info,
    client_ids,
    hold_for,
    monitor,
    ping_error,
    wait_until,
)


def _subs_by_name(info: dict[str, object]) -> dict[str, dict[str, object]]:
    subs = info["subscriptions"]
    assert isinstance(subs, list)
    return {s.get("durable_name") or s.get("queue_name") or s["client_id"]: s for s in subs}


async def test_sigterm_restart_keeps_clients_channels_messages_and_durables(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    keeper = await clients.connect("keeper")
    wire = await clients.wire()
    assert (await wire.connect("bystander"))[0].error == ""

    # ch1: an offline durable at position 3 and an online durable with 4 unacked.
    for i in range(1, 4):
        await keeper.publish("ch1", f"a{i}".encode())
    off = Collector("offline durable")
    off_sub = await keeper.subscribe("ch1", off.on_msg, durable_name="off", start_at="first")
    await off.wait_count(3)
    await off_sub.close()
    for i in range(4, 11):
        await keeper.publish("ch1", f"a{i}".encode())
    live = Collector("online durable")
    live_sub = await keeper.subscribe(
        "ch1", live.on_msg, durable_name="live", manual_acks=True, ack_wait=1, start_at="first"
    )
    await live.wait_count(10)
    await live.ack(*range(1, 7))

    # ch2: a plain subscription and a durable queue group left as a shadow at 3.
    plain = Collector("plain")
    await keeper.subscribe("ch2", plain.on_msg)
    member = Collector("queue member")
    member_sub = await keeper.subscribe("ch2", member.on_msg, queue="g", durable_name="dq")
    for i in range(1, 4):
        await keeper.publish("ch2", f"b{i}".encode())
    await plain.wait_count(3)
    await member.wait_count(3)
    await member_sub.close()

    # Two redelivery rounds of 7..10 take over a second: the delivery state has been
    # replicated by then.
    await wait_for(
        lambda: any(m.redelivery_count >= 2 for m in live.msgs), 5, "two redelivery rounds"
    )
    before = {
        "ch1": await channel_info(node, "ch1"),
        "ch2": await channel_info(node, "ch2"),
    }

    assert node.stop() == 143, "a clean exit on SIGTERM (128 + 15, as the reference)"
    live_count = len(live.msgs)
    node.start()

    assert await client_ids(node) == {"keeper", "bystander"}
    after = {"ch1": await channel_info(node, "ch1"), "ch2": await channel_info(node, "ch2")}
    for name in ("ch1", "ch2"):
        for key in ("msgs", "bytes", "first_seq", "last_seq", "subs_count"):
            assert after[name][key] == before[name][key], (name, key)
    ch1 = _subs_by_name(after["ch1"])
    assert (ch1["off"]["is_offline"], ch1["off"]["last_sent"]) == (True, 3)
    assert (ch1["live"]["is_offline"], ch1["live"]["last_sent"]) == (False, 10)
    assert ch1["live"]["ack_inbox"] == live_sub.ack_inbox
    ch2 = _subs_by_name(after["ch2"])
    assert (ch2["dq:g"]["is_offline"], ch2["dq:g"]["client_id"]) == (True, "")
    assert (ch2["keeper"]["is_offline"], ch2["keeper"]["is_durable"]) == (False, False)

    # The online durable gets its unacked messages again, and acks through its old
    # ack inbox (re-subscribed by the node) clear them.
    await wait_for(
        lambda: {m.sequence for m in live.msgs[live_count:]} >= {7, 8, 9, 10},
        5,
        "7..10 redelivered after the restart",
        state=lambda: [(m.sequence, m.redelivered) for m in live.msgs[live_count:]],
    )
    assert all(m.redelivered for m in live.msgs[live_count:])
    assert not {m.sequence for m in live.msgs[live_count:]} & set(range(1, 7)), "1..6 were acked"
    await live.ack(7, 8, 9, 10)

    async def live_pending() -> int:
        subs = _subs_by_name(await channel_info(node, "ch1"))
        count = subs["live"]["pending_count"]
        assert isinstance(count, int)
        return count

    async def nothing_pending() -> bool:
        return await live_pending() == 0

    await wait_until(nothing_pending, 5, "the acks to clear the pending set")
    count = len(live.msgs)
    await hold_for(lambda: len(live.msgs) == count, 1.5, "no redelivery once acked")

    # The same connection publishes on (sequences continue) and keeps receiving.
    assert await wire.ping(keeper.conn_id) == b""
    await keeper.publish("ch1", b"a11")
    await keeper.publish("ch2", b"b4")
    new11: Msg = await live.wait_seq(11, redelivered=False)
    assert new11.data == b"a11"
    await plain.wait_seq(4)
    assert plain.seqs() == [1, 2, 3, 4]

    # Offline durable and shadow resume at their positions.
    resumed = Collector("offline durable resumed")
    await keeper.subscribe("ch1", resumed.on_msg, durable_name="off")
    await resumed.wait_count(8)
    assert resumed.seqs() == list(range(4, 12))
    shadow_taker = Collector("shadow taken over")
    await keeper.subscribe("ch2", shadow_taker.on_msg, queue="g", durable_name="dq")
    await shadow_taker.wait_count(1)
    await hold_for(lambda: len(shadow_taker.msgs) == 1, QUIET, "only b4 for the group")
    assert shadow_taker.seqs() == [4]


async def test_acks_just_before_sigterm_are_not_lost(
    start_node: NodeStarter, clients: Clients
) -> None:
    """Every message is delivered and acked, then the node is stopped at once. After the
    restart the subscription (its client kept the connection) gets nothing old."""
    node = start_node()
    sc = await clients.connect("prompt")
    got = Collector()
    await sc.subscribe("acked", got.on_msg, durable_name="d", ack_wait=1, start_at="first")
    for i in range(1, 6):
        await sc.publish("acked", f"m{i}".encode())
    await got.wait_count(5)

    async def all_acked() -> bool:
        sub = (await channel_info(node, "acked"))["subscriptions"][0]
        return bool(sub["last_sent"] == 5 and sub["pending_count"] == 0)

    # The node has taken the acks (its live view shows nothing pending) ...
    await wait_until(all_acked, 5, "the node to process the 5 acks")
    # ... and is stopped gracefully right away.
    assert node.stop() == 143
    node.start()

    await hold_for(
        lambda: len(got.msgs) == 5,
        1.5,
        "no redelivery and no resend of acked 1..5",
        state=lambda: [(m.sequence, m.redelivered, m.redelivery_count) for m in got.msgs],
    )
    await sc.publish("acked", b"m6")
    await got.wait_count(6)
    assert [(m.sequence, m.redelivered) for m in got.msgs] == [(i, False) for i in range(1, 7)]


async def _read_back_exactly(sc: StanConnection, channel: str, expected: list[bytes]) -> None:
    """A deliver-all subscriber gets ``expected``, in order, at sequences 1..n, and no more."""
    got = Collector(f"reader of {channel}")
    await sc.subscribe(channel, got.on_msg, start_at="first")
    await got.wait_count(len(expected), timeout=10)
    await hold_for(lambda: len(got.msgs) == len(expected), 0.3, f"{channel}: no extra message")
    assert got.datas() == expected, f"{channel}: stored messages differ from the acknowledged ones"
    assert got.seqs() == list(range(1, len(expected) + 1))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_every_acknowledged_message_survives_sigkill(
    start_node: NodeStarter, clients: Clients, mode: str
) -> None:
    """SIGKILL right after the last PubAck; a deliver-all reader finds every message."""
    node = start_node()
    writer = await clients.connect("writer")
    durable_seen = Collector("durable")
    await writer.subscribe("log.a", durable_seen.on_msg, durable_name="keepme")
    channels = ["log.a", "log.b"]
    acked: dict[str, list[bytes]] = {ch: [] for ch in channels}

    if mode == "sync":
        for i in range(300):
            ch = channels[i % 2]
            payload = f"{ch}-{i}".encode()
            await writer.publish(ch, payload)
            acked[ch].append(payload)
    else:
        failures: list[str] = []

        def on_ack(ch: str, payload: bytes) -> AckHandler:
            def handler(_guid: str, error: str) -> None:
                if error:
                    failures.append(error)
                else:
                    acked[ch].append(payload)

            return handler

        for i in range(1500):
            ch = channels[i % 2]
            payload = f"{ch}-{i}".encode()
            await writer.publish_async(ch, payload, on_ack(ch, payload))
        await wait_for(
            lambda: sum(len(v) for v in acked.values()) + len(failures) == 1500,
            20,
            "1500 async PubAcks",
        )
        assert not failures
        # Acks arrive in publish order per channel.
        for ch in channels:
            assert acked[ch] == sorted(acked[ch], key=lambda p: int(p.split(b"-")[1]))
    node.kill(signal.SIGKILL)
    assert node.returncode == -signal.SIGKILL

    node.start()
    total = sum(len(v) for v in acked.values())
    reader = await clients.connect("reader")
    for ch in channels:
        await _read_back_exactly(reader, ch, acked[ch])
        info = await channel_info(node, ch)
        assert (info["msgs"], info["last_seq"]) == (len(acked[ch]), len(acked[ch]))
    assert total == (300 if mode == "sync" else 1500)

    # The registration and the durable survived as well.
    assert "writer" in await client_ids(node)
    subs = _subs_by_name(await channel_info(node, "log.a"))
    assert "keepme" in subs
    await writer.publish("log.a", b"after the kill")


async def test_memory_store_restart_forgets_everything(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node(store="MEMORY")
    old = await clients.connect("old")  # default 5 s pings: none during the test
    lost: list[Exception] = []
    pinging = await clients.connect(
        "pinging", ping_interval_ms=100, conn_lost_cb=lambda _sc, e: lost.append(e)
    )
    got = Collector("old subscription")
    await old.subscribe("mem", got.on_msg)
    for i in range(3):
        await old.publish("mem", f"m{i}".encode())
    await got.wait_count(3)

    node.stop()
    node.start()
    assert await client_ids(node) == set()
    assert "names" not in await monitor(node, "/streaming/channelsz")

    with pytest.raises(StanError) as info:
        await old.publish("mem", b"lost")
    assert str(info.value) == INVALID_PUB_REQ
    wire = await clients.wire()
    assert ping_error(await wire.ping(old.conn_id)) == CLIENT_REPLACED
    await wait_for(lambda: lost, 3, "the pinging client to learn it is gone")
    assert [str(e) for e in lost] == [CLIENT_REPLACED]
    assert pinging.closed

    with pytest.raises(StanError) as info:
        await old.subscribe("mem", got.on_msg)
    assert str(info.value) == UNKNOWN_CLIENT
    with pytest.raises(StanError) as info:
        await old.close()
    assert str(info.value) == UNKNOWN_CLIENT

    # The same client ID connects at once; sequences start again at 1.
    again = await clients.connect("old")
    await again.publish("mem", b"fresh")
    assert (await channel_info(node, "mem"))["last_seq"] == 1
    assert len(got.msgs) == 3, "the old subscription receives nothing"


async def test_restart_with_another_cluster_id_is_refused(
    stan_node: StanNodeFactory, cluster_id: str
) -> None:
    node = stan_node()
    node.stop()
    data_dir = Path(node.args[node.args.index("--dir") + 1])
    other = stan_node(name="impostor", cluster_id="other-id", data_dir=data_dir, wait_ready=False)
    assert other.wait_exit(15) not in (None, 0)
    assert (
        f'cluster ID "other-id" does not match recovered value of "{cluster_id}"'
        in other.log_text()
    )
