"""A child process whose stdout+stderr go to a log file, always stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Seconds to wait for a process to exit after SIGTERM before sending SIGKILL.
STOP_TIMEOUT = 10.0
#: Lines of log shown when a process fails to start or a wait on its log times out.
TAIL_LINES = 50


class StartupError(RuntimeError):
    """A child process exited or did not become ready before its deadline."""


class ManagedProcess:
    """One child process at a time, restartable, logging to one file (appended per run).

    Each run starts with a ``=== <name> run #<n>: <cmd> ===`` banner line;
    :meth:`log_text` returns only the current run's output, :meth:`full_log_text`
    all runs. Signals are sent by PID through ``Popen`` (never by name or group).
    """

    def __init__(
        self,
        name: str,
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.runs = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._cmd: list[str] = []

    # -- process control -------------------------------------------------
    def _spawn(self, cmd: Sequence[str]) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._cmd = [str(c) for c in cmd]
        self.runs += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            banner = f"=== {self.name} run #{self.runs}: {' '.join(self._cmd)} ===\n"
            log.write(banner.encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                self._cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )

    @property
    def cmd(self) -> list[str]:
        return list(self._cmd)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status of the current run (negative = killed by that signal), None if running."""
        return None if self._proc is None else self._proc.poll()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process by PID, if it is still running."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the process to exit; return its status or None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` by PID. For SIGKILL/SIGTERM/SIGINT also wait for the exit.

        Other signals (SIGSTOP, SIGCONT, SIGUSR1...) are only sent; returns None then.
        """
        self.send_signal(sig)
        if sig not in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            return None
        if sig != signal.SIGKILL:
            self.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        rc = self.wait_exit(timeout)
        if rc is None and sig == signal.SIGKILL:
            raise RuntimeError(f"{self.name} (pid {self.pid}) survived SIGKILL for {timeout}s")
        return rc

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (plus SIGCONT in case it is stopped), wait, then SIGKILL. Idempotent."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self.send_signal(signal.SIGCONT)
            if self.wait_exit(timeout) is None:
                self.send_signal(signal.SIGKILL)
                self._proc.wait(timeout=timeout)
        return self._proc.returncode

    # -- log ---------------------------------------------------------------
    def _read_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """Output of the current (or last) run."""
        return self._read_log(self._log_offset)

    def full_log_text(self) -> str:
        """Output of every run, with the run banners."""
        return self._read_log(0)

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        state = "running" if self.running else f"exited rc={self.returncode}"
        pid = self._proc.pid if self._proc is not None else None
        return f"{self.name} (pid {pid}, {state}, log {self.log_path})"

    def wait_for_log(self, substring: str, timeout: float = 10.0) -> str:
        """Wait until the current run's output contains ``substring``; return the matching line.

        Fails early if the process exits first. The error shows the last 50 log lines.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if substring in text:
                for line in text.splitlines():
                    if substring in line:
                        return line
                return substring
            if not self.running:
                raise AssertionError(
                    f"{self.describe()} exited while waiting for log line {substring!r}; "
                    f"last {TAIL_LINES} lines:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for log line {substring!r} from "
                    f"{self.describe()}; last {TAIL_LINES} lines:\n{self.log_tail()}"
                )
            time.sleep(0.02)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process environment, unbuffered, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env
