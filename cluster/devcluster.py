"""``make cluster``: a nats-server and three nodes in the foreground.

nats-server listens on 127.0.0.1:4222; nodes a, b and c use Raft ports
7001-7003 and monitoring ports 8301-8303 (``CLUSTER_PORT_OFFSET=N`` adds N to
each port, for a second cluster beside the first), and keep their data under
``.cluster/<node>/``. Every output line is prefixed with its process. Ctrl-C
stops everything; running it again resumes the same data. Killing one node
(``kill -9 <pid>``, the PIDs are printed at start) leaves the others running,
so a failover can be watched in the output and on ``/streaming/serverz``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cluster.natsproc import nats_server_binary

_OFFSET = int(os.environ.get("CLUSTER_PORT_OFFSET", "0"))
NODES = {"a": 7001 + _OFFSET, "b": 7002 + _OFFSET, "c": 7003 + _OFFSET}
MONITOR = {"a": 8301 + _OFFSET, "b": 8302 + _OFFSET, "c": 8303 + _OFFSET}
NATS_PORT = 4222 + _OFFSET
COLORS = {"nats": "\033[90m", "a": "\033[36m", "b": "\033[35m", "c": "\033[33m"}


def _pump(name: str, stream: subprocess.IO[bytes], lock: threading.Lock) -> None:  # type: ignore[name-defined]
    tty = sys.stdout.isatty()
    prefix = f"{COLORS.get(name, '')}{name:>4} |\033[0m " if tty else f"{name:>4} | "
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        with lock:
            sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()


def main() -> int:
    root = Path(".cluster")
    root.mkdir(exist_ok=True)
    peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in NODES.items())
    lock = threading.Lock()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, args: list[str]) -> None:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs[name] = proc
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(name, proc.stdout, lock), daemon=True).start()

    start("nats", [nats_server_binary(), "-a", "127.0.0.1", "-p", str(NATS_PORT)])
    time.sleep(0.3)
    for name in NODES:
        args = [
            sys.executable,
            "-m",
            "cluster.cli",
            "-cid",
            os.environ.get("CLUSTER_ID", "test-cluster"),
            "-ns",
            f"nats://127.0.0.1:{NATS_PORT}",
            "--dir",
            str(root / name),
            # With -ns, -a only sets where monitoring listens: loopback only.
            "-a",
            "127.0.0.1",
            "-m",
            str(MONITOR[name]),
            "--clustered",
            "--cluster_node_id",
            name,
            "--cluster_peers",
            peers,
        ]
        if os.environ.get("STANCHION_DEBUG"):
            args.append("-SD")
        start(name, args)
    with lock:
        nodes = ", ".join(
            f"{n} pid {procs[n].pid} (raft :{NODES[n]}, "
            f"http://127.0.0.1:{MONITOR[n]}/streaming/serverz)"
            for n in NODES
        )
        print(
            f"cluster: nats-server pid {procs['nats'].pid} on 127.0.0.1:{NATS_PORT}; nodes {nodes}",
            flush=True,
        )
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            time.sleep(0.2)
            if procs["nats"].poll() is not None:
                print("cluster: nats-server exited; stopping", flush=True)
                break
    finally:
        # Nodes first, so they leave while NATS still carries their last
        # replies; then nats-server. (Ctrl-C on a terminal reaches them all at
        # once anyway; a node then closes at once instead of draining.)
        _stop([p for n, p in procs.items() if n != "nats"])
        _stop([procs["nats"]] if "nats" in procs else [])
    return 0


def _stop(group: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process of ``group``; SIGKILL those still there after 10 s."""
    for proc in group:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    for proc in group:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
