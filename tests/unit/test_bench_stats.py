"""The bench's figures: percentiles, totals, completeness, report and CSV shape."""

from __future__ import annotations

import csv
import io

from cluster.bench_stats import (
    CSV_COLUMNS,
    Latency,
    RunConfig,
    RunResult,
    Sample,
    aggregate,
    csv_rows,
    format_report,
    human_duration,
    percentile,
    to_csv,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([], 50) == 0.0


def test_latency_of_unsorted_values() -> None:
    lat = Latency.of([0.003, 0.001, 0.002, 0.010])
    assert (lat.count, lat.p50, lat.max) == (4, 0.002, 0.010)
    assert Latency.of([]) == Latency()


def test_aggregate_spans_first_start_to_last_end() -> None:
    a = Sample("pub", "a", 100, 128, start=1.0, end=2.0)
    b = Sample("pub", "b", 300, 128, start=1.5, end=3.0, errors=2)
    total = aggregate("pub", [a, b], 128)
    assert (total.msgs, total.duration, total.errors) == (400, 2.0, 2)
    assert total.msgs_per_s == 200.0
    assert total.bytes_per_s == 200.0 * 128
    assert aggregate("sub", [], 128).msgs_per_s == 0.0


def _result(received: list[int], errors: int = 0) -> RunResult:
    cfg = RunConfig(num_pubs=2, num_subs=len(received), num_msgs=10)
    pubs = [Sample("pub", f"p{i}", 10, 128, 0.0, 1.0, errors) for i in (1, 2)]
    subs = [Sample("sub", f"s{i}", n, 128, 0.0, 2.0) for i, n in enumerate(received, 1)]
    return RunResult(cfg, pubs, subs, Latency.of([0.001] * 20), received)


def test_complete_needs_every_ack_and_every_message() -> None:
    assert _result([20, 20]).complete
    assert not _result([20, 19]).complete
    assert not _result([20], errors=1).complete


def test_report_and_csv_shape() -> None:
    result = _result([20])
    text = format_report(result)
    assert "Pub stats: 20 msgs/sec" in text
    assert "Subscriber [1] received 20/20 msgs" in text
    assert "Result: complete" in text
    rows = list(csv.DictReader(io.StringIO(to_csv(CSV_COLUMNS, csv_rows(result, "7")))))
    assert [(r["side"], r["client"]) for r in rows] == [
        ("pub", "p1"),
        ("pub", "p2"),
        ("sub", "s1"),
        ("pub", "*"),
        ("sub", "*"),
        ("pubsub", "*"),
    ]
    assert rows[3]["lat_p50_us"] == "1000.0"
    assert rows[0]["lat_p50_us"] == ""


def test_human_duration_units() -> None:
    assert human_duration(0.000250) == "250 µs"
    assert human_duration(0.0125) == "12.50 ms"
    assert human_duration(2.0) == "2.00 s"
