"""The leader's import endpoint: ``_STAN.admin.<cluster_id>.import``.

``stanchion import-filestore`` (``cluster/importer.py``) talks to the leader
through this subject with NATS requests. Each request and reply is a msgpack
map. Requests:

``{"op": "plan", "cluster_id", "channels": [...], "clients": [...]}``
    Read-only check before an import: the reply names the target's cluster
    ID, which of the given channels and clients exist already, the channel
    count and limit, the limits each channel would get, and the subjects this
    cluster serves. Refused when ``cluster_id`` is not the target's.
``{"op": "state", "channel"}``
    Read-only: ``exists``, ``first_seq``, ``last_seq``, ``msgs`` of a channel
    (where an interrupted import resumes).
``{"op": "apply", "command": <encoded import command>}``
    Replicates ``ImportChannel``, ``ImportClient`` or ``ImportSub``
    (``cluster/commands.py``) and answers once it is committed and applied
    here: ``ok``, ``error``, ``retry`` (true when the failure was the
    replication, not the command) and ``value`` (see ``cluster/fsm_import.py``).
``{"op": "msgs", "channel", "after_seq", "last_seq", "msgs": <packed list>}``
    Replicates an ``ImportMsgs`` batch, answered as ``apply``. The message
    list comes encoded (``commands.pack_import_msgs``) and goes into the
    command as it is, with the leader's time added, so the leader never
    decodes a batch.

Only the leader subscribes (with the client subjects). The callback proposes
synchronously, so requests are replicated in the order they arrive and an
importer may keep several batches in flight. The subject is outside the
reference's internal ones (PROTOCOL.md §2.4); like the client subjects, it is
open to whoever may publish on the NATS server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]
from nats.aio.msg import Msg

from cluster import commands as c
from cluster.fsm import Outcome, SubAdded
from cluster.raft import ProposalError

if TYPE_CHECKING:
    from cluster.server import Server

log = logging.getLogger("stanchion.import")

#: Subject prefix of the admin requests (followed by ``<cluster_id>.import``).
ADMIN_PREFIX = "_STAN.admin"
#: Ops accepted by ``apply`` (message batches come through ``msgs``).
IMPORT_OPS = frozenset({c.Op.IMPORT_CHANNEL, c.Op.IMPORT_CLIENT, c.Op.IMPORT_SUB})
#: Deadline of one import proposal (s); generous, entries may be 1 MB.
PROPOSAL_TIMEOUT = 30.0


def import_subject(cluster_id: str) -> str:
    return f"{ADMIN_PREFIX}.{cluster_id}.import"


def pack(obj: dict[str, Any]) -> bytes:
    out = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def unpack(data: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(data, raw=False)
    if not isinstance(obj, dict):
        raise ValueError("not a map")
    return obj


def handler(server: Server) -> Callable[[Msg], Awaitable[None]]:
    """The subscription callback for :func:`import_subject`."""

    async def cb(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            req = unpack(msg.data)
            op = req.get("op")
            if op == "plan":
                _reply(server, msg, _plan(server, req))
            elif op == "state":
                _reply(server, msg, _state(server, str(req.get("channel", ""))))
            elif op == "apply":
                _apply(server, msg, req.get("command"))
            elif op == "msgs":
                _apply_msgs(server, msg, req)
            else:
                _reply(server, msg, {"ok": False, "error": f"unknown op {op!r}"})
        except Exception as exc:  # noqa: BLE001 - a bad request gets an error reply
            _reply(server, msg, {"ok": False, "error": f"bad import request: {exc}"})

    return cb


def _reply(server: Server, msg: Msg, body: dict[str, Any]) -> None:
    server.outbox.send(msg.reply, pack(body))


def _plan(server: Server, req: dict[str, Any]) -> dict[str, Any]:
    cid = server.cfg.cluster_id
    if req.get("cluster_id") != cid:
        return {
            "ok": False,
            "cluster_id": cid,
            "error": f"cluster ID mismatch: the store's is {req.get('cluster_id')!r}, "
            f"this server's is {cid!r}",
        }
    store = server.store
    channels = [str(n) for n in req.get("channels", [])]
    clients = [str(n) for n in req.get("clients", [])]
    existing = store.channels()
    lower = {n.lower(): n for n in existing}
    lim = server.cfg.limits
    s = server.subjects
    return {
        "ok": True,
        "cluster_id": cid,
        "existing_channels": [n for n in channels if n.lower() in lower],
        "existing_clients": [n for n in clients if n in store.clients()],
        "channel_count": len(existing),
        "max_channels": lim.max_channels,
        "limits": {n: _limits_list(lim.resolve(n)) for n in channels},
        "subjects": {
            "discovery": s.discover,
            "publish": s.pub_prefix,
            "subscribe": s.sub,
            "unsubscribe": s.unsub,
            "close": s.close,
            "sub_close": s.subclose,
        },
    }


def _limits_list(lim: Any) -> list[int]:
    return [lim.max_msgs, lim.max_bytes, lim.max_age, lim.max_subs, lim.max_inactivity]


def _state(server: Server, channel: str) -> dict[str, Any]:
    ch = server.store.channels().get(channel)
    if ch is None:
        return {"ok": True, "exists": False}
    return {
        "ok": True,
        "exists": True,
        "first_seq": ch.first_seq,
        "last_seq": ch.last_seq,
        "msgs": ch.msgs,
        "subs": len(server.store.subs(channel)),
    }


def _peek_op(blob: bytes) -> int:
    """The op number of an encoded command, without decoding the rest."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(blob)
    if unpacker.read_array_header() < 2:
        raise ValueError("not a command")
    op = unpacker.unpack()
    if not isinstance(op, int):
        raise ValueError("not a command")
    return op


def _apply(server: Server, msg: Msg, blob: Any) -> None:
    if not isinstance(blob, bytes) or _peek_op(blob) not in IMPORT_OPS:
        _reply(server, msg, {"ok": False, "error": "not an import command"})
        return
    if not server.is_leader:
        _reply(server, msg, {"ok": False, "retry": True, "error": "not the leader"})
        return
    cmd = c.decode(blob)
    if isinstance(cmd, c.ImportChannel):
        cmd.now = time.time_ns()
        blob = c.encode(cmd)
    fut = server.raft.propose(blob, timeout=PROPOSAL_TIMEOUT)
    server._spawn(_finish(server, msg, cmd, fut))


def _apply_msgs(server: Server, msg: Msg, req: dict[str, Any]) -> None:
    channel, after, last, packed = (
        req.get("channel"),
        req.get("after_seq"),
        req.get("last_seq"),
        req.get("msgs"),
    )
    if not (
        isinstance(channel, str)
        and isinstance(after, int)
        and isinstance(last, int)
        and isinstance(packed, bytes)
        and _is_array(packed)
    ):
        _reply(server, msg, {"ok": False, "error": "malformed message batch"})
        return
    if not server.is_leader:
        _reply(server, msg, {"ok": False, "retry": True, "error": "not the leader"})
        return
    blob = c.encode_import_msgs(channel, after, packed, last, time.time_ns())
    fut = server.raft.propose(blob, timeout=PROPOSAL_TIMEOUT)
    server._spawn(_finish(server, msg, None, fut))


def _is_array(packed: bytes) -> bool:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(packed)
    try:
        unpacker.read_array_header()
    except Exception:  # noqa: BLE001 - anything else is not a batch
        return False
    return True


async def _finish(server: Server, msg: Msg, cmd: c.Command | None, fut: Any) -> None:
    try:
        out: Outcome = await fut
    except ProposalError as exc:
        _reply(server, msg, {"ok": False, "retry": True, "error": str(exc)})
        return
    value: Any = out.value
    if not out.error:
        if isinstance(cmd, c.ImportClient):
            for client_id in out.value or []:
                server._start_hb(client_id)
        elif isinstance(cmd, c.ImportSub):
            await _start_subs(server, out)
            rec = out.value
            value = None if rec is None else {"sub_id": rec.sub_id, "offline": rec.is_closed}
    _reply(server, msg, {"ok": not out.error, "error": out.error, "value": value})


async def _start_subs(server: Server, out: Outcome) -> None:
    """Deliver to imported open subscriptions, as a new leader does."""
    if not server.is_leader:
        return  # a new leader picks them up at promotion
    store = server.store
    for ev in out.events:
        if not isinstance(ev, SubAdded):
            continue
        rec = store.subs(ev.channel).get(ev.sub_id)
        if rec is None or rec.is_closed or rec.client_id not in store.clients():
            continue
        view = server.delivery.add(rec, store.pending(ev.channel, ev.sub_id), startup=True)
        if not view.ack_inbox.startswith(server.ack_prefix + "."):
            await server._subscribe_ack_inbox(view.ack_inbox)
            await server.nc.flush()
        server.delivery.start(view)
        log.debug(
            "imported subscription started channel=%s sub_id=%d inbox=%s",
            ev.channel,
            ev.sub_id,
            rec.inbox,
        )
