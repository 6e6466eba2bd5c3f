"""The single-node tier's harness: nodes started ahead of time, so a test does not
wait for one to boot, and the connections a test opens to its node.

Every node of the pool has its own cluster ID, data directory and monitoring port, on
one shared nats-server: different cluster IDs mean different subjects (and ack
inboxes), so tests do not see each other's traffic. When a test takes a node, a
replacement with the same flags is started in the background for the next test.
A node a test is done with gets SIGTERM at once and is waited for when the tier is
done; every process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from client import StanConnection, StanError, connect
from tests.helpers import READY_TIMEOUT, StanNode, free_port, node_args
from tests.integration.support import Wire, open_nats

#: (``-st`` value, extra flags)
PoolKey = tuple[str | None, tuple[str, ...]]


class NodePool:
    def __init__(self, nats_url: str, base_dir: Path) -> None:
        self.nats_url = nats_url
        self.base_dir = base_dir
        self._warm: dict[PoolKey, list[tuple[StanNode, str]]] = {}
        self._retired: list[StanNode] = []
        self._count = 0

    def _spawn(self, key: PoolKey) -> tuple[StanNode, str]:
        store, flags = key
        self._count += 1
        cluster_id = "t-" + uuid.uuid4().hex[:10]
        name = f"node{self._count}"
        data_dir = self.base_dir / name / "data"
        data_dir.mkdir(parents=True)
        http_port = free_port()
        args = node_args(
            cluster_id, self.nats_url, data_dir, http_port=http_port, store=store, extra_args=flags
        )
        node = StanNode(
            args, log_path=self.base_dir / f"{name}.log", http_port=http_port, name=name
        )
        node.start(wait_ready=False)
        return node, cluster_id

    def take(self, store: str | None, flags: Sequence[str]) -> tuple[StanNode, str]:
        """A ready node with these flags and its cluster ID; then a twin is started for
        the next test (two for the plain nodes most tests use: short tests follow each
        other quickly)."""
        key: PoolKey = (store or "LMDB", tuple(flags))
        warm = self._warm.setdefault(key, [])
        node, cluster_id = warm.pop(0) if warm else self._spawn(key)
        for attempt in range(3):
            try:
                node.wait_ready(READY_TIMEOUT)
                break
            except BaseException:
                self._retired.append(node)
                # Another process may have bound the monitoring port between
                # the moment it was found free and the node's bind: a new port.
                if attempt == 2 or "address already in use" not in node.log_text():
                    raise
                node, cluster_id = self._spawn(key)
        depth = 1 if flags else 2
        while len(warm) < depth:
            warm.append(self._spawn(key))
        return node, cluster_id

    def release(self, node: StanNode) -> None:
        """SIGTERM now; :meth:`stop_all` waits for the exit."""
        node.kill(signal.SIGTERM, timeout=0)
        self._retired.append(node)

    def stop_all(self) -> None:
        """Stop the idle nodes and wait for the released ones. The pool stays usable:
        a later :meth:`take` starts nodes again."""
        nodes = [n for warm in self._warm.values() for n, _cid in warm] + self._retired
        self._warm.clear()
        self._retired = []
        errors: list[BaseException] = []
        for node in nodes:
            try:
                node.stop()
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]


class NodeStarter:
    """``start_node(*flags, store=None) -> StanNode``; remembers the node's cluster ID."""

    def __init__(self, pool: NodePool) -> None:
        self.pool = pool
        self.nats_url = pool.nats_url
        self.cluster_id = ""
        self.nodes: list[StanNode] = []

    def __call__(self, *flags: str, store: str | None = None) -> StanNode:
        if self.nodes:
            raise RuntimeError("one node per test: the clients follow its cluster ID")
        node, self.cluster_id = self.pool.take(store, flags)
        self.nodes.append(node)
        return node


class Clients:
    """Connections of one test to its node (nats URL and cluster ID of ``start_node``)."""

    def __init__(self, starter: NodeStarter) -> None:
        self.starter = starter
        self.stan: list[StanConnection] = []
        self.raw: list[NatsClient] = []

    @property
    def nats_url(self) -> str:
        return self.starter.nats_url

    @property
    def cluster_id(self) -> str:
        if not self.starter.cluster_id:
            raise RuntimeError("start a node (start_node) before connecting")
        return self.starter.cluster_id

    async def connect(self, client_id: str, **kwargs: Any) -> StanConnection:
        """A STAN connection through the project's client (its own NATS connection)."""
        kwargs.setdefault("nats_url", self.nats_url)
        sc = await connect(self.cluster_id, client_id, **kwargs)
        self.stan.append(sc)
        return sc

    async def nats(self) -> NatsClient:
        nc = await open_nats(self.nats_url)
        self.raw.append(nc)
        return nc

    async def wire(self) -> Wire:
        return Wire(await self.nats(), self.cluster_id)

    async def close_all(self) -> None:
        for sc in self.stan:
            if not sc.closed:
                with suppress(StanError, nats.errors.Error, asyncio.TimeoutError):
                    await asyncio.wait_for(sc.close(), 3)
            if not sc.nc.is_closed:
                with suppress(nats.errors.Error):
                    await sc.nc.close()
        for nc in self.raw:
            if not nc.is_closed:
                with suppress(nats.errors.Error):
                    await nc.close()
