"""Prometheus metrics, read from the node's state at scrape time.

A custom collector walks the server's counters, store and Raft status when
``/metrics`` is scraped, so the hot paths carry no instrumentation. The one
exception is the commit latency histogram: the server calls
``server.commit_latency_observer(seconds)`` (when set) for each committed
proposal, and ``Metrics.install`` sets it.

Names (all prefixed ``stanchion_``):

======================================  =====================================================
``info``                                 version, cluster_id, server_id, node_id labels
``messages_received_total``              publishes received (``in_msgs``)
``bytes_received_total``                 their payload bytes (``in_bytes``)
``messages_sent_total``                  messages sent to subscribers, redeliveries included
``bytes_sent_total``                     their bytes
``messages_redelivered_total``           redeliveries
``clients``, ``channels``,               current counts
``subscriptions``
``store_messages``, ``store_bytes``      messages and bytes stored, all channels
``store_disk_bytes``                     size of the store's file (0 for MEMORY)
``channel_messages{channel}``            per channel: messages, bytes, last sequence,
``channel_bytes``, ``channel_last_seq``  subscriptions
``channel_subscriptions``
``subscription_pending_messages``        per subscription (labels channel, client_id,
``subscription_redelivering_messages``   durable_name, queue_name, sub_id): unacked messages,
``subscription_stalled``                 those redelivered at least once, 1 if stalled
``raft_role{role}``                      1 for this node's role, 0 for the others
``raft_term``, ``raft_commit_index``,    Raft status
``raft_applied_index``,
``raft_has_quorum``, ``raft_log_entries``
``raft_commit_latency_seconds``          histogram: proposal to local apply
``serving``                              1 when this node serves clients (promoted leader)
======================================  =====================================================

Plus the standard ``process_*`` and ``python_*`` metrics of prometheus_client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("stanchion.metrics")

PREFIX = "stanchion_"
ROLES = ("Leader", "Follower", "Candidate")
#: Histogram buckets of the commit latency (seconds).
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SUB_LABELS = ["channel", "client_id", "durable_name", "queue_name", "sub_id"]


class Metrics:
    """The registry of one monitor: our collector, process metrics, commit latency."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, server: Any) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(server))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.commit_latency = Histogram(
            PREFIX + "raft_commit_latency_seconds",
            "Seconds from proposing a command to applying it on this node",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )

    def install(self) -> None:
        """Let the server report commit latencies (``server.commit_latency_observer``)."""
        if getattr(self.server, "commit_latency_observer", None) is None:
            self.server.commit_latency_observer = self.commit_latency.observe

    def uninstall(self) -> None:
        if getattr(self.server, "commit_latency_observer", None) == self.commit_latency.observe:
            self.server.commit_latency_observer = None

    def render(self) -> bytes:
        return generate_latest(self.registry)


class NodeCollector(Collector):
    """Everything but the histogram, computed when scraped."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server
        yield from self._info()
        yield _counter("messages_received", "Publishes received", s.in_msgs)
        yield _counter("bytes_received", "Payload bytes of the publishes received", s.in_bytes)
        d = s.delivery
        yield _counter("messages_sent", "Messages sent to subscribers", d.out_msgs)
        yield _counter("bytes_sent", "Bytes sent to subscribers", d.out_bytes)
        yield _counter("messages_redelivered", "Messages redelivered", d.redelivered_msgs)
        yield _gauge("serving", "1 when this node serves clients", int(bool(s.is_leader)))
        yield from self._store()
        yield from self._raft()

    def _info(self) -> Iterator[Metric]:
        from cluster.server import REFERENCE_VERSION, VERSION

        s = self.server
        info = GaugeMetricFamily(
            PREFIX + "info",
            "Version and identity of this node",
            labels=["version", "reference_version", "cluster_id", "server_id", "node_id"],
        )
        info.add_metric(
            [VERSION, REFERENCE_VERSION, s.cfg.cluster_id, s.server_id, s.cfg.cluster.node_id], 1
        )
        yield info

    def _store(self) -> Iterator[Metric]:
        s = self.server
        store = s.store
        channels = dict(store.channels())
        clients = store.clients()
        yield _gauge("clients", "Registered clients", len(clients))
        yield _gauge("channels", "Channels", len(channels))
        per_msgs = _family("channel_messages", "Messages stored per channel", ["channel"])
        per_bytes = _family("channel_bytes", "Bytes stored per channel", ["channel"])
        per_last = _family("channel_last_seq", "Last sequence per channel", ["channel"])
        per_subs = _family("channel_subscriptions", "Subscriptions per channel", ["channel"])
        pending = _family("subscription_pending_messages", "Unacknowledged messages", _SUB_LABELS)
        redelivering = _family(
            "subscription_redelivering_messages",
            "Unacknowledged messages redelivered at least once",
            _SUB_LABELS,
        )
        stalled = _family("subscription_stalled", "1 if the subscription is stalled", _SUB_LABELS)
        total_subs = total_msgs = total_bytes = 0
        for name in sorted(channels):
            ch = channels[name]
            subs = store.subs(name)
            total_subs += len(subs)
            total_msgs += ch.msgs
            total_bytes += ch.bytes
            per_msgs.add_metric([name], ch.msgs)
            per_bytes.add_metric([name], ch.bytes)
            per_last.add_metric([name], ch.last_seq)
            per_subs.add_metric([name], len(subs))
            for sub in list(subs.values()):
                labels = [name, sub.client_id, sub.durable_name, sub.qgroup, str(sub.sub_id)]
                view = s.delivery.by_key.get((name, sub.sub_id))
                if view is not None:
                    pending.add_metric(labels, len(view.pending))
                    redelivering.add_metric(labels, len(view.redeliveries))
                    stalled.add_metric(labels, int(bool(view.stalled)))
                else:
                    pending.add_metric(labels, len(store.pending(name, sub.sub_id)))
                    redelivering.add_metric(labels, 0)
                    stalled.add_metric(labels, 0)
        yield _gauge("subscriptions", "Subscriptions, offline durables included", total_subs)
        yield _gauge("store_messages", "Messages stored, all channels", total_msgs)
        yield _gauge("store_bytes", "Bytes stored, all channels", total_bytes)
        try:
            disk = store.disk_size()
        except OSError:
            disk = 0
        yield _gauge("store_disk_bytes", "Size of the store on disk", disk)
        yield from (per_msgs, per_bytes, per_last, per_subs, pending, redelivering, stalled)

    def _raft(self) -> Iterator[Metric]:
        try:
            st = self.server.raft.status()
        except Exception as exc:  # noqa: BLE001 - during startup or shutdown
            log.debug("raft status unavailable err=%s", exc)
            return
        role = _family("raft_role", "1 for this node's Raft role", ["role"])
        for name in ROLES:
            role.add_metric([name], int(st.get("role") == name))
        yield role
        yield _gauge("raft_term", "Raft term", st.get("term", 0))
        yield _gauge("raft_commit_index", "Raft commit index", st.get("commit_index", 0))
        yield _gauge("raft_applied_index", "Raft index applied here", st.get("last_applied", 0))
        yield _gauge(
            "raft_has_quorum", "1 if the leader has a quorum", int(bool(st.get("has_quorum")))
        )
        yield _gauge("raft_log_entries", "Entries in the Raft journal", st.get("log_len", 0))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _family(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)
