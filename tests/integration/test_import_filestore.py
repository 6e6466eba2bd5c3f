"""``stanchion import-filestore``: a reference FILE store loaded into a running node.

The store written by nats-streaming-server (shared fixture) is imported through
the CLI, as a separate process, into a node started by the ``stan_node``
fixture; every item of the fixture's expected.json is then checked through the
monitoring endpoints, a subscriber, and the node's store files. Clients carry
on afterwards: a durable resumes where it was, unacknowledged messages are
redelivered, sequences continue. Damaged copies of the store (in tmp_path)
are refused with the file and offset, or imported without the damaged part
with ``--skip-corrupt``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMsg

from client import Msg, StanConnection, StanError, connect
from protocol.messages import Ack, MsgProto, Ping
from store import open_store
from tests.helpers import NatsServer, StanNode, StanNodeFactory, free_port, wait_for
from tests.helpers.filestore_writer import (
    SUB_DELETE,
    ClientSpec,
    FileStoreWriter,
    SubSpec,
    compacted_subs,
    sub_update_payload,
)
from tests.helpers.import_cli import import_ok, output, run_import
from tests.helpers.reference_fixture import FIXTURE, copy_store, fingerprint, load_expected

STORE_CID = "test-cluster"


@pytest.fixture
def cluster_id() -> str:
    """The fixture store belongs to ``test-cluster``; each test has its own nats-server."""
    return STORE_CID


# -- connections and deliveries ---------------------------------------------------------


class Conns:
    """STAN and raw NATS connections of one test, all on the test's nats-server."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.stan: list[StanConnection] = []
        self.raw: list[NatsClient] = []

    async def stan_client(self, client_id: str) -> StanConnection:
        sc = await connect(STORE_CID, client_id, nats_url=self.nats_url)
        self.stan.append(sc)
        return sc

    async def nats(self) -> NatsClient:
        nc = await nats.connect(self.nats_url, max_reconnect_attempts=1)
        self.raw.append(nc)
        return nc

    async def close_all(self) -> None:
        for sc in self.stan:
            with suppress(StanError, nats.errors.Error, asyncio.TimeoutError):
                await asyncio.wait_for(sc.close(), 3)
            if not sc.nc.is_closed:
                with suppress(nats.errors.Error):
                    await sc.nc.close()
        for nc in self.raw:
            if not nc.is_closed:
                with suppress(nats.errors.Error):
                    await nc.close()


@pytest.fixture
async def conns(nats_server: NatsServer, stan_node: StanNodeFactory) -> AsyncIterator[Conns]:
    """Depends on ``stan_node`` so that connections close before the nodes stop."""
    c = Conns(nats_server.url)
    try:
        yield c
    finally:
        await c.close_all()


class Collector:
    """A subscription callback keeping every message; manual acks through :meth:`ack`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.msgs: list[Msg] = []

    async def on_msg(self, msg: Msg) -> None:
        self.msgs.append(msg)

    def seen(self) -> list[tuple[int, bool]]:
        return [(m.sequence, m.redelivered) for m in self.msgs]

    async def wait_count(self, count: int, timeout: float = 10.0) -> list[Msg]:
        await wait_for(
            lambda: len(self.msgs) >= count,
            timeout,
            f"{self.name}: {count} messages",
            state=self.seen,
        )
        return self.msgs

    async def wait_seq(self, seq: int, *, redelivered: bool | None = None) -> Msg:
        def find() -> Msg | None:
            for m in self.msgs:
                if m.sequence == seq and redelivered in (None, m.redelivered):
                    return m
            return None

        found = await wait_for(find, 10, f"{self.name}: sequence {seq}", state=self.seen)
        assert found is not None
        return found

    async def ack(self, *seqs: int) -> None:
        for seq in seqs:
            await next(m for m in reversed(self.msgs) if m.sequence == seq).ack()


class Inbox:
    """Raw NATS messages on one subject; answers requests when ``answer`` is set."""

    def __init__(self, nc: NatsClient, subject: str, answer: bool = False) -> None:
        self.nc = nc
        self.subject = subject
        self.answer = answer
        self.msgs: list[NatsMsg] = []

    async def start(self) -> Inbox:
        await self.nc.subscribe(self.subject, cb=self._on_msg)
        await self.nc.flush()
        return self

    async def _on_msg(self, msg: NatsMsg) -> None:
        self.msgs.append(msg)
        if self.answer and msg.reply:
            await self.nc.publish(msg.reply, b"")


async def monitor(node: StanNode, path: str) -> dict[str, Any]:
    return await asyncio.to_thread(node.monitor, path)


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return load_expected()


@pytest.fixture
def store_copy(tmp_path: Path, expected: dict[str, Any]) -> Path:
    """A writable copy of the fixture store, for damaging."""
    return copy_store(tmp_path / "reference-store")


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


async def channels(node: StanNode) -> dict[str, dict[str, Any]]:
    data = await monitor(node, "/streaming/channelsz?subs=1")
    return {ch["name"]: ch for ch in data.get("channels", [])}


async def read_channel(conns: Conns, channel: str, count: int) -> list[Any]:
    """Every message of ``channel`` from the first, through a fresh subscriber."""
    sc = await conns.stan_client(f"reader-{channel.replace('.', '-')}")
    got = Collector(f"reader of {channel}")
    sub = await sc.subscribe(channel, got.on_msg, start_at="first", max_inflight=4096)
    try:
        await got.wait_count(count, timeout=30)
    finally:
        await sub.unsubscribe()
    return got.msgs


# ---------------------------------------------------------------------------
# The reference store, every item of expected.json
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["LMDB", "MEMORY"])
async def test_import_matches_expected_json(
    stan_node: StanNodeFactory,
    nats_server: Any,
    conns: Conns,
    expected: dict[str, Any],
    store_kind: str,
) -> None:
    node = stan_node(store=store_kind, name="target")
    before = fingerprint(FIXTURE / "store")
    proc = await import_ok(FIXTURE / "store", "-ns", nats_server.url, "-cid", STORE_CID)
    assert fingerprint(FIXTURE / "store") == before, "the import changed the store it read"
    assert "clients: 1 registered (orders-worker)" in proc.stdout, output(proc)
    assert "import orders: done, 200/200 msgs" in proc.stderr, output(proc)

    assert expected["cluster_id"] == STORE_CID
    serverz = await monitor(node, "/streaming/serverz")
    totals = expected["totals"]
    assert serverz["cluster_id"] == expected["server_info"]["cluster_id"]
    assert (serverz["channels"], serverz["clients"], serverz["subscriptions"]) == (
        totals["channels"],
        totals["clients"],
        totals["subscriptions"],
    )
    assert serverz["total_msgs"] == totals["msgs"]
    # The reference counts payload + 8 + 32 per message; stanchion counts the
    # MsgProto alone, which the import re-encodes to the very same size.
    assert serverz["total_bytes"] == totals["bytes_as_reported_by_monitoring"] - 40 * totals["msgs"]

    clientsz = await monitor(node, "/streaming/clientsz?subs=1")
    assert [(c["id"], c["hb_inbox"]) for c in clientsz["clients"]] == [
        (c["id"], c["hb_inbox"]) for c in expected["clients"]
    ]
    for gone in expected["closed_clients_not_to_import"]:
        assert gone not in {c["id"] for c in clientsz["clients"]}

    got = await channels(node)
    assert sorted(got) == sorted(ch["name"] for ch in expected["channels"])
    for exp in expected["channels"]:
        ch = got[exp["name"]]
        assert (ch["msgs"], ch["first_seq"], ch["last_seq"], ch["bytes"]) == (
            exp["msgs"],
            exp["first_seq"],
            exp["last_seq"],
            exp["bytes"] - 40 * exp["msgs"],
        ), exp["name"]
        assert len(ch["subscriptions"]) == len(exp["subscriptions"])
        for es, gs in zip(exp["subscriptions"], ch["subscriptions"], strict=True):
            mon = es["monitoring"]
            assert {
                "client_id": gs["client_id"],
                "queue_name": gs.get("queue_name"),
                "durable_name": gs.get("durable_name"),
                "is_durable": gs["is_durable"],
                "is_offline": gs["is_offline"],
                "max_inflight": gs["max_inflight"],
                "ack_wait": gs["ack_wait"],
                "last_sent": gs["last_sent"],
                "pending_count": gs["pending_count"],
            } == mon
            assert (gs["inbox"], gs["ack_inbox"]) == (es["inbox"], es["ack_inbox"])

        # Every message: sequence, subject, reply, data, and the stored timestamps.
        prefix = exp["data_rule"].split("data '")[1].split("'")[0]
        msgs = await read_channel(conns, exp["name"], exp["msgs"])
        assert [m.sequence for m in msgs] == list(range(exp["first_seq"], exp["last_seq"] + 1))
        for m in msgs:
            assert (m.subject, m.reply, m.data) == (
                exp["name"],
                "",
                f"{prefix}{m.sequence}".encode(),
            )
        by_seq = {m.sequence: m for m in msgs}
        for sample in exp["message_samples"]:
            m = by_seq[sample["seq"]]
            assert (m.timestamp, m.data.decode(), m.subject, m.reply) == (
                sample["timestamp"],
                sample["data"],
                sample["subject"],
                sample["reply"],
            )


async def test_imported_store_files_hold_every_record(
    stan_node: StanNodeFactory, nats_server: Any, expected: dict[str, Any], tmp_path: Path
) -> None:
    """What monitoring does not show (conn_id, ping settings, exact pending sets,
    timestamps, subscription IDs), read back from the node's LMDB store."""
    node = stan_node(name="target", debug=False)
    await import_ok(FIXTURE / "store", "-ns", nats_server.url)
    node.stop()
    st = open_store("LMDB", str(tmp_path / "target" / "data" / "store"), sync=False)
    try:
        info = st.server_info()
        assert info is not None and info.cluster_id == expected["cluster_id"]
        (exp_client,) = expected["clients"]
        rec = st.clients()[exp_client["id"]]
        assert (
            rec.hb_inbox,
            rec.conn_id.hex(),
            rec.protocol,
            rec.ping_interval,
            rec.ping_max_out,
        ) == (
            exp_client["hb_inbox"],
            exp_client["conn_id_hex"],
            exp_client["protocol"],
            exp_client["ping_interval"],
            exp_client["ping_max_out"],
        )
        for exp in expected["channels"]:
            name = exp["name"]
            ch = st.channels()[name]
            assert (ch.first_seq, ch.last_seq, ch.msgs) == (
                exp["first_seq"],
                exp["last_seq"],
                exp["msgs"],
            )
            stamps = {m.seq: m.timestamp for m in st.iter_msgs(name)}
            for sample in exp["message_samples"]:
                assert stamps[sample["seq"]] == sample["timestamp"]
                raw = st.get_msg(name, sample["seq"])
                assert raw is not None and len(raw.raw) == sample["size"]
            subs = st.subs(name)
            assert sorted(subs) == [s["id"] for s in exp["subscriptions"]]
            for es in exp["subscriptions"]:
                sub = subs[es["id"]]
                assert (
                    sub.client_id,
                    sub.qgroup,
                    sub.inbox,
                    sub.ack_inbox,
                    sub.max_inflight,
                    sub.ack_wait,
                    sub.durable_name,
                    sub.last_sent,
                    sub.is_durable,
                ) == (
                    es["client_id"],
                    es["queue_group"],
                    es["inbox"],
                    es["ack_inbox"],
                    es["max_in_flight"],
                    es["ack_wait_secs"],
                    es["durable_name"],
                    es["last_sent"],
                    es["is_durable"],
                )
                assert sub.is_closed == es["monitoring"]["is_offline"]
                assert sorted(st.pending(name, sub.sub_id)) == es["pending"]
            if exp["subscriptions"]:
                assert ch.next_sub_id == max(s["id"] for s in exp["subscriptions"]) + 1
    finally:
        st.close()


# ---------------------------------------------------------------------------
# Clients carry on
# ---------------------------------------------------------------------------


async def test_durables_resume_after_import(
    stan_node: StanNodeFactory, nats_server: Any, conns: Conns
) -> None:
    stan_node(name="target")
    await import_ok(FIXTURE / "store", "-ns", nats_server.url)

    # orders-worker reconnects (its old connection is gone, so it is replaced)
    # and reopens its durable: the 5 unacknowledged messages come first, then
    # the rest from 126 on.
    worker = await conns.stan_client("orders-worker")
    orders = Collector("orders-durable")
    await worker.subscribe(
        "orders",
        orders.on_msg,
        durable_name="orders-durable",
        manual_acks=True,
        max_inflight=5,
        ack_wait=60,
        start_at="first",
    )
    first_five = await orders.wait_count(5)
    assert [(m.sequence, m.redelivered) for m in first_five] == [(s, True) for s in range(121, 126)]
    await orders.ack(*range(121, 126))
    acked = 125
    while acked < 200:
        await orders.wait_seq(acked + 1, redelivered=False)
        nxt = orders.msgs[-1].sequence
        await orders.ack(*range(acked + 1, nxt + 1))
        acked = nxt
    assert [m.sequence for m in orders.msgs if not m.redelivered] == list(range(126, 201))
    assert all(m.data == b"order-%d" % m.sequence for m in orders.msgs)

    # The durable queue group's shadow is taken over by a new member.
    events_worker = await conns.stan_client("events-worker")
    events = Collector("events-durable/workers")
    await events_worker.subscribe(
        "events",
        events.on_msg,
        queue="workers",
        durable_name="events-durable",
        manual_acks=True,
        max_inflight=50,
        ack_wait=60,
    )
    got = await events.wait_count(3)
    assert [(m.sequence, m.redelivered, m.data) for m in got] == [
        (s, True, b"event-%d" % s) for s in (48, 49, 50)
    ]
    await events.ack(48, 49, 50)

    # New publishes continue the sequences.
    publisher = await conns.stan_client("publisher")
    for channel, data in (("orders", b"order-201"), ("events", b"event-51"), ("tiny", b"tiny-2")):
        await publisher.publish(channel, data)
    await orders.wait_seq(201)
    await events.wait_seq(51)
    assert (await read_channel(conns, "tiny", 2))[-1].sequence == 2


async def test_still_connected_client_carries_on(
    stan_node: StanNodeFactory, nats_server: Any, conns: Conns
) -> None:
    """A client that stayed on NATS while the reference server was swapped for
    stanchion keeps its heartbeat inbox, connection ID, subscription inbox and
    ack inbox: all of them work after the import."""
    node = stan_node("-hbi", "300ms", "-hbt", "300ms", "-hbf", "2", name="target")
    nc = await conns.nats()
    hb = await Inbox(nc, "_INBOX.3MI22RGREE7E532T1JW203", answer=True).start()
    deliveries = await Inbox(nc, "_INBOX.3MI22RGREE7E532T1JW26H").start()
    await import_ok(FIXTURE / "store", "-ns", nats_server.url)

    # The unacknowledged messages were due long ago: redelivered at once.
    def parsed() -> list[tuple[int, bool]]:
        return [
            (m.sequence, m.redelivered)
            for m in map(MsgProto.FromString, (x.data for x in deliveries.msgs))
        ]

    await wait_for(
        lambda: {s for s, _ in parsed()} >= set(range(121, 126)),
        10,
        "redelivery of 121..125 to the subscription's inbox",
        state=parsed,
    )
    assert parsed()[:5] == [(s, True) for s in range(121, 126)]
    for seq in range(121, 126):
        ack = Ack(subject="orders", sequence=seq).SerializeToString()
        await nc.publish("_INBOX.Lns2RUfDGRJFC6e6Rt0en4", ack)
    # The acks went to the reference's ack inbox: the next messages follow.
    await wait_for(
        lambda: [s for s, r in parsed() if not r] == list(range(126, 131)),
        10,
        "first deliveries of 126..130 after the acks",
        state=parsed,
    )
    assert {s for s, r in parsed() if r} == set(range(121, 126))

    # Pings with the stored connection ID are answered as for any client.
    ping = Ping(connID=b"3MI22RGREE7E532T1JW22N").SerializeToString()
    reply = await nc.request("_STAN.discover.test-cluster.pings", ping, timeout=3)
    assert reply.data == b""
    # The server heartbeats the imported client; it answers, so it stays.
    await wait_for(lambda: len(hb.msgs) >= 2, 10, "heartbeats to the imported client")
    data = await monitor(node, "/streaming/clientsz")
    assert [c["id"] for c in data["clients"]] == ["orders-worker"]


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


async def test_cluster_id_mismatch_is_refused(
    stan_node: StanNodeFactory, nats_server: Any, tmp_path: Path
) -> None:
    proc = await run_import(FIXTURE / "store", "-ns", nats_server.url, "-cid", "other")
    assert proc.returncode == 1, output(proc)
    assert (
        "cluster ID mismatch: the store belongs to cluster 'test-cluster', the target is "
        "'other' (-cid); refusing to import"
    ) in proc.stderr

    # A server of another cluster does not answer the store's cluster ID...
    other = stan_node(name="other", cluster_id="other")
    proc = await run_import(FIXTURE / "store", "-ns", nats_server.url, "--retry_window", "1")
    assert proc.returncode == 1, output(proc)
    assert "no stanchion leader with cluster ID 'test-cluster' answered" in proc.stderr
    assert (await monitor(other, "/streaming/serverz"))["channels"] == 0


async def test_existing_channels_are_refused(stan_node: StanNodeFactory, nats_server: Any) -> None:
    node = stan_node(name="target")
    await import_ok(FIXTURE / "store", "-ns", nats_server.url)
    proc = await run_import(FIXTURE / "store", "-ns", nats_server.url)
    assert proc.returncode == 1, output(proc)
    assert "the target already has channel(s) 'events', 'orders', 'tiny'" in proc.stderr
    assert (await monitor(node, "/streaming/serverz"))["total_msgs"] == 251


async def test_dry_run_reads_only(tmp_path: Path) -> None:
    closed_port = free_port()
    before = fingerprint(FIXTURE / "store")
    proc = await run_import(
        FIXTURE / "store", "--dry-run", "-ns", f"nats://127.0.0.1:{closed_port}"
    )
    assert proc.returncode == 0, output(proc)
    assert fingerprint(FIXTURE / "store") == before
    for line in (
        "(cluster ID 'test-cluster')",
        "total: 3 channel(s), 251 message(s), 1 client(s)",
        "subscription orders/1 durable 'orders-durable' client 'orders-worker', "
        "last sent 125, 5 pending, active",
        "subscription events/1 durable queue 'events-durable:workers' client '', "
        "last sent 50, 3 pending, offline",
    ):
        assert line in proc.stdout, output(proc)


# ---------------------------------------------------------------------------
# Damaged stores
# ---------------------------------------------------------------------------


async def test_flipped_byte(
    stan_node: StanNodeFactory, nats_server: Any, conns: Conns, store_copy: Path
) -> None:
    node = stan_node(name="target")
    dat = store_copy / "orders" / "msgs.1.dat"
    flip(dat, 3796 + 8 + 5)  # inside message 101
    proc = await run_import(store_copy, "-ns", nats_server.url)
    assert proc.returncode == 1, output(proc)
    assert f"{dat}: offset 3796: CRC mismatch" in proc.stdout, output(proc)
    assert "the store is damaged" in proc.stderr and "--skip-corrupt" in proc.stderr
    assert (await monitor(node, "/streaming/serverz"))["channels"] == 0  # nothing imported

    proc = await import_ok(store_copy, "-ns", nats_server.url, "--skip-corrupt")
    assert f"{dat}: offset 3796: CRC mismatch" in proc.stdout
    assert "skipped (damaged): 1 record(s)" in proc.stdout
    ch = (await channels(node))["orders"]
    assert (ch["msgs"], ch["first_seq"], ch["last_seq"]) == (199, 1, 200)
    msgs = await read_channel(conns, "orders", 199)
    assert [m.sequence for m in msgs] == [*range(1, 101), *range(102, 201)]
    assert (await channels(node))["events"]["msgs"] == 50


async def test_truncated_file(
    stan_node: StanNodeFactory, nats_server: Any, conns: Conns, store_copy: Path
) -> None:
    node = stan_node(name="target")
    dat = store_copy / "orders" / "msgs.1.dat"
    with open(dat, "r+b") as f:
        f.truncate(7729 + 20)  # message 200 is cut short
    proc = await run_import(store_copy, "-ns", nats_server.url)
    assert proc.returncode == 1, output(proc)
    assert f"{dat}: offset 7729: record of 32 bytes runs past the end of the file" in proc.stdout

    await import_ok(store_copy, "-ns", nats_server.url, "--skip-corrupt")
    ch = (await channels(node))["orders"]
    # 200 is lost, but its sequence is not handed out again.
    assert (ch["msgs"], ch["first_seq"], ch["last_seq"]) == (199, 1, 200)
    publisher = await conns.stan_client("publisher")
    await publisher.publish("orders", b"order-201")
    msgs = await read_channel(conns, "orders", 200)
    assert msgs[-1].sequence == 201 and msgs[-2].sequence == 199


# ---------------------------------------------------------------------------
# Synthetic stores: slices, compaction shapes, target limits
# ---------------------------------------------------------------------------

T0 = 1_790_000_000_000_000_000


def write_synthetic(root: Path) -> None:
    """Channel ``big.one``: sequences 501..3000 in slices 6..10 (1..5 deleted),
    replies on odd sequences, compacted subs.dat; ``quiet``: empty slices only;
    ``log.shape``: an uncompacted subs.dat."""
    w = FileStoreWriter(root)
    w.server()
    w.clients(
        [
            ClientSpec("keeper", "_INBOX.keeper-hb", b"keeper-conn"),
            ClientSpec("gone", "_INBOX.gone-hb", b"gone-conn"),
            "gone",
        ]
    )
    with w.channel("big.one", slice_max_msgs=500, first_slice=6) as ch:
        for seq in range(501, 3001):
            ch.append(seq, b"big-%d-" % seq + b"x" * (seq % 300), T0 + seq * 1000, "r" * (seq % 2))
        ch.subs(
            compacted_subs(
                [
                    (
                        SubSpec(
                            4,
                            "keeper",
                            inbox="_INBOX.keeper-durable",
                            ack_inbox="_INBOX.keeper-ack",
                            durable_name="keep",
                            last_sent=2990,
                            is_durable=True,
                            max_inflight=100,
                        ),
                        [2989, 2990],
                    ),
                    (
                        SubSpec(
                            6,
                            "keeper",
                            qgroup="grp",
                            inbox="_INBOX.keeper-q",
                            ack_inbox="_INBOX.keeper-qack",
                            last_sent=3000,
                        ),
                        [3000],
                    ),
                    (
                        SubSpec(7, "gone", inbox="_INBOX.gone-sub", ack_inbox="_INBOX.gone-ack"),
                        [],
                    ),
                ]
            )
        )
    with w.channel("quiet") as ch:
        ch.empty_slice()
    with w.channel("log.shape") as ch:
        for seq in range(1, 11):
            ch.append(seq, b"l%d" % seq, T0 + seq)
        ch.subs(
            [
                (
                    1,
                    SubSpec(
                        1, "gone", inbox="_INBOX.a", durable_name="d", is_durable=True
                    ).encode(),
                ),
                (5, sub_update_payload(1, 3)),
                (1, SubSpec(2, "keeper", inbox="_INBOX.b").encode()),
                (SUB_DELETE, sub_update_payload(2, 0)),
            ]
        )


async def test_synthetic_multi_slice_store(
    stan_node: StanNodeFactory, nats_server: Any, conns: Conns, tmp_path: Path
) -> None:
    write_synthetic(tmp_path / "synthetic")
    node = stan_node(name="target")
    proc = await import_ok(
        tmp_path / "synthetic",
        "-ns",
        nats_server.url,
        "--batch_msgs",
        "100",
        "--inflight",
        "3",
        "--progress",
        "lines",
    )
    assert "import big.one: done, 2500/2500 msgs" in proc.stderr, output(proc)
    assert "left out: subscription big.one/7 (plain, client 'gone')" in proc.stdout
    got = await channels(node)
    big = got["big.one"]
    assert (big["msgs"], big["first_seq"], big["last_seq"]) == (2500, 501, 3000)
    subs = {s["inbox"]: s for s in big["subscriptions"]}
    assert set(subs) == {"_INBOX.keeper-durable", "_INBOX.keeper-q"}
    # Both belong to a registered client, so delivery resumed at once: the
    # durable (2 pending of 100 in flight) was sent 2991..3000 right away.
    assert (subs["_INBOX.keeper-durable"]["last_sent"], subs["_INBOX.keeper-q"]["last_sent"]) == (
        3000,
        3000,
    )
    assert subs["_INBOX.keeper-durable"]["pending_count"] == 12
    assert (got["quiet"]["msgs"], got["quiet"]["first_seq"], got["quiet"]["last_seq"]) == (0, 0, 0)
    (offline,) = got["log.shape"]["subscriptions"]
    assert (offline["durable_name"], offline["is_offline"], offline["last_sent"]) == ("d", True, 3)
    clientsz = await monitor(node, "/streaming/clientsz")
    assert [c["id"] for c in clientsz["clients"]] == ["keeper"]

    msgs = await read_channel(conns, "big.one", 2500)
    assert [m.sequence for m in msgs] == list(range(501, 3001))
    for m in msgs:
        assert m.data == b"big-%d-" % m.sequence + b"x" * (m.sequence % 300)
        assert m.reply == "r" * (m.sequence % 2)
        assert m.timestamp == T0 + m.sequence * 1000


async def test_target_limits_apply(
    stan_node: StanNodeFactory, nats_server: Any, conns: Conns
) -> None:
    node = stan_node("-mm", "100", name="target")
    proc = await import_ok(FIXTURE / "store", "-ns", nats_server.url)
    assert "channel 'orders': the target keeps 100 messages (-mm), the oldest 100 are dropped" in (
        proc.stdout
    )
    assert "200 read, 100 kept by the target (its limits apply)" in proc.stdout
    ch = (await channels(node))["orders"]
    assert (ch["msgs"], ch["first_seq"], ch["last_seq"]) == (100, 101, 200)
    (sub,) = ch["subscriptions"]
    assert (sub["last_sent"], sub["pending_count"]) == (125, 5)
