"""Fixtures for running the Node.js interop scripts (node-nats-streaming) from tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import INTEROP_DIR, NodeScripts


@pytest.fixture(scope="session")
def node_client_installed() -> None:
    """Fail clearly (not skip) when node or the npm packages are missing."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH; the interop tests need Node.js >= 18")
    if not (INTEROP_DIR / "node_modules" / "node-nats-streaming").is_dir():
        pytest.fail(
            "tests/interop/node_modules is missing: run `make test-interop` or "
            "`cd tests/interop && npm install --no-audit --no-fund`"
        )


@pytest.fixture
def node_scripts(node_client_installed: None, tmp_path: Path) -> Iterator[NodeScripts]:
    scripts = NodeScripts(tmp_path / "node")
    try:
        yield scripts
    finally:
        scripts.stop_all()
