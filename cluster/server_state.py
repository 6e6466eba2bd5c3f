"""What the request-handling mixins of ``cluster.server.Server`` rely on.

``Server`` sets these in its constructor and ``start``; the mixins
(``server_clients``, ``server_publish``, ``server_subs``) only use them.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from cluster.config import ServerConfig
from cluster.delivery import Delivery
from cluster.fsm import StateMachine
from cluster.outbox import Outbox
from cluster.raft import RaftGlue
from protocol.subjects import Subjects
from store.api import Store


class ServerState:
    """The node's parts, as seen by the handler mixins."""

    cfg: ServerConfig
    loop: asyncio.AbstractEventLoop
    store: Store
    fsm: StateMachine
    raft: RaftGlue
    nc: NATS
    outbox: Outbox
    delivery: Delivery
    subjects: Subjects
