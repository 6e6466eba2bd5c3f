"""Results of the bench suite and their table and CSV. Pure: no processes, no clock."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from cluster.bench_stats import Latency, RawResult, RunResult, human_duration


@dataclass
class SuiteOptions:
    async_msgs: int = 100_000
    sync_msgs: int = 3_000
    raw1_requests: int = 3_000
    raw100_requests: int = 30_000
    msg_size: int = 128
    procs: int = 0
    nodes: list[int] = field(default_factory=lambda: [1, 3])
    node_args: list[str] = field(default_factory=list)
    #: Seconds each run may publish.
    timeout: float = 300.0
    csv: Path | None = None
    keep: bool = False


#: ``--quick``: a smoke run of the same suite.
QUICK = {"async_msgs": 3_000, "sync_msgs": 200, "raw1_requests": 500, "raw100_requests": 10_000}


@dataclass
class NodeMemory:
    name: str
    role: str
    rss_kb: int
    anon_kb: int


@dataclass
class SetupResult:
    nodes: int
    #: Raw request/reply measurements, before and after the runs.
    raw: list[RawResult] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    memory: list[NodeMemory] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "1 node" if self.nodes == 1 else f"{self.nodes} nodes"

    @property
    def raw1(self) -> RawResult:
        """The best 1-in-flight measurement (lowest median): the least disturbed by noise."""
        return min(
            (r for r in self.raw if r.in_flight == 1),
            key=lambda r: r.latency.p50,
            default=RawResult(1, 0, 0, 0.0, Latency()),
        )

    @property
    def raw100(self) -> RawResult:
        """The best 100-in-flight measurement (highest rate)."""
        return max(
            (r for r in self.raw if r.in_flight == 100),
            key=lambda r: r.rate,
            default=RawResult(100, 0, 0, 0.0, Latency()),
        )

    def ratio(self, run: RunResult) -> float:
        """Async: publish rate / raw 100-in-flight rate. Sync: ack p50 / raw
        1-in-flight p50, the raw measured right before and after that run when
        it was (the machine's speed drifts within minutes here), else the
        best raw of the setup."""
        if run.config.sync:
            base = run.adjacent_raw_p50 or self.raw1.latency.p50
            return run.latency.p50 / base if base > 0 else 0.0
        base = self.raw100.rate
        return run.pub_total.msgs_per_s / base if base > 0 else 0.0


@dataclass
class SuiteResult:
    options: SuiteOptions
    cpus: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    setups: list[SetupResult] = field(default_factory=list)


# -- output ----------------------------------------------------------------------------------


def render_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in avg)


def _best_ratio(setup: SetupResult, run: RunResult) -> float:
    base = setup.raw1.latency.p50
    return run.latency.p50 / base if base > 0 else 0.0


def format_suite(suite: SuiteResult) -> str:
    opts = suite.options
    out = [
        f"stanchion bench suite: {suite.cpus} CPUs, load average {_load(suite.load_start)} "
        f"at start, {_load(suite.load_end)} at end; {opts.msg_size}-byte messages; "
        f"Python {platform.python_version()} with uvloop; {suite.seconds:.0f} s",
        "",
        "Raw nats-py request/reply through the same nats-server (responder in another process):",
    ]
    for s in suite.setups:
        for when in ("before", "after"):
            got = {r.in_flight: r for r in s.raw if r.when == when}
            if 1 in got and 100 in got:
                one, hundred = got[1], got[100]
                out.append(
                    f"  {when} {s.label}: 1 in flight {one.rate:,.0f} req/s, round trip p50 "
                    f"{human_duration(one.latency.p50)}; 100 in flight {hundred.rate:,.0f} req/s"
                )
    headers = ["setup", "mode", "pub/sub", "msgs", "pub msgs/s", "sub msgs/s"]
    headers += ["ack p50", "ack p90", "ack p99", "ack max", "vs raw", "complete"]
    rows = []
    for s in suite.setups:
        for r in s.runs:
            cfg = r.config
            ratio = s.ratio(r)
            vs = f"{ratio:.1f}x raw1 RTT" if cfg.sync else f"{ratio:.2f} of raw100"
            lat = r.latency
            received = f" ({min(r.received)}/{cfg.expected_per_sub})" if r.received else ""
            rows.append(
                [
                    s.label,
                    cfg.mode,
                    f"{cfg.num_pubs}/{cfg.num_subs}",
                    f"{cfg.num_msgs:,}",
                    f"{r.pub_total.msgs_per_s:,.0f}",
                    f"{r.sub_total.msgs_per_s:,.0f}" if r.subs else "-",
                    human_duration(lat.p50),
                    human_duration(lat.p90),
                    human_duration(lat.p99),
                    human_duration(lat.max),
                    vs,
                    ("yes" if r.complete else "NO") + (received if not r.complete else ""),
                ]
            )
    out += ["", render_table(headers, rows, right={3, 4, 5, 6, 7, 8, 9}), ""]
    out.append("vs raw: async = publish msgs/s / raw 100-in-flight req/s (higher is better);")
    out.append("        sync = publish round trip p50 / raw 1-in-flight round trip p50 (lower),")
    out.append("        that raw measured right before and after the sync run (mean of the two);")
    out.append("        async raw = the better of the measurements before and after that setup.")
    adjacent = [
        f"  {s.label} {r.config.mode} {r.config.num_pubs}/{r.config.num_subs}: "
        + ", ".join(human_duration(x.latency.p50) for x in r.adjacent_raw)
        + f"; with the best raw of the setup: {_best_ratio(s, r):.1f}x"
        for s in suite.setups
        for r in s.runs
        if r.adjacent_raw
    ]
    if adjacent:
        out += ["", "Raw 1-in-flight round trip p50 right before and after each sync run:"]
        out += adjacent
    out += ["", "Node memory after the runs (VmRSS / RssAnon):"]
    for s in suite.setups:
        mems = ", ".join(
            f"{m.name} {m.role} {m.rss_kb / 1024:.1f} / {m.anon_kb / 1024:.1f} MB" for m in s.memory
        )
        out.append(f"  {s.label}: {mems}")
    return "\n".join(out)


#: Columns of ``--suite --csv``: one row per run, per raw measurement (``kind`` raw)
#: and per node's memory (``kind`` memory); latencies in microseconds, memory in kB.
SUITE_CSV_COLUMNS = [
    "kind",
    "setup_nodes",
    "mode",
    "pubs",
    "subs",
    "msgs",
    "msg_bytes",
    "pub_msgs_per_s",
    "pub_bytes_per_s",
    "sub_msgs_per_s",
    "sub_bytes_per_s",
    "p50_us",
    "p90_us",
    "p99_us",
    "max_us",
    "complete",
    "ratio",
    "ratio_of",
    "in_flight",
    "when",
    "req_per_s",
    "node",
    "role",
    "rss_kb",
    "rss_anon_kb",
    "cpus",
    "load1_start",
]


def suite_csv_rows(suite: SuiteResult) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    common = {"cpus": str(suite.cpus), "load1_start": f"{suite.load_start[0]:.2f}"}

    def us(x: float) -> str:
        return f"{x * 1e6:.1f}"

    for s in suite.setups:
        base = common | {"setup_nodes": str(s.nodes)}
        around = [
            (f"around sync {r.config.num_pubs}/{r.config.num_subs}", raw)
            for r in s.runs
            for raw in r.adjacent_raw
        ]
        for when, raw in [(raw.when, raw) for raw in s.raw] + around:
            lat = raw.latency
            rows.append(
                base
                | {
                    "kind": "raw",
                    "when": when,
                    "in_flight": str(raw.in_flight),
                    "req_per_s": f"{raw.rate:.1f}",
                    "msgs": str(raw.requests),
                    "p50_us": us(lat.p50),
                    "p90_us": us(lat.p90),
                    "p99_us": us(lat.p99),
                    "max_us": us(lat.max),
                }
            )
        for r in s.runs:
            cfg, lat = r.config, r.latency
            pub, sub = r.pub_total, r.sub_total
            rows.append(
                base
                | {
                    "kind": "run",
                    "mode": cfg.mode,
                    "pubs": str(cfg.num_pubs),
                    "subs": str(cfg.num_subs),
                    "msgs": str(cfg.num_msgs),
                    "msg_bytes": str(cfg.msg_size),
                    "pub_msgs_per_s": f"{pub.msgs_per_s:.1f}",
                    "pub_bytes_per_s": f"{pub.bytes_per_s:.1f}",
                    "sub_msgs_per_s": f"{sub.msgs_per_s:.1f}" if r.subs else "",
                    "sub_bytes_per_s": f"{sub.bytes_per_s:.1f}" if r.subs else "",
                    "p50_us": us(lat.p50),
                    "p90_us": us(lat.p90),
                    "p99_us": us(lat.p99),
                    "max_us": us(lat.max),
                    "complete": "yes" if r.complete else "no",
                    "ratio": f"{s.ratio(r):.4f}",
                    "ratio_of": "ack_p50/raw1_p50" if cfg.sync else "pub_rate/raw100_rate",
                }
            )
        for m in s.memory:
            rows.append(
                base
                | {
                    "kind": "memory",
                    "node": m.name,
                    "role": m.role,
                    "rss_kb": str(m.rss_kb),
                    "rss_anon_kb": str(m.anon_kb),
                }
            )
    return rows
