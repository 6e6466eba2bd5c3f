"""The Raft journal survives a kill in the middle of its compaction rewrite."""

from __future__ import annotations

import pickle
from pathlib import Path

from cluster.raft_storage import StanJournal


def _entries(journal: StanJournal) -> list[tuple[bytes, int, int]]:
    return [journal[i] for i in range(len(journal))]


def test_compaction_keeps_the_tail(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    journal = StanJournal(path, sync=True)
    for idx in range(1, 101):
        journal.add(b"cmd%d" % idx, idx, 1)
    journal.deleteEntriesTo(60)
    assert [e[1] for e in _entries(journal)] == list(range(61, 101))
    journal._destroy()
    again = StanJournal(path, sync=False)
    assert [e[1] for e in _entries(again)] == list(range(61, 101))
    assert not (tmp_path / "raft.journal.rewrite").exists()
    again._destroy()


def test_a_rewrite_cut_short_is_finished_at_startup(tmp_path: Path) -> None:
    path = str(tmp_path / "raft.journal")
    journal = StanJournal(path, sync=False)
    for idx in range(1, 101):
        journal.add(b"cmd%d" % idx, idx, 2)
    keep = _entries(journal)[60:]
    # What a kill leaves behind: the side file written, the journal emptied
    # and only partly filled again.
    with open(path + ".rewrite", "wb") as out:
        pickle.dump(keep, out)
    journal.clear()
    for entry in keep[:5]:
        journal.add(*entry)
    journal._destroy()

    reopened = StanJournal(path, sync=False)
    assert _entries(reopened) == keep
    assert not Path(path + ".rewrite").exists()
    reopened._destroy()
