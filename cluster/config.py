"""Configuration of one node, with the reference server's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.limits import StoreLimits

SECOND = 1_000_000_000


@dataclass(slots=True)
class ClusterConfig:
    """Clustering (Raft) settings; ``enabled`` False runs a one-node group."""

    enabled: bool = False
    node_id: str = ""
    #: ``node_id -> host:port`` of every member's Raft transport, self included.
    peers: dict[str, str] = field(default_factory=dict)
    #: Raft journal and snapshots; default ``<dir>/raft``.
    log_path: str = ""
    sync: bool = False
    raft_logging: bool = False
    #: Shared secret: authenticates and encrypts the Raft transport.
    secret: str | None = None
    #: Raft timers (seconds).
    election_min: float = 0.4
    election_max: float = 0.8
    heartbeat_period: float = 0.05
    leader_fallback: float = 1.0
    #: Bytes of Raft log after which the store is snapshotted and the journal
    #: trimmed (pysyncobj keeps the whole journal in memory until then).
    compact_bytes: int = 64 * 1024 * 1024


@dataclass(slots=True)
class ServerConfig:
    cluster_id: str = "test-cluster"
    discover_prefix: str = "_STAN.discover"
    #: ``LMDB`` (persistent, default) or ``MEMORY``.
    store: str = "LMDB"
    dir: str = "./stanchion-data"
    #: fsync every store commit.
    store_sync: bool = True
    #: NATS server URLs; empty = start an embedded nats-server child.
    nats_urls: list[str] = field(default_factory=list)
    nats_user: str = ""
    nats_pass: str = ""
    nats_token: str = ""
    #: More keyword arguments for ``nats.connect`` of the server's own
    #: connections: ``tls`` (ssl.SSLContext), ``tls_hostname``,
    #: ``user_credentials``, ``nkeys_seed``.
    nats_connect_extra: dict[str, Any] = field(default_factory=dict)
    limits: StoreLimits = field(default_factory=StoreLimits)
    #: Server -> client heartbeats (ns for intervals, count for failures).
    hb_interval: int = 30 * SECOND
    hb_timeout: int = 10 * SECOND
    hb_fail_count: int = 10
    replace_durable: bool = False
    #: Monitoring HTTP port (0 = off) and host.
    http_port: int = 0
    http_host: str = "0.0.0.0"
    #: Most messages per replicated publish entry, and entries in flight.
    io_batch_size: int = 1024
    max_pub_proposals: int = 4
    #: Lazy replication of sends/acks: seconds, events per subscription.
    sent_ack_flush_interval: float = 1.0
    sent_ack_flush_events: int = 100
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
