"""The monitoring endpoints follow what clients do (field-by-field checks live in
test_monitoring.py)."""

from __future__ import annotations

from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import Collector, monitor


async def test_counts_follow_the_traffic(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    serverz = await monitor(node, "/streaming/serverz")
    assert serverz["cluster_id"] == clients.cluster_id
    assert serverz["server_id"] and serverz["version"] == "0.25.6"
    assert serverz["state"] == "STANDALONE"
    assert (serverz["clients"], serverz["channels"], serverz["subscriptions"]) == (0, 0, 0)
    assert (serverz["total_msgs"], serverz["in_msgs"], serverz["out_msgs"]) == (0, 0, 0)
    kind = (await monitor(node, "/streaming/storez"))["type"]
    assert kind == ("MEMORY" if store == "MEMORY" else "FILE")

    a = await clients.connect("mon-a")
    b = await clients.connect("mon-b")
    got = Collector()
    await b.subscribe("mon.one", got.on_msg)
    await b.subscribe("mon.one", got.on_msg, durable_name="d")
    await b.subscribe("mon.two", got.on_msg, queue="q")
    for channel, count in (("mon.one", 3), ("mon.two", 2)):
        for i in range(count):
            await a.publish(channel, f"{channel}-{i}".encode())
    await got.wait_count(3 + 3 + 2)

    serverz = await monitor(node, "/streaming/serverz")
    assert (serverz["clients"], serverz["channels"], serverz["subscriptions"]) == (2, 2, 3)
    assert (serverz["total_msgs"], serverz["in_msgs"], serverz["out_msgs"]) == (5, 5, 8)
    payload_bytes = sum(
        len(f"{c}-{i}") for c, n in (("mon.one", 3), ("mon.two", 2)) for i in range(n)
    )
    assert serverz["in_bytes"] == payload_bytes
    assert serverz["total_bytes"] > payload_bytes, "stored size includes the message envelope"

    clientsz = await monitor(node, "/streaming/clientsz?subs=1")
    assert clientsz["total"] == 2
    by_id = {c["id"]: c for c in clientsz["clients"]}
    assert (by_id["mon-a"]["subs_count"], by_id["mon-b"]["subs_count"]) == (0, 3)
    assert by_id["mon-b"]["hb_inbox"] == b.heartbeat_inbox
    assert sorted(by_id["mon-b"]["subscriptions"]) == ["mon.one", "mon.two"]

    channelsz = await monitor(node, "/streaming/channelsz?subs=1")
    assert channelsz["total"] == 2
    one, two = sorted(channelsz["channels"], key=lambda c: c["name"])
    assert (one["name"], one["msgs"], one["last_seq"], one["subs_count"]) == ("mon.one", 3, 3, 2)
    assert (two["name"], two["msgs"], two["last_seq"], two["subs_count"]) == ("mon.two", 2, 2, 1)

    await b.close()
    serverz = await monitor(node, "/streaming/serverz")
    assert (serverz["clients"], serverz["subscriptions"]) == (1, 1), "the durable stays"
