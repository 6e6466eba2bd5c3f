"""Fixtures of the cluster tier: three clustered node processes on one nats-server.

``cluster`` starts nodes a, b and c (no leader wait); most tests begin with
``leader = await cluster.wait_single_leader()``. Figures a test wants the lead
to read (failover times) go through :func:`report_figure`: they are printed in
the terminal summary, without ``-s``, and written as JSON next to the test
temp directories.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import StanNodeFactory
from tests.helpers.cluster import StanCluster

_FIGURES: list[dict[str, Any]] = []
_FIGURES_FILE = "cluster-figures.json"
_FIGURES_PATH: list[Path] = []


@pytest.fixture
async def cluster(stan_node: StanNodeFactory) -> AsyncIterator[StanCluster]:
    """Nodes a, b, c started (not yet elected); clients and nodes stopped at teardown."""
    c = StanCluster(stan_node)
    try:
        c.start()
        yield c
    finally:
        # The stan_node fixture stops the processes by PID; close clients first so
        # their NATS connections do not outlive the test's event loop.
        await c.close_clients()


@pytest.fixture
def report_figure(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``report_figure(name, **values)``: keep a measurement for the terminal summary
    and append it to ``<basetemp>/cluster-figures.json``."""
    path = tmp_path_factory.getbasetemp() / _FIGURES_FILE
    _FIGURES_PATH[:] = [path]

    def report(name: str, **values: Any) -> Path:
        _FIGURES.append({"name": name, **values})
        path.write_text(json.dumps(_FIGURES, indent=2) + "\n")
        line = json.dumps({"figure": name, **values})
        print(f"FIGURE {line}")
        return path

    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("cluster figures")
    for fig in _FIGURES:
        terminalreporter.write_line(json.dumps(fig))
    if _FIGURES_PATH:
        terminalreporter.write_line(f"(also in {_FIGURES_PATH[0]})")
