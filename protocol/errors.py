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
    """Quote like Go's ``%q`` for the printable text a channel name can hold."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)
