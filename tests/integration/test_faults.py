"""Faults around one node: no NATS server at startup, the NATS server restarted under a
running node and its clients, two clients racing for one client ID, and subscribers
that stall while others carry on.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from client import Msg, StanConnection, StanError, connect
from tests.helpers import NatsServer, StanNodeFactory, free_port, wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    CLIENT_ID_REGISTERED,
    Collector,
    channel_info,
    monitor,
    new_id,
    wait_until,
)

#: Generous deadline (s) for a client operation on a loaded machine.
DEADLINE = 60.0


def durable_pending(info: dict[str, Any], durable: str) -> int | None:
    """``pending_count`` of the durable named ``durable`` in a channelsz answer."""
    for sub in info.get("subscriptions", []):
        if sub.get("durable_name") == durable:
            return int(sub.get("pending_count", 0))
    return None


async def publish_retrying(sc: StanConnection, channel: str, data: bytes) -> None:
    """Publish until acked (a publish sent while NATS reconnects may time out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        try:
            await asyncio.wait_for(sc.publish(channel, data), 5)
            return
        except (StanError, TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_node_exits_when_no_nats_server_answers(stan_node: StanNodeFactory) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    node = stan_node(nats_url=url, wait_ready=False)
    rc = await asyncio.to_thread(node.wait_exit, 30)
    assert rc == 1, f"expected exit 1 within 30s, got {rc}; log:\n{node.log_tail()}"
    failure = node.wait_for_log("Failed to start:")
    assert f"cannot connect to NATS at {url}" in failure, failure


async def test_nats_restart_under_the_node_and_its_clients(
    nats_server: NatsServer, stan_node: StanNodeFactory, cluster_id: str
) -> None:
    node = stan_node()
    url = nats_server.url
    pub = await connect(cluster_id, "publisher", nats_url=url)
    reader = await connect(cluster_id, "reader", nats_url=url)
    durable = Collector("durable")

    async def ack_all(msg: Msg) -> None:
        await durable.on_msg(msg)
        await msg.ack()

    try:
        # ack_wait 1 s: acks that did not reach the node would show as redeliveries
        # every second, for ever.
        await reader.subscribe(
            "orders",
            ack_all,
            durable_name="audit",
            manual_acks=True,
            ack_wait=1,
            start_at="first",
        )
        for i in range(1, 51):
            await pub.publish("orders", f"before-{i}".encode())
        await durable.wait_count(50, DEADLINE)

        # An outage long enough for everyone to notice: the node and both clients
        # are reconnecting (publishes meanwhile wait in the clients' buffers).
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(node.wait_for_log, "disconnected from NATS", DEADLINE)
        await wait_for(
            lambda: pub.nc.is_reconnecting and reader.nc.is_reconnecting,
            DEADLINE,
            "both clients to notice the outage",
        )
        during = [
            asyncio.ensure_future(publish_retrying(pub, "orders", f"during-{i}".encode()))
            for i in range(51, 61)
        ]
        await asyncio.to_thread(nats_server.start)
        await asyncio.to_thread(node.wait_for_log, "reconnected to NATS", DEADLINE)
        await wait_for(
            lambda: pub.nc.is_connected and reader.nc.is_connected,
            DEADLINE,
            "both clients to reconnect to NATS",
        )

        await asyncio.gather(*during)
        for i in range(61, 101):
            await publish_retrying(pub, "orders", f"after-{i}".encode())

        def all_received() -> bool:
            return set(range(1, 101)) <= set(durable.seqs())

        await wait_for(all_received, DEADLINE, "the durable to get 1-100", state=durable.seqs)

        async def acked() -> bool:
            return durable_pending(await channel_info(node, "orders"), "audit") == 0

        await wait_until(acked, DEADLINE, "the node to process every ack of the durable")
        stored = (await channel_info(node, "orders"))["msgs"]
        assert stored >= 100, stored

        # The node still serves new subscriptions and closes after the restart.
        fresh = Collector("fresh")
        sub = await reader.subscribe("orders", fresh.on_msg, start_at="first")
        await fresh.wait_count(stored, DEADLINE)
        await sub.unsubscribe()
    finally:
        for sc in (pub, reader):
            try:
                await asyncio.wait_for(sc.close(), 10)
            except (StanError, TimeoutError):
                if not sc.nc.is_closed:
                    await sc.nc.close()


async def test_two_clients_racing_for_one_client_id(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    for round_ in range(10):
        client_id = new_id(f"racer{round_}-")
        ncs = [await clients.nats(), await clients.nats()]
        results = await asyncio.gather(
            *(connect(clients.cluster_id, client_id, nc=nc, connect_timeout=10) for nc in ncs),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, StanConnection)]
        losers = [r for r in results if not isinstance(r, StanConnection)]
        assert len(winners) == 1, f"round {round_}: {results}"
        assert [str(e) for e in losers] == [CLIENT_ID_REGISTERED], f"round {round_}: {losers}"
        clientsz = await monitor(node, "/streaming/clientsz")
        registered = [c for c in clientsz["clients"] if c["id"] == client_id]
        assert [c["hb_inbox"] for c in registered] == [winners[0].heartbeat_inbox]
        await winners[0].close()


async def publish_many(sc: StanConnection, channel: str, count: int, tag: str) -> None:
    """Publish ``count`` messages, a window at a time, and wait for every ack."""
    window = 1000
    for start in range(0, count, window):
        futures = [
            await sc.publish_async(channel, f"{tag}-{i}".encode())
            for i in range(start, min(count, start + window))
        ]
        await asyncio.wait_for(asyncio.gather(*futures), DEADLINE)


async def test_stuck_subscribers_do_not_stop_publishers_or_other_channels(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    pub = await clients.connect("publisher")
    await publish_many(pub, "backlog", 20_000, "old")

    lazy = await clients.connect("lazy")
    # One message in flight, never acked: redelivered every second, nothing else.
    stuck = Collector("max_inflight 1, never acks")
    await lazy.subscribe(
        "backlog", stuck.on_msg, manual_acks=True, max_inflight=1, ack_wait=1, start_at="first"
    )
    # The whole backlog handed out at once and never acked.
    flooded = Collector("max_inflight 20000, never acks")
    await lazy.subscribe(
        "backlog",
        flooded.on_msg,
        manual_acks=True,
        max_inflight=20_000,
        ack_wait=60,
        start_at="first",
    )
    await stuck.wait_seq(1, DEADLINE, redelivered=True)

    other = await clients.connect("other-reader")
    fresh = Collector("another channel")
    await other.subscribe("other", fresh.on_msg, start_at="first")

    async def both() -> None:
        await asyncio.gather(
            publish_many(pub, "backlog", 2_000, "new"),
            publish_many(pub, "other", 2_000, "other"),
        )

    await asyncio.wait_for(both(), DEADLINE)
    await fresh.wait_count(2_000, DEADLINE)
    assert fresh.seqs() == list(range(1, 2_001))

    # The stuck ones are still stuck, the backlog grew behind them.
    assert set(stuck.seqs()) == {1}, stuck.seqs()[:20]
    info = await channel_info(node, "backlog")
    assert info["msgs"] == 22_000
    pending = {s["max_inflight"]: s["pending_count"] for s in info["subscriptions"]}
    assert pending[1] == 1, pending
    assert pending[20_000] <= 20_000, pending
    await wait_for(
        lambda: len(flooded.msgs) >= 20_000,
        DEADLINE,
        "the flooded subscriber to hold 20000 unacked messages",
        state=lambda: len(flooded.msgs),
    )


async def test_node_exits_when_its_raft_address_is_taken(stan_node: StanNodeFactory) -> None:
    # Something else listens on the node's Raft address: after a few seconds of
    # patience the node says so and exits 1, instead of retrying unseen.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        node = stan_node(
            "--clustered",
            "--cluster_node_id",
            "a",
            "--cluster_peers",
            f"a={taken},b=127.0.0.1:{free_port()},c=127.0.0.1:{free_port()}",
            wait_ready=False,
        )
        rc = await asyncio.to_thread(node.wait_exit, 30)
        assert rc == 1, f"expected exit 1 within 30s, got {rc}; log:\n{node.log_tail()}"
        failure = node.wait_for_log("Failed to start:")
        assert f"cannot listen on the Raft address {taken}" in failure, failure
    finally:
        holder.close()
