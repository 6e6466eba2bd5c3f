"""The official Node.js client (node-nats-streaming) against one stanchion node.

Each test runs scenario scripts from this folder (see their headers and lib.js) and
asserts on the JSON events they print. Error texts are written out literally here,
not imported from protocol.errors, so a wrong constant in the server fails a test.
"""

from __future__ import annotations

import signal

from tests.helpers import NatsServer, NodeScripts, StanNodeFactory

PING_ERROR = "client has been replaced or is no longer registered"
CONNECT_TIMEOUT = "stan: connect request timeout"  # node-nats-streaming's own text
ALREADY_REGISTERED = "stan: clientID already registered"
INVALID_CLIENT_ID = "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed"

#: Milliseconds each script may take before it reports a timeout itself.
SCRIPT_MS = "30000"


def conn_args(nats_server: NatsServer, cluster_id: str, client: str) -> list[str]:
    return [
        "--url",
        nats_server.url,
        "--cluster",
        cluster_id,
        "--client",
        client,
        "--timeout-ms",
        SCRIPT_MS,
    ]


def test_publish_sync_and_read_back(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    count = 25
    pub = node_scripts.run(
        "publish.js",
        *conn_args(nats_server, cluster_id, "publisher"),
        "--channel",
        "orders",
        "--count",
        str(count),
    ).check_ok()
    published = pub.of("published")
    assert [e["data"] for e in published] == [f"msg-{i}" for i in range(1, count + 1)], (
        pub.describe()
    )
    guids = [e["guid"] for e in published]
    assert all(guids) and len(set(guids)) == count, pub.describe()
    assert pub.one("closed")["error"] is None

    reader = node_scripts.run(
        "durable.js",
        *conn_args(nats_server, cluster_id, "reader"),
        "--channel",
        "orders",
        "--durable",
        "reader",
        "--count",
        str(count),
        "--deliver-all",
    ).check_ok()
    got = [(e["seq"], e["data"]) for e in reader.of("received")]
    assert got == [(i, f"msg-{i}") for i in range(1, count + 1)], reader.describe()
    assert not any(e["redelivered"] for e in reader.of("received")), reader.describe()


def test_durable_resumes_where_it_left_off(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    channel = ["--channel", "events"]
    node_scripts.run(
        "publish.js", *conn_args(nats_server, cluster_id, "pub1"), *channel, "--count", "6"
    ).check_ok()

    sub = [*conn_args(nats_server, cluster_id, "durable-client"), *channel, "--durable", "d1"]
    first = node_scripts.run("durable.js", *sub, "--count", "4", "--deliver-all").check_ok()
    assert first.one("summary")["acked"] == [1, 2, 3, 4], first.describe()
    first_four = [(e["seq"], e["data"]) for e in first.of("received")][:4]
    assert first_four == [(i, f"msg-{i}") for i in range(1, 5)], first.describe()

    # More messages while the durable is offline.
    node_scripts.run(
        "publish.js",
        *conn_args(nats_server, cluster_id, "pub2"),
        *channel,
        "--count",
        "4",
        "--start",
        "7",
    ).check_ok()

    second = node_scripts.run("durable.js", *sub, "--count", "6").check_ok()
    received = second.of("received")
    assert all(e["seq"] > 4 for e in received), f"acked messages came back\n{second.describe()}"
    assert sorted(second.one("summary")["acked"]) == list(range(5, 11)), second.describe()
    order: list[int] = []
    for e in received:
        assert e["data"] == f"msg-{e['seq']}", second.describe()
        if e["seq"] not in order:
            order.append(e["seq"])
    assert order == sorted(order), f"not delivered in sequence order\n{second.describe()}"


def test_queue_group_delivers_each_message_once(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    count = 20
    res = node_scripts.run(
        "queue.js",
        *conn_args(nats_server, cluster_id, "queue-client"),
        "--channel",
        "jobs",
        "--group",
        "workers",
        "--members",
        "2",
        "--count",
        str(count),
    ).check_ok()
    summary = res.one("summary")
    members: dict[str, list[int]] = summary["members"]
    assert set(members) == {"m1", "m2"}, res.describe()
    assert summary["duplicates"] == [], res.describe()
    everything = sorted(seq for seqs in members.values() for seq in seqs)
    assert everything == list(range(1, count + 1)), f"not exactly once\n{res.describe()}"
    assert all(members.values()), f"one member got nothing\n{res.describe()}"
    for e in res.of("received"):
        assert e["data"] == f"q-{e['seq']}" and not e["redelivered"], res.describe()


def test_unacked_message_is_redelivered(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    res = node_scripts.run(
        "redelivery.js",
        *conn_args(nats_server, cluster_id, "slow-consumer"),
        "--channel",
        "retry",
        "--ack-wait-ms",
        "1000",
    ).check_ok()
    summary = res.one("summary")
    first, again = summary["first"], summary["redelivery"]
    assert first["seq"] == again["seq"] == 1, res.describe()
    assert first["data"] == again["data"] == "redeliver-me", res.describe()
    assert first["redelivered"] is False and first["redeliveryCount"] == 0, res.describe()
    assert again["redelivered"] is True and again["redeliveryCount"] >= 1, res.describe()
    # Not before the ack wait (1 s; the server's timer may fire up to ~15 ms early).
    assert summary["elapsedMs"] >= 900, res.describe()


def test_ping_error_after_memory_store_restart(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    node = stan_node(store="MEMORY")
    pinger = node_scripts.start(
        "ping.js",
        *conn_args(nats_server, cluster_id, "forgotten"),
        "--ping-interval-ms",
        "1000",
        "--timeout-ms",
        "60000",
    )
    pinger.wait_for_event("connected", timeout=20)
    node.restart()  # a MEMORY store forgets every client
    res = pinger.wait(timeout=70).check_ok()
    assert res.one("connection_lost")["message"] == PING_ERROR, res.describe()


def test_ping_error_after_client_replaced(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    pinger = node_scripts.start(
        "ping.js",
        *conn_args(nats_server, cluster_id, "twin"),
        "--ping-interval-ms",
        "1000",
        "--timeout-ms",
        "60000",
    )
    pinger.wait_for_event("connected", timeout=20)
    # Freeze the first client so it cannot answer the server's heartbeat probe; the
    # server must then replace it with the new connection that uses the same ID.
    pinger.send_signal(signal.SIGSTOP)
    try:
        taker = node_scripts.run(
            "publish.js",
            *conn_args(nats_server, cluster_id, "twin"),
            "--channel",
            "twins",
            "--count",
            "1",
        )
    finally:
        pinger.send_signal(signal.SIGCONT)
    taker.check_ok()
    res = pinger.wait(timeout=70).check_ok()
    assert res.one("connection_lost")["message"] == PING_ERROR, res.describe()


def test_duplicate_client_id_is_rejected_while_first_is_alive(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    first = node_scripts.start(
        "ping.js", *conn_args(nats_server, cluster_id, "only-one"), "--timeout-ms", "60000"
    )
    first.wait_for_event("connected", timeout=20)
    second = node_scripts.run(
        "publish.js", *conn_args(nats_server, cluster_id, "only-one"), "--count", "1"
    )
    assert second.returncode != 0 and not second.of("connected"), second.describe()
    assert second.of("error")[-1]["message"] == ALREADY_REGISTERED, second.describe()
    assert first.running, f"the first client should be untouched\n{first.describe()}"


def test_invalid_client_id_is_rejected(
    stan_node: StanNodeFactory, nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    stan_node()
    res = node_scripts.run(
        "publish.js", *conn_args(nats_server, cluster_id, "bad.client"), "--count", "1"
    )
    assert res.returncode != 0 and not res.of("connected"), res.describe()
    assert res.of("error")[-1]["message"] == INVALID_CLIENT_ID, res.describe()


def test_connect_times_out_without_streaming_server(
    nats_server: NatsServer, cluster_id: str, node_scripts: NodeScripts
) -> None:
    """Harness check that needs no stanchion node: plain NATS, nobody on discover."""
    res = node_scripts.run(
        "publish.js",
        *conn_args(nats_server, cluster_id, "lonely"),
        "--connect-timeout-ms",
        "500",
        "--count",
        "1",
    )
    assert res.returncode == 1, res.describe()
    assert not res.of("connected"), res.describe()
    error = res.of("error")[-1]
    assert error["fatal"] is True and error["message"] == CONNECT_TIMEOUT, res.describe()
