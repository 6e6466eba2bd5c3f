"""Our Raft journal (``StanJournal``) against pysyncobj's own file journal:
same file format both ways, growth of the file, the operations pysyncobj runs
on it (trim after a snapshot, cut after a conflict), commands left on disk
rather than in memory, and a trim killed half way."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj.journal import FileJournal, MemoryJournal

from cluster.raft_journal import StanJournal, create_journal

Entry = tuple[bytes, int, int]


def _entries(journal: object) -> list[Entry]:
    return [journal[i] for i in range(len(journal))]  # type: ignore[index, arg-type]


def _read(path: str) -> list[Entry]:
    """The entries pysyncobj's own journal reads from ``path``."""
    theirs = FileJournal(path)
    try:
        return _entries(theirs)
    finally:
        theirs._destroy()


def _reopened(path: str) -> list[Entry]:
    ours = StanJournal(path)
    try:
        return _entries(ours)
    finally:
        ours._destroy()


def test_records_written_by_ours_read_back_by_pysyncobj(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    ours = StanJournal(path)
    written = [
        (bytes([0]) + bytes([i % 251]) * (i * 37 % 3000), i + 1, 1 + i // 50) for i in range(400)
    ]
    for entry in written:
        ours.add(*entry)
    assert _entries(ours) == written
    ours._destroy()

    assert _read(path) == written
    assert _reopened(path) == written


def test_ours_appends_to_a_journal_pysyncobj_wrote(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    theirs = FileJournal(path)
    first = [(b"\x01", 1, 1), (b"\x00abc", 2, 1)]
    for entry in first:
        theirs.add(*entry)
    theirs._destroy()

    ours = StanJournal(path)
    assert _entries(ours) == first
    more = [(b"\x00" + b"x" * 5000, 3, 2), (b"\x00y", 4, 2)]
    for entry in more:
        ours.add(*entry)
    ours._destroy()
    assert _read(path) == first + more


def test_trim_and_cut_keep_the_format(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    ours = StanJournal(path)
    entries = [(b"\x00" + bytes([i]) * 100, i + 1, 1) for i in range(50)]
    for entry in entries:
        ours.add(*entry)
    ours.deleteEntriesTo(20)  # what a snapshot does: keep entries 20 and later
    ours.deleteEntriesFrom(25)  # what a conflicting leader does: drop the tail
    ours.add(b"\x00new", 46, 2)
    kept = [*entries[20:45], (b"\x00new", 46, 2)]
    assert _entries(ours) == kept
    ours._destroy()
    assert _read(path) == kept
    assert _reopened(path) == kept
    assert not os.path.exists(path + ".compact")


def test_trim_everything_then_add(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    ours = StanJournal(path)
    for i in range(10):
        ours.add(b"\x00" + bytes([i]), i + 1, 1)
    ours.deleteEntriesTo(10)
    assert len(ours) == 0
    ours.add(b"\x00after", 11, 1)
    assert _entries(ours) == [(b"\x00after", 11, 1)]
    ours._destroy()
    assert _reopened(path) == [(b"\x00after", 11, 1)]


def test_slices_read_like_a_list(tmp_path: Path) -> None:
    """pysyncobj slices the journal, looks at the first entries, slices the
    slice into a message it pickles, and compares entries with its snapshot's."""
    ours = StanJournal(str(tmp_path / "raft.journal"))
    entries = [(b"\x00" + bytes([i]) * 10, i + 1, 1 + i // 4) for i in range(12)]
    reference = MemoryJournal()
    for entry in entries:
        ours.add(*entry)
        reference.add(*entry)
    try:
        for start, stop in [(0, None), (3, None), (3, 5), (11, None), (12, None), (5, 2)]:
            view, want = ours[start:stop], reference[start:stop]
            assert len(view) == len(want)
            assert list(view) == want
            assert view == want
            if want:
                assert view[0] == want[0] and view[-1] == want[-1]
                assert view[: len(want) // 2 + 1] == want[: len(want) // 2 + 1]
                assert list(reversed(view[1:])) == list(reversed(want[1:]))
            assert pickle.loads(pickle.dumps(view)) == want
        assert ours[-1] == entries[-1] and ours[0] == entries[0]
        with pytest.raises(IndexError):
            ours[12]
        with pytest.raises(IndexError):
            ours[3:5][2]
    finally:
        ours._destroy()


def test_commands_stay_on_disk(tmp_path: Path) -> None:
    """Thousands of large commands added: the journal's own memory stays small."""
    ours = StanJournal(str(tmp_path / "raft.journal"))
    try:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            ours.add(b"\x00" + os.urandom(8) * 2000, i + 1, 1)  # 16 kB each, 32 MB in all
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert held < 1 << 20, held
        assert ours.used_bytes() > 32_000_000
        assert ours[1234][1] == 1235 and len(ours[1234][0]) == 16_001
    finally:
        ours._destroy()


_KILLED_IN_TRIM = textwrap.dedent(
    """
    import os, signal, sys
    from cluster.raft_journal import StanJournal
    import cluster.raft_journal as rj

    path, when = sys.argv[1], sys.argv[2]
    ours = StanJournal(path)
    for i in range(200):
        ours.add(b"\\x00" + bytes([i % 256]) * 300, i + 1, 1)
    ours.flush()
    real_write, real_replace = rj.StanJournal._write_new_file, rj.os.replace

    def write(target, records):
        if when == "writing":
            with open(target, "wb") as out:  # half a new file, then killed
                out.write(bytes(records[: len(records) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(target, records)

    def replace(src, dst):
        real_replace(src, dst)
        if when == "renamed":
            os.kill(os.getpid(), signal.SIGKILL)

    rj.StanJournal._write_new_file = staticmethod(write)
    rj.os.replace = replace
    ours.deleteEntriesTo(150)
    """
)


@pytest.mark.parametrize("when", ["writing", "renamed"])
def test_a_trim_killed_half_way_leaves_a_whole_journal(tmp_path: Path, when: str) -> None:
    path = str(tmp_path / "raft.journal")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_TRIM, path, when],
        cwd=root,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    entries = [(b"\x00" + bytes([i % 256]) * 300, i + 1, 1) for i in range(200)]
    want = entries if when == "writing" else entries[150:]
    assert _reopened(path) == want
    assert not os.path.exists(path + ".compact")
    assert _read(path) == want


def test_a_record_cut_short_ends_the_journal(tmp_path: Path) -> None:
    """A header that points past what was written (a lost tail) keeps the
    whole records before the cut."""
    path = str(tmp_path / "raft.journal")
    ours = StanJournal(path)
    for i in range(5):
        ours.add(b"\x00" + bytes([i]) * 50, i + 1, 1)
    ours._destroy()
    data = bytearray(Path(path).read_bytes())
    end = int.from_bytes(data[36:40], "little")
    data[end - 30 : end] = b"\xff" * 30  # the last record's tail overwritten
    Path(path).write_bytes(bytes(data))
    kept = _reopened(path)
    assert kept == [(b"\x00" + bytes([i]) * 50, i + 1, 1) for i in range(4)]


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=70_000), min_size=1, max_size=30))
def test_any_record_sizes_round_trip(tmp_path_factory: object, sizes: list[int]) -> None:
    path = str(tmp_path_factory.mktemp("journal") / "raft.journal")  # type: ignore[attr-defined]
    ours = StanJournal(path, sync=True)
    written = [(b"\x00" + b"z" * size, i + 1, 3) for i, size in enumerate(sizes)]
    for entry in written:
        ours.add(*entry)
    ours._destroy()
    assert _read(path) == written


def test_reserve_grows_the_file_ahead(tmp_path: Path) -> None:
    ours = StanJournal(str(tmp_path / "raft.journal"))
    try:
        size = ours.file_size()
        ours.reserve(size * 4)
        assert ours.file_size() >= size * 4
        assert os.path.getsize(tmp_path / "raft.journal") == ours.file_size()
        ours.add(b"\x00x", 1, 1)
        assert _entries(ours) == [(b"\x00x", 1, 1)]
    finally:
        ours._destroy()


def test_create_journal_picks_the_kind(tmp_path: Path) -> None:
    plain = create_journal(False)(str(tmp_path / "a.journal"))
    memory = create_journal(True)(None)
    assert type(plain) is StanJournal
    assert isinstance(memory, MemoryJournal)
    plain._destroy()


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(min_value=0, max_value=3000)),
        st.tuples(st.just("cut"), st.integers(min_value=0, max_value=6)),
        st.tuples(st.just("trim"), st.integers(min_value=0, max_value=6)),
        st.tuples(st.just("clear"), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_any_sequence_of_operations_matches_pysyncobj_memory_journal(
    tmp_path_factory: object, ops: list[tuple[str, int]]
) -> None:
    """Adds, cuts, trims, clears and reopenings in any order: the entries, the
    first and the last read the same as pysyncobj's in-memory journal."""
    path = str(tmp_path_factory.mktemp("journal") / "raft.journal")  # type: ignore[attr-defined]
    ours, model = StanJournal(path), MemoryJournal()
    idx = 0
    try:
        for op, arg in ops:
            if op == "add":
                idx += 1
                entry = (b"\x00" + bytes([idx % 256]) * arg, idx, 1 + idx // 7)
                ours.add(*entry)
                model.add(*entry)
            elif op == "cut" and arg < len(model):
                ours.deleteEntriesFrom(arg)
                model.deleteEntriesFrom(arg)
            elif op == "trim" and arg < len(model):
                ours.deleteEntriesTo(arg)
                model.deleteEntriesTo(arg)
            elif op == "clear":
                ours.clear()
                model.clear()
            elif op == "reopen":
                ours._destroy()
                ours = StanJournal(path)
            assert len(ours) == len(model)
            if len(model):
                assert ours[0] == model[0] and ours[-1] == model[-1]
        assert _entries(ours) == _entries(model)
    finally:
        ours._destroy()
    assert _read(path) == _entries(model)
