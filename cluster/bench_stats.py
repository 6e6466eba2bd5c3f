"""Figures of a ``stanchion bench`` run: samples, rates, latency percentiles, report, CSV.

Pure: no clock, no I/O. Times are ``time.monotonic()`` seconds taken by the
caller (system-wide on Linux, so samples from worker processes line up).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PUB = "pub"
SUB = "sub"


@dataclass
class RunConfig:
    """What one ``stanchion bench`` run does (its command-line options)."""

    server: str = "nats://127.0.0.1:4222"
    cluster_id: str = "test-cluster"
    channel: str = "foo"
    #: Publishers, each with its own connection.
    num_pubs: int = 1
    #: Subscribers, each with its own connection, subscribed "new only" before publishing starts.
    num_subs: int = 0
    #: Messages per publisher; each subscriber expects ``num_msgs * num_pubs``.
    num_msgs: int = 100_000
    msg_size: int = 128
    #: Wait for each PubAck before the next publish.
    sync: bool = False
    #: Async publishing: publishes waiting for their ack, per publisher.
    max_pub_acks: int = 16_384
    #: Spread publishers over this many worker processes (0: all in this process).
    procs: int = 0
    #: MaxInflight of each subscription.
    sub_inflight: int = 1024
    #: Seconds the publishing may take, acks included.
    timeout: float = 300.0
    #: Seconds subscribers may go without a message, once publishing is over.
    sub_idle: float = 10.0
    #: Seconds one publish waits for its ack before counting as failed.
    pub_ack_wait: float = 30.0

    @property
    def expected_per_sub(self) -> int:
        return self.num_msgs * self.num_pubs

    @property
    def mode(self) -> str:
        return "sync" if self.sync else "async"

    def describe(self) -> str:
        pubs = f"{self.num_pubs} publisher(s) x {self.num_msgs:,} msgs of {self.msg_size} B"
        how = "sync" if self.sync else f"async, max {self.max_pub_acks:,} acks in flight"
        where = f", over {self.procs} worker process(es)" if self.procs else ""
        return (
            f"{pubs} ({how}{where}), {self.num_subs} subscriber(s), "
            f"channel {self.channel!r} on {self.cluster_id!r} at {self.server}"
        )


@dataclass
class Sample:
    """One client's side of a run: ``msgs`` messages between ``start`` and ``end``."""

    side: str
    client_id: str
    msgs: int
    msg_size: int
    start: float
    end: float
    errors: int = 0

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def bytes(self) -> int:
        return self.msgs * self.msg_size

    @property
    def msgs_per_s(self) -> float:
        d = self.duration
        return self.msgs / d if d > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.msgs_per_s * self.msg_size


def aggregate(side: str, samples: Sequence[Sample], msg_size: int) -> Sample:
    """All of ``samples`` as one: summed messages over the span from first start to last end."""
    if not samples:
        return Sample(side, "*", 0, msg_size, 0.0, 0.0)
    return Sample(
        side,
        "*",
        sum(s.msgs for s in samples),
        msg_size,
        min(s.start for s in samples),
        max(s.end for s in samples),
        sum(s.errors for s in samples),
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of an ascending sequence; 0.0 when empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Latency:
    """Publish-to-ack latencies in seconds."""

    count: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Latency:
        ordered = sorted(values)
        if not ordered:
            return cls()
        return cls(
            len(ordered),
            percentile(ordered, 50),
            percentile(ordered, 90),
            percentile(ordered, 99),
            ordered[-1],
        )


@dataclass
class RawResult:
    """``requests`` nats-py request/reply round trips, ``in_flight`` at a time."""

    in_flight: int
    requests: int
    errors: int
    seconds: float
    latency: Latency
    #: When it was measured, e.g. "before" or "after" a setup's runs.
    when: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RunResult:
    config: RunConfig
    pubs: list[Sample]
    subs: list[Sample]
    latency: Latency
    #: Per subscriber: messages received.
    received: list[int] = field(default_factory=list)
    #: Raw 1-in-flight request/reply measured right before and right after
    #: this run (sync runs of the suite): the same machine conditions.
    adjacent_raw: list[RawResult] = field(default_factory=list)

    @property
    def adjacent_raw_p50(self) -> float:
        """Mean of the adjacent raw medians (0 when none was measured)."""
        got = [r.latency.p50 for r in self.adjacent_raw if r.latency.p50 > 0]
        return sum(got) / len(got) if got else 0.0

    @property
    def pub_total(self) -> Sample:
        return aggregate(PUB, self.pubs, self.config.msg_size)

    @property
    def sub_total(self) -> Sample:
        return aggregate(SUB, self.subs, self.config.msg_size)

    @property
    def overall(self) -> Sample:
        """Published plus received messages over the whole run (the reference's "Pub/Sub")."""
        return aggregate("pubsub", self.pubs + self.subs, self.config.msg_size)

    @property
    def publish_errors(self) -> int:
        return sum(s.errors for s in self.pubs)

    @property
    def complete(self) -> bool:
        """Every publish acked without error and every subscriber got every message."""
        expected = self.config.expected_per_sub
        published = sum(s.msgs for s in self.pubs)
        return (
            self.publish_errors == 0
            and published == expected
            and all(n >= expected for n in self.received)
        )


# -- text -------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    """1536 -> '1.50 KB' (binary units, as the reference prints them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def human_duration(seconds: float) -> str:
    """Latency text: '850 µs', '12.3 ms', '1.20 s'."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def rate_line(s: Sample) -> str:
    return f"{s.msgs_per_s:,.0f} msgs/sec ~ {human_bytes(s.bytes_per_s)}/sec"


def format_report(result: RunResult) -> str:
    """Readable figures, in the shape of the reference's stan-bench output."""
    cfg = result.config
    lines = [f"stanchion bench: {cfg.describe()}", ""]
    if result.pubs and result.subs:
        lines.append(f"Pub/Sub stats: {rate_line(result.overall)}")
    if result.pubs:
        lines.append(f"Pub stats: {rate_line(result.pub_total)}")
        for i, s in enumerate(result.pubs, 1):
            err = f", {s.errors} errors" if s.errors else ""
            lines.append(f" [{i}] {rate_line(s)} ({s.msgs} msgs{err})")
    if result.subs:
        lines.append(f"Sub stats: {rate_line(result.sub_total)}")
        for i, s in enumerate(result.subs, 1):
            lines.append(f" [{i}] {rate_line(s)} ({s.msgs} msgs)")
    lat = result.latency
    lines.append(
        f"Publish ack latency: p50 {human_duration(lat.p50)}, p90 {human_duration(lat.p90)}, "
        f"p99 {human_duration(lat.p99)}, max {human_duration(lat.max)} ({lat.count} acks)"
    )
    expected = cfg.expected_per_sub
    for i, n in enumerate(result.received, 1):
        lines.append(f"Subscriber [{i}] received {n}/{expected} msgs")
    if result.publish_errors:
        lines.append(f"Publish errors: {result.publish_errors}")
    lines.append("Result: " + ("complete" if result.complete else "INCOMPLETE"))
    return "\n".join(lines)


# -- CSV ----------------------------------------------------------------------------------

#: Columns of ``stanchion bench --csv``: one row per client, then one per side's total
#: (``client`` is ``*``) and the pub+sub total (side ``pubsub``). Latencies are in
#: microseconds and describe the publishers (every pooled ack on total rows).
CSV_COLUMNS = [
    "run_id",
    "side",
    "client",
    "mode",
    "msgs",
    "msg_bytes",
    "bytes",
    "duration_s",
    "msgs_per_s",
    "bytes_per_s",
    "errors",
    "lat_p50_us",
    "lat_p90_us",
    "lat_p99_us",
    "lat_max_us",
]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def csv_rows(result: RunResult, run_id: str) -> list[dict[str, str]]:
    cfg = result.config
    lat = result.latency

    def row(s: Sample, with_latency: bool) -> dict[str, str]:
        out = {
            "run_id": run_id,
            "side": s.side,
            "client": s.client_id,
            "mode": cfg.mode,
            "msgs": str(s.msgs),
            "msg_bytes": str(s.msg_size),
            "bytes": str(s.bytes),
            "duration_s": f"{s.duration:.6f}",
            "msgs_per_s": f"{s.msgs_per_s:.1f}",
            "bytes_per_s": f"{s.bytes_per_s:.1f}",
            "errors": str(s.errors),
        }
        for key, value in (
            ("lat_p50_us", lat.p50),
            ("lat_p90_us", lat.p90),
            ("lat_p99_us", lat.p99),
            ("lat_max_us", lat.max),
        ):
            out[key] = _us(value) if with_latency and lat.count else ""
        return out

    rows = [row(s, False) for s in result.pubs + result.subs]
    if result.pubs:
        rows.append(row(result.pub_total, True))
    if result.subs:
        rows.append(row(result.sub_total, False))
        rows.append(row(result.overall, True))
    return rows


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buf.getvalue()
