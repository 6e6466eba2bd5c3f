"""HTTP monitoring: the reference's ``/streaming/...`` endpoints, readiness, Prometheus.

A deliberately small HTTP/1.1 server on asyncio streams (GET and HEAD, one
request per connection), over TLS for ``-ms``, so the node needs no web
framework.

Endpoints (OPERATIONS §4 for the first six, field for field):

* ``/streaming``: HTML index.
* ``/streaming/serverz``, ``/streaming/storez``, ``/streaming/clientsz``,
  ``/streaming/channelsz``: JSON, ``callback=<fn>`` for JSONP. Clustered,
  ``serverz`` also has a ``raft`` object (an extension: term, leader,
  indexes, peers).
* ``/streaming/isFTActive``: always 204, there is no FT mode here.
* ``/streaming/healthz`` (extension): 200 when this node serves clients (the
  leader, promoted) or is a follower that knows a leader and has applied
  every committed entry; 503 otherwise. The JSON body says why.
* ``/metrics``: Prometheus text format (``cluster.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import ssl
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from cluster.server import Server

log = logging.getLogger("stanchion.monitor")

#: Reported as ``version`` in serverz: the reference version we behave as.
REFERENCE_VERSION = "0.25.6"
#: Default and largest page size of clientsz and channelsz.
DEFAULT_LIMIT = 1024
#: Seconds a client gets to send its request.
REQUEST_TIMEOUT = 10.0

_INDEX = """<html><head><title>stanchion monitoring</title></head><body>
<h1>NATS Streaming (stanchion)</h1><ul>
<li><a href="/streaming/serverz">serverz</a></li>
<li><a href="/streaming/storez">storez</a></li>
<li><a href="/streaming/clientsz">clientsz</a></li>
<li><a href="/streaming/channelsz">channelsz</a></li>
<li><a href="/streaming/healthz">healthz</a></li>
<li><a href="/metrics">metrics</a></li>
</ul></body></html>"""

_TEXT = "text/plain; charset=utf-8"
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def rfc3339(ts: float) -> str:
    """Go's RFC3339Nano in local time: trailing zeros dropped, ``Z`` for UTC."""
    dt = datetime.fromtimestamp(ts).astimezone()
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{int(round((ts % 1) * 1e9)) % 1_000_000_000:09d}".rstrip("0")
    off = dt.strftime("%z")
    off = off[:3] + ":" + off[3:] if off not in ("+0000", "") else "Z"
    return f"{base}.{frac}{off}" if frac else f"{base}{off}"


def uptime(seconds: float) -> str:
    """``1y2d3h4m5s``: largest non-zero unit first, years of 365 days."""
    s = int(seconds)
    years, s = divmod(s, 365 * 86400)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    mins, secs = divmod(s, 60)
    out = ""
    for value, unit in ((years, "y"), (days, "d"), (hours, "h"), (mins, "m")):
        if value or out:
            out += f"{value}{unit}"
    return out + f"{secs}s"


def fd_counts() -> tuple[int, int]:
    """Open file descriptors of this process and their soft limit (0, 0 if unknown)."""
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = 0
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return open_fds, max(soft, 0)


class Monitor:
    """One listening socket serving every endpoint; ``tls=(cert, key)`` for https."""

    def __init__(
        self, server: Server, host: str, port: int, tls: tuple[str, str] | None = None
    ) -> None:
        from cluster.metrics import Metrics

        self.server = server
        self.host = host
        self.port = port
        self.ssl: ssl.SSLContext | None = None
        if tls is not None:
            self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl.load_cert_chain(*tls)
        self.metrics = Metrics(server)
        self._srv: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._srv = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.ssl)
        self.metrics.install()
        scheme = "https" if self.ssl else "http"
        log.info("Starting %s monitor on %s:%d", scheme, self.host, self.port)

    async def stop(self) -> None:
        self.metrics.uninstall()
        if self._srv is not None:
            self._srv.close()
            await self._srv.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            while True:
                h = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            if len(parts) < 2:
                return
            method, target = parts[0], parts[1]
            status, ctype, body = self.respond(method, target)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Access-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except Exception as exc:  # noqa: BLE001 - a bad HTTP client must not hurt the node
            log.debug("monitor request failed err=%s", exc)
        finally:
            writer.close()

    def respond(self, method: str, target: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"Method Not Allowed\n"
        if path == "/streaming":
            return 200, "text/html; charset=utf-8", _INDEX.encode()
        if path == "/streaming/isFTActive":
            return 204, _TEXT, b""
        if path == "/metrics":
            return 200, self.metrics.content_type, self.metrics.render()
        if path == "/streaming/healthz":
            ok, data = self.healthz()
            return (200 if ok else 503), "application/json", json.dumps(data, indent=2).encode()
        handlers = {
            "/streaming/serverz": self.serverz,
            "/streaming/storez": self.storez,
            "/streaming/clientsz": self.clientsz,
            "/streaming/channelsz": self.channelsz,
        }
        handler = handlers.get(path)
        if handler is None:
            return 404, _TEXT, b"404 page not found\n"
        try:
            data = handler(query)
        except HttpError as exc:
            return exc.status, _TEXT, (exc.text + "\n").encode()
        except Exception as exc:  # noqa: BLE001 - report, do not drop the connection
            log.warning("monitoring endpoint failed path=%s err=%s", path, exc)
            return 500, _TEXT, f"{exc}\n".encode()
        body = json.dumps(data, indent=2)
        callback = query.get("callback")
        if callback:
            return 200, "application/javascript", f"{callback}({body})".encode()
        return 200, "application/json", body.encode()

    # -- endpoints -------------------------------------------------------------------

    def _base(self) -> dict[str, Any]:
        s = self.server
        return {
            "cluster_id": s.cfg.cluster_id,
            "server_id": s.server_id,
            "now": rfc3339(time.time()),
        }

    def _totals(self) -> tuple[int, int, int, int]:
        """(channels, subscriptions, total_msgs, total_bytes) from the store."""
        store = self.server.store
        channels = dict(store.channels())
        subs = sum(len(store.subs(n)) for n in channels)
        msgs = sum(ch.msgs for ch in channels.values())
        size = sum(ch.bytes for ch in channels.values())
        return len(channels), subs, msgs, size

    def serverz(self, q: dict[str, str]) -> dict[str, Any]:
        s = self.server
        clustered = s.cfg.cluster.enabled
        out: dict[str, Any] = {
            "cluster_id": s.cfg.cluster_id,
            "server_id": s.server_id,
            "version": REFERENCE_VERSION,
            "go": "python" + sys.version.split()[0],
            "state": _state(s),
        }
        if clustered:
            out["role"] = s.raft.role()
            out["node_id"] = s.cfg.cluster.node_id
        channels, subs, msgs, size = self._totals()
        now = time.time()
        out.update(
            {
                "now": rfc3339(now),
                "start_time": rfc3339(s.start_time),
                "uptime": uptime(now - s.start_time),
                "clients": len(s.store.clients()),
                "subscriptions": subs,
                "channels": channels,
                "total_msgs": msgs,
                "total_bytes": size,
                "in_msgs": s.in_msgs,
                "in_bytes": s.in_bytes,
                "out_msgs": s.delivery.out_msgs,
                "out_bytes": s.delivery.out_bytes,
            }
        )
        open_fds, max_fds = fd_counts()
        if open_fds:
            out["open_fds"] = open_fds
        if max_fds:
            out["max_fds"] = max_fds
        if clustered:
            out["raft"] = self.raft_json()
        return out

    def raft_json(self) -> dict[str, Any]:
        """Extension of serverz: this node's Raft view, leader and peers by node ID."""
        s = self.server
        st = s.raft.status()
        peers = s.cfg.cluster.peers
        by_addr = {addr: node for node, addr in peers.items()}
        leader_addr = st.get("leader", "")
        return {
            "term": st.get("term", 0),
            "leader": by_addr.get(leader_addr, leader_addr),
            "commit_index": st.get("commit_index", 0),
            "last_applied": st.get("last_applied", 0),
            "has_quorum": bool(st.get("has_quorum", False)),
            "peers": {node: addr for node, addr in sorted(peers.items())},
        }

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        s = self.server
        if s.stopping:
            return False, {"status": "unavailable", "reason": "shutting down"}
        if not s.cfg.cluster.enabled:
            ok = s.is_leader
            data: dict[str, Any] = {"status": "ok" if ok else "unavailable", "role": "Standalone"}
            if not ok:
                data["reason"] = "starting"
            return ok, data
        st = s.raft.status()
        role = s.raft.role()
        data = {
            "role": role,
            "leader": st.get("leader", ""),
            "commit_index": st.get("commit_index", 0),
            "last_applied": st.get("last_applied", 0),
        }
        if s.is_leader:
            ok, reason = True, ""
        elif role == "Leader":
            ok, reason = False, "promotion in progress"
        elif not st.get("leader"):
            ok, reason = False, "no known leader"
        elif st.get("last_applied", 0) < st.get("commit_index", 0):
            ok, reason = False, "applying the log"
        else:
            ok, reason = True, ""
        data = {"status": "ok" if ok else "unavailable", **data}
        if reason:
            data["reason"] = reason
        return ok, data

    def storez(self, q: dict[str, str]) -> dict[str, Any]:
        s = self.server
        lim = s.cfg.limits
        limits: dict[str, Any] = {
            "max_channels": lim.max_channels,
            "max_msgs": lim.max_msgs,
            "max_bytes": lim.max_bytes,
            "max_age": lim.max_age,
            "max_subscriptions": lim.max_subs,
            "max_inactivity": lim.max_inactivity,
        }
        if lim.channels:
            limits["channels"] = {name: _channel_limits(lim, name) for name in sorted(lim.channels)}
        if s.store.kind == "MEMORY":
            kind = "MEMORY"
        else:
            kind = "RAFT_FILE" if s.cfg.cluster.enabled else "FILE"
        _channels, _subs, msgs, size = self._totals()
        return {
            **self._base(),
            "type": kind,
            "limits": limits,
            "total_msgs": msgs,
            "total_bytes": size,
        }

    def _sub_json(self, channel: str, sub: Any) -> dict[str, Any]:
        view = self.server.delivery.by_key.get((channel, sub.sub_id))
        if view is not None:
            pending = len(view.pending)
        else:
            pending = len(self.server.store.pending(channel, sub.sub_id))
        out: dict[str, Any] = {
            "client_id": sub.client_id,
            "inbox": sub.inbox,
            "ack_inbox": sub.ack_inbox,
        }
        if sub.durable_name:
            out["durable_name"] = sub.durable_name
        if sub.qgroup:
            out["queue_name"] = sub.qgroup
        out.update(
            {
                "is_durable": sub.is_durable,
                "is_offline": sub.is_closed,
                "max_inflight": sub.max_inflight,
                "ack_wait": sub.ack_wait,
                "last_sent": view.last_sent if view is not None else sub.last_sent,
                "pending_count": pending,
                "is_stalled": bool(view.stalled) if view is not None else False,
            }
        )
        return out

    @staticmethod
    def _page(q: dict[str, str]) -> tuple[int, int]:
        try:
            offset = max(0, int(q.get("offset", "0")))
        except ValueError:
            offset = 0
        try:
            limit = int(q.get("limit", str(DEFAULT_LIMIT)))
        except ValueError:
            limit = DEFAULT_LIMIT
        if limit <= 0:
            limit = DEFAULT_LIMIT
        return offset, limit

    def clientsz(self, q: dict[str, str]) -> dict[str, Any]:
        store = self.server.store
        with_subs = q.get("subs") == "1"
        clients = dict(store.clients())
        by_client: dict[str, dict[str, list[Any]]] = {}
        for name in sorted(store.channels()):
            for sub in sorted(store.subs(name).values(), key=lambda r: r.sub_id):
                if not sub.is_closed and sub.client_id in clients:
                    by_client.setdefault(sub.client_id, {}).setdefault(name, []).append(sub)

        def client_json(cid: str) -> dict[str, Any]:
            rec = clients[cid]
            subs = by_client.get(cid, {})
            out: dict[str, Any] = {
                "id": cid,
                "hb_inbox": rec.hb_inbox,
                "subs_count": sum(len(v) for v in subs.values()),
            }
            if with_subs and subs:
                out["subscriptions"] = {
                    name: [self._sub_json(name, sub) for sub in records]
                    for name, records in subs.items()
                }
            return out

        if "client" in q:
            if q["client"] not in clients:
                raise HttpError(404, f"Client {q['client']} not found")
            return client_json(q["client"])
        ids = sorted(clients)
        offset, limit = self._page(q)
        page = ids[offset : offset + limit]
        return {
            **self._base(),
            "offset": offset,
            "limit": limit,
            "count": len(page),
            "total": len(ids),
            "clients": [client_json(cid) for cid in page],
        }

    def channelsz(self, q: dict[str, str]) -> dict[str, Any]:
        store = self.server.store
        with_subs = q.get("subs") == "1"
        channels = dict(store.channels())

        def channel_json(name: str) -> dict[str, Any]:
            ch = channels[name]
            subs = sorted(store.subs(name).values(), key=lambda r: r.sub_id)
            out: dict[str, Any] = {
                "name": name,
                "msgs": ch.msgs,
                "bytes": ch.bytes,
                "first_seq": ch.first_seq,
                "last_seq": ch.last_seq,
                "subs_count": len(subs),
            }
            if with_subs:
                out["subscriptions"] = [self._sub_json(name, s) for s in subs]
            return out

        if "channel" in q:
            if q["channel"] not in channels:
                raise HttpError(404, f"Channel {q['channel']} not found")
            return channel_json(q["channel"])
        names = sorted(channels)
        offset, limit = self._page(q)
        page = names[offset : offset + limit]
        out: dict[str, Any] = {
            **self._base(),
            "offset": offset,
            "limit": limit,
            "count": len(page),
            "total": len(names),
        }
        if page:
            if with_subs:
                out["channels"] = [channel_json(n) for n in page]
            else:
                out["names"] = page
        return out


def _state(server: Any) -> str:
    if server.stopping:
        return "SHUTDOWN"
    return "CLUSTERED" if server.cfg.cluster.enabled else "STANDALONE"


def _channel_limits(limits: Any, name: str) -> dict[str, Any]:
    """A per-channel entry of storez, inherited values filled in, 0 = unlimited."""
    literal = "*" not in name.split(".") and ">" not in name.split(".")
    if literal:
        cl = limits.resolve(name)
    else:
        cl = limits.global_limits()
        over = limits.channels[name]
        for attr in ("max_msgs", "max_bytes", "max_age", "max_subs", "max_inactivity"):
            value = getattr(over, attr)
            if value:
                setattr(cl, attr, max(value, 0))
    return {
        "max_msgs": cl.max_msgs,
        "max_bytes": cl.max_bytes,
        "max_age": cl.max_age,
        "max_subscriptions": cl.max_subs,
        "max_inactivity": cl.max_inactivity,
    }
