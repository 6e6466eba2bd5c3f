"""``stanchion import-filestore DIR``: load a reference FILE store into a
running stanchion server or cluster.

The store directory (written by nats-streaming-server in FILE mode, see
``store/filestore_reader.py``) is only read. The import runs in two passes:

1. **Check**: every file is read and every record's CRC verified, without
   contacting any server. Damage is listed with its file and offset; unless
   ``--skip-corrupt`` is given, any damage stops here (exit 1). ``--dry-run``
   stops here in any case and prints what would be imported.
2. **Import**: the target's leader is asked (``_STAN.admin.<cid>.import``,
   see ``cluster/import_admin.py``) whether the store fits: same cluster ID,
   none of the channels present, room under max_channels. Then the
   registered clients are imported, then each channel is created and its
   messages streamed in batches (``--batch_msgs``, ``--batch_bytes``,
   ``--inflight`` batches at once), then the subscriptions. Every step is a
   replicated command, so every node of a cluster gets it, and each is
   answered after commit. Clients must not publish while it runs (a channel
   that changes under the import stops it); they may stay connected.

Memory does not grow with the store: messages are read from memory-mapped
slices and sent batch by batch; only clients and subscriptions are held.

Limits: the FILE store records none (they are server configuration). The
target applies its own configured limits, as the reference server re-applies
its limits when it recovers a store: max_msgs/max_bytes drop the oldest
imported messages, max_age expires old ones within a second.

A lost answer (leader change, timeout) is retried; every import command is
recognised when it is repeated. An interrupted channel resumes from the
last sequence the target has.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cluster import commands as c
from cluster.fsm_import import ERR_CHANNEL_EXISTS, ERR_OUT_OF_ORDER
from cluster.import_admin import import_subject, pack, unpack
from cluster.import_progress import Progress
from store.filestore_format import (
    RECORD_HEADER,
    ChannelSummary,
    Clients,
    Report,
    ServerInfo,
    SubDecision,
    Subscriptions,
    decide_subscription,
)
from store.filestore_reader import FileStoreReader

#: Room left in a NATS payload for the request around a batch (bytes).
PAYLOAD_MARGIN = 16 * 1024
#: Estimated msgpack overhead of one message in a batch (bytes).
MSG_OVERHEAD = 32
#: Times a channel's message stream may resume after a failed batch.
MAX_RESUMES = 5
#: Clients per ImportClient command.
CLIENTS_PER_COMMAND = 500
#: Seconds between retries of an unanswered request.
RETRY_PAUSE = 0.5


@dataclass(slots=True)
class Options:
    """Parsed command line (see ``build_parser``)."""

    dir: Path
    nats_url: str = "nats://127.0.0.1:4222"
    cluster_id: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    dry_run: bool = False
    skip_corrupt: bool = False
    batch_msgs: int = 1000
    batch_bytes: int = 1 << 20
    inflight: int = 4
    #: Seconds one request may wait for its answer (an unanswered batch is
    #: found out from the channel's state and the stream resumes).
    timeout: float = 10.0
    #: Seconds an unanswered request is retried (leader elections).
    retry_window: float = 60.0
    #: ``auto``, ``bar``, ``lines`` or ``off``.
    progress: str = "auto"


class ImportFailed(Exception):
    """The import cannot go on; the text says why."""


# ---------------------------------------------------------------------------
# Pass 1: check
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class ChannelPlan:
    summary: ChannelSummary
    subs: Subscriptions
    decisions: list[SubDecision]


@dataclass(slots=True)
class StorePlan:
    """Everything the check pass learnt about the store."""

    root: Path
    info: ServerInfo | None
    clients: Clients
    channels: list[ChannelPlan]
    report: Report
    elapsed: float = 0.0

    @property
    def total_msgs(self) -> int:
        return sum(cp.summary.msgs for cp in self.channels)

    @property
    def total_payload(self) -> int:
        return sum(cp.summary.payload_bytes for cp in self.channels)


def check_store(reader: FileStoreReader, progress: Progress) -> StorePlan:
    """Read the whole store once, verifying every CRC."""
    start = time.monotonic()
    report = Report()
    info = reader.server_info(report)
    clients = reader.clients(report)
    registered = set(clients.live)
    channels: list[ChannelPlan] = []
    for name in reader.channel_names(report):
        slices = reader.slices(name, report)
        total = sum(sl.dat.stat().st_size for sl in slices)
        summary = ChannelSummary(name)
        progress.begin("check", name, 0, total)
        pending_msgs = pending_bytes = 0
        for m in reader.messages(name, report, summary=summary):
            pending_msgs += 1
            pending_bytes += m.size + RECORD_HEADER
            if pending_msgs >= 1000:
                progress.add(pending_msgs, pending_bytes)
                pending_msgs = pending_bytes = 0
        progress.add(pending_msgs, pending_bytes)
        progress.end()
        subs = reader.subscriptions(name, report)
        decisions = [decide_subscription(name, s, registered) for s in subs.subs.values()]
        channels.append(ChannelPlan(summary, subs, decisions))
    return StorePlan(reader.root, info, clients, channels, report, elapsed=time.monotonic() - start)


# ---------------------------------------------------------------------------
# Pass 2: import
# ---------------------------------------------------------------------------


class _BatchFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


@dataclass(slots=True)
class ChannelResult:
    name: str
    msgs: int = 0
    first_seq: int = 0
    last_seq: int = 0
    seconds: float = 0.0
    subs_active: int = 0
    subs_offline: int = 0


@dataclass(slots=True)
class ImportResult:
    channels: list[ChannelResult] = field(default_factory=list)
    clients_added: list[str] = field(default_factory=list)
    clients_kept: list[str] = field(default_factory=list)
    left_out: list[SubDecision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Importer:
    """Pass 2 against one target (a NATS connection and a cluster ID)."""

    def __init__(
        self,
        opts: Options,
        reader: FileStoreReader,
        plan: StorePlan,
        progress: Progress,
        out: TextIO,
    ) -> None:
        self.opts = opts
        self.reader = reader
        self.plan = plan
        self.progress = progress
        self.out = out
        self.cluster_id = opts.cluster_id
        self.subject = import_subject(opts.cluster_id)
        self.nc: Any = None
        self.batch_limit = opts.batch_bytes
        self.result = ImportResult()

    # -- requests ------------------------------------------------------------------------

    async def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        msg = await self.nc.request(self.subject, pack(body), timeout=self.opts.timeout)
        return unpack(msg.data)

    async def _request_retry(
        self, body: dict[str, Any], what: str, window: float | None = None
    ) -> tuple[dict[str, Any], int]:
        """Send until answered and not asked to retry; returns (reply, retries)."""
        import nats.errors

        deadline = time.monotonic() + (self.opts.retry_window if window is None else window)
        retries = 0
        last = ""
        while True:
            try:
                reply = await self._request(body)
                if reply.get("ok") or not reply.get("retry"):
                    return reply, retries
                last = str(reply.get("error"))
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                last = "no answer" if isinstance(exc, nats.errors.TimeoutError) else "no responders"
            if time.monotonic() >= deadline:
                raise ImportFailed(
                    f"{what}: no stanchion leader with cluster ID {self.cluster_id!r} "
                    f"answered on {self.subject} at {self.opts.nats_url} ({last})"
                )
            retries += 1
            await asyncio.sleep(RETRY_PAUSE)

    async def _apply(self, cmd: c.Command, what: str) -> tuple[dict[str, Any], int]:
        reply, retries = await self._request_retry({"op": "apply", "command": c.encode(cmd)}, what)
        if not reply.get("ok"):
            raise ImportFailed(f"{what}: {reply.get('error')}")
        return reply, retries

    # -- steps ---------------------------------------------------------------------------

    async def run(self) -> ImportResult:
        import nats

        start = time.monotonic()
        opts = self.opts
        connect: dict[str, Any] = {
            "servers": [u.strip() for u in opts.nats_url.split(",") if u.strip()],
            "name": "stanchion-import",
            "connect_timeout": 5,
            "max_reconnect_attempts": 60,
            "reconnect_time_wait": 0.5,
        }
        if opts.user:
            connect["user"] = opts.user
            connect["password"] = opts.password
        if opts.token:
            connect["token"] = opts.token
        try:
            self.nc = await nats.connect(**connect)
        except Exception as exc:  # noqa: BLE001 - any connection failure is reported alike
            raise ImportFailed(f"cannot connect to NATS at {opts.nats_url}: {exc}") from exc
        try:
            self.batch_limit = max(
                4096, min(opts.batch_bytes, self.nc.max_payload - PAYLOAD_MARGIN)
            )
            await self._check_target()
            # Clients first: those still connected to NATS get answers to their
            # pings (and heartbeats) from the start of a long import.
            await self._import_clients()
            for cp in self.plan.channels:
                self.result.channels.append(await self._import_channel(cp))
            for cp, res in zip(self.plan.channels, self.result.channels, strict=True):
                await self._import_subs(cp, res)
        finally:
            await self.nc.drain()
        self.result.seconds = time.monotonic() - start
        return self.result

    async def _check_target(self) -> None:
        plan = self.plan
        names = [cp.summary.name for cp in plan.channels]
        reply, _ = await self._request_retry(
            {
                "op": "plan",
                "cluster_id": self.cluster_id,
                "channels": names,
                "clients": list(plan.clients.live),
            },
            "checking the target",
            window=min(self.opts.retry_window, 10.0),
        )
        if not reply.get("ok"):
            raise ImportFailed(f"the target refused the import: {reply.get('error')}")
        existing = reply.get("existing_channels") or []
        if existing:
            raise ImportFailed(
                "the target already has channel(s) "
                + ", ".join(repr(n) for n in existing)
                + ": import into a server that does not"
            )
        max_channels = int(reply.get("max_channels", 0))
        count = int(reply.get("channel_count", 0))
        if max_channels and count + len(names) > max_channels:
            raise ImportFailed(
                f"the target allows {max_channels} channels and has {count}: "
                f"{len(names)} more do not fit (raise its -mc)"
            )
        warn = self.result.warnings
        for client_id in reply.get("existing_clients") or []:
            warn.append(f"client {client_id!r} is registered already: its registration is kept")
        served = reply.get("subjects") or {}
        info = plan.info
        if info is not None:
            for key in ("discovery", "publish", "subscribe", "unsubscribe", "close", "sub_close"):
                stored = getattr(info, key)
                if stored and served.get(key) and stored != served[key]:
                    warn.append(
                        f"clients were given {key} subject {stored!r}, this server serves "
                        f"{served[key]!r}: those still connected must reconnect"
                    )
        limits = reply.get("limits") or {}
        for cp in plan.channels:
            s = cp.summary
            lim = limits.get(s.name)
            if not lim:
                continue
            max_msgs, max_bytes, max_age = lim[0], lim[1], lim[2]
            if max_msgs and s.msgs > max_msgs:
                warn.append(
                    f"channel {s.name!r}: the target keeps {max_msgs} messages (-mm), "
                    f"the oldest {s.msgs - max_msgs} are dropped"
                )
            if max_bytes and s.payload_bytes > max_bytes:
                warn.append(
                    f"channel {s.name!r}: the target keeps {max_bytes} bytes (-mb), "
                    "the oldest messages beyond are dropped"
                )
            if max_age:
                warn.append(
                    f"channel {s.name!r}: the target expires messages older than "
                    f"{max_age / 1e9:g} s (-ma)"
                )

    async def _import_channel(self, cp: ChannelPlan) -> ChannelResult:
        s = cp.summary
        name = s.name
        res = ChannelResult(name)
        cmd = c.ImportChannel(name, s.first_seq, cp.subs.max_id + 1, [], 0)
        reply, retries = await self._request_retry(
            {"op": "apply", "command": c.encode(cmd)}, f"creating channel {name!r}"
        )
        if not reply.get("ok"):
            # A repeat of a creation whose answer was lost finds the channel.
            if not (retries and ERR_CHANNEL_EXISTS in str(reply.get("error"))):
                raise ImportFailed(f"creating channel {name!r}: {reply.get('error')}")
        self.progress.begin("import", name, s.msgs, s.payload_bytes)
        problems_before = len(self.plan.report.problems)
        after = max(s.first_seq - 1, 0)
        resumes = 0
        while True:
            try:
                after = await self._stream(name, after)
                break
            except _BatchFailed as exc:
                resumes += 1
                if not exc.retryable or resumes > MAX_RESUMES:
                    raise ImportFailed(f"importing channel {name!r}: {exc}") from None
                state, _ = await self._request_retry(
                    {"op": "state", "channel": name}, f"reading channel {name!r}"
                )
                last = int(state.get("last_seq", 0))
                if last < after or last > max(s.highest_seq, s.last_seq):
                    raise ImportFailed(
                        f"channel {name!r} changed during the import (its last sequence is "
                        f"{last}): keep clients away from the target while it imports"
                    ) from None
                after = last
        highest = max(s.highest_seq, s.last_seq)
        if highest > after:
            # Messages at the end could not be read: keep their sequences used.
            reply, _ = await self._request_retry(
                self._batch_request(name, after, [], highest), f"closing channel {name!r}"
            )
            if not reply.get("ok"):
                raise ImportFailed(f"closing channel {name!r}: {reply.get('error')}")
        res.seconds = self.progress.end()
        if len(self.plan.report.problems) != problems_before:
            raise ImportFailed(
                f"channel {name!r} changed on disk during the import: "
                "stop the reference server before importing"
            )
        state, _ = await self._request_retry(
            {"op": "state", "channel": name}, f"reading channel {name!r}"
        )
        res.msgs = int(state.get("msgs", 0))
        res.first_seq = int(state.get("first_seq", 0))
        res.last_seq = int(state.get("last_seq", 0))
        return res

    async def _stream(self, name: str, after: int) -> int:
        """Send the channel's messages above ``after`` in pipelined batches;
        returns the last sequence sent."""
        window: deque[tuple[asyncio.Task[dict[str, Any]], int, int]] = deque()
        messages = self.reader.messages(name, self.plan.report, after_seq=after)
        try:
            for batch, nbytes in self._batches(messages):
                body = self._batch_request(name, after, batch, 0)
                task = asyncio.ensure_future(self._request(body))
                window.append((task, len(batch), nbytes))
                after = batch[-1][0]
                while len(window) >= self.opts.inflight:
                    await self._settle(window)
            while window:
                await self._settle(window)
        except BaseException:
            rest = [t for t, _, _ in window]
            if rest:
                await asyncio.gather(*rest, return_exceptions=True)
            raise
        finally:
            messages.close()
        return after

    @staticmethod
    def _batch_request(
        name: str, after: int, batch: list[tuple[int, int, str, bytes]], last_seq: int
    ) -> dict[str, Any]:
        return {
            "op": "msgs",
            "channel": name,
            "after_seq": after,
            "last_seq": last_seq,
            "msgs": c.pack_import_msgs(batch),
        }

    def _batches(self, messages: Iterator[Any]) -> Iterator[tuple[list[Any], int]]:
        batch: list[tuple[int, int, str, bytes]] = []
        size = nbytes = 0
        limit = self.batch_limit
        for m in messages:
            cost = len(m.data) + len(m.reply) + MSG_OVERHEAD
            if cost > limit:
                raise ImportFailed(
                    f"message {m.seq} ({len(m.data)} bytes) does not fit in a NATS "
                    f"payload of {self.nc.max_payload} bytes: raise max_payload"
                )
            if batch and (size + cost > limit or len(batch) >= self.opts.batch_msgs):
                yield batch, nbytes
                batch = []
                size = nbytes = 0
            batch.append((m.seq, m.timestamp, m.reply, m.data))
            size += cost
            nbytes += m.size
        if batch:
            yield batch, nbytes

    async def _settle(self, window: deque[tuple[asyncio.Task[dict[str, Any]], int, int]]) -> None:
        import nats.errors

        task, n, nbytes = window.popleft()
        try:
            reply = await task
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise _BatchFailed(f"batch not answered: {exc!r}", True) from None
        if not reply.get("ok"):
            error = str(reply.get("error"))
            raise _BatchFailed(error, bool(reply.get("retry")) or ERR_OUT_OF_ORDER in error)
        self.progress.add(n, nbytes)

    async def _import_clients(self) -> None:
        live = list(self.plan.clients.live.values())
        for i in range(0, len(live), CLIENTS_PER_COMMAND):
            chunk = live[i : i + CLIENTS_PER_COMMAND]
            cmd = c.ImportClient(
                [
                    (
                        ci.client_id,
                        ci.hb_inbox,
                        ci.conn_id,
                        ci.protocol,
                        ci.ping_interval,
                        ci.ping_max_out,
                    )
                    for ci in chunk
                ]
            )
            reply, _ = await self._apply(cmd, "registering clients")
            added = [str(x) for x in reply.get("value") or []]
            self.result.clients_added += added
            self.result.clients_kept += [ci.client_id for ci in chunk if ci.client_id not in added]

    async def _import_subs(self, cp: ChannelPlan, res: ChannelResult) -> None:
        limit = (self.nc.max_payload - PAYLOAD_MARGIN) // 10
        for d in cp.decisions:
            if not d.keep:
                self.result.left_out.append(d)
                continue
            s = d.sub
            if len(s.pending) > limit:
                raise ImportFailed(
                    f"subscription {cp.summary.name}/{s.sub_id} has {len(s.pending)} "
                    f"unacknowledged messages, more than one request carries ({limit})"
                )
            cmd = c.ImportSub(
                channel=cp.summary.name,
                sub_id=s.sub_id,
                client_id=s.client_id,
                inbox=s.inbox,
                ack_inbox=s.ack_inbox,
                max_inflight=s.max_inflight,
                ack_wait=s.ack_wait,
                qgroup=s.qgroup,
                durable_name=s.durable_name,
                last_sent=s.last_sent,
                is_durable=s.is_durable,
                is_closed=d.offline,
                pending=sorted(s.pending),
            )
            reply, _ = await self._apply(cmd, f"subscription {cp.summary.name}/{s.sub_id}")
            value = reply.get("value")
            if value is None:
                continue
            if value.get("offline"):
                res.subs_offline += 1
            else:
                res.subs_active += 1
