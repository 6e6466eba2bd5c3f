"""Child processes of the bench suite: nats-server, nodes, the raw responder.

Every child logs to its own file, runs in its own session (a Ctrl-C reaches
only the suite, whose ``finally`` stops the children) and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
#: Seconds a child gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildError(RuntimeError):
    """A child exited early or did not get ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """``cmd`` with stdout and stderr appended to ``log_path``."""

    def __init__(self, name: str, cmd: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_running(self, waiting_for: str) -> None:
        if not self.running:
            raise ChildError(
                f"{self.name} (pid {self.pid}) exited while waiting for {waiting_for}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            self.check_running(repr(text))
            if time.monotonic() > deadline:
                raise ChildError(
                    f"{self.name} (pid {self.pid}) did not log {text!r} within {timeout}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((LOOPBACK, port), timeout=0.5):
                    return
            except OSError:
                pass
            self.check_running(f"port {port}")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} (pid {self.pid}) not listening on {port}")
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM by PID, SIGKILL after ``timeout``. Idempotent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def stop_all(children: Sequence[Child]) -> None:
    """Stop every child, newest first; keep going when one fails."""
    first: BaseException | None = None
    for child in reversed(children):
        try:
            child.stop()
        except BaseException as exc:  # noqa: BLE001 - the others must still be stopped
            first = first or exc
    if first is not None:
        raise first


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` blocks stop the children."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``RssAnon`` of a process, in kB, from ``/proc/<pid>/status``."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(value.split()[0])
    return out


def http_json(port: int, path: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=timeout) as resp:
        data = json.loads(resp.read())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
