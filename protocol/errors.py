"""Every error text a client can receive, exactly as the reference server sends it."""

from __future__ import annotations

INVALID_CONN_REQ = "stan: invalid connection request"
INVALID_CLIENT_ID = "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed"
CLIENT_ID_REGISTERED = "stan: clientID already registered"
INVALID_PUB_REQ = "stan: invalid publish request"
TOO_MANY_CHANNELS = "too many channels"
CHANNEL_BEING_DELETED = "stan: channel is being deleted"
INVALID_SUB_REQ = "stan: invalid subscription request"
MISSING_CLIENT_ID = "stan: clientID missing"
INVALID_ACK_WAIT = "stan: invalid ack wait time, should be >= 1s"
INVALID_MAX_INFLIGHT = "stan: invalid MaxInflight, should be >= 1"
INVALID_START_POSITION = "stan: invalid start position"
INVALID_SUBJECT = "stan: invalid subject"
UNKNOWN_CLIENT = "stan: unknown clientID"
DURABLE_QUEUE_NAME_COLON = (
    "stan: durable name of a durable queue subscriber can't contain the character ':'"
)
DUPLICATE_DURABLE = "stan: duplicate durable registration"
TOO_MANY_SUBS = "too many subscriptions per channel"
INVALID_UNSUB_REQ = "stan: invalid unsubscribe request"
UNKNOWN_CHANNEL = "stan: unknown channel"
INVALID_SUB = "stan: invalid subscription"
INVALID_CLOSE_REQ = "stan: invalid close request"
CLIENT_REPLACED = "client has been replaced or is no longer registered"

# Startup errors (server side only).
CLUSTERING_MEMORY_STORE = "stan: clustering mode not supported with MEMORY store type"
NOT_PREVIOUSLY_CLUSTERED = (
    "stan: cannot restart server in clustered mode if it was not previously clustered"
)

NO_CONFIGURED_CHANNEL = "stan: no configured channel"
PARTITIONING_CLUSTERING = "stan: channels partitioning in clustering mode is not supported"


def another_server(cluster_id: str) -> str:
    return f"discovered another streaming server with cluster ID {go_quote(cluster_id)}"


# Replication failures. The reference passes on its Raft library's texts; ours
# are stable and say what happened.
NOT_LEADER = "node is not the leader"
LEADERSHIP_LOST = "leadership lost while committing log"
REPLICATION_TIMEOUT = "timed out while committing log"
RAFT_SHUTDOWN = "raft is already shutdown"


def channel_case_conflict(new: str, existing: str) -> str:
    """Text for a channel that differs from an existing one only by case."""
    return (
        f"rejecting channel {go_quote(new)} because channel {go_quote(existing)} "
        "alreay exists (different cases not allowed)"
    )


def cluster_id_mismatch(new: str, old: str) -> str:
    return f"cluster ID {go_quote(new)} does not match recovered value of {go_quote(old)}"


def go_quote(s: str) -> str:
    """Quote like Go's ``%q`` (strconv.Quote) for any text."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch.isprintable() and code != 0x7F:
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
