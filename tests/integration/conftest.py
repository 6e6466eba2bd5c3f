"""Fixtures of the single-node tier.

* ``start_node(*flags, store=None)``: a ready node of its own (fresh data directory,
  own cluster ID) on a nats-server shared by the whole test run, taken from a pool of nodes
  started ahead of time (see ``harness.py``), so tests do not wait for a boot.
* ``store``: parametrizes a test over the persistent (LMDB) and memory stores.
* ``clients``: STAN client connections, raw nats-py connections and
  :class:`~tests.integration.support.Wire` speakers for the test's node, all closed at
  teardown, before the node is stopped.

``stan_node`` and ``nats_server`` (tests/conftest.py) remain available for tests that
need their own nats-server or a given data directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from tests.helpers import NatsServer
from tests.integration.harness import Clients, NodePool, NodeStarter

_FAILED = pytest.StashKey[bool]()
_POOL = pytest.StashKey[NodePool]()
_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when in ("setup", "call") and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Leaving this directory: stop the pool's idle nodes (the run may go on with
    other tiers)."""
    pool = item.session.stash.get(_POOL, None)
    if pool is None:
        return
    if nextitem is None or nextitem.path.resolve().parent != _HERE:
        pool.stop_all()


@pytest.fixture(params=["LMDB", "MEMORY"])
def store(request: pytest.FixtureRequest) -> str:
    """The ``-st`` value: the default persistent store, then the memory store."""
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def node_pool(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[NodePool]:
    base: Path = tmp_path_factory.mktemp("node-pool")
    nats_server = NatsServer(base / "nats-server.log")
    try:
        nats_server.start()
        pool = NodePool(nats_server.url, base)
        request.session.stash[_POOL] = pool
        try:
            yield pool
        finally:
            pool.stop_all()
    finally:
        nats_server.stop()


@pytest.fixture
def start_node(node_pool: NodePool, request: pytest.FixtureRequest) -> Iterator[NodeStarter]:
    starter = NodeStarter(node_pool)
    try:
        yield starter
    finally:
        for node in starter.nodes:
            if request.node.stash.get(_FAILED, False):
                tail = "\n".join(node.full_log_text().splitlines()[-80:])
                print(f"\n----- {node.name} log {node.log_path} (last 80 lines) -----\n{tail}")
            node_pool.release(node)


@pytest.fixture
async def clients(start_node: NodeStarter) -> AsyncIterator[Clients]:
    """Depends on ``start_node`` so that connections close before the node stops."""
    conns = Clients(start_node)
    try:
        yield conns
    finally:
        await conns.close_all()
