"""Three clustered stanchion nodes against one nats-server, seen as an operator sees them.

The leader is found through ``/streaming/serverz`` (``role``, ``raft.term``,
``raft.leader``), never through the nodes' logs: only the leader prints
``Streaming Server is ready``, so followers are started without waiting for it.

Blocking work (HTTP polls, process stops) runs in a worker thread so that a
client living on the test's event loop keeps answering pings while the harness
waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from client import StanConnection, StanError, connect
from store import open_store

from .net import LOOPBACK, free_port
from .stan_node import StanNode, StanNodeFactory
from .waiting import wait_for

T = TypeVar("T")

#: Seconds two nodes may both report ``role: Leader`` (in different terms) before a
#: wait fails: a deposed leader learns of the new term from its next exchange with
#: a peer, or steps down after ``leader_fallback`` (1 s) without a majority.
TWO_LEADERS_GRACE = 3.0
#: Seconds one monitoring request may take.
HTTP_TIMEOUT = 2.0
#: Default deadline (s) for an election, a catch-up or a client operation to succeed.
ELECTION_TIMEOUT = 20.0
ROLE_LEADER = "Leader"
ROLE_FOLLOWER = "Follower"


class SplitBrainError(AssertionError):
    """Two nodes claimed leadership in the same term, or for longer than the grace."""


async def poll(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    state: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`wait_for` with an async predicate that returns a value, or None/False
    for "not yet"; typed so that the result is the value."""
    checker: Callable[[], Awaitable[Any]] = predicate
    result: Any = await wait_for(checker, timeout, what, interval, state=state, ignore=ignore)
    return cast(T, result)


@dataclass
class NodeStatus:
    """One node's ``/streaming/serverz`` as far as leadership is concerned."""

    node_id: str
    role: str
    term: int
    #: The leader as this node knows it: node ID or Raft address, "" if none.
    leader: str
    commit_index: int
    last_applied: int
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> NodeStatus:
        raft = data.get("raft") or {}
        return cls(
            node_id=str(data.get("node_id", "")),
            role=str(data.get("role", "")),
            term=int(raft.get("term", 0)),
            leader=str(raft.get("leader", "")),
            commit_index=int(raft.get("commit_index", 0)),
            last_applied=int(raft.get("last_applied", 0)),
            raw=data,
        )


class StanCluster:
    """Nodes ``a``, ``b``, ``c`` (by default) started through a :class:`StanNodeFactory`.

    Each node gets its own free Raft port on 127.0.0.1, its own ``--dir`` and
    monitoring port. ``paused`` holds the IDs of SIGSTOPped nodes: they cannot
    answer HTTP and are left out of every poll until :meth:`resume`.
    """

    def __init__(
        self,
        factory: StanNodeFactory,
        node_ids: Iterable[str] = ("a", "b", "c"),
        extra_args: Iterable[str] = (),
    ) -> None:
        self.factory = factory
        self.cluster_id = factory.cluster_id
        self.nats_url = factory.nats_url
        self.node_ids = list(node_ids)
        self.extra_args = list(extra_args)
        self.raft_addrs = {nid: f"{LOOPBACK}:{free_port()}" for nid in self.node_ids}
        self.nodes: dict[str, StanNode] = {}
        self.paused: set[str] = set()
        self._clients: list[StanConnection] = []

    # -- processes -----------------------------------------------------------------

    @property
    def peers_flag(self) -> str:
        return ",".join(f"{nid}={addr}" for nid, addr in self.raft_addrs.items())

    def data_dir(self, node_id: str) -> Path:
        return self.factory.tmp_path / node_id / "data"

    def start(self) -> StanCluster:
        """Start every node without waiting; see :meth:`wait_single_leader`."""
        for nid in self.node_ids:
            self.nodes[nid] = self.factory(
                # With -ns, -a only sets where monitoring listens: loopback, not 0.0.0.0.
                "-a",
                LOOPBACK,
                "--clustered",
                "--cluster_node_id",
                nid,
                "--cluster_peers",
                self.peers_flag,
                *self.extra_args,
                name=nid,
                data_dir=self.data_dir(nid),
                wait_ready=False,
            )
        return self

    def running_ids(self) -> list[str]:
        """Nodes whose process runs and is not stopped by SIGSTOP."""
        return [nid for nid, n in self.nodes.items() if n.running and nid not in self.paused]

    def kill(self, node_id: str) -> float:
        """SIGKILL a node by PID; returns ``time.monotonic()`` just before the signal."""
        node = self.nodes[node_id]
        self.paused.discard(node_id)
        t = time.monotonic()
        node.kill(signal.SIGKILL)
        return t

    def pause(self, node_id: str) -> float:
        """SIGSTOP a node (a partition as far as its peers and clients can tell)."""
        self.paused.add(node_id)
        t = time.monotonic()
        self.nodes[node_id].kill(signal.SIGSTOP)
        return t

    def resume(self, node_id: str) -> None:
        """SIGCONT a node stopped by :meth:`pause`."""
        self.nodes[node_id].kill(signal.SIGCONT)
        self.paused.discard(node_id)

    def restart(self, node_id: str) -> StanNode:
        """Start a stopped or killed node again with the same flags and data."""
        node = self.nodes[node_id]
        if node.running:
            raise RuntimeError(f"{node_id} is still running (pid {node.pid})")
        return node.start(wait_ready=False)

    def wipe(self, node_id: str) -> None:
        """Delete a stopped node's ``--dir`` (store and Raft journal)."""
        node = self.nodes[node_id]
        if node.running:
            raise RuntimeError(f"{node_id} must be stopped before its data is wiped")
        shutil.rmtree(self.data_dir(node_id))

    async def stop_node(self, node_id: str) -> int | None:
        """SIGTERM (graceful) by PID in a worker thread; returns the exit status."""
        self.paused.discard(node_id)
        return await asyncio.to_thread(self.nodes[node_id].stop)

    async def stop_all(self) -> None:
        """Close the clients, let every running node apply what the leader
        committed (their closes included), then stop the nodes: stores
        compared afterwards then hold the same entries."""
        await self.close_clients()
        with contextlib.suppress(Exception):
            leader = await self.leader()
            if leader is not None:
                for nid in self.running_ids():
                    if nid != leader:
                        await self.wait_caught_up(nid, leader, timeout=10)
        for nid in list(self.nodes):
            await self.stop_node(nid)

    # -- monitoring ------------------------------------------------------------------

    async def monitor(self, node_id: str, path: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.nodes[node_id].monitor, path, HTTP_TIMEOUT)

    async def status(self, node_id: str) -> NodeStatus:
        return NodeStatus.parse(await self.monitor(node_id, "/streaming/serverz"))

    async def statuses(self) -> dict[str, NodeStatus]:
        """serverz of every running, unpaused node that answers (others are left out)."""
        ids = self.running_ids()
        results = await asyncio.gather(*(self.status(nid) for nid in ids), return_exceptions=True)
        return {
            nid: res for nid, res in zip(ids, results, strict=True) if isinstance(res, NodeStatus)
        }

    async def leader(self) -> str | None:
        """The node that reports ``role: Leader`` now, None if none does.

        Raises SplitBrainError when two do in the same term; with two in different
        terms it returns the one with the higher term.
        """
        leaders = _leaders(await self.statuses())
        if not leaders:
            return None
        return max(leaders, key=lambda item: item[1].term)[0]

    async def wait_single_leader(
        self,
        timeout: float = ELECTION_TIMEOUT,
        *,
        exclude: Iterable[str] = (),
        grace: float = TWO_LEADERS_GRACE,
    ) -> str:
        """Wait until exactly one node claims leadership and all other polled nodes agree.

        "Agree" means they name it (by node ID or Raft address) as leader in the same
        term. Nodes in
        ``exclude`` may not be the one (e.g. the node just killed, in case it is back).
        Fails at once if two nodes claim leadership in the same term, and if two
        claim it (in different terms) for longer than ``grace`` seconds.
        """
        excluded = set(exclude)
        loop = asyncio.get_running_loop()
        two_since: float | None = None
        last: dict[str, NodeStatus] = {}

        async def single() -> str | None:
            nonlocal two_since, last
            last = await self.statuses()
            leaders = _leaders(last)
            if len(leaders) > 1:
                now = loop.time()
                two_since = now if two_since is None else two_since
                if now - two_since > grace:
                    raise SplitBrainError(
                        f"{len(leaders)} nodes claim leadership for more than {grace}s: "
                        f"{_describe(last)}"
                    )
                return None
            two_since = None
            if len(leaders) != 1:
                return None
            nid, st = leaders[0]
            if nid in excluded:
                return None
            # serverz names the leader by node ID or by Raft address.
            names = (nid, self.raft_addrs[nid])
            for other, ost in last.items():
                if other != nid and (ost.leader not in names or ost.term != st.term):
                    return None
            return nid

        return await poll(
            single,
            timeout,
            "a single leader that every running node agrees on",
            state=lambda: _describe(last),
        )

    async def wait_role(self, node_id: str, role: str, timeout: float = ELECTION_TIMEOUT) -> None:
        last: NodeStatus | None = None

        async def check() -> bool:
            nonlocal last
            last = await self.status(node_id)
            return last.role == role

        await poll(
            check,
            timeout,
            f"{node_id} to report role {role}",
            state=lambda: last,
            ignore=(OSError,),
        )

    async def wait_caught_up(
        self, node_id: str, leader_id: str, timeout: float = ELECTION_TIMEOUT
    ) -> int:
        """Wait until ``node_id`` has applied everything the leader had committed when
        this call started (the leader keeps going meanwhile). Returns that index."""
        target = (await self.status(leader_id)).commit_index
        last: NodeStatus | None = None

        async def check() -> bool:
            nonlocal last
            last = await self.status(node_id)
            return last.last_applied >= target

        await poll(
            check,
            timeout,
            f"{node_id} to apply up to the leader's ({leader_id}) commit index {target}",
            state=lambda: last,
            ignore=(OSError,),
        )
        return target

    # -- clients ---------------------------------------------------------------------------

    async def connect(
        self,
        client_id: str,
        timeout: float = ELECTION_TIMEOUT,
        **options: Any,
    ) -> StanConnection:
        """Connect a client, retrying while no leader serves; closed by :meth:`close_clients`.

        Unless overridden, pings go every 200 ms and the connection survives 100
        unanswered ones (20 s), so an election never declares it lost.
        """
        options.setdefault("ping_interval_ms", 200)
        options.setdefault("ping_max_out", 100)
        options.setdefault("connect_timeout", 2.0)

        async def attempt() -> StanConnection | None:
            try:
                return await connect(self.cluster_id, client_id, nats_url=self.nats_url, **options)
            except StanError:
                return None

        sc = await poll(attempt, timeout, f"client {client_id!r} to connect", interval=0.1)
        self._clients.append(sc)
        return sc

    async def close_clients(self) -> None:
        clients, self._clients = self._clients, []
        for sc in clients:
            try:
                await asyncio.wait_for(sc.close(), 5)
            except Exception:  # noqa: BLE001 - the cluster may be down at teardown
                # At least close the NATS connection.
                if not sc.nc.is_closed:
                    await sc.nc.close()

    # -- state comparison ---------------------------------------------------------------------

    async def live_state(self, node_id: str) -> dict[str, Any]:
        """Channels (with subscriptions) and clients as ``node_id``'s monitoring shows them."""
        chz = await self.monitor(node_id, "/streaming/channelsz?subs=1&limit=100000")
        clz = await self.monitor(node_id, "/streaming/clientsz?limit=100000")
        channels = {}
        for ch in chz.get("channels", []):
            subs = sorted(
                (_sub_fields(s) for s in ch.get("subscriptions", [])), key=lambda s: s["inbox"]
            )
            channels[ch["name"]] = {
                k: ch[k] for k in ("msgs", "bytes", "first_seq", "last_seq", "subs_count")
            } | {"subscriptions": subs}
        clients = {c["id"]: c["hb_inbox"] for c in clz.get("clients", [])}
        return {"channels": channels, "clients": clients}

    async def wait_same_live_state(
        self, node_ids: Iterable[str] | None = None, timeout: float = ELECTION_TIMEOUT
    ) -> dict[str, Any]:
        """Wait until ``/streaming/channelsz?subs=1`` and ``clientsz`` agree on every node.

        Delivery progress is replicated lazily (about every second), so this waits
        for agreement instead of asserting it. Returns the common state.
        """
        ids = list(node_ids) if node_ids is not None else self.running_ids()
        states: dict[str, dict[str, Any]] = {}

        async def same() -> dict[str, Any] | None:
            nonlocal states
            got = await asyncio.gather(*(self.live_state(nid) for nid in ids))
            states = dict(zip(ids, got, strict=True))
            first = got[0]
            return first if all(s == first for s in got[1:]) else None

        return await poll(
            same,
            timeout,
            f"nodes {ids} to show the same channels, subscriptions and clients",
            interval=0.1,
            state=lambda: _diff_states(states),
            ignore=(OSError,),
        )


def _leaders(statuses: Mapping[str, NodeStatus]) -> list[tuple[str, NodeStatus]]:
    leaders = [(nid, st) for nid, st in statuses.items() if st.role == ROLE_LEADER]
    terms = [st.term for _, st in leaders]
    if len(terms) != len(set(terms)):
        raise SplitBrainError(f"two nodes lead in the same term: {_describe(statuses)}")
    return leaders


def _describe(statuses: Mapping[str, NodeStatus]) -> str:
    return ", ".join(
        f"{nid}: {st.role} term={st.term} leader={st.leader or '-'} "
        f"commit={st.commit_index} applied={st.last_applied}"
        for nid, st in sorted(statuses.items())
    )


_SUB_KEYS = (
    "client_id",
    "inbox",
    "ack_inbox",
    "durable_name",
    "queue_name",
    "is_durable",
    "is_offline",
    "max_inflight",
    "ack_wait",
    "last_sent",
    "pending_count",
)


def _sub_fields(sub: dict[str, Any]) -> dict[str, Any]:
    return {k: sub.get(k) for k in _SUB_KEYS}


def _diff_states(states: Mapping[str, dict[str, Any]]) -> str:
    if not states:
        return "no state read yet"
    ids = list(states)
    base = states[ids[0]]
    lines = [f"{ids[0]}: {base}"]
    for nid in ids[1:]:
        if states[nid] == base:
            lines.append(f"{nid}: same as {ids[0]}")
        else:
            lines.append(f"{nid}: {states[nid]}")
    return "\n".join(lines)


# -- stores on disk ---------------------------------------------------------------------------


def read_store(data_dir: Path) -> dict[str, Any]:
    """Everything a stopped node's LMDB store holds, as plain comparable values.

    The server info's ``node_id`` differs by design and the applied index may
    differ by a few trailing no-op entries, so both are left out.
    """
    st = open_store("LMDB", str(data_dir / "store"), sync=False)
    try:
        info = st.server_info()
        channels: dict[str, Any] = {}
        for name, ch in st.channels().items():
            subs = {sid: _record(rec) for sid, rec in st.subs(name).items()}
            channels[name] = {
                "record": _record(ch),
                "msgs": [(m.seq, m.timestamp, m.raw) for m in st.iter_msgs(name)],
                "subs": subs,
                "pending": {sid: sorted(st.pending(name, sid)) for sid in subs},
            }
        return {
            "cluster_id": info.cluster_id if info is not None else None,
            "clients": {cid: _record(rec) for cid, rec in st.clients().items()},
            "channels": channels,
        }
    finally:
        st.close()


def _record(obj: Any) -> dict[str, Any]:
    return {name: _plain(getattr(obj, name)) for name in obj.__slots__}


def _plain(value: Any) -> Any:
    return _record(value) if hasattr(value, "__slots__") else value


def compare_stores(data_dirs: Mapping[str, Path]) -> dict[str, Any]:
    """Assert that the stopped nodes' stores hold the same channels, messages (sequence,
    timestamp, raw bytes), clients, subscriptions and pending sets; return the content."""
    contents = {nid: read_store(d) for nid, d in data_dirs.items()}
    ids = list(contents)
    base = contents[ids[0]]
    for nid in ids[1:]:
        problems = _store_diff(base, contents[nid])
        assert not problems, f"store of {nid} differs from {ids[0]}'s:\n" + "\n".join(problems)
    return base


def _store_diff(a: dict[str, Any], b: dict[str, Any], limit: int = 20) -> list[str]:
    out: list[str] = []
    if a["cluster_id"] != b["cluster_id"]:
        out.append(f"cluster_id {a['cluster_id']!r} != {b['cluster_id']!r}")
    if a["clients"] != b["clients"]:
        out.append(f"clients {a['clients']} != {b['clients']}")
    if set(a["channels"]) != set(b["channels"]):
        out.append(f"channels {sorted(a['channels'])} != {sorted(b['channels'])}")
    for name in sorted(set(a["channels"]) & set(b["channels"])):
        ca, cb = a["channels"][name], b["channels"][name]
        for key in ("record", "subs", "pending"):
            if ca[key] != cb[key]:
                out.append(f"channel {name} {key}: {ca[key]} != {cb[key]}")
        if ca["msgs"] != cb["msgs"]:
            seqs_a = [m[0] for m in ca["msgs"]]
            seqs_b = [m[0] for m in cb["msgs"]]
            if seqs_a != seqs_b:
                out.append(f"channel {name} sequences: {_ranges(seqs_a)} != {_ranges(seqs_b)}")
            else:
                bad = [ma[0] for ma, mb in zip(ca["msgs"], cb["msgs"], strict=True) if ma != mb]
                out.append(f"channel {name}: messages differ at sequences {bad[:limit]}")
    return out[:limit]


def _ranges(seqs: list[int]) -> str:
    """``[1..5, 7..9]`` for a sorted list of sequences."""
    if not seqs:
        return "[]"
    parts: list[str] = []
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            parts.append(f"{start}..{prev}")
            start = s
        prev = s
    parts.append(f"{start}..{prev}")
    return "[" + ", ".join(parts) + "]"
