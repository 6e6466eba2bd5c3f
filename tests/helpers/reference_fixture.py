"""The reference FILE store fixture in ``shared/`` and what tests do with it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

#: ``shared/fixtures/reference-filestore``, beside the repository (CI puts it there).
FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "reference-filestore"


def load_expected() -> dict[str, Any]:
    """The fixture's ``expected.json``; fails the test when it is missing."""
    path = FIXTURE / "expected.json"
    if not path.is_file():
        pytest.fail(
            f"the reference store fixture is missing: {path} (shared/ must sit beside the repo)"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def copy_store(dst: Path) -> Path:
    """A writable copy of the fixture store at ``dst`` (the fixture is never touched)."""
    shutil.copytree(FIXTURE / "store", dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def fingerprint(root: Path) -> dict[str, tuple[int, int, str]]:
    """Size, mtime and digest of every file below ``root`` (to show nothing wrote there)."""
    return {
        str(p.relative_to(root)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
