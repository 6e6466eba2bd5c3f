"""The storage contract shared by every store implementation.

A store keeps everything a node must remember: server info, registered clients,
channels with their message logs, subscriptions with their delivery state, and
the index of the last Raft entry applied to it.

Shape of the contract
---------------------
* Metadata (server info, clients, channels, subscriptions, pending sets) is held
  in memory by every implementation and written through to disk by persistent
  ones. Reads of metadata are plain method calls that never touch the disk.
* Message bodies are kept only in the store's log (on disk for LMDB); they are
  read by range, page by page, so that no caller ever loads a whole channel.
* Every change happens inside ``store.write()``, a context manager yielding a
  :class:`WriteTxn`. Changes become durable (to the configured sync level) when
  the block exits normally. If the block raises, a persistent store rolls the
  disk back and reloads its in-memory metadata from disk, so a failed apply
  leaves no trace; the memory store cannot roll back and callers must validate
  before they mutate.
* Only one thread writes (the Raft apply thread). Reads may come from any
  thread at any time: metadata reads see either the state before or after a
  write transaction's individual changes (Python's GIL makes single dict
  operations atomic), message reads see committed data only.
* Nothing here reads a clock: every time value comes in as an argument, so that
  applying the same commands in the same order gives the same state everywhere.

Limits (SEMANTICS §4) are enforced here: ``create_channel`` refuses past
``max_channels``, ``create_sub`` refuses past ``max_subs``, ``store_msg`` drops
the oldest messages past ``max_msgs``/``max_bytes`` (never the newest), and
``expire_msgs`` drops messages older than ``max_age``.

Imports (a store written by another server, loaded through replicated
commands) use three more mutations: ``import_msg`` appends a message with the
sequence and timestamp it already had, ``advance_channel`` moves a channel's
last sequence and next subscription ID forward, and ``import_sub`` stores a
subscription under the ID it already had. An imported channel may have gaps:
sequences between ``first_seq`` and ``last_seq`` whose message could not be
imported. Every read skips them, and dropping the oldest message moves
``first_seq`` to the next stored one. Channels filled by ``store_msg`` alone
never have gaps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class ServerInfo:
    """What a store remembers about the server that created it."""

    cluster_id: str
    #: Raft node ID when clustered, empty when standalone.
    node_id: str = ""
    #: Prefix of the discover subject (``_STAN.discover`` unless configured).
    discover_prefix: str = "_STAN.discover"


@dataclass(slots=True)
class ClientRecord:
    """A registered client, as sent in its ``ConnectRequest``."""

    client_id: str
    hb_inbox: str
    #: Connection ID of protocol-1 clients (empty for protocol 0).
    conn_id: bytes = b""
    protocol: int = 0
    ping_interval: int = 0
    ping_max_out: int = 0


@dataclass(slots=True)
class ChannelLimits:
    """Limits that apply to one channel. 0 means unlimited for every field.

    These are resolved values (global limits with per-channel overrides already
    applied, see ``store.limits``); the store only enforces them.
    """

    max_msgs: int = 1_000_000
    max_bytes: int = 1_024_000_000
    #: Nanoseconds.
    max_age: int = 0
    max_subs: int = 1000
    #: Nanoseconds.
    max_inactivity: int = 0


@dataclass(slots=True)
class ChannelRecord:
    """A channel and the bookkeeping of its message log.

    ``first_seq``/``last_seq`` are 0/0 for a channel that never had a message.
    A channel emptied by ``max_age`` keeps ``last_seq`` and has
    ``first_seq == last_seq + 1``. ``msgs``/``bytes`` count what is stored now;
    bytes are the lengths of the encoded ``MsgProto`` records. When
    ``msgs > 0``, ``first_seq`` and ``last_seq`` are stored messages, except
    that an import may leave ``last_seq`` above the last stored one (see
    ``WriteTxn.advance_channel``); ``msgs`` may be less than
    ``last_seq - first_seq + 1`` in an imported channel with gaps.
    """

    name: str
    #: Incarnation ID: the Raft index of the entry that created the channel.
    channel_id: int
    limits: ChannelLimits = field(default_factory=ChannelLimits)
    first_seq: int = 0
    last_seq: int = 0
    msgs: int = 0
    bytes: int = 0
    #: Highest timestamp assigned so far (ns); new timestamps never go below it.
    last_timestamp: int = 0
    #: Next subscription ID to hand out; IDs are never reused in an incarnation.
    next_sub_id: int = 1
    #: Time (ns) of the last stored message or of creation.
    last_activity: int = 0


@dataclass(slots=True)
class SubRecord:
    """The persisted state of one subscription (the reference's ``SubState``).

    Durable queue members have ``is_durable=True``, an empty ``durable_name``
    and ``qgroup == "<durable>:<group>"``. The shadow of an offline durable
    queue group is a record with ``client_id == ""`` and ``is_closed=True``.
    An offline plain durable keeps its last owner's ``client_id`` with
    ``is_closed=True``.
    """

    channel: str
    sub_id: int
    client_id: str
    inbox: str
    ack_inbox: str
    max_inflight: int
    ack_wait: int  # seconds
    qgroup: str = ""
    durable_name: str = ""
    #: Highest sequence ever sent to this subscription (its cursor).
    last_sent: int = 0
    is_durable: bool = False
    is_closed: bool = False


@dataclass(slots=True)
class StoredMsg:
    """A message as returned by reads: its sequence and the encoded MsgProto."""

    seq: int
    timestamp: int
    #: The encoded ``MsgProto`` exactly as delivered on a first send.
    raw: bytes


class StoreError(Exception):
    """A refusal whose text goes to the client unchanged (e.g. limits)."""


class SnapshotError(Exception):
    """A snapshot image is not whole (cut short, pieces missing) or not an
    image of this store: nothing was read from it."""


class StorageError(Exception):
    """The store could not write: its map or the disk is full, or an I/O error.

    Nothing of the failed write block was kept (the store rolled back). The
    same write may succeed later, once space returns: callers retry it rather
    than skip it, so that every node applies the same entries.
    """


# ---------------------------------------------------------------------------
# Interfaces
# ---------------------------------------------------------------------------


class WriteTxn(Protocol):
    """Mutations; valid only inside ``with store.write() as txn``."""

    def set_applied_index(self, index: int) -> None:
        """Record the Raft index of the entry being applied (same transaction)."""

    def put_server_info(self, info: ServerInfo) -> None: ...

    def put_client(self, client: ClientRecord) -> None:
        """Insert or replace a client (indexes its conn_id)."""

    def delete_client(self, client_id: str) -> None:
        """Remove a client; no-op if unknown. Its subscriptions are not touched."""

    def create_channel(
        self, name: str, channel_id: int, limits: ChannelLimits, now: int, max_channels: int
    ) -> ChannelRecord:
        """Create an empty channel.

        Raises StoreError("too many channels") when ``max_channels`` (0 =
        unlimited) channels exist already, and StoreError with the reference's
        case-conflict text when a channel differing only by case exists.
        """

    def delete_channel(self, name: str) -> None:
        """Remove a channel with all its messages and subscriptions; no-op if unknown."""

    def store_msg(self, channel: str, reply: str, data: bytes, now: int) -> StoredMsg:
        """Append one message: sequence = last_seq + 1, timestamp =
        max(now, last_timestamp). Encodes the MsgProto, updates counts and
        last_activity, then drops the oldest messages while the channel exceeds
        max_msgs or max_bytes (never the message just stored)."""

    def expire_msgs(self, channel: str, now: int) -> int:
        """Drop messages with ``now - timestamp >= max_age`` (if max_age > 0).
        Returns how many were dropped."""

    def touch_channel(self, channel: str, now: int) -> None:
        """Set the channel's last_activity."""

    def create_sub(self, sub: SubRecord, max_subs: int) -> SubRecord:
        """Store a new subscription; ``sub.sub_id`` is ignored and replaced by
        the channel's next ID. Raises StoreError("too many subscriptions per
        channel") when ``max_subs`` (0 = unlimited) records exist already."""

    def put_sub(self, sub: SubRecord) -> None:
        """Replace an existing subscription record (same channel and sub_id)."""

    # -- imports ------------------------------------------------------------------

    def import_msg(
        self, channel: str, seq: int, timestamp: int, reply: str, data: bytes
    ) -> StoredMsg:
        """Append one message with the sequence and timestamp it had in the
        store it comes from.

        ``seq`` must be greater than ``last_seq`` (ValueError otherwise); the
        sequences skipped in between stay absent (a gap). The timestamp is kept
        as given and ``last_timestamp`` becomes the larger of the two. Encodes
        the MsgProto as ``store_msg`` does, updates counts (not
        last_activity), then drops the oldest messages past max_msgs/max_bytes
        like ``store_msg``.
        """

    def advance_channel(self, channel: str, last_seq: int = 0, next_sub_id: int = 0) -> None:
        """Move an imported channel's counters forward, never back.

        ``last_seq`` is raised to at least the given value without storing a
        message (the next message gets a higher sequence); a channel without
        messages then has ``first_seq == last_seq + 1``, like one emptied by
        max_age. ``next_sub_id`` is raised to at least the given value.
        """

    def import_sub(self, sub: SubRecord) -> SubRecord:
        """Store a subscription under its own ``sub.sub_id`` (> 0), which must
        not exist in the channel (ValueError otherwise). The channel's
        ``next_sub_id`` is raised above it. Not subject to max_subs: what was
        stored elsewhere is kept, as a restart keeps what was recovered.
        Returns the stored record (a copy of ``sub``)."""

    def delete_sub(self, channel: str, sub_id: int) -> None:
        """Remove a subscription and its pending set; no-op if unknown."""

    def add_pending(self, channel: str, sub_id: int, seqs: list[int]) -> None:
        """Add sequences to a subscription's pending (sent, unacked) set."""

    def remove_pending(self, channel: str, sub_id: int, seqs: list[int]) -> None:
        """Remove sequences from the pending set (unknown ones are ignored)."""


class Store(Protocol):
    """A node's state. See the module docstring for the threading rules."""

    #: ``"LMDB"`` or ``"MEMORY"``.
    kind: str

    def write(self) -> AbstractContextManager[WriteTxn]: ...

    def close(self) -> None: ...

    # -- metadata reads (memory only, any thread) --------------------------

    def applied_index(self) -> int:
        """Raft index of the last applied entry (0 for a new store)."""

    def server_info(self) -> ServerInfo | None: ...

    def clients(self) -> Mapping[str, ClientRecord]:
        """Live read-only view: client ID -> record."""

    def client_by_conn_id(self, conn_id: bytes) -> ClientRecord | None: ...

    def channels(self) -> Mapping[str, ChannelRecord]:
        """Live read-only view: channel name -> record."""

    def subs(self, channel: str) -> Mapping[int, SubRecord]:
        """Live read-only view of a channel's subscriptions (empty if unknown)."""

    def pending(self, channel: str, sub_id: int) -> frozenset[int]:
        """A copy of a subscription's pending set (empty if unknown)."""

    # -- message reads (any thread) -----------------------------------------

    def get_msg(self, channel: str, seq: int) -> StoredMsg | None: ...

    def read_msgs(
        self, channel: str, start_seq: int, max_count: int, max_bytes: int = 1 << 20
    ) -> list[StoredMsg]:
        """Stored messages with seq >= start_seq in order (gaps skipped): at
        most ``max_count`` and, after the first, at most ``max_bytes`` of raw
        data."""

    def seq_at_time(self, channel: str, timestamp: int) -> int:
        """First stored sequence whose timestamp >= ``timestamp``: 0 if the
        channel has no stored message; if none qualifies, a sequence above
        every stored message (``last_seq + 1``, or less when an import left
        ``last_seq`` above the last stored message)."""

    def iter_msgs(self, channel: str) -> Iterator[StoredMsg]:
        """Every stored message in order, read lazily page by page."""

    # -- whole-store copies (snapshots) -----------------------------------------

    def snapshot(self, path: str) -> None:
        """Write a consistent copy of the whole store to the file ``path``."""

    def restore(self, path: str) -> None:
        """Replace the whole content with a copy written by ``snapshot``
        (metadata caches reloaded; readers never see a closed environment)."""

    def snapshot_applied_index(self, path: str) -> int:
        """The applied index recorded in a copy written by ``snapshot``."""

    def disk_size(self) -> int:
        """Bytes the store occupies on disk (0 for memory)."""

    def free_disk(self) -> int | None:
        """Bytes free for the store's files on their filesystem, or None when
        the store keeps nothing on disk. May be a fraction of a second old."""

    def mapped_reads(self) -> int:
        """Bytes of messages read through the store's map since it opened (0
        when nothing is mapped): callers of ``release_memory`` use it to
        release after a volume of reads rather than only on a timer. Any thread."""

    def release_memory(self) -> None:
        """Drop file pages the store has mapped from the process's resident set.

        A memory-mapped store keeps every page it has read mapped, so the
        resident size grows with the data read even though those pages are
        page cache the kernel can take back. Dropping the mappings loses
        nothing: the next access maps the page again. Any thread."""
