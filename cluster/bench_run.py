"""One ``stanchion bench`` run: subscribers, publishers, progress bar.

Every publisher and subscriber has its own client connection. Publishers run
in this process (sharing its event loop) or, with ``procs``, in worker
processes (``cluster/bench_worker.py``) while the subscribers stay here.
Subscribers subscribe "new only" before the first publish and count messages
until each got ``num_msgs * num_pubs``, or none came for ``sub_idle`` seconds
after publishing ended.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import sys
import time
from array import array
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from client import Msg, StanConnection, StanError, connect
from cluster.bench_procs import interrupt_on_sigterm
from cluster.bench_stats import PUB, SUB, Latency, RunConfig, RunResult, Sample

T = TypeVar("T")

clock = time.monotonic

#: Seconds a connect, subscribe or close request waits for the server.
CONNECT_TIMEOUT = 10.0
#: Seconds to close a client, or for a worker to get ready or to exit.
SETUP_TIMEOUT = 20.0
#: Seconds between progress updates (bar and worker reports).
PROGRESS_INTERVAL = 0.2
#: Bytes of one worker output line (a result carries every latency).
WORKER_LINE_LIMIT = 1 << 28
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Progress:
    """Counters shown by the progress bar."""

    pub_total: int
    sub_total: int
    pub: int = 0
    sub: int = 0
    started: float = field(default_factory=clock)


@dataclass
class PubOutcome:
    client_id: str
    msgs: int
    errors: int
    start: float
    end: float
    #: Publish-to-ack seconds of each successful publish.
    latencies: array[float]

    def sample(self, msg_size: int) -> Sample:
        return Sample(PUB, self.client_id, self.msgs, msg_size, self.start, self.end, self.errors)

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "msgs": self.msgs,
            "errors": self.errors,
            "start": self.start,
            "end": self.end,
            "latencies": base64.b64encode(self.latencies.tobytes()).decode(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PubOutcome:
        lat = array("d")
        lat.frombytes(base64.b64decode(d["latencies"]))
        return cls(d["client_id"], d["msgs"], d["errors"], d["start"], d["end"], lat)


async def connect_client(cfg: RunConfig, client_id: str) -> StanConnection:
    return await connect(
        cfg.cluster_id,
        client_id,
        nats_url=cfg.server,
        connect_timeout=CONNECT_TIMEOUT,
        pub_ack_wait=cfg.pub_ack_wait,
        max_pub_acks_inflight=cfg.max_pub_acks,
    )


async def close_client(sc: StanConnection) -> None:
    try:
        await asyncio.wait_for(sc.close(), SETUP_TIMEOUT)
    except (StanError, TimeoutError, OSError):
        if not sc.nc.is_closed:
            await sc.nc.close()


# -- publishing ---------------------------------------------------------------------------


async def publish_sync(
    sc: StanConnection, cfg: RunConfig, payload: bytes, deadline: float, progress: Progress
) -> PubOutcome:
    """Publish ``num_msgs`` one at a time, each waiting for its ack."""
    lat: array[float] = array("d")
    append = lat.append
    channel = cfg.channel
    errors = 0
    start = end = clock()
    for _ in range(cfg.num_msgs):
        t0 = clock()
        if t0 > deadline:
            break
        try:
            await sc.publish(channel, payload)
        except StanError:
            errors += 1
            if sc.closed:
                break
            continue
        end = clock()
        append(end - t0)
        progress.pub += 1
    return PubOutcome(sc.client_id, len(lat), errors, start, end, lat)


async def publish_async(
    sc: StanConnection, cfg: RunConfig, payload: bytes, deadline: float, progress: Progress
) -> PubOutcome:
    """Publish ``num_msgs`` with up to ``max_pub_acks`` acks outstanding.

    Latency runs from the publish call to its ack; the window is kept here, so
    the client never blocks inside a timed publish.
    """
    window = max(1, cfg.max_pub_acks)
    resume_at = window - max(1, window // 16)  # wake the loop in batches, not per ack
    channel = cfg.channel
    sent: dict[str, float] = {}
    early: dict[str, float] = {}  # acked before publish_async returned (-1: failed)
    lat: array[float] = array("d")
    append = lat.append
    room = asyncio.Event()
    finished = asyncio.Event()
    outstanding = acked = errors = issued = 0
    issuing = True
    last_ack = 0.0

    def on_ack(guid: str, error: str) -> None:
        nonlocal outstanding, acked, errors, last_ack
        t = last_ack = clock()
        t0 = sent.pop(guid, None)
        if error:
            errors += 1
            if t0 is None:
                early[guid] = -1.0
        elif t0 is None:
            early[guid] = t
        else:
            append(t - t0)
            progress.pub += 1
        outstanding -= 1
        acked += 1
        if outstanding <= resume_at:
            room.set()
        if not issuing and acked >= issued:
            finished.set()

    start = clock()
    for _ in range(cfg.num_msgs):
        if outstanding >= window:
            room.clear()
            await room.wait()
        t0 = clock()
        if t0 > deadline:
            break
        try:
            guid = await sc.publish_async(channel, payload, on_ack)
        except StanError:
            errors += 1
            break
        outstanding += 1
        issued += 1
        if early and guid in early:
            t = early.pop(guid)
            if t >= 0:
                append(t - t0)
                progress.pub += 1
        else:
            sent[guid] = t0
    issuing = False
    if acked < issued:
        # Every publish gets its ack or fails after pub_ack_wait: this wait is bounded.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), cfg.pub_ack_wait + SETUP_TIMEOUT)
    return PubOutcome(sc.client_id, len(lat), errors, start, last_ack or start, lat)


async def run_publishers(
    conns: list[StanConnection], cfg: RunConfig, deadline: float, progress: Progress
) -> list[PubOutcome]:
    payload = bytes(i % 251 for i in range(cfg.msg_size))
    publish = publish_sync if cfg.sync else publish_async
    return list(
        await asyncio.gather(*(publish(sc, cfg, payload, deadline, progress) for sc in conns))
    )


# -- subscribing --------------------------------------------------------------------------


class SubCounter:
    """Subscription callback that counts messages and notes when the last one came."""

    def __init__(self, client_id: str, expected: int, progress: Progress) -> None:
        self.client_id = client_id
        self.expected = expected
        self.progress = progress
        self.received = 0
        self.last = 0.0

    def __call__(self, msg: Msg) -> None:
        self.received += 1
        self.last = clock()
        self.progress.sub += 1

    @property
    def done(self) -> bool:
        return self.received >= self.expected


async def wait_subscribers(counters: list[SubCounter], idle: float, deadline: float) -> None:
    """Until every counter is done, none made progress for ``idle`` s, or ``deadline``."""
    last_total = -1
    last_change = clock()
    while not all(c.done for c in counters):
        now = clock()
        total = sum(c.received for c in counters)
        if total != last_total:
            last_total, last_change = total, now
        elif now - last_change > idle or now > deadline:
            return
        await asyncio.sleep(0.05)


# -- worker processes ---------------------------------------------------------------------


class WorkerPool:
    """Publishers spread round-robin over ``cfg.procs`` processes of ``cluster.bench_worker``.

    Line protocol, JSON one object a line. Parent to worker (stdin): the spec,
    then ``go``. Worker to parent (stdout): ``{"ready": true}`` once connected,
    ``{"acked": n}`` now and then, ``{"result": [...]}`` or ``{"error": text}``.
    """

    def __init__(self, cfg: RunConfig, client_ids: list[str]) -> None:
        self.cfg = cfg
        n = max(1, min(cfg.procs, len(client_ids)))
        self.groups = [client_ids[i::n] for i in range(n)]
        self.procs: list[asyncio.subprocess.Process] = []
        #: Every worker sent its result (so it is closing its connections and exiting).
        self.reported = False

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        for ids in self.groups:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cluster.bench_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=WORKER_LINE_LIMIT,
            )
            self.procs.append(proc)
            spec = {"config": dataclasses.asdict(self.cfg), "client_ids": ids}
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            await proc.stdin.drain()
        for proc in self.procs:
            msg = await asyncio.wait_for(self._read(proc), SETUP_TIMEOUT)
            if not msg.get("ready"):
                raise RuntimeError(f"bench worker pid {proc.pid} failed: {msg.get('error', msg)}")

    async def run(self, progress: Progress, deadline: float) -> list[PubOutcome]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        acked = [0] * len(self.procs)

        async def follow(i: int, proc: asyncio.subprocess.Process) -> list[PubOutcome]:
            while True:
                msg = await self._read(proc)
                if "acked" in msg:
                    acked[i] = msg["acked"]
                    progress.pub = sum(acked)
                elif "result" in msg:
                    return [PubOutcome.from_json(d) for d in msg["result"]]
                else:
                    raise RuntimeError(f"bench worker pid {proc.pid}: {msg.get('error', msg)}")

        limit = max(1.0, deadline - clock()) + self.cfg.pub_ack_wait + 2 * SETUP_TIMEOUT
        tasks = [asyncio.ensure_future(follow(i, p)) for i, p in enumerate(self.procs)]
        try:
            _done, pending = await asyncio.wait(
                tasks, timeout=limit, return_when=asyncio.FIRST_EXCEPTION
            )
            for task in tasks:
                if task.done() and task.exception() is not None:
                    task.result()  # raises it
            if pending:
                raise TimeoutError(f"bench workers did not report within {limit:.0f}s")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.reported = True
        return [o for task in tasks for o in task.result()]

    @staticmethod
    async def _read(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            code = await proc.wait()
            return {"error": f"exited with status {code}"}
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def stop(self) -> None:
        """Let workers that reported exit (they close their connections); terminate the
        others, and any that takes too long, by PID."""
        grace = SETUP_TIMEOUT if self.reported else 0.5
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()


# -- progress bar -------------------------------------------------------------------------


class ProgressBar:
    """One self-rewriting line on ``stream`` (a terminal) while a run goes on."""

    WIDTH = 30

    def __init__(self, progress: Progress, stream: IO[str]) -> None:
        self.progress = progress
        self.stream = stream
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(PROGRESS_INTERVAL)

    def draw(self) -> None:
        p = self.progress
        total = p.pub_total + p.sub_total
        frac = min(1.0, (p.pub + p.sub) / total) if total else 1.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        text = f"\r[{bar}] pub {p.pub:,}/{p.pub_total:,}"
        if p.sub_total:
            text += f"  sub {p.sub:,}/{p.sub_total:,}"
        text += f"  {clock() - p.started:.1f}s"
        self.stream.write(text + "\033[K")
        self.stream.flush()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.draw()
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_interruptible(coro: Coroutine[Any, Any, T]) -> T:
    """``uvloop.run(coro)`` where SIGTERM, like Ctrl-C, cancels ``coro`` (so its
    ``finally`` blocks close clients and stop workers) and raises KeyboardInterrupt."""
    import uvloop

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            interrupt_on_sigterm()

    try:
        return uvloop.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


# -- the run ------------------------------------------------------------------------------


async def run(cfg: RunConfig, progress_stream: IO[str] | None = None) -> RunResult:
    """Run one benchmark; ``progress_stream`` (a terminal) gets the progress bar."""
    prefix = "bench-" + secrets.token_hex(4)
    expected = cfg.expected_per_sub
    progress = Progress(pub_total=expected, sub_total=expected * cfg.num_subs)
    pub_ids = [f"{prefix}-pub-{i}" for i in range(1, cfg.num_pubs + 1)]
    sub_conns: list[StanConnection] = []
    pub_conns: list[StanConnection] = []
    counters: list[SubCounter] = []
    pool: WorkerPool | None = None
    bar: ProgressBar | None = None
    try:
        if cfg.procs:
            pool = WorkerPool(cfg, pub_ids)
            await pool.start()
        else:
            for cid in pub_ids:
                pub_conns.append(await connect_client(cfg, cid))
        for i in range(1, cfg.num_subs + 1):
            sc = await connect_client(cfg, f"{prefix}-sub-{i}")
            sub_conns.append(sc)
            counter = SubCounter(sc.client_id, expected, progress)
            await sc.subscribe(cfg.channel, counter, max_inflight=cfg.sub_inflight)
            counters.append(counter)
        if progress_stream is not None:
            bar = ProgressBar(progress, progress_stream)
            bar.start()
        go = progress.started = clock()
        deadline = go + cfg.timeout
        if pool is not None:
            outcomes = await pool.run(progress, deadline)
        else:
            outcomes = await run_publishers(pub_conns, cfg, deadline, progress)
        await wait_subscribers(counters, cfg.sub_idle, deadline + cfg.sub_idle)
    finally:
        if bar is not None:
            await bar.stop()
        for sc in pub_conns + sub_conns:
            await close_client(sc)
        if pool is not None:
            await pool.stop()
    latencies = array("d")
    for o in outcomes:
        latencies.extend(o.latencies)
    subs = [Sample(SUB, c.client_id, c.received, cfg.msg_size, go, c.last or go) for c in counters]
    return RunResult(
        cfg,
        pubs=[o.sample(cfg.msg_size) for o in outcomes],
        subs=subs,
        latency=Latency.of(latencies),
        received=[c.received for c in counters],
    )
