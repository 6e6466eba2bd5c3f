"""``stanchion bench`` against one node: the output parses, nothing is lost, the CSV is whole.

Only counts and shapes are checked; the figures themselves depend on the machine.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, NatsServer, StanNodeFactory

#: Seconds one bench command may take (it publishes a few thousand messages).
BENCH_TIMEOUT = 90.0

EXPECTED_COLUMNS = [
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

RATE = r"([\d,]+) msgs/sec ~ [\d.]+ [KMG]?B/sec"
LATENCY = re.compile(
    r"Publish ack latency: p50 ([\d.]+ (?:µs|ms|s)), p90 ([\d.]+ (?:µs|ms|s)), "
    r"p99 ([\d.]+ (?:µs|ms|s)), max ([\d.]+ (?:µs|ms|s)) \((\d+) acks\)"
)


def run_bench(nats_server: NatsServer, cluster_id: str, *args: str) -> str:
    cmd = [sys.executable, "-m", "cluster.cli", "bench", "-s", nats_server.url, "-c", cluster_id]
    proc = subprocess.run(
        [*cmd, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
    )
    assert proc.returncode == 0, f"bench exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def check_report(out: str, *, pubs: int, subs: int, per_pub: int) -> None:
    total = pubs * per_pub
    pub_stats = re.search(rf"^Pub stats: {RATE}$", out, re.M)
    assert pub_stats, out
    assert int(pub_stats.group(1).replace(",", "")) > 0, out
    for i in range(1, pubs + 1):
        assert re.search(rf"^ \[{i}\] {RATE} \({per_pub} msgs\)$", out, re.M), out
    if subs:
        assert re.search(rf"^Sub stats: {RATE}$", out, re.M), out
        assert re.search(rf"^Pub/Sub stats: {RATE}$", out, re.M), out
    for i in range(1, subs + 1):
        assert f"Subscriber [{i}] received {total}/{total} msgs" in out, out
    latency = LATENCY.search(out)
    assert latency, out
    assert int(latency.group(5)) == total, out
    assert "Result: complete" in out, out


@pytest.mark.parametrize(
    ("mode", "count"),
    [pytest.param([], 2000, id="async"), pytest.param(["--sync"], 200, id="sync")],
)
def test_bench_one_node(
    nats_server: NatsServer,
    stan_node: StanNodeFactory,
    cluster_id: str,
    tmp_path: Path,
    mode: list[str],
    count: int,
) -> None:
    stan_node(debug=False)
    csv_path = tmp_path / "bench.csv"
    out = run_bench(
        nats_server, cluster_id, *mode, "-n", str(count), "-ns", "1", "--csv", str(csv_path), "b1"
    )
    check_report(out, pubs=1, subs=1, per_pub=count)

    columns, rows = read_csv(csv_path)
    assert columns == EXPECTED_COLUMNS
    by_side = {(r["side"], r["client"] == "*"): r for r in rows}
    assert set(by_side) == {("pub", False), ("sub", False), ("pub", True), ("sub", True)} | {
        ("pubsub", True)
    }, rows
    expected_mode = "sync" if mode else "async"
    for row in rows:
        assert row["mode"] == expected_mode
        assert row["msg_bytes"] == "128"
        assert row["errors"] == "0"
        assert float(row["msgs_per_s"]) > 0
    assert by_side[("pub", True)]["msgs"] == str(count)
    assert by_side[("sub", False)]["msgs"] == str(count)
    assert by_side[("pubsub", True)]["msgs"] == str(2 * count)
    total = by_side[("pub", True)]
    p50, p90, p99, top = (float(total[k]) for k in EXPECTED_COLUMNS[-4:])
    assert 0 < p50 <= p90 <= p99 <= top, total


def test_bench_publishers_in_worker_processes(
    nats_server: NatsServer, stan_node: StanNodeFactory, cluster_id: str
) -> None:
    stan_node(debug=False)
    out = run_bench(
        nats_server,
        cluster_id,
        *("-np", "3", "--procs", "2", "-n", "500", "-ns", "2", "-mpa", "100"),
        *("--channel", "b2"),
    )
    check_report(out, pubs=3, subs=2, per_pub=500)


def test_bench_suite_quick_one_node(tmp_path: Path) -> None:
    # What `make bench` runs, shortened: its own nats-server, responder and node.
    csv_path = tmp_path / "suite.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "bench",
            "--suite",
            "--quick",
            "--nodes",
            "1",
            "--no-progress",
            "--csv",
            str(csv_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT * 2,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"suite exited {proc.returncode}\n{out}\n{proc.stderr}"
    rows = re.findall(
        r"^1 node\s+(async|sync)\s+1/([01]).*?([\d.]+)(x raw1 RTT| of raw100)\s+yes$", out, re.M
    )
    assert sorted((m, s, kind) for m, s, _r, kind in rows) == [
        ("async", "0", " of raw100"),
        ("async", "1", " of raw100"),
        ("sync", "0", "x raw1 RTT"),
        ("sync", "1", "x raw1 RTT"),
    ], out
    assert all(float(r) > 0 for _m, _s, r, _k in rows), out
    # Each sync run is compared with raw round trips measured right around it.
    around = re.findall(
        r"^  1 node sync 1/[01]: ([\d.]+ (?:µs|ms)), ([\d.]+ (?:µs|ms));", out, re.M
    )
    assert len(around) == 2, out
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    whens = sorted(r["when"] for r in table if r["kind"] == "raw")
    assert whens == sorted(
        ["before", "before", "after", "after"] + ["around sync 1/0"] * 2 + ["around sync 1/1"] * 2
    ), whens
    runs = [r for r in table if r["kind"] == "run"]
    assert len(runs) == 4 and all(float(r["ratio"]) > 0 for r in runs), runs
