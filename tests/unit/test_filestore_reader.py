"""The reference FILE store reader (store/filestore_reader.py).

Against the real store written by nats-streaming-server (the shared fixture,
every item of its expected.json), against damaged copies of it, and against
synthetic stores written by tests/helpers/filestore_writer.py (many slices,
deleted slices, both compaction shapes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from store.filestore_reader import (
    REFERENCE_MSG_OVERHEAD,
    FileStoreReader,
    Report,
    SubState,
    decide_subscription,
)
from tests.helpers.filestore_writer import (
    SUB_ACK,
    SUB_DELETE,
    SUB_NEW,
    SUB_SENT,
    SUB_UPDATE,
    ClientSpec,
    FileStoreWriter,
    SubSpec,
    compacted_subs,
    record,
    sub_update_payload,
    write_framed,
)
from tests.helpers.reference_fixture import FIXTURE, copy_store, fingerprint, load_expected

#: expected.json's names of subs.dat record types -> the reader's.
RECORD_NAMES = {"new(1)": "new", "update(2)": "update", "ack(4)": "ack", "msg_sent(5)": "sent"}


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return load_expected()


@pytest.fixture
def store_copy(tmp_path: Path, expected: dict[str, Any]) -> Path:
    """A writable copy of the fixture store (the fixture itself is never touched)."""
    return copy_store(tmp_path / "store")


def read_all(root: Path) -> tuple[Report, dict[str, Any]]:
    """Everything the reader gets from a store, as plain values."""
    reader = FileStoreReader(root)
    report = Report()
    info = reader.server_info(report)
    clients = reader.clients(report)
    channels: dict[str, Any] = {}
    for name in reader.channel_names(report):
        summary = reader.summarize(name, report)
        msgs = list(reader.messages(name, report))
        channels[name] = {
            "summary": summary,
            "msgs": msgs,
            "subs": reader.subscriptions(name, report),
        }
    return report, {"info": info, "clients": clients, "channels": channels}


# ---------------------------------------------------------------------------
# The reference store
# ---------------------------------------------------------------------------


def test_fixture_matches_every_item_of_expected_json(expected: dict[str, Any]) -> None:
    before = fingerprint(FIXTURE / "store")
    report, got = read_all(FIXTURE / "store")
    assert fingerprint(FIXTURE / "store") == before, "reading changed the fixture"
    assert report.problems == [] and report.notes == []

    known_top = {
        "_note",
        "cluster_id",
        "server_info",
        "totals",
        "clients",
        "clients_dat_records_in_order",
        "closed_clients_not_to_import",
        "channels",
        "subscription_interpretation",
    }
    assert set(expected) == known_top, "expected.json gained items this test does not check"

    info = got["info"]
    assert info.cluster_id == expected["cluster_id"]
    assert {
        "cluster_id": info.cluster_id,
        "discovery": info.discovery,
        "publish": info.publish,
        "subscribe": info.subscribe,
        "unsubscribe": info.unsubscribe,
        "close": info.close,
        "sub_close": info.sub_close,
        "acks_subs": info.acks_subs,
        "node_id": info.node_id,
    } == expected["server_info"]

    clients = got["clients"]
    assert [
        {
            "id": c.client_id,
            "hb_inbox": c.hb_inbox,
            "conn_id_hex": c.conn_id.hex(),
            "protocol": c.protocol,
            "ping_interval": c.ping_interval,
            "ping_max_out": c.ping_max_out,
        }
        for c in clients.live.values()
    ] == expected["clients"]
    assert [{"type": t, "id": i} for t, i in clients.records] == expected[
        "clients_dat_records_in_order"
    ]
    for gone in expected["closed_clients_not_to_import"]:
        assert gone not in clients.live

    registered = set(clients.live)
    totals = expected["totals"]
    assert set(totals) == {
        "channels",
        "clients",
        "subscriptions",
        "msgs",
        "bytes_as_reported_by_monitoring",
        "bytes_rule",
    }
    channels = got["channels"]
    assert len(channels) == totals["channels"]
    assert len(clients.live) == totals["clients"]
    assert sum(len(ch["subs"].subs) for ch in channels.values()) == totals["subscriptions"]
    assert sum(ch["summary"].msgs for ch in channels.values()) == totals["msgs"]
    assert totals["bytes_rule"] == "sum over messages of (MsgProto size + 8 + 32)"
    assert REFERENCE_MSG_OVERHEAD == 8 + 32
    assert (
        sum(ch["summary"].reference_bytes for ch in channels.values())
        == totals["bytes_as_reported_by_monitoring"]
    )

    assert sorted(channels) == sorted(ch["name"] for ch in expected["channels"])
    for exp in expected["channels"]:
        check_channel(exp, channels[exp["name"]], registered)

    interp = expected["subscription_interpretation"]
    assert set(interp) == {"orders/1", "events/1"}
    orders_sub = channels["orders"]["subs"].subs[1]
    d = decide_subscription("orders", orders_sub, registered)
    assert (d.kind, d.keep, d.offline) == ("durable", True, False)
    assert "plain durable 'orders-durable' of live client 'orders-worker'" in interp["orders/1"]
    events_sub = channels["events"]["subs"].subs[1]
    d = decide_subscription("events", events_sub, registered)
    assert (d.kind, d.keep, d.offline) == ("durable queue", True, True)
    assert "shadow/offline" in interp["events/1"]


def check_channel(exp: dict[str, Any], got: dict[str, Any], registered: set[str]) -> None:
    assert set(exp) == {
        "name",
        "first_seq",
        "last_seq",
        "msgs",
        "bytes",
        "files",
        "data_rule",
        "message_samples",
        "subs_dat_record_type_counts",
        "subscriptions",
    }
    name = exp["name"]
    s = got["summary"]
    assert (s.first_seq, s.last_seq, s.highest_seq, s.msgs, s.reference_bytes) == (
        exp["first_seq"],
        exp["last_seq"],
        exp["last_seq"],
        exp["msgs"],
        exp["bytes"],
    )
    assert sorted(os.listdir(FIXTURE / "store" / name)) == sorted(exp["files"])
    # data_rule: "message seq N has subject '<name>' and data '<prefix>' + str(N), empty reply"
    prefix = exp["data_rule"].split("data '")[1].split("'")[0]
    assert exp["data_rule"] == (
        f"message seq N has subject '{name}' and data '{prefix}' + str(N), empty reply"
    )
    msgs = got["msgs"]
    assert [m.seq for m in msgs] == list(range(exp["first_seq"], exp["last_seq"] + 1))
    for m in msgs:
        assert (m.subject, m.reply, m.data) == (name, "", f"{prefix}{m.seq}".encode())
    stamps = [m.timestamp for m in msgs]
    assert stamps == sorted(stamps)
    by_seq = {m.seq: m for m in msgs}
    for sample in exp["message_samples"]:
        m = by_seq[sample["seq"]]
        assert {
            "seq": m.seq,
            "subject": m.subject,
            "reply": m.reply,
            "data": m.data.decode(),
            "timestamp": m.timestamp,
            "dat_offset": m.offset,
            "size": m.size,
        } == sample
    subs = got["subs"]
    assert subs.record_counts == {
        RECORD_NAMES[k]: v for k, v in exp["subs_dat_record_type_counts"].items()
    }
    assert len(subs.subs) == len(exp["subscriptions"])
    for es in exp["subscriptions"]:
        sub = subs.subs[es["id"]]
        assert {
            "id": sub.sub_id,
            "client_id": sub.client_id,
            "queue_group": sub.qgroup,
            "inbox": sub.inbox,
            "ack_inbox": sub.ack_inbox,
            "max_in_flight": sub.max_inflight,
            "ack_wait_secs": sub.ack_wait,
            "durable_name": sub.durable_name,
            "last_sent": sub.last_sent,
            "is_durable": sub.is_durable,
            "is_closed": sub.is_closed,
            "pending": sorted(sub.pending),
        } == {k: v for k, v in es.items() if k != "monitoring"}
        d = decide_subscription(name, sub, registered)
        mon = es["monitoring"]
        assert d.keep
        assert {
            "client_id": sub.client_id,
            "queue_name": sub.qgroup or None,
            "durable_name": sub.durable_name or None,
            "is_durable": sub.is_durable,
            "is_offline": d.offline,
            "max_inflight": sub.max_inflight,
            "ack_wait": sub.ack_wait,
            "last_sent": sub.last_sent,
            "pending_count": len(sub.pending),
        } == mon


def test_reader_needs_no_write_access(tmp_path: Path, store_copy: Path) -> None:
    for p in [*store_copy.rglob("*"), store_copy]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        before = fingerprint(store_copy)
        report, got = read_all(store_copy)
        assert not report.problems
        assert got["channels"]["orders"]["summary"].msgs == 200
        assert fingerprint(store_copy) == before
        assert sorted(p.name for p in store_copy.iterdir()) == sorted(
            p.name for p in (FIXTURE / "store").iterdir()
        )
    finally:
        for p in [store_copy, *store_copy.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_writer_reproduces_the_reference_bytes(tmp_path: Path) -> None:
    """The test writer is checked against the real store, byte for byte."""
    reader = FileStoreReader(FIXTURE / "store")
    report = Report()
    w = FileStoreWriter(tmp_path / "copy")
    w.server()
    assert (tmp_path / "copy" / "server.dat").read_bytes() == (
        FIXTURE / "store" / "server.dat"
    ).read_bytes()
    for name in ("orders", "events", "tiny"):
        with w.channel(name) as ch:
            for m in reader.messages(name, report):
                ch.append(m.seq, m.data, m.timestamp, m.reply)
        for f in ("msgs.1.dat", "msgs.1.idx"):
            assert (tmp_path / "copy" / name / f).read_bytes() == (
                FIXTURE / "store" / name / f
            ).read_bytes(), f"{name}/{f}"


# ---------------------------------------------------------------------------
# Damage
# ---------------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_payload_byte_skips_one_message(store_copy: Path) -> None:
    dat = store_copy / "orders" / "msgs.1.dat"
    flip(dat, 3796 + 8 + 5)  # inside message 101's payload
    report, got = read_all(store_copy)
    assert len(report.problems) == 1
    p = report.problems[0]
    assert (p.path, p.offset) == (str(dat), 3796)
    assert "CRC mismatch" in p.reason and "sequence 101" in p.reason
    assert f"{dat}: offset 3796: CRC mismatch" in str(p)
    s = got["channels"]["orders"]["summary"]
    assert (s.msgs, s.first_seq, s.last_seq, s.lost_seqs) == (199, 1, 200, [101])
    assert [m.seq for m in got["channels"]["orders"]["msgs"]] == [
        *range(1, 101),
        *range(102, 201),
    ]
    assert got["channels"]["events"]["summary"].msgs == 50


def test_damaged_length_resumes_at_the_next_indexed_record(store_copy: Path) -> None:
    dat = store_copy / "orders" / "msgs.1.dat"
    data = bytearray(dat.read_bytes())
    data[3796 + 1] = 0x7F  # message 101's length becomes huge
    dat.write_bytes(bytes(data))
    report, got = read_all(store_copy)
    assert [(p.offset, "sequence 101" in p.reason) for p in report.problems] == [(3796, True)]
    assert "reading on at offset 3835" in report.problems[0].action
    assert [m.seq for m in got["channels"]["orders"]["msgs"]] == [
        *range(1, 101),
        *range(102, 201),
    ]


def test_truncated_slice(store_copy: Path) -> None:
    dat = store_copy / "orders" / "msgs.1.dat"
    with open(dat, "r+b") as f:
        f.truncate(7729 + 20)  # the last record (message 200) is cut
    report, got = read_all(store_copy)
    assert len(report.problems) == 1
    p = report.problems[0]
    assert (p.path, p.offset) == (str(dat), 7729)
    assert "runs past the end of the file" in p.reason
    s = got["channels"]["orders"]["summary"]
    # The index still names message 200, so the channel's last sequence is kept.
    assert (s.msgs, s.last_seq, s.highest_seq, s.lost_seqs) == (199, 199, 200, [200])


def test_truncated_without_index_loses_the_rest_of_the_slice(store_copy: Path) -> None:
    (store_copy / "orders" / "msgs.1.idx").unlink()
    dat = store_copy / "orders" / "msgs.1.dat"
    with open(dat, "r+b") as f:
        f.truncate(7729 + 3)
    report, got = read_all(store_copy)
    assert [(p.offset, p.action) for p in report.problems] == [(7729, "rest of the slice skipped")]
    assert "record header cut short" in report.problems[0].reason
    assert [n.reason for n in report.notes] == ["index missing"]
    s = got["channels"]["orders"]["summary"]
    assert (s.msgs, s.last_seq, s.highest_seq) == (199, 199, 199)


def record_offsets(path: Path) -> list[int]:
    """Offsets of the records of a typed file (header word: type << 24 | length)."""
    data = path.read_bytes()
    offsets, off = [], 4
    while off < len(data):
        offsets.append(off)
        off += 8 + (int.from_bytes(data[off : off + 4], "little") & 0xFFFFFF)
    return offsets


def test_damaged_subs_and_clients_records(store_copy: Path) -> None:
    subs = store_copy / "orders" / "subs.dat"
    flip(subs, 4 + 8 + 3)  # inside the "new" record
    clients = store_copy / "clients.dat"
    last = record_offsets(clients)[-1]  # the deletion of events-worker
    flip(clients, last + 8 + 2)
    report, got = read_all(store_copy)
    assert sorted((Path(p.path).name, p.offset) for p in report.problems) == [
        ("clients.dat", last),
        ("subs.dat", 4),
    ]
    assert all("CRC mismatch" in p.reason for p in report.problems)
    # Without its "new" record, sent/ack records of sub 1 have nothing to apply to.
    assert got["channels"]["orders"]["subs"].subs == {}
    assert sorted(got["clients"].live) == ["events-worker", "orders-worker"]


def test_truncated_subs_dat(store_copy: Path) -> None:
    subs = store_copy / "events" / "subs.dat"
    size = subs.stat().st_size
    with open(subs, "r+b") as f:
        f.truncate(size - 3)
    report, got = read_all(store_copy)
    assert len(report.problems) == 1 and "runs past the end" in report.problems[0].reason
    assert report.problems[0].path == str(subs)
    sub = got["channels"]["events"]["subs"].subs[1]
    assert sub.client_id == "events-worker"  # the closing "update" record was lost


def test_damaged_server_record(store_copy: Path) -> None:
    flip(store_copy / "server.dat", 20)
    reader = FileStoreReader(store_copy)
    report = Report()
    assert reader.server_info(report) is None
    assert [(Path(p.path).name, p.offset) for p in report.problems] == [("server.dat", 4)]


def test_bad_version_header(store_copy: Path) -> None:
    dat = store_copy / "tiny" / "msgs.1.dat"
    data = bytearray(dat.read_bytes())
    data[0] = 2
    dat.write_bytes(bytes(data))
    report, got = read_all(store_copy)
    assert [(p.path, p.offset, p.reason) for p in report.problems] == [
        (str(dat), 0, "unsupported file version 2")
    ]
    assert got["channels"]["tiny"]["summary"].msgs == 0


def test_findings_are_reported_once() -> None:
    report = Report()
    report.problem("a", 1, "x")
    report.problem("a", 1, "x")
    report.note("a", 2, "y")
    report.note("a", 2, "y")
    assert len(report.problems) == 1 and len(report.notes) == 1


# ---------------------------------------------------------------------------
# Synthetic stores
# ---------------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000


def test_many_slices_first_ones_deleted(tmp_path: Path) -> None:
    w = FileStoreWriter(tmp_path)
    w.server()
    w.clients([ClientSpec("a", "hb.a")])
    with w.channel("foo.bar", slice_max_msgs=100, first_slice=4) as ch:
        for seq in range(301, 1001):
            ch.append(seq, b"m%d" % seq, T0 + seq, reply="r" if seq % 2 else "")
        ch.empty_slice()
    # Leftovers the reference may leave: archived slices and temp files.
    (tmp_path / "foo.bar" / "msgs.3.dat.bak").write_bytes(b"junk")
    (tmp_path / "foo.bar" / "msgs.3.idx.bak").write_bytes(b"junk")
    (tmp_path / "foo.bar" / "subs.dat.tmp").write_bytes(b"junk")
    (tmp_path / "not-a-channel.txt").write_text("x")
    report, got = read_all(tmp_path)
    assert report.problems == [] and report.notes == []
    assert list(got["channels"]) == ["foo.bar"]
    s = got["channels"]["foo.bar"]["summary"]
    assert (s.slices, s.msgs, s.first_seq, s.last_seq) == (8, 700, 301, 1000)
    msgs = got["channels"]["foo.bar"]["msgs"]
    assert [m.seq for m in msgs] == list(range(301, 1001))
    assert msgs[0].reply == "r" and msgs[1].reply == ""
    reader = FileStoreReader(tmp_path)
    resumed = [m.seq for m in reader.messages("foo.bar", Report(), after_seq=950)]
    assert resumed == list(range(951, 1001))


def test_slices_in_numeric_order(tmp_path: Path) -> None:
    w = FileStoreWriter(tmp_path)
    w.server()
    with w.channel("c", slice_max_msgs=1, first_slice=8) as ch:
        for seq in range(1, 5):  # slices 8, 9, 10, 11: "10" sorts before "8" as text
            ch.append(seq, b"x", T0 + seq)
    reader = FileStoreReader(tmp_path)
    report = Report()
    assert [sl.number for sl in reader.slices("c", report)] == [8, 9, 10, 11]
    assert [m.seq for m in reader.messages("c", report)] == [1, 2, 3, 4]


def test_subs_log_replay_uncompacted(tmp_path: Path) -> None:
    w = FileStoreWriter(tmp_path)
    w.server()
    durable = SubSpec(1, "a", inbox="in1", ack_inbox="ack1", durable_name="d", is_durable=True)
    plain = SubSpec(2, "a", inbox="in2", ack_inbox="ack2")
    gone = SubSpec(7, "a", inbox="in7", ack_inbox="ack7")
    with w.channel("c") as ch:
        ch.append(1, b"x", T0)
        ch.subs(
            [
                (SUB_NEW, durable.encode()),
                (SUB_NEW, plain.encode()),
                (SUB_NEW, gone.encode()),
                *[(SUB_SENT, sub_update_payload(1, q)) for q in (1, 2, 3, 3)],
                (SUB_ACK, sub_update_payload(1, 2)),
                (SUB_SENT, sub_update_payload(2, 9)),
                (SUB_ACK, sub_update_payload(99, 1)),  # unknown ID: ignored
                (SUB_SENT, sub_update_payload(99, 1)),
                (SUB_DELETE, sub_update_payload(7, 0)),
                # A closed durable: update keeps the pending set (and LastSent as given).
                (
                    SUB_UPDATE,
                    SubSpec(
                        1,
                        "a",
                        inbox="in1",
                        ack_inbox="ack1",
                        durable_name="d",
                        last_sent=3,
                        is_durable=True,
                        is_closed=True,
                    ).encode(),
                ),
                # An update for an unknown ID creates it.
                (SUB_UPDATE, SubSpec(5, "b", inbox="in5", ack_inbox="ack5").encode()),
            ]
        )
    reader = FileStoreReader(tmp_path)
    report = Report()
    subs = reader.subscriptions("c", report)
    assert report.problems == []
    assert sorted(subs.subs) == [1, 2, 5]
    assert subs.max_id == 99
    s1 = subs.subs[1]
    assert (s1.pending, s1.last_sent, s1.is_closed) == ({1, 3}, 3, True)
    assert (subs.subs[2].pending, subs.subs[2].last_sent) == ({9}, 9)
    assert subs.subs[5].pending == set()
    assert subs.record_counts == {"new": 3, "sent": 6, "ack": 2, "delete": 1, "update": 2}


def test_subs_compacted_shape_and_unknown_type(tmp_path: Path) -> None:
    w = FileStoreWriter(tmp_path)
    w.server()
    spec = SubSpec(3, "a", qgroup="q", inbox="in", ack_inbox="ack", last_sent=40)
    with w.channel("c") as ch:
        ch.append(1, b"x", T0)
    write_framed(
        tmp_path / "c" / "subs.dat",
        [record(p, t) for t, p in compacted_subs([(spec, [38, 40])])] + [record(b"\x08\x01", 9)],
    )
    report = Report()
    subs = FileStoreReader(tmp_path).subscriptions("c", report)
    assert subs.subs[3].pending == {38, 40} and subs.subs[3].qgroup == "q"
    assert [p.reason for p in report.problems] == ["unknown record type 9"]


def test_end_of_data_marker_and_index_disagreement(tmp_path: Path) -> None:
    w = FileStoreWriter(tmp_path)
    w.server()
    w.clients([])
    with w.channel("c") as ch:
        for seq in (1, 2, 3):
            ch.append(seq, b"x", T0 + seq)
    dat = tmp_path / "c" / "msgs.1.dat"
    with open(dat, "ab") as f:
        f.write(b"\x00" * 64)  # zero header: end of data (and zero padding)
    idx = tmp_path / "c" / "msgs.1.idx"
    raw = bytearray(idx.read_bytes())
    raw[4 + 32 + 27] ^= 1  # entry of message 2: CRC no longer matches
    idx.write_bytes(bytes(raw))
    report, got = read_all(tmp_path)
    assert report.problems == []
    assert [n.reason for n in report.notes] == [
        "index entry CRC mismatch",
        "1 record(s) of " + str(dat) + " have no index entry",
    ]
    assert [m.seq for m in got["channels"]["c"]["msgs"]] == [1, 2, 3]


def test_data_after_an_end_of_data_marker(store_copy: Path) -> None:
    dat = store_copy / "orders" / "msgs.1.dat"
    data = bytearray(dat.read_bytes())
    data[3796 : 3796 + 8] = bytes(8)  # message 101's header zeroed: the data ends there
    dat.write_bytes(bytes(data))
    report, got = read_all(store_copy)
    assert [(p.path, p.offset) for p in report.problems] == [(str(dat), 3796)]
    assert "end-of-data marker followed by" in report.problems[0].reason
    assert got["channels"]["orders"]["summary"].msgs == 100


def test_sequence_going_backwards_is_skipped(tmp_path: Path) -> None:
    w = FileStoreWriter(tmp_path)
    w.server()
    with w.channel("c", index=False) as ch:
        for seq in (1, 2, 2, 3):
            ch.append(seq, b"x", T0 + seq)
    report = Report()
    seqs = [m.seq for m in FileStoreReader(tmp_path).messages("c", report)]
    assert seqs == [1, 2, 3]
    assert [p.reason for p in report.problems] == ["sequence 2 is not above the previous one (2)"]


def test_server_without_record(tmp_path: Path) -> None:
    write_framed(tmp_path / "server.dat", [])
    report = Report()
    assert FileStoreReader(tmp_path).server_info(report) is None
    assert "the store holds no state" in report.problems[0].reason


# ---------------------------------------------------------------------------
# Recovery rules (FILESTORE.md §6.1)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "keep", "offline"),
    [
        (SubState(1, "a", durable_name="d", is_durable=True), True, False),
        (SubState(1, "a", durable_name="d", is_durable=True, is_closed=True), True, True),
        (SubState(1, "gone", durable_name="d", is_durable=True), True, True),
        (SubState(1, "", qgroup="d:q", is_durable=True), True, True),
        (SubState(1, "a", qgroup="d:q", is_durable=True), True, False),
        (SubState(1, "gone", qgroup="d:q", is_durable=True), False, False),
        (SubState(1, "a", qgroup="q"), True, False),
        (SubState(1, "gone", qgroup="q"), False, False),
        (SubState(1, "a"), True, False),
        (SubState(1, "gone"), False, False),
    ],
)
def test_decide_subscription(sub: SubState, keep: bool, offline: bool) -> None:
    d = decide_subscription("c", sub, {"a"})
    assert (d.keep, d.offline) == (keep, offline)
    assert bool(d.reason) == (not keep or offline)
