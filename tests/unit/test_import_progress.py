"""Progress display of the importer: a redrawn bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from cluster.import_progress import Progress, human_bytes, human_rate


def test_bar_is_redrawn_on_one_line() -> None:
    out = io.StringIO()
    p = Progress(out, "bar")
    p.begin("import", "orders", 200, 6000)
    p.add(100, 3000)
    p.end()
    text = out.getvalue()
    assert text.startswith("\r\x1b[K") and text.endswith("\n")
    assert text.count("\n") == 1
    last = text.rsplit("\r\x1b[K", 1)[1]
    assert "import orders [############------------]  50.0% 100/200 msgs 3.0 KB" in last
    assert "msg/s" in last and "B/s" in last


def test_lines_every_interval_and_at_the_end() -> None:
    out = io.StringIO()
    p = Progress(out, "lines", interval=0.0)
    p.begin("check", "events", 0, 100)
    p.add(10, 50)
    p.add(10, 50)
    p.end()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("check events: 50.0%, 10 msgs, 50 B, ")
    assert lines[1].startswith("check events: 100.0%, 20 msgs, 100 B, ")
    assert lines[2].startswith("check events: done, 20 msgs, 100 B, ")
    assert "\r" not in out.getvalue()


def test_off_writes_nothing() -> None:
    out = io.StringIO()
    p = Progress(out, "off")
    p.begin("import", "x", 1, 1)
    p.add(1, 1)
    p.end()
    assert out.getvalue() == ""


def test_human_units() -> None:
    assert (human_bytes(999), human_bytes(1500), human_bytes(2_500_000)) == (
        "999 B",
        "1.5 KB",
        "2.5 MB",
    )
    assert (human_rate(12), human_rate(1500), human_rate(2_500_000)) == ("12", "1.5k", "2.50M")
