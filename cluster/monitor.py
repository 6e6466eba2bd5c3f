"""HTTP monitoring: the reference's ``/streaming/...`` endpoints.

A deliberately small HTTP/1.1 server on asyncio streams (GET only, one
request per connection) so the node needs no web framework.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from cluster.server import Server

log = logging.getLogger("stanchion.monitor")

_INDEX = """<html><body><h1>stanchion</h1><ul>
<li><a href="/streaming/serverz">serverz</a></li>
<li><a href="/streaming/storez">storez</a></li>
<li><a href="/streaming/clientsz">clientsz</a></li>
<li><a href="/streaming/channelsz">channelsz</a></li>
</ul></body></html>"""


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def rfc3339(ts: float) -> str:
    dt = datetime.fromtimestamp(ts).astimezone()
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{int((ts % 1) * 1e9):09d}".rstrip("0")
    off = dt.strftime("%z")
    off = off[:3] + ":" + off[3:] if off not in ("+0000", "") else "Z"
    return f"{base}.{frac}{off}" if frac else f"{base}{off}"


def uptime(seconds: float) -> str:
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


class Monitor:
    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._srv: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._srv = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("Starting http monitor on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._srv is not None:
            self._srv.close()
            await self._srv.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while True:
                h = await asyncio.wait_for(reader.readline(), 10)
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
            writer.write(head.encode() + body)
            await writer.drain()
        except Exception as exc:  # noqa: BLE001 - a bad HTTP client must not hurt the node
            log.debug("monitor request failed: %s", exc)
        finally:
            writer.close()

    def respond(self, method: str, target: str) -> tuple[int, str, bytes]:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        if method != "GET":
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == "/streaming":
            return 200, "text/html; charset=utf-8", _INDEX.encode()
        if path == "/streaming/isFTActive":
            return 204, "text/plain; charset=utf-8", b""
        handlers = {
            "/streaming/serverz": self.serverz,
            "/streaming/storez": self.storez,
            "/streaming/clientsz": self.clientsz,
            "/streaming/channelsz": self.channelsz,
        }
        handler = handlers.get(path)
        if handler is None:
            return 404, "text/plain; charset=utf-8", b"404 page not found\n"
        try:
            data = handler(query)
        except HttpError as exc:
            return exc.status, "text/plain; charset=utf-8", (exc.text + "\n").encode()
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

    def serverz(self, q: dict[str, str]) -> dict[str, Any]:
        s = self.server
        store = s.store
        channels = store.channels()
        out = {
            "cluster_id": s.cfg.cluster_id,
            "server_id": s.server_id,
            "version": "0.25.6",
            "go": "python" + sys.version.split()[0],
            "state": "CLUSTERED" if s.cfg.cluster.enabled else "STANDALONE",
        }
        if s.cfg.cluster.enabled:
            out["role"] = s.raft.role()
            out["node_id"] = s.cfg.cluster.node_id
        out.update(
            {
                "now": rfc3339(time.time()),
                "start_time": rfc3339(s.start_time),
                "uptime": uptime(time.time() - s.start_time),
                "clients": len(store.clients()),
                "subscriptions": sum(len(store.subs(n)) for n in list(channels)),
                "channels": len(channels),
                "total_msgs": sum(ch.msgs for ch in list(channels.values())),
                "total_bytes": sum(ch.bytes for ch in list(channels.values())),
                "in_msgs": s.in_msgs,
                "in_bytes": s.in_bytes,
                "out_msgs": s.delivery.out_msgs,
                "out_bytes": s.delivery.out_bytes,
            }
        )
        if s.cfg.cluster.enabled:
            st = s.raft.status()
            out["raft"] = st
        return out

    def storez(self, q: dict[str, str]) -> dict[str, Any]:
        s = self.server
        lim = s.cfg.limits
        channels = s.store.channels()
        limits: dict[str, Any] = {
            "max_channels": lim.max_channels,
            "max_msgs": lim.max_msgs,
            "max_bytes": lim.max_bytes,
            "max_age": lim.max_age,
            "max_subscriptions": lim.max_subs,
            "max_inactivity": lim.max_inactivity,
        }
        kind = "RAFT_FILE" if s.cfg.cluster.enabled else s.store.kind
        if kind == "LMDB":
            kind = "FILE"
        return {
            **self._base(),
            "type": kind,
            "limits": limits,
            "total_msgs": sum(ch.msgs for ch in list(channels.values())),
            "total_bytes": sum(ch.bytes for ch in list(channels.values())),
        }

    def _sub_json(self, channel: str, sub: Any) -> dict[str, Any]:
        view = self.server.delivery.by_key.get((channel, sub.sub_id))
        pending = (
            len(view.pending)
            if view is not None
            else len(self.server.store.pending(channel, sub.sub_id))
        )
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

    def _page(self, q: dict[str, str], total: int) -> tuple[int, int]:
        try:
            offset = max(0, int(q.get("offset", "0")))
        except ValueError:
            offset = 0
        try:
            limit = int(q.get("limit", "1024"))
        except ValueError:
            limit = 1024
        if limit <= 0:
            limit = 1024
        return offset, limit

    def clientsz(self, q: dict[str, str]) -> dict[str, Any]:
        store = self.server.store
        with_subs = q.get("subs") == "1"
        clients = dict(store.clients())

        def client_json(cid: str) -> dict[str, Any]:
            rec = clients[cid]
            subs: dict[str, list[dict[str, Any]]] = {}
            for name in list(store.channels()):
                for sub in list(store.subs(name).values()):
                    if sub.client_id == cid and not sub.is_closed:
                        subs.setdefault(name, []).append(self._sub_json(name, sub))
            out: dict[str, Any] = {
                "id": cid,
                "hb_inbox": rec.hb_inbox,
                "subs_count": sum(len(v) for v in subs.values()),
            }
            if with_subs and subs:
                out["subscriptions"] = subs
            return out

        if "client" in q:
            if q["client"] not in clients:
                raise HttpError(404, f"Client {q['client']} not found")
            return client_json(q["client"])
        ids = sorted(clients)
        offset, limit = self._page(q, len(ids))
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
            subs = list(store.subs(name).values())
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
        offset, limit = self._page(q, len(names))
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


_REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 405: "Method Not Allowed"}
