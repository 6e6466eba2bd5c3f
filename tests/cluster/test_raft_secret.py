"""The Raft transport with a shared secret (``--cluster_secret``, ``cluster { secret }``,
``STANCHION_CLUSTER_SECRET``): authenticated and encrypted, so that a process without
the secret can neither join nor disturb the group.

pysyncobj unpickles whatever a peer sends; with a secret every frame must first pass
Fernet (AES + HMAC) with the key derived from it. The first test shows what an
unauthenticated frame does to a node without a secret (it runs code of the sender's
choosing and deposes the leader), so that the same frames doing nothing to a node with
a secret means something.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import urllib.request
import uuid
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from store import open_store
from tests.helpers import LOOPBACK, StanNode, StanNodeFactory, wait_for
from tests.helpers.cluster import ROLE_LEADER, NodeStatus, StanCluster, compare_stores, poll

#: Seconds the group is watched while an impostor runs: many times pysyncobj's
#: connection retry period (0.5 s) and election timeout (0.4-0.8 s).
WATCH_SECONDS = 4.0
#: Term a forged vote request claims: far above any real one.
FORGED_TERM = 1_000_000


class _TouchFile:
    """Unpickling this creates ``path`` (an empty file): proof that a node ran the
    sender's code. Harmless by design."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def _frame(message: object) -> bytes:
    """One pysyncobj TCP frame without encryption: length, zlib(pickle(message))."""
    data = zlib.compress(pickle.dumps(message, protocol=2))
    return struct.pack("i", len(data)) + data


def forge(raft_addr: str, claimed_addr: str, marker: Path) -> bytes:
    """Connect to ``raft_addr``, claim to be the member at ``claimed_addr`` and ask for
    a vote in a far later term, with a pickle that creates ``marker`` riding along.
    Returns what the node sent back; ``<open>`` at the end means it kept the connection
    (blocking: run it in a thread)."""
    host, port = raft_addr.rsplit(":", 1)
    received = b""
    vote = {
        "type": "request_vote",
        "term": FORGED_TERM,
        "last_log_index": 10**9,
        "last_log_term": FORGED_TERM,
        "payload": _TouchFile(marker),
    }
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(_frame(claimed_addr) + _frame(vote))
            # A node with a secret drops the connection at the first frame it cannot
            # decrypt; one without keeps it open: stop reading after a quiet spell.
            sock.settimeout(2.0)
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received + b"<open>"
        except ConnectionResetError:
            pass
    return received


def _messages(received: bytes) -> list[object]:
    """The frames a node (one of ours, without a secret) sent back, unpickled."""
    out: list[object] = []
    while len(received) >= 4:
        (n,) = struct.unpack("i", received[:4])
        if len(received) < 4 + n:
            break
        out.append(pickle.loads(zlib.decompress(received[4 : 4 + n])))
        received = received[4 + n :]
    return out


def node_status(node: StanNode) -> NodeStatus:
    return NodeStatus.parse(node.monitor("/streaming/serverz", 2.0))


class SecretCluster(StanCluster):
    """A :class:`StanCluster` whose nodes each get their own extra flags and environment
    (the secret comes from a flag, a configuration file or the environment)."""

    def __init__(
        self,
        factory: StanNodeFactory,
        node_flags: Mapping[str, Sequence[str]],
        node_env: Mapping[str, Mapping[str, str]],
    ) -> None:
        super().__init__(factory, node_ids=list(node_flags))
        self.node_flags = {nid: list(flags) for nid, flags in node_flags.items()}
        self.node_env = {nid: dict(env) for nid, env in node_env.items()}

    def member_flags(self, node_id: str) -> list[str]:
        return [
            "-a",
            LOOPBACK,
            "--clustered",
            "--cluster_node_id",
            node_id,
            "--cluster_peers",
            self.peers_flag,
        ]

    def start(self) -> SecretCluster:
        for nid in self.node_ids:
            self.nodes[nid] = self.factory(
                *self.member_flags(nid),
                *self.node_flags[nid],
                name=nid,
                data_dir=self.data_dir(nid),
                wait_ready=False,
                env=self.node_env.get(nid),
            )
        return self


def own_output(node: StanNode) -> str:
    """The node's log without the harness's banner lines (they show the command line)."""
    return "\n".join(
        line for line in node.full_log_text().splitlines() if not line.startswith("=== ")
    )


def loose_entries(root: Path) -> list[str]:
    """Paths under ``root`` that group or others may access (``root`` itself was made
    by the harness, not by the node)."""
    return [
        f"{p} {oct(p.lstat().st_mode & 0o777)}"
        for p in root.rglob("*")
        if p.lstat().st_mode & 0o077
    ]


async def test_without_a_secret_any_peer_runs_code_and_deposes_the_leader(
    cluster: StanCluster, tmp_path: Path
) -> None:
    leader = await cluster.wait_single_leader()
    warning = "the Raft transport is neither authenticated nor encrypted"
    assert warning in cluster.nodes[leader].log_text()
    follower = next(nid for nid in cluster.node_ids if nid != leader)
    marker = tmp_path / "ran-code"
    answer = await asyncio.to_thread(
        forge, cluster.raft_addrs[leader], cluster.raft_addrs[follower], marker
    )
    types = [m.get("type") for m in _messages(answer) if isinstance(m, dict)]
    assert "response_vote" in types, f"no vote from the leader: {types}"
    await wait_for(marker.exists, 10, "the forged pickle to run on the leader")

    async def deposed() -> NodeStatus | None:
        st = await cluster.status(leader)
        return st if st.term >= FORGED_TERM else None

    await poll(deposed, 10, f"the leader to adopt the forged term {FORGED_TERM}")


async def test_secret_keeps_out_impostors_and_forged_frames(
    stan_node: StanNodeFactory, tmp_path: Path
) -> None:
    secret = "raft-" + uuid.uuid4().hex
    wrong = "raft-" + uuid.uuid4().hex
    conf = tmp_path / "c.conf"
    conf.write_text(f'streaming {{\n  cluster {{\n    secret: "{secret}"\n  }}\n}}\n')
    cluster = SecretCluster(
        stan_node,
        # a: the flag; b: the environment; c: the configuration file.
        {"a": ["--cluster_secret", secret], "b": [], "c": ["-sc", str(conf)]},
        {"b": {"STANCHION_CLUSTER_SECRET": secret}},
    )
    impostors: list[StanNode] = []
    try:
        cluster.start()
        leader = await cluster.wait_single_leader()
        assert "neither authenticated nor encrypted" not in cluster.nodes[leader].log_text()
        pub = await cluster.connect("publisher")
        for i in range(20):
            await pub.publish("orders", f"before-{i}".encode())
        victim = next(nid for nid in cluster.node_ids if nid != leader)
        await cluster.wait_caught_up(victim, leader)
        before = await cluster.status(leader)

        # Forged frames at every member's Raft port: dropped unread.
        marker = tmp_path / "ran-code"
        for nid in cluster.node_ids:
            claimed = cluster.raft_addrs[next(n for n in cluster.node_ids if n != nid)]
            answer = await asyncio.to_thread(forge, cluster.raft_addrs[nid], claimed, marker)
            assert answer == b"", f"{nid} answered or kept a forged connection: {answer[:60]!r}"
        assert not marker.exists(), "a node with a secret unpickled a forged frame"

        # The victim's place taken by a process with the wrong secret and an empty store.
        await cluster.stop_node(victim)
        impostor = stan_node(
            *cluster.member_flags(victim),
            "--cluster_secret",
            wrong,
            name="impostor",
            data_dir=tmp_path / "impostor" / "data",
            wait_ready=False,
        )
        impostors.append(impostor)
        # Its own empty journal (pysyncobj's initial entry), which must stay as it is.
        start: NodeStatus = await poll(
            lambda: asyncio.to_thread(node_status, impostor),
            20,
            "the impostor's monitoring endpoint",
            ignore=(OSError,),
        )
        assert start.commit_index <= 1 and start.last_applied <= 1, start

        published = 0
        watched: dict[str, Any] = {}

        async def undisturbed() -> None:
            nonlocal published
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WATCH_SECONDS
            while loop.time() < deadline:
                await pub.publish("orders", f"during-{published}".encode())
                published += 1
                st = await cluster.status(leader)
                imp = await asyncio.to_thread(node_status, impostor)
                watched.update(leader=st, impostor=imp)
                assert st.role == ROLE_LEADER and st.term == before.term, (
                    f"the leader changed while the impostor ran: {watched}"
                )
                assert imp.role != ROLE_LEADER and imp.term == 0 and imp.leader == "", (
                    f"the impostor took part in the group: {watched}"
                )
                assert (imp.commit_index, imp.last_applied) == (
                    start.commit_index,
                    start.last_applied,
                ), f"the impostor received entries: {watched}"
                await asyncio.sleep(0.05)

        await undisturbed()
        assert published > 0
        channels = await asyncio.to_thread(impostor.monitor, "/streaming/channelsz")
        assert channels.get("count", 0) == 0, channels
        assert await asyncio.to_thread(impostor.stop) == 143

        # The real member, with the secret, comes back and catches up at once.
        cluster.restart(victim)
        await cluster.wait_caught_up(victim, leader)
        assert await cluster.wait_single_leader() == leader
        assert (await cluster.status(leader)).term == before.term

        # Nothing shows the secret: logs, monitoring, process arguments of b and c.
        for path in ("/streaming/serverz", "/streaming/healthz", "/metrics"):
            body = await asyncio.to_thread(_get, cluster.nodes[leader].monitor_url(path))
            assert secret not in body, f"{path} shows the secret"
        for nid in ("b", "c"):
            cmdline = Path(f"/proc/{cluster.nodes[nid].pid}/cmdline").read_bytes()
            assert secret.encode() not in cmdline
        await cluster.stop_all()
        for node in [*cluster.nodes.values(), *impostors]:
            out = own_output(node)
            assert secret not in out and wrong not in out, f"{node.name} logged a secret"
        content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
        assert len(content["channels"]["orders"]["msgs"]) == 20 + published
        empty = _store_summary(tmp_path / "impostor" / "data")
        assert empty == {"channels": [], "clients": []}, empty
        for nid in cluster.node_ids:
            assert loose_entries(cluster.data_dir(nid)) == []
    finally:
        await cluster.close_clients()
        for node in impostors:
            await asyncio.to_thread(node.stop)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode(errors="replace")


def _store_summary(data_dir: Path) -> dict[str, list[str]]:
    st = open_store("LMDB", str(data_dir / "store"), sync=False)
    try:
        return {"channels": sorted(st.channels()), "clients": sorted(st.clients())}
    finally:
        st.close()
