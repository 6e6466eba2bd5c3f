"""Run the Node.js interop scripts of tests/interop and collect their JSON-lines output.

Every script prints one JSON object per line, each with an ``"event"`` key
(``connected``, ``published``, ``ready``, ``received``, ``error``,
``connection_lost``, ``closed``, ``summary``, ``done``), and exits 0 on success.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import REPO_ROOT, STOP_TIMEOUT, child_env

INTEROP_DIR = REPO_ROOT / "tests" / "interop"
#: Default seconds a script may run before the test kills it (each script also has
#: its own --timeout-ms, normally shorter, so it can report what it was waiting for).
SCRIPT_TIMEOUT = 60.0

_counter = itertools.count(1)


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        raise RuntimeError("node (Node.js >= 18) is not on PATH; the interop tests need it")
    return found


@dataclass
class ScriptResult:
    """What a finished script printed and how it exited."""

    script: str
    args: list[str]
    returncode: int
    events: list[dict[str, Any]]
    other_stdout: list[str] = field(default_factory=list)
    stderr: str = ""

    def of(self, event: str) -> list[dict[str, Any]]:
        """All events of one kind, in output order."""
        return [e for e in self.events if e.get("event") == event]

    def one(self, event: str) -> dict[str, Any]:
        """The single event of that kind (AssertionError with the output otherwise)."""
        found = self.of(event)
        assert len(found) == 1, f"expected one {event!r} event, got {len(found)}\n{self.describe()}"
        return found[0]

    def errors(self) -> list[str]:
        return [str(e.get("message")) for e in self.of("error")]

    def describe(self) -> str:
        lines = [f"node {self.script} {' '.join(self.args)} -> rc={self.returncode}"]
        lines += [json.dumps(e) for e in self.events]
        lines += [f"(non-JSON) {line}" for line in self.other_stdout]
        if self.stderr.strip():
            lines.append("stderr:\n" + self.stderr.rstrip())
        return "\n".join(lines)

    def check_ok(self) -> ScriptResult:
        """Assert exit 0 and a final ``done`` event; return self for chaining."""
        assert self.returncode == 0, f"script failed\n{self.describe()}"
        assert self.events and self.events[-1].get("event") == "done", (
            f"script did not finish with a 'done' event\n{self.describe()}"
        )
        return self


class NodeScript:
    """A running ``node <script> <args>`` whose stdout is parsed line by line on a thread.

    stderr goes to ``<log_dir>/<script>-<n>.stderr.log``; stdout is also copied to
    ``<script>-<n>.stdout.log``. Stop it by PID with :meth:`stop`.
    """

    def __init__(
        self,
        script: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        cwd: Path = INTEROP_DIR,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.script = script
        self.args = [str(a) for a in args]
        self.cwd = cwd
        self.env = child_env(env)
        n = next(_counter)
        stem = Path(script).stem
        self.stdout_path = Path(log_dir) / f"{stem}-{n}.stdout.log"
        self.stderr_path = Path(log_dir) / f"{stem}-{n}.stderr.log"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: list[dict[str, Any]] = []
        self._other: list[str] = []
        self._eof = False
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> NodeScript:
        self.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                [node_binary(), self.script, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
        self._reader = threading.Thread(
            target=self._read_stdout, name=f"node-{self.script}", daemon=True
        )
        self._reader.start()
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        with open(self.stdout_path, "w", encoding="utf-8") as copy:
            try:
                for line in stdout:
                    copy.write(line)
                    copy.flush()
                    text = line.strip()
                    if not text:
                        continue
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        obj = None
                    with self._changed:
                        if isinstance(obj, dict):
                            self._events.append(obj)
                        else:
                            self._other.append(text)
                        self._changed.notify_all()
            finally:
                stdout.close()
                with self._changed:
                    self._eof = True
                    self._changed.notify_all()

    # -- state -----------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.script} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events if event is None or e.get("event") == event]

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def result(self) -> ScriptResult:
        """Snapshot of the output so far (returncode -999 while running)."""
        rc = self._proc.poll() if self._proc is not None else None
        with self._lock:
            events, other = list(self._events), list(self._other)
        return ScriptResult(
            self.script,
            self.args,
            -999 if rc is None else rc,
            events,
            other,
            self.stderr_text(),
        )

    def describe(self) -> str:
        return self.result().describe()

    # -- waiting -----------------------------------------------------------------
    def wait_for_event(self, event: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Wait for an event of kind ``event`` whose fields equal ``fields``; return it.

        Fails early if the script's output ends first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for e in self._events:
                    if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()):
                        return e
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._changed.wait(min(remaining, 0.2))
        what = f"event {event!r}" + (f" with {fields}" if fields else "")
        if self._eof:
            self.wait(STOP_TIMEOUT, check=False)
            raise AssertionError(f"{self.script} ended without {what}\n{self.describe()}")
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.describe()}")

    def wait(self, timeout: float, *, check: bool = True) -> ScriptResult:
        """Wait for the exit and the end of its output. On timeout, kill it and fail."""
        assert self._proc is not None, "not started"
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            if check:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {self.script} to exit (killed it)\n"
                    f"{self.describe()}"
                ) from None
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)
        return self.result()

    def send_signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM (+SIGCONT), then SIGKILL after the deadline; by PID. Idempotent."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self.send_signal(signal.SIGCONT)
            try:
                self._proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self._proc.wait(timeout=STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT)


class NodeScripts:
    """Starts interop scripts with logs under ``log_dir``; :meth:`stop_all` ends leftovers."""

    def __init__(self, log_dir: Path, cwd: Path = INTEROP_DIR) -> None:
        self.log_dir = log_dir
        self.cwd = cwd
        self.started: list[NodeScript] = []

    def start(self, script: str, *args: str, env: Mapping[str, str] | None = None) -> NodeScript:
        """Start ``node <script> <args>`` in the background (read events while it runs)."""
        proc = NodeScript(script, args, log_dir=self.log_dir, cwd=self.cwd, env=env)
        self.started.append(proc)
        return proc.start()

    def run(
        self,
        script: str,
        *args: str,
        timeout: float = SCRIPT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> ScriptResult:
        """Run a script to completion and return its parsed output (any exit status)."""
        return self.start(script, *args, env=env).wait(timeout)

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop()


def run_node_script(
    script: str,
    args: Sequence[str],
    *,
    log_dir: Path,
    timeout: float = SCRIPT_TIMEOUT,
    cwd: Path = INTEROP_DIR,
    env: Mapping[str, str] | None = None,
) -> ScriptResult:
    """Start a script, wait for it to exit (killing it after ``timeout``), return its output."""
    proc = NodeScript(script, args, log_dir=log_dir, cwd=cwd, env=env).start()
    try:
        return proc.wait(timeout)
    finally:
        proc.stop()
