"""One stanchion server node (``python -m cluster.cli``) as a child process."""

from __future__ import annotations

import json
import signal
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .net import LOOPBACK, free_port
from .procs import REPO_ROOT, STOP_TIMEOUT, TAIL_LINES, ManagedProcess, StartupError, child_env

#: Log line that says a node serves clients (clustered: printed once it is leader).
READY_LINE = "Streaming Server is ready"
#: Default seconds a node gets to print READY_LINE.
READY_TIMEOUT = 30.0


def node_args(
    cluster_id: str,
    nats_url: str,
    data_dir: Path,
    *,
    http_port: int | None = None,
    store: str | None = None,
    debug: bool = True,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Reference-style CLI flags: ``-cid X -ns URL --dir D -a 127.0.0.1 [-st S] [-m PORT]
    [-SDV] extra...`` (``-a`` keeps the monitoring port on the loopback)."""
    args = ["-cid", cluster_id, "-ns", nats_url, "--dir", str(data_dir), "-a", "127.0.0.1"]
    if store is not None:
        args += ["-st", store]
    if http_port is not None:
        args += ["-m", str(http_port)]
    if debug:
        args.append("-SDV")
    args += list(extra_args)
    return args


class StanNode:
    """``[sys.executable, "-m", "cluster.cli", *args]``; stdout+stderr go to ``log_path``.

    :meth:`start` waits for ``Streaming Server is ready`` in the log unless told not
    to (clustered followers never print it). :meth:`restart` reuses the same args,
    hence the same ``--dir``.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        http_port: int | None = None,
        name: str = "node",
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.args = list(args)
        self.http_port = http_port
        self.name = name
        self.process = ManagedProcess(name, log_path, cwd=cwd, env=child_env(env))

    # -- lifecycle -----------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "cluster.cli", *self.args]

    def start(self, wait_ready: bool = True, timeout: float = READY_TIMEOUT) -> StanNode:
        self.process._spawn(self.command)
        if wait_ready:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.process.stop()
                raise
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for READY_LINE in this run's log; StartupError with the log tail otherwise."""
        try:
            self.process.wait_for_log(READY_LINE, timeout)
        except AssertionError as exc:
            raise StartupError(f"{self.name} did not become ready: {exc}") from None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` by PID; waits for the exit for SIGKILL/SIGTERM/SIGINT."""
        return self.process.kill(sig, timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL fallback. Idempotent; returns the exit status."""
        return self.process.stop(timeout)

    def restart(self, wait_ready: bool = True, timeout: float = READY_TIMEOUT) -> StanNode:
        """Stop (if running) and start again with the same args and data dir."""
        self.stop()
        return self.start(wait_ready=wait_ready, timeout=timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def wait_exit(self, timeout: float) -> int | None:
        return self.process.wait_exit(timeout)

    # -- log -------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_text(self) -> str:
        """This run's output (stdout and stderr)."""
        return self.process.log_text()

    def full_log_text(self) -> str:
        """Every run's output, with ``=== ... run #n ===`` banners."""
        return self.process.full_log_text()

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        return self.process.log_tail(lines)

    def wait_for_log(self, substring: str, timeout: float = 10.0) -> str:
        """Wait for ``substring`` in this run's output; returns the first matching line."""
        return self.process.wait_for_log(substring, timeout)

    # -- monitoring ------------------------------------------------------------------
    def monitor_url(self, path: str) -> str:
        if self.http_port is None:
            raise RuntimeError(f"{self.name} was started without -m (no monitoring port)")
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{LOOPBACK}:{self.http_port}{path}"

    def monitor(self, path: str, timeout: float = 5.0) -> dict[str, Any]:
        """HTTP GET a monitoring endpoint (e.g. ``/streaming/serverz``) and decode its JSON."""
        url = self.monitor_url(path)
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
        data = json.loads(body)
        if not isinstance(data, dict):
            raise AssertionError(f"GET {url}: expected a JSON object, got {body[:200]!r}")
        return data

    def __repr__(self) -> str:
        return f"StanNode({self.process.describe()})"


class StanNodeFactory:
    """``make_node(*extra_args, **opts) -> StanNode``, started against one nats-server.

    Each node gets ``<tmp>/<name>/data`` as ``--dir``, ``<tmp>/<name>.log`` as its log
    and, unless ``monitor=False``, a free ``-m`` port. All nodes are stopped at teardown.
    """

    def __init__(self, nats_url: str, cluster_id: str, tmp_path: Path) -> None:
        self.nats_url = nats_url
        self.cluster_id = cluster_id
        self.tmp_path = tmp_path
        self.nodes: list[StanNode] = []

    def __call__(
        self,
        *extra_args: str,
        store: str | None = None,
        name: str | None = None,
        cluster_id: str | None = None,
        nats_url: str | None = None,
        data_dir: Path | None = None,
        monitor: bool = True,
        debug: bool = True,
        wait_ready: bool = True,
        ready_timeout: float = READY_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> StanNode:
        name = name or f"node{len(self.nodes)}"
        if any(n.name == name for n in self.nodes):
            raise ValueError(f"node name {name!r} already used in this test")
        data_dir = data_dir or self.tmp_path / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        http_port = free_port() if monitor else None
        args = node_args(
            cluster_id or self.cluster_id,
            nats_url or self.nats_url,
            data_dir,
            http_port=http_port,
            store=store,
            debug=debug,
            extra_args=extra_args,
        )
        node = StanNode(
            args, log_path=self.tmp_path / f"{name}.log", http_port=http_port, name=name, env=env
        )
        self.nodes.append(node)
        node.start(wait_ready=wait_ready, timeout=ready_timeout)
        return node

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.stop()
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]
