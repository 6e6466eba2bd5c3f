"""HTTP monitoring against OPERATIONS §4: every field in order with its type, query
parameters, paging, error texts; plus healthz, isFTActive, /metrics and https."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from client import connect
from tests.helpers import LOOPBACK, StanNode, StanNodeFactory, free_port, wait_for

INT = int
STR = str
BOOL = bool

#: OPERATIONS §4 tables: field -> type, in the reference's order; None = optional.
SERVERZ = [
    ("cluster_id", STR),
    ("server_id", STR),
    ("version", STR),
    ("go", STR),
    ("state", STR),
    ("now", STR),
    ("start_time", STR),
    ("uptime", STR),
    ("clients", INT),
    ("subscriptions", INT),
    ("channels", INT),
    ("total_msgs", INT),
    ("total_bytes", INT),
    ("in_msgs", INT),
    ("in_bytes", INT),
    ("out_msgs", INT),
    ("out_bytes", INT),
    ("open_fds", INT),
    ("max_fds", INT),
]
STOREZ = [
    ("cluster_id", STR),
    ("server_id", STR),
    ("now", STR),
    ("type", STR),
    ("limits", dict),
    ("total_msgs", INT),
    ("total_bytes", INT),
]
LIMITS = [
    ("max_channels", INT),
    ("max_msgs", INT),
    ("max_bytes", INT),
    ("max_age", INT),
    ("max_subscriptions", INT),
    ("max_inactivity", INT),
]
PAGE = [
    ("cluster_id", STR),
    ("server_id", STR),
    ("now", STR),
    ("offset", INT),
    ("limit", INT),
    ("count", INT),
    ("total", INT),
]
CLIENT = [("id", STR), ("hb_inbox", STR), ("subs_count", INT)]
CHANNEL = [
    ("name", STR),
    ("msgs", INT),
    ("bytes", INT),
    ("first_seq", INT),
    ("last_seq", INT),
    ("subs_count", INT),
]
SUB = [
    ("client_id", STR),
    ("inbox", STR),
    ("ack_inbox", STR),
    ("durable_name", STR),
    ("queue_name", STR),
    ("is_durable", BOOL),
    ("is_offline", BOOL),
    ("max_inflight", INT),
    ("ack_wait", INT),
    ("last_sent", INT),
    ("pending_count", INT),
    ("is_stalled", BOOL),
]
OPTIONAL = {"durable_name", "queue_name", "role", "node_id", "open_fds", "max_fds"}


def check_fields(
    obj: dict[str, Any], table: Sequence[tuple[str, type]], extra: tuple[str, ...] = ()
) -> None:
    """The keys of ``obj`` are the table's (optional ones may be absent), in its order."""
    names = [name for name, _ in table]
    keys = [k for k in obj if k not in extra]
    assert keys == [n for n in names if n in obj], f"field order {keys} != {names}"
    for name, kind in table:
        if name not in obj:
            assert name in OPTIONAL, f"missing field {name}"
            continue
        value = obj[name]
        assert isinstance(value, kind) and not (kind is INT and isinstance(value, bool)), (
            f"{name}={value!r} is not {kind.__name__}"
        )


def get(node: StanNode, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(node.monitor_url(path), timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


async def populate(node_url: str, cluster_id: str) -> list[Any]:
    """Three clients: plain + durable on foo, queue + durable queue on bar, 3 messages."""
    conns = [await connect(cluster_id, f"c{i}", nats_url=node_url) for i in (1, 2, 3)]
    c1, c2, c3 = conns
    await c1.subscribe("foo", lambda m: None, start_at="first")
    await c2.subscribe("foo", lambda m: None, durable_name="dur", start_at="first")
    await c3.subscribe("bar", lambda m: None, queue="q")
    await c3.subscribe("bar", lambda m: None, queue="q", durable_name="dq")
    for data in (b"a", b"bb", b"ccc"):
        await c1.publish("foo", data)
    await c1.publish("bar", b"x")
    return conns


async def test_monitoring_endpoints(stan_node: StanNodeFactory, cluster_id: str) -> None:
    node = stan_node()
    conns = await populate(node_url=stan_node.nats_url, cluster_id=cluster_id)
    try:
        await wait_for(
            lambda: node.monitor("/streaming/serverz")["out_msgs"] >= 7,
            15,
            "7 deliveries (3 to each foo subscriber, 1 to a bar queue member)",
            state=lambda: node.monitor("/streaming/serverz"),
        )
        serverz = node.monitor("/streaming/serverz")
        check_fields(serverz, SERVERZ)
        assert serverz["state"] == "STANDALONE" and serverz["version"] == "0.25.6"
        assert "role" not in serverz and "node_id" not in serverz
        assert (serverz["clients"], serverz["channels"], serverz["subscriptions"]) == (3, 2, 4)
        assert (serverz["total_msgs"], serverz["in_msgs"], serverz["in_bytes"]) == (4, 4, 7)
        assert serverz["open_fds"] > 0 and serverz["max_fds"] > 0

        storez = node.monitor("/streaming/storez")
        check_fields(storez, STOREZ)
        check_fields(storez["limits"], LIMITS)
        assert storez["type"] == "FILE" and storez["total_msgs"] == 4

        clientsz = node.monitor("/streaming/clientsz")
        check_fields(clientsz, PAGE, extra=("clients",))
        assert [c["id"] for c in clientsz["clients"]] == ["c1", "c2", "c3"]
        for c in clientsz["clients"]:
            check_fields(c, CLIENT)
        page = node.monitor("/streaming/clientsz?offset=1&limit=1")
        assert (page["offset"], page["limit"], page["count"], page["total"]) == (1, 1, 1, 3)
        assert [c["id"] for c in page["clients"]] == ["c2"]
        page = node.monitor("/streaming/clientsz?offset=-5&limit=0")
        assert (page["offset"], page["limit"], page["count"]) == (0, 1024, 3)

        c3 = node.monitor("/streaming/clientsz?client=c3&subs=1")
        check_fields(c3, [*CLIENT, ("subscriptions", dict)])
        assert c3["subs_count"] == 2 and list(c3["subscriptions"]) == ["bar"]
        queue, durable_queue = c3["subscriptions"]["bar"]
        check_fields(queue, SUB)
        assert queue["queue_name"] == "q" and "durable_name" not in queue
        assert durable_queue["queue_name"] == "dq:q" and durable_queue["is_durable"] is True
        assert "subscriptions" not in node.monitor("/streaming/clientsz?client=c3")

        channelsz = node.monitor("/streaming/channelsz")
        check_fields(channelsz, [*PAGE, ("names", list)])
        assert channelsz["names"] == ["bar", "foo"] and "channels" not in channelsz
        with_subs = node.monitor("/streaming/channelsz?subs=1")
        assert "names" not in with_subs
        for ch in with_subs["channels"]:
            check_fields(ch, [*CHANNEL, ("subscriptions", list)])
            for sub in ch["subscriptions"]:
                check_fields(sub, SUB)
        foo = node.monitor("/streaming/channelsz?channel=foo&subs=1")
        assert (foo["msgs"], foo["bytes"] > 0, foo["first_seq"], foo["last_seq"]) == (3, True, 1, 3)
        durable = [s for s in foo["subscriptions"] if s.get("durable_name") == "dur"]
        assert len(durable) == 1 and durable[0]["client_id"] == "c2"
        assert durable[0]["last_sent"] == 3 and durable[0]["is_offline"] is False
        assert "subscriptions" not in node.monitor("/streaming/channelsz?channel=foo")
        empty = node.monitor("/streaming/channelsz?offset=10")
        assert "names" not in empty and "channels" not in empty and empty["count"] == 0

        assert get(node, "/streaming/channelsz?channel=nope") == (
            404,
            "text/plain; charset=utf-8",
            b"Channel nope not found\n",
        )
        assert get(node, "/streaming/clientsz?client=nope")[::2] == (
            404,
            b"Client nope not found\n",
        )
        status, ctype, body = get(node, "/streaming/serverz?callback=cb")
        assert (status, ctype) == (200, "application/javascript")
        assert body.startswith(b"cb(") and json.loads(body[3:-1])["cluster_id"] == cluster_id
        status, ctype, body = get(node, "/streaming/storez")
        assert ctype == "application/json" and body.startswith(b'{\n  "cluster_id"')
        assert get(node, "/streaming/isFTActive")[::2] == (204, b"")
        assert get(node, "/streaming")[0] == 200
        status, _ctype, body = get(node, "/streaming/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

        status, ctype, body = get(node, "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        text = body.decode()
        for line in (
            "stanchion_messages_received_total 4.0",
            'stanchion_channel_messages{channel="foo"} 3.0',
            "stanchion_clients 3.0",
            'stanchion_raft_role{role="Leader"} 1.0',
            "stanchion_serving 1.0",
        ):
            assert line in text, line
        for name in (
            "stanchion_subscription_pending_messages{",
            "stanchion_raft_commit_index ",
            "stanchion_store_disk_bytes ",
            "stanchion_raft_commit_latency_seconds_bucket",
            "process_open_fds ",
        ):
            assert name in text, name
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)


def test_https_monitoring(stan_node: StanNodeFactory, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    stan_node("-ms", str(port), "--tlscert", cert, "--tlskey", key, "-a", LOOPBACK, monitor=False)
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    url = f"https://{LOOPBACK}:{port}/streaming/serverz"
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        assert json.loads(resp.read())["state"] == "STANDALONE"


async def test_clustered_monitoring(stan_node: StanNodeFactory) -> None:
    raft_ports = {n: free_port() for n in "abc"}
    peers = ",".join(f"{n}={LOOPBACK}:{p}" for n, p in raft_ports.items())
    nodes = {
        n: stan_node(
            "--clustered",
            "--cluster_node_id",
            n,
            "--cluster_peers",
            peers,
            name=n,
            wait_ready=False,
        )
        for n in "abc"
    }

    def healthy() -> bool:
        return all(get(node, "/streaming/healthz")[0] == 200 for node in nodes.values())

    await wait_for(
        healthy,
        45,
        "a serving leader and two caught-up followers (/streaming/healthz 200 on all)",
        state=lambda: {n: get(node, "/streaming/healthz")[2] for n, node in nodes.items()},
        ignore=(OSError,),
    )
    roles = {}
    for name, node in nodes.items():
        serverz = node.monitor("/streaming/serverz")
        table = SERVERZ[:5] + [("role", STR), ("node_id", STR)] + SERVERZ[5:]
        check_fields(serverz, table, extra=("raft",))
        assert serverz["state"] == "CLUSTERED" and serverz["node_id"] == name
        assert serverz["raft"]["peers"] == {n: f"{LOOPBACK}:{p}" for n, p in raft_ports.items()}
        roles[name] = serverz["role"]
        assert node.monitor("/streaming/storez")["type"] == "RAFT_FILE"
    leaders = [n for n, r in roles.items() if r == "Leader"]
    assert len(leaders) == 1 and sorted(roles.values()).count("Follower") == 2, roles
    for node in nodes.values():
        assert node.monitor("/streaming/serverz")["raft"]["leader"] == leaders[0]
    text = get(nodes[leaders[0]], "/metrics")[2].decode()
    assert 'stanchion_raft_role{role="Leader"} 1.0' in text
