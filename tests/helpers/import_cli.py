"""Running ``stanchion import-filestore`` from tests, as a separate process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from .procs import REPO_ROOT

#: Seconds an import may run in the tests.
IMPORT_TIMEOUT = 180.0


def import_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "cluster.cli", "import-filestore", *map(str, args)]


async def run_import(
    *args: str | Path, timeout: float = IMPORT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run the import to completion off the event loop (``subprocess.run`` waits
    for it and kills it by PID at the deadline)."""
    return await asyncio.to_thread(
        subprocess.run,
        import_command(*args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit status and both streams, for assertion messages."""
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


async def import_ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = await run_import(*args)
    assert proc.returncode == 0, output(proc)
    return proc
