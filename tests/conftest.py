"""Fixtures shared by every test tier: nats-server, stanchion nodes, unique cluster IDs."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:  # makes `from tests.helpers import ...` work anywhere
    sys.path.insert(0, str(_REPO_ROOT))

from tests.helpers import NatsServer, StanNodeFactory  # noqa: E402

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether setup or call failed, so fixtures can dump logs at teardown."""
    report = yield
    if report.when in ("setup", "call") and report.failed:
        item.stash[_FAILED] = True
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.stash.get(_FAILED, False))


def _dump(title: str, text: str, lines: int = 80) -> None:
    tail = "\n".join(text.splitlines()[-lines:])
    print(f"\n----- {title} (last {lines} lines) -----\n{tail}")


@pytest.fixture
def cluster_id() -> str:
    """A cluster ID unique to this test, so nothing leaks between tests on one NATS."""
    return "t-" + uuid.uuid4().hex[:8]


@pytest.fixture
def nats_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsServer]:
    """A fresh nats-server on a free 127.0.0.1 port; log at ``<tmp>/nats-server.log``."""
    server = NatsServer(tmp_path / "nats-server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if _failed(request):
            _dump(f"nats-server log {server.log_path}", server.process.full_log_text())


@pytest.fixture
def stan_node(
    nats_server: NatsServer, cluster_id: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StanNodeFactory]:
    """Factory fixture: ``node = stan_node(store="MEMORY")``; every node is stopped at teardown.

    See :class:`tests.helpers.StanNodeFactory` for the keyword options.
    """
    factory = StanNodeFactory(nats_server.url, cluster_id, tmp_path)
    try:
        yield factory
    finally:
        try:
            factory.stop_all()
        finally:
            if _failed(request):
                for node in factory.nodes:
                    _dump(f"{node.name} log {node.log_path}", node.full_log_text())
