"""``make soak``: three nodes under steady traffic while nodes are killed at random.

A nats-server and a three-node cluster (nodes a, b, c, with a Raft secret) on
127.0.0.1; publishers (one per channel, a window of publishes in flight, a failed
publish retried with the same payload) and durable subscribers (manual acks, two
per channel) run for ``--seconds`` (``SOAK_SECONDS``, default 180) while a chaos
loop SIGKILLs a node (the leader half of the time), leaves it down a moment and
starts it again, at most ``--max-kills`` times. Then traffic stops, every node
is brought back, the subscribers are given time to catch up, the nodes are
stopped and their LMDB stores are read.

Checked at the end (exit 1 if any fails):

* every node's store holds the same messages, sequence for sequence;
* every acknowledged publish is stored on every node (losses: 0);
* every durable subscriber received every acknowledged message at least once.

Reported: messages published and acknowledged, kills, losses, duplicates stored
(a retried publish whose first attempt was stored after all), duplicates
delivered (redeliveries after a failover: delivery progress is replicated
lazily). Everything runs on 127.0.0.1 and stops by itself; every process is
stopped by its PID. The work directory is removed unless ``--keep`` is given or
a check failed.

    .venv/bin/python tests/soak/soak.py --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from client import Msg, StanConnection, StanError  # noqa: E402
from protocol.messages import MsgProto, decode  # noqa: E402
from store import open_store  # noqa: E402
from tests.helpers import LOOPBACK, NatsServer, StanNodeFactory  # noqa: E402
from tests.helpers.cluster import StanCluster  # noqa: E402

#: Publishes in flight per publisher.
WINDOW = 32
#: Payload padding (bytes) after the message's ID.
PAD = b"." * 100
#: Channels, each with one publisher and DURABLES durable subscribers.
CHANNELS = ("soak.orders", "soak.events")
DURABLES = ("audit", "billing")
#: Seconds a publish waits for its ack before it is retried.
PUB_ACK_WAIT = 5.0
#: Seconds a SIGKILLed node stays down (range).
DOWN_SECONDS = (1.0, 4.0)
#: Seconds between kills (range).
KILL_EVERY = (8.0, 20.0)
#: Seconds a follower gets to apply what the leader committed before the stores are read.
CATCH_UP_SECONDS = 60.0
#: Seconds the subscribers get to receive everything after traffic stops.
DRAIN_SECONDS = 180.0


def log(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class SoakCluster(StanCluster):
    """StanCluster without ``-SDV`` (per-message traces would dominate the run), the
    Raft secret given to every node through its environment."""

    def __init__(self, factory: StanNodeFactory, secret: str) -> None:
        super().__init__(factory)
        self.env = {"STANCHION_CLUSTER_SECRET": secret}

    def start(self) -> SoakCluster:
        for nid in self.node_ids:
            self.nodes[nid] = self.factory(
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
                debug=False,
                env=self.env,
            )
        return self


@dataclass
class Publisher:
    """Publishes ``<channel>:<n>`` with WINDOW in flight; a failure is retried with the
    same payload, so a payload can be stored twice but is acknowledged once."""

    cluster: StanCluster
    channel: str
    client_id: str
    #: Most publish attempts per second.
    rate: float
    acked: set[bytes] = field(default_factory=set)
    #: Payloads sent more than once (a failed attempt may have been stored anyway).
    retried: set[bytes] = field(default_factory=set)
    attempts: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _retry: list[bytes] = field(default_factory=list)
    _next: int = 0

    def payload(self) -> bytes:
        if self._retry:
            data = self._retry.pop()
            self.retried.add(data)
            return data
        self._next += 1
        return f"{self.channel}:{self._next:09d}:".encode() + PAD

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        sc = await self.cluster.connect(self.client_id, pub_ack_wait=PUB_ACK_WAIT)
        slots = asyncio.Semaphore(WINDOW)
        inflight: set[asyncio.Future[str]] = set()
        started = time.monotonic()
        while not self._stop.is_set():
            ahead = self.attempts / self.rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            await slots.acquire()
            data = self.payload()
            self.attempts += 1
            try:
                if sc.closed:
                    raise StanError("connection lost")
                fut = await sc.publish_async(self.channel, data)
            except (StanError, OSError) as exc:
                self._failed(data, str(exc))
                slots.release()
                if sc.closed:
                    sc = await self._reconnect()
                else:
                    await asyncio.sleep(0.05)
                continue
            inflight.add(fut)
            fut.add_done_callback(functools.partial(self._settled, data, slots, inflight))
        if inflight:
            await asyncio.wait(inflight, timeout=60)

    def _settled(
        self,
        data: bytes,
        slots: asyncio.Semaphore,
        inflight: set[asyncio.Future[str]],
        fut: asyncio.Future[str],
    ) -> None:
        inflight.discard(fut)
        slots.release()
        if fut.cancelled():
            self._failed(data, "cancelled")
        elif fut.exception() is not None:
            self._failed(data, str(fut.exception()))
        else:
            self.acked.add(data)

    def _failed(self, data: bytes, reason: str) -> None:
        self.failures[reason] += 1
        if not self._stop.is_set():
            self._retry.append(data)

    async def _reconnect(self) -> StanConnection:
        self.reconnects += 1
        log(f"publisher {self.client_id} reconnects")
        return await self.cluster.connect(self.client_id, timeout=120, pub_ack_wait=PUB_ACK_WAIT)


@dataclass
class Durable:
    """A durable subscriber with manual acks; reconnects and resumes if its
    connection is lost."""

    cluster: StanCluster
    channel: str
    durable_name: str
    client_id: str
    seen: Counter[bytes] = field(default_factory=Counter)
    reconnects: int = 0
    sc: StanConnection | None = None

    async def on_msg(self, msg: Msg) -> None:
        self.seen[msg.data] += 1
        try:
            await msg.ack()
        except (StanError, OSError):
            pass  # redelivered later

    async def start(self) -> None:
        self.sc = await self.cluster.connect(
            self.client_id, conn_lost_cb=lambda _sc, _err: self._lost()
        )
        await self.sc.subscribe(
            self.channel,
            self.on_msg,
            durable_name=self.durable_name,
            manual_acks=True,
            max_inflight=512,
            ack_wait=5,
            start_at="first",
        )

    def _lost(self) -> None:
        self.reconnects += 1
        log(f"subscriber {self.client_id} lost its connection; resuming")
        asyncio.get_running_loop().create_task(self.start())

    def missing(self, acked: set[bytes]) -> int:
        return sum(1 for p in acked if p not in self.seen)


@dataclass
class Chaos:
    cluster: StanCluster
    max_kills: int
    rng: random.Random
    kills: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True if stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        while len(self.kills) < self.max_kills:
            if await self._pause(self.rng.uniform(*KILL_EVERY)):
                return
            leader = await self.cluster.leader()
            if leader is not None and self.rng.random() < 0.5:
                victim, what = leader, "leader"
            else:
                victim = self.rng.choice(self.cluster.node_ids)
                what = "leader" if victim == leader else "follower"
            await asyncio.to_thread(self.cluster.kill, victim)
            self.kills.append(f"{victim} ({what})")
            log(f"kill #{len(self.kills)}: SIGKILL {victim} ({what})")
            await self._pause(self.rng.uniform(*DOWN_SECONDS))
            self.cluster.restart(victim)
            log(f"restarted {victim}")
            try:
                new_leader = await self.cluster.wait_single_leader(timeout=60)
                await self.cluster.wait_caught_up(victim, new_leader, timeout=120)
            except (AssertionError, OSError) as exc:
                log(f"cluster not settled after restarting {victim}: {exc}")


def read_channels(data_dir: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Every channel's ``(sequence, payload)`` list from a stopped node's store."""
    st = open_store("LMDB", str(data_dir / "store"), sync=False)
    try:
        out: dict[str, list[tuple[int, bytes]]] = {}
        for name in st.channels():
            msgs = []
            for m in st.iter_msgs(name):
                proto = decode(MsgProto, m.raw)
                msgs.append((m.seq, proto.data if proto is not None else b"<undecodable>"))
            out[name] = msgs
        return out
    finally:
        st.close()


async def soak(args: argparse.Namespace, work: Path) -> bool:
    rng = random.Random(args.seed)
    nats_server = NatsServer(work / "nats-server.log")
    nats_server.start()
    factory = StanNodeFactory(nats_server.url, "soak", work)
    cluster = SoakCluster(factory, secret=uuid.uuid4().hex)
    try:
        cluster.start()
        leader = await cluster.wait_single_leader(timeout=60)
        log(f"cluster up, leader {leader}; running {args.seconds}s, at most {args.max_kills} kills")
        pubs = [Publisher(cluster, ch, f"pub-{i}", args.rate) for i, ch in enumerate(CHANNELS)]
        subs = [
            Durable(cluster, ch, name, f"sub-{i}-{name}")
            for i, ch in enumerate(CHANNELS)
            for name in DURABLES
        ]
        for sub in subs:
            await sub.start()
        chaos = Chaos(cluster, args.max_kills, rng)
        tasks = [asyncio.ensure_future(p.run()) for p in pubs]
        chaos_task = asyncio.ensure_future(chaos.run())
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(min(10.0, args.seconds - (time.monotonic() - started)))
            acked = sum(len(p.acked) for p in pubs)
            log(f"{time.monotonic() - started:5.0f}s acked {acked} kills {len(chaos.kills)}")
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise RuntimeError("a publisher failed") from t.exception()
        elapsed = time.monotonic() - started
        chaos.stop()
        for p in pubs:
            p.stop()
        await chaos_task
        await asyncio.gather(*tasks)

        for nid in cluster.node_ids:
            if not cluster.nodes[nid].running:
                cluster.restart(nid)
        leader = await cluster.wait_single_leader(timeout=60)
        acked_all = {ch: p.acked for ch, p in zip(CHANNELS, pubs, strict=True)}
        log("traffic stopped; waiting for the subscribers to receive everything")
        drain_until = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < drain_until:
            if all(s.missing(acked_all[s.channel]) == 0 for s in subs):
                break
            await asyncio.sleep(0.5)
        await cluster.close_clients()
        # A node restarted near the end may still be taking its backlog: the
        # stores are compared once every node has applied what the leader
        # committed (a node that cannot catch up fails the run here).
        leader = await cluster.wait_single_leader(timeout=60)
        for nid in cluster.node_ids:
            if nid != leader:
                try:
                    await cluster.wait_caught_up(nid, leader, timeout=CATCH_UP_SECONDS)
                except Exception as exc:  # noqa: BLE001 - reported, then the stores compared
                    log(f"node {nid} did not catch up: {exc}")
        for nid in cluster.node_ids:
            await cluster.stop_node(nid)

        stores = {nid: read_channels(cluster.data_dir(nid)) for nid in cluster.node_ids}
        return report(args, elapsed, pubs, subs, chaos, stores, acked_all)
    finally:
        await cluster.close_clients()
        for nid in list(cluster.nodes):
            await asyncio.to_thread(cluster.nodes[nid].stop)
        nats_server.stop()


def report(
    args: argparse.Namespace,
    elapsed: float,
    pubs: list[Publisher],
    subs: list[Durable],
    chaos: Chaos,
    stores: dict[str, dict[str, list[tuple[int, bytes]]]],
    acked_all: dict[str, set[bytes]],
) -> bool:
    ids = list(stores)
    identical = all(stores[nid] == stores[ids[0]] for nid in ids[1:])
    losses = {
        nid: sum(
            len(acked - {data for _seq, data in stores[nid].get(ch, [])})
            for ch, acked in acked_all.items()
        )
        for nid in ids
    }
    base = stores[ids[0]]
    counts = {ch: Counter(d for _s, d in base.get(ch, [])) for ch in CHANNELS}
    dup_stored = sum(n - 1 for ch in CHANNELS for n in counts[ch].values() if n > 1)
    # A payload stored twice must have been sent twice.
    retried: set[bytes] = set()
    for p in pubs:
        retried |= p.retried
    dup_unretried = sum(
        1 for ch in CHANNELS for d, n in counts[ch].items() if n > 1 and d not in retried
    )
    stored = sum(len(base.get(ch, [])) for ch in CHANNELS)
    deliveries = sum(sum(s.seen.values()) for s in subs)
    dup_delivered = sum(n - 1 for s in subs for n in s.seen.values() if n > 1)
    missed = {s.client_id: s.missing(acked_all[s.channel]) for s in subs}
    failures: Counter[str] = Counter()
    for p in pubs:
        failures.update(p.failures)
    figures: list[tuple[str, Any]] = [
        ("seconds of traffic", f"{elapsed:.0f}"),
        ("publish attempts", sum(p.attempts for p in pubs)),
        ("messages acknowledged", sum(len(p.acked) for p in pubs)),
        ("acknowledged per second", f"{sum(len(p.acked) for p in pubs) / elapsed:.0f}"),
        ("failed attempts (retried)", sum(failures.values())),
        ("kills", f"{len(chaos.kills)}: {', '.join(chaos.kills) or '-'}"),
        ("messages stored (each node)", stored),
        ("stores identical on a, b, c", "yes" if identical else "NO"),
        ("losses (acked, not stored) per node", losses),
        ("duplicates stored", dup_stored),
        ("  of which never retried (must be 0)", dup_unretried),
        ("deliveries to durables", deliveries),
        ("duplicates delivered", dup_delivered),
        ("acked messages a durable never got", missed),
        ("client reconnects", sum(p.reconnects for p in pubs) + sum(s.reconnects for s in subs)),
    ]
    print("\nsoak results")
    for name, value in figures:
        print(f"  {name:<38} {value}")
    if failures:
        print("  publish failures by reason:")
        for reason, n in failures.most_common():
            print(f"    {n:>7}  {reason}")
    ok = identical and not any(losses.values()) and not any(missed.values()) and not dup_unretried
    print("\nresult:", "PASS" if ok else "FAIL")
    return ok


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so that every process is stopped by the finally
    blocks."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "180")),
        help="seconds of traffic (env SOAK_SECONDS; default 180)",
    )
    p.add_argument("--max-kills", type=int, default=None, help="default: one per 15 s of traffic")
    p.add_argument(
        "--rate", type=float, default=1000.0, help="publishes per second per channel (default 1000)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed of the chaos loop")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    if args.max_kills is None:
        args.max_kills = max(1, int(args.seconds // 15))
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    work = Path(tempfile.mkdtemp(prefix="stanchion-soak-"))
    log(f"work directory {work}, seed {args.seed}")
    signal.signal(signal.SIGTERM, _interrupt)
    ok = False
    try:
        ok = asyncio.run(soak(args, work))
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
