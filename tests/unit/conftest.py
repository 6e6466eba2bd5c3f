"""Fixtures of the unit tier (no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import open_store
from store.api import Store


@pytest.fixture(params=["MEMORY", "LMDB"])
def fsm_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each kind (LMDB on a temporary directory, no fsync)."""
    s = open_store(request.param, str(tmp_path / "store"), sync=False)
    yield s
    s.close()
