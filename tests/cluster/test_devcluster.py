"""``make cluster`` as a user runs it: the foreground cluster of cluster.devcluster.

Three nodes and a nats-server come up and elect a leader; a publisher and a
durable subscriber work; the leader killed with SIGKILL leaves the others
running and one of them takes over with nothing acknowledged lost; Ctrl-C
(SIGINT to the foreground process) stops every process it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
import urllib.request
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import nats.errors

from client import StanConnection, StanError, connect
from tests.helpers import wait_for
from tests.helpers.net import claim, listen_range
from tests.helpers.procs import REPO_ROOT, ManagedProcess, child_env

BASE_PORTS = [4222, 7001, 7002, 7003, 8301, 8302, 8303]


class DevCluster(ManagedProcess):
    def start(self) -> None:
        self._spawn([sys.executable, "-m", "cluster.devcluster"])


def _free_offset() -> int:
    """A port offset under which all of the cluster's ports are free right now
    (and outside the kernel's range for outgoing connections)."""
    lo, hi = listen_range()
    for _ in range(200):
        offset = random.randint(lo - min(BASE_PORTS), hi - max(BASE_PORTS))
        if claim(p + offset for p in BASE_PORTS):
            return offset
    raise AssertionError("no free set of ports for the dev cluster")


def _role(port: int) -> str | None:
    try:
        url = f"http://127.0.0.1:{port}/streaming/serverz"
        with urllib.request.urlopen(url, timeout=1) as resp:
            data: dict[str, Any] = json.loads(resp.read())
    except OSError:
        return None
    role = data.get("role")
    return str(role) if role else None


async def _published(sc: StanConnection, data: bytes) -> bool:
    try:
        await sc.publish("dev", data)
    except (StanError, nats.errors.Error):
        return False
    return True


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_make_cluster_fails_over_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    offset = _free_offset()
    cluster_id = "dev-" + uuid.uuid4().hex[:6]
    env = child_env(
        {
            "CLUSTER_PORT_OFFSET": str(offset),
            "CLUSTER_ID": cluster_id,
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    dev = DevCluster("devcluster", tmp_path / "devcluster.log", cwd=tmp_path, env=env)
    monitors = {name: 8300 + i + offset for i, name in enumerate("abc", start=1)}
    nats_url = f"nats://127.0.0.1:{4222 + offset}"
    pids: dict[str, int] = {}
    conns: list[StanConnection] = []
    try:
        dev.start()
        line = dev.wait_for_log("cluster: nats-server pid", 30)
        pids = {m[0]: int(m[1]) for m in re.findall(r"\b(nats-server|[abc]) pid (\d+)", line)}
        assert set(pids) == {"nats-server", "a", "b", "c"}, line

        async def leader(among: list[str]) -> str | None:
            roles = {n: await asyncio.to_thread(_role, monitors[n]) for n in among}
            leaders = [n for n, r in roles.items() if r == "Leader"]
            return leaders[0] if len(leaders) == 1 else None

        first = await wait_for(lambda: leader(list(monitors)), 30, "a leader")
        got: list[bytes] = []
        # A publish sent while the new leader is still taking over gets no
        # ack: a short ack wait lets a retry come soon (duplicates are fine).
        sc = await connect(cluster_id, "pub", nats_url=nats_url, connect_timeout=5, pub_ack_wait=2)
        conns.append(sc)
        sub_sc = await connect(cluster_id, "sub", nats_url=nats_url, connect_timeout=5)
        conns.append(sub_sc)
        await sub_sc.subscribe("dev", lambda m: got.append(m.data), durable_name="d")
        before = [f"before-{i}".encode() for i in range(50)]
        for data in before:
            await wait_for(partial(_published, sc, data), 30, f"{data!r} acknowledged", 0.2)

        os.kill(pids[first], signal.SIGKILL)
        others = [n for n in monitors if n != first]
        await wait_for(lambda: leader(others), 30, "a new leader among the others")
        assert dev.running, dev.log_tail()
        after = [f"after-{i}".encode() for i in range(50)]
        for data in after:
            # The first publishes may fail during the failover: tried again.
            await wait_for(partial(_published, sc, data), 30, f"{data!r} acknowledged", 0.2)
        await wait_for(lambda: set(before + after) <= set(got), 30, "every message")
        for c in conns:
            await c.close()
        conns.clear()

        dev.send_signal(signal.SIGINT)
        assert dev.wait_exit(30) == 0, dev.log_tail()
        left = {n: p for n, p in pids.items() if _alive(p)}
        assert not left, f"still running after Ctrl-C: {left}\n{dev.log_tail()}"
    finally:
        for c in conns:
            try:
                await c.close()
            except Exception:  # noqa: BLE001 - the test's failure matters more
                pass
        dev.stop()
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
