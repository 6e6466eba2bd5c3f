"""Node state: the storage contract (``store.api``), its two implementations,
and store limits (``store.limits``).

``LmdbStore`` is imported lazily, so that pure modules importing ``store``
for the records and the contract do not pull in ``lmdb``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store.api import (
    ChannelLimits,
    ChannelRecord,
    ClientRecord,
    ServerInfo,
    SnapshotError,
    StorageError,
    Store,
    StoredMsg,
    StoreError,
    SubRecord,
    WriteTxn,
)
from store.limits import PerChannelLimits, StoreLimits
from store.memory_store import MemoryStore

if TYPE_CHECKING:
    from store.lmdb_store import LmdbStore

__all__ = [
    "ChannelLimits",
    "ChannelRecord",
    "ClientRecord",
    "LmdbStore",
    "MemoryStore",
    "PerChannelLimits",
    "ServerInfo",
    "Store",
    "SnapshotError",
    "StorageError",
    "StoreError",
    "StoreLimits",
    "StoredMsg",
    "SubRecord",
    "WriteTxn",
    "open_store",
]

#: Largest an LMDB store may grow (1 TiB): address space only until used.
DEFAULT_MAP_SIZE = 1 << 40

#: Store kinds accepted by ``open_store`` (the ``store`` config values).
KINDS = ("LMDB", "MEMORY")


def open_store(
    kind: str,
    path: str | None,
    *,
    sync: bool = True,
    journaled: bool = False,
    map_size: int = DEFAULT_MAP_SIZE,
) -> Store:
    """Open a store of ``kind`` (``"LMDB"`` or ``"MEMORY"``, any case).

    ``path`` is the LMDB directory (created with mode 0700 if missing) and is
    ignored for MEMORY. ``sync`` makes every commit durable (fsync);
    ``journaled`` says a synced journal in front of the store replays what a
    crash undoes, so a synced commit may leave its last step (the meta page)
    to the next one: one fsync per commit instead of two;
    ``map_size`` is the most the LMDB file may grow to (bytes): the address
    space is reserved up front, the file grows as data is written.
    """
    k = kind.upper()
    if k == "MEMORY":
        return MemoryStore()
    if k == "LMDB":
        if not path:
            raise ValueError("the LMDB store needs a path")
        from store.lmdb_store import LmdbStore

        return LmdbStore(path, sync=sync, journaled=journaled, map_size=map_size)
    raise ValueError(f"unknown store type {kind!r} (expected one of {', '.join(KINDS)})")


def __getattr__(name: str) -> Any:
    if name == "LmdbStore":
        from store.lmdb_store import LmdbStore

        return LmdbStore
    raise AttributeError(f"module 'store' has no attribute {name!r}")
