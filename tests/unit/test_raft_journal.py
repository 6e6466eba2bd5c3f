"""Our Raft journal (``StanJournal``) against pysyncobj's own file journal:
same file format both ways, growth past the mapped size, and the operations
pysyncobj runs on it (trim after a snapshot, cut after a conflict)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj.journal import FileJournal

from cluster.raft_storage import StanJournal, SyncedFileJournal, create_journal


def _entries(journal: FileJournal) -> list[tuple[bytes, int, int]]:
    return [journal[i] for i in range(len(journal))]


def _read(path: str) -> list[tuple[bytes, int, int]]:
    """The entries pysyncobj's own journal reads from ``path``."""
    theirs = FileJournal(path)
    try:
        return _entries(theirs)
    finally:
        theirs._destroy()


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


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=70_000), min_size=1, max_size=30))
def test_any_record_sizes_round_trip(tmp_path_factory: object, sizes: list[int]) -> None:
    path = str(tmp_path_factory.mktemp("journal") / "raft.journal")  # type: ignore[attr-defined]
    ours = SyncedFileJournal(path)
    written = [(b"\x00" + b"z" * size, i + 1, 3) for i, size in enumerate(sizes)]
    for entry in written:
        ours.add(*entry)
    ours._destroy()
    assert _read(path) == written


def test_create_journal_picks_the_kind(tmp_path: Path) -> None:
    plain = create_journal(False)(str(tmp_path / "a.journal"))
    synced = create_journal(True)(str(tmp_path / "b.journal"))
    memory = create_journal(True)(None)
    assert type(plain) is StanJournal
    assert type(synced) is SyncedFileJournal
    assert not isinstance(memory, FileJournal)
    plain._destroy()
    synced._destroy()
