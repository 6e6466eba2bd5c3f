"""Subject names and the validation rules for client IDs and channel names."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CLUSTER_ID = "test-cluster"
DEFAULT_DISCOVER_PREFIX = "_STAN.discover"
PUB_PREFIX = "_STAN.pub"
SUB_PREFIX = "_STAN.sub"
UNSUB_PREFIX = "_STAN.unsub"
SUBCLOSE_PREFIX = "_STAN.subclose"
CLOSE_PREFIX = "_STAN.close"
#: Computed and stored by the reference, used for nothing; kept for monitoring.
ACK_PREFIX = "_STAN.ack"

_CLIENT_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class Subjects:
    """The subjects a server with a given cluster ID listens on.

    Derived from the cluster ID alone, so every node of a cluster and every
    restart of a node serve the same subjects (clients cache them).
    """

    discover: str
    pings: str
    pub_prefix: str
    sub: str
    unsub: str
    subclose: str
    close: str

    @classmethod
    def for_cluster(
        cls, cluster_id: str, discover_prefix: str = DEFAULT_DISCOVER_PREFIX
    ) -> Subjects:
        discover = f"{discover_prefix}.{cluster_id}"
        return cls(
            discover=discover,
            pings=f"{discover}.pings",
            pub_prefix=f"{PUB_PREFIX}.{cluster_id}",
            sub=f"{SUB_PREFIX}.{cluster_id}",
            unsub=f"{UNSUB_PREFIX}.{cluster_id}",
            subclose=f"{SUBCLOSE_PREFIX}.{cluster_id}",
            close=f"{CLOSE_PREFIX}.{cluster_id}",
        )

    @property
    def pub_wildcard(self) -> str:
        return f"{self.pub_prefix}.>"


def is_valid_client_id(client_id: str) -> bool:
    """``^[a-zA-Z0-9_-]+$`` (ASCII only)."""
    return (
        bool(client_id) and client_id.isascii() and _CLIENT_ID_RE.fullmatch(client_id) is not None
    )


def is_valid_channel(name: str) -> bool:
    """A literal channel name: non-empty, no leading/trailing ``.``, no ``..``,
    no ``/``, and no ``*`` or ``>`` anywhere."""
    if not name or name[0] == "." or name[-1] == ".":
        return False
    return not ("/" in name or ".." in name or "*" in name or ">" in name)


def is_valid_channel_pattern(name: str) -> bool:
    """A channel name as used in per-channel limits: like a literal name, but
    ``*`` and ``>`` may stand as whole tokens (``>`` only as the last one)."""
    if not name or name[0] == "." or name[-1] == "." or "/" in name or ".." in name:
        return False
    tokens = name.split(".")
    for i, tok in enumerate(tokens):
        if tok in ("*", ">"):
            if tok == ">" and i != len(tokens) - 1:
                return False
        elif "*" in tok or ">" in tok:
            return False
    return True


def pattern_matches(pattern: str, name: str) -> bool:
    """NATS subject matching of a (possibly wildcard) pattern against a literal name."""
    ptoks = pattern.split(".")
    ntoks = name.split(".")
    for i, p in enumerate(ptoks):
        if p == ">":
            return len(ntoks) > i
        if i >= len(ntoks):
            return False
        if p != "*" and p != ntoks[i]:
            return False
    return len(ptoks) == len(ntoks)
