"""Generated hostile input on every subject the node listens on.

Hypothesis builds payloads (garbage, truncated messages, messages of the wrong
type, valid messages with extreme field values) and sends them to the
discover, ping, publish, subscribe, unsubscribe, close and ack subjects, with
and without reply subjects. Afterwards the node must still serve, and the
messages stored before the barrage must be intact.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from client import StanError, connect
from protocol import messages as m
from tests.helpers import NatsServer, StanNode, node_args, wait_for, wait_for_sync
from tests.helpers.net import free_port

EXAMPLES = 100
INPUTS_PER_EXAMPLE = 100  # 10,000 inputs in all
KEPT = [f"kept-{i}".encode() for i in range(20)]


class LoopThread:
    """An event loop in a thread, so hypothesis's sync tests can drive nats-py."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Target:
    cluster_id: str
    node: StanNode
    nats_url: str
    nc: NATS
    runner: LoopThread
    ack_inbox: str
    hb_inbox: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    cluster_id = "fuzz-" + uuid.uuid4().hex[:6]
    server = NatsServer(tmp / "nats.log")
    runner = LoopThread()
    node: StanNode | None = None
    try:
        server.start()
        data = tmp / "data"
        data.mkdir()
        port = free_port()
        node = StanNode(
            node_args(cluster_id, server.url, data, http_port=port, debug=False),
            log_path=tmp / "node.log",
            http_port=port,
        )
        node.start()

        async def setup() -> tuple[NATS, str, str]:
            sc = await connect(cluster_id, "keeper", nats_url=server.url)
            for data_ in KEPT:
                await sc.publish("kept", data_)
            sub = await sc.subscribe("kept", lambda msg: None, durable_name="d", max_inflight=5)
            nc = await nats.connect(server.url)
            # The keeper connection stays open so its ack inbox stays live.
            target_state["sc"] = sc
            return nc, sub.ack_inbox or "", sc.heartbeat_inbox

        target_state: dict[str, Any] = {}
        nc, ack_inbox, hb_inbox = runner.run(setup())
        yield Target(cluster_id, node, server.url, nc, runner, ack_inbox, hb_inbox)
        runner.run(nc.close())
        try:
            runner.run(target_state["sc"].close())
        except StanError as exc:
            # A message of one type sent to another type's subject can carry
            # "keeper" in the same field: a SubscriptionRequest read as a
            # CloseRequest closes the keeper for real.
            assert str(exc) == "stan: unknown clientID", exc
    finally:
        if node is not None:
            node.stop()
        server.stop()
        runner.close()


def _text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(["", "foo", "a.b", "*", ">", "a..b", ".x", "x.", "é", "a b", "x" * 5000]),
        st.from_regex(r"[a-zA-Z0-9_\-.*>]{1,30}", fullmatch=True),
    )


def _valid_message(draw: st.DrawFn, cid: str) -> bytes:
    kind = draw(st.sampled_from(["pub", "sub", "unsub", "close", "conn", "ping", "ack"]))
    t = draw(_text())
    n = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    big = draw(st.integers(min_value=0, max_value=2**64 - 1))
    raw: bytes
    if kind == "pub":
        raw = m.PubMsg(
            clientID=draw(st.sampled_from([cid, "keeper", t])),
            guid=t,
            subject=t,
            data=draw(st.binary(max_size=2000)),
            connID=draw(st.binary(max_size=30)),
        ).SerializeToString()
    elif kind == "sub":
        raw = m.SubscriptionRequest(
            clientID=draw(st.sampled_from(["keeper", t])),
            subject=t,
            qGroup=draw(_text()),
            inbox="_INBOX.fuzz." + uuid.uuid4().hex,
            maxInFlight=n,
            ackWaitInSecs=draw(st.integers(min_value=-5, max_value=5)),
            durableName=draw(_text()),
            startPosition=draw(st.integers(min_value=0, max_value=9)),  # type: ignore[arg-type]
            startSequence=big,
            startTimeDelta=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        ).SerializeToString()
    elif kind in ("unsub",):
        raw = m.UnsubscribeRequest(
            clientID=draw(st.sampled_from(["keeper", t])), subject=t, inbox=t
        ).SerializeToString()
    elif kind == "close":
        # Not the keeper by name (a message of another kind sent here still can be).
        raw = m.CloseRequest(clientID="x" + t).SerializeToString()
    elif kind == "conn":
        raw = m.ConnectRequest(
            clientID=t,
            heartbeatInbox=draw(st.sampled_from(["", "_INBOX.nobody", t])),
            protocol=n,
            connID=draw(st.binary(max_size=30)),
            pingInterval=n,
            pingMaxOut=n,
        ).SerializeToString()
    elif kind == "ping":
        raw = m.Ping(connID=draw(st.binary(max_size=40))).SerializeToString()
    else:
        raw = m.Ack(subject=t, sequence=big).SerializeToString()
    return raw


@st.composite
def inputs(draw: st.DrawFn, tgt: Target) -> tuple[str, bytes, str]:
    cid = tgt.cluster_id
    subjects = [
        f"_STAN.discover.{cid}",
        f"_STAN.discover.{cid}.pings",
        f"_STAN.pub.{cid}.kept",
        f"_STAN.pub.{cid}.other",
        f"_STAN.pub.{cid}.a.b.c",
        f"_STAN.sub.{cid}",
        f"_STAN.unsub.{cid}",
        f"_STAN.subclose.{cid}",
        f"_STAN.close.{cid}",
        tgt.ack_inbox,
    ]
    subject = draw(st.sampled_from(subjects))
    shape = draw(st.sampled_from(["garbage", "valid", "truncated", "empty", "huge"]))
    if shape == "garbage":
        payload = draw(st.binary(min_size=1, max_size=300))
    elif shape == "empty":
        payload = b""
    elif shape == "huge":
        payload = draw(st.binary(min_size=1, max_size=8)) * 60_000
    else:
        payload = _valid_message(draw, "keeper")
        if shape == "truncated" and len(payload) > 1:
            payload = payload[: draw(st.integers(min_value=1, max_value=len(payload) - 1))]
    reply = draw(st.sampled_from(["", "_INBOX.fuzzreply." + uuid.uuid4().hex]))
    return subject, payload, reply


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_input_on_every_subject(target: Target, data: st.DataObject) -> None:
    batch = [data.draw(inputs(target)) for _ in range(INPUTS_PER_EXAMPLE)]

    async def send() -> None:
        for subject, payload, reply in batch:
            await target.nc.publish(subject, payload, reply=reply)
        await target.nc.flush(timeout=10)

    target.runner.run(send())
    assert target.node.running, target.node.log_tail()


def test_node_serves_and_kept_messages_survive(target: Target) -> None:
    """Runs after the barrage (file order): round trip works, stored data intact."""

    async def check() -> list[bytes]:
        # The barrage can outrun the node (nats-server may even cut it off as a
        # slow consumer, and it reconnects): it must serve again within a
        # deadline, working through what is still queued.
        async def connected() -> Any:
            try:
                return await connect(target.cluster_id, "checker", nats_url=target.nats_url)
            except StanError:
                return None

        sc = await wait_for(connected, 60, "the node to accept a connection after the barrage")
        got: list[bytes] = []
        done = asyncio.Event()

        def on_msg(msg: Any) -> None:
            got.append(msg.data)
            if len(got) >= len(KEPT):
                done.set()

        sub = await sc.subscribe("kept", on_msg, start_at="first")
        await asyncio.wait_for(done.wait(), 20)
        await sub.unsubscribe()
        await sc.publish("after", b"still here")
        await sc.close()
        return got[: len(KEPT)]

    assert target.node.running, target.node.log_tail()
    assert target.runner.run(check()) == KEPT
    serverz = wait_for_sync(
        lambda: target.node.monitor("/streaming/serverz"), 10, "serverz to answer"
    )
    assert serverz["channels"] >= 1  # ("keeper" itself may have been closed by the barrage)
    assert "Traceback" not in target.node.log_text(), target.node.log_tail()


def test_log_has_no_failed_apply(target: Target) -> None:
    assert target.node.running
    assert "failed to apply" not in target.node.log_text()
