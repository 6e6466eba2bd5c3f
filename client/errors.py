"""The client's exception type and the texts it raises on its own behalf.

Texts the server sends (PubAck, SubscriptionResponse, ... ``error`` fields)
are raised verbatim as ``StanError(text)``; the ones below are produced by the
client itself and match stan.go's, so users see the same messages.
"""

from __future__ import annotations


class StanError(Exception):
    """A STAN failure. ``str(err)`` is exactly the protocol or client text."""

    @property
    def text(self) -> str:
        return str(self)


CONNECT_TIMEOUT = "stan: connect request timeout (possibly wrong cluster ID?)"
PUB_ACK_TIMEOUT = "stan: publish ack timeout"
SUB_REQ_TIMEOUT = "stan: subscribe request timeout"
CLOSE_REQ_TIMEOUT = "stan: close request timeout"
UNSUB_REQ_TIMEOUT = "stan: unsubscribe request timeout"
MAX_PINGS = "stan: connection lost due to PING failure"
CONNECTION_CLOSED = "stan: connection closed"
NO_SERVER_SUPPORT = "stan: not supported by server"
BAD_SUBSCRIPTION = "stan: invalid subscription"
MANUAL_ACK = "stan: cannot manually ack in auto-ack mode"


def undecodable(what: str) -> str:
    """Text for a reply that is not valid protobuf (not produced by stan.go)."""
    return f"stan: undecodable {what} from server"
