"""Subscriptions whose messages are handled as nats-py parses them.

nats-py hands every message of a callback subscription to a task of its own
through a queue: the parser puts it there, and the task runs the callback on
a later turn of the event loop. For the leader's busiest subjects (publishes
and subscriber acks) that hop is a good part of the cost of a message, and
the handlers are plain functions that never wait. ``subscribe_direct`` calls
such a handler right where nats-py would queue the message, so it runs in
the connection's read loop, in arrival order; a flood of messages is then
held back by the read loop itself rather than piling up in a queue.

It relies on two private attributes of nats-py's ``Subscription`` (its
pending queue and pending byte count). On a nats-py without them the
subscription keeps nats-py's own way, with the same handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("stanchion.nats")

Handler = Callable[[Msg], None]


class _HandOver(asyncio.Queue):  # type: ignore[type-arg]
    """Stands in for a subscription's pending queue: nothing is ever queued,
    every message goes to the handler at once (nats-py's task waits on it
    forever, and a drain finds it empty)."""

    def __init__(self, sub: Subscription, handler: Handler) -> None:
        super().__init__()
        self._sub = sub
        self._handler = handler

    def put_nowait(self, item: Any) -> None:
        # nats-py counted the bytes as pending just before handing them over.
        self._sub._pending_size -= len(item.data)
        try:
            self._handler(item)
        except Exception:
            log.exception("handler failed subject=%s", item.subject)


async def subscribe_direct(nc: NATS, subject: str, handler: Handler, **kwargs: Any) -> Subscription:
    """Subscribe ``handler`` (a function that must not block) to ``subject``;
    ``kwargs`` go to ``nc.subscribe``. Returns the subscription."""

    async def queued(msg: Msg) -> None:  # nats-py's own way (see the module text)
        handler(msg)

    sub = await nc.subscribe(subject, cb=queued, **kwargs)
    if direct_dispatch_possible(sub):
        sub._pending_queue = _HandOver(sub, handler)
    else:
        log.warning("nats-py without the expected internals: %s handled through its queue", subject)
    return sub


def direct_dispatch_possible(sub: Subscription) -> bool:
    """True when this nats-py has what ``subscribe_direct`` replaces."""
    return isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue) and isinstance(
        getattr(sub, "_pending_size", None), int
    )


def is_direct(sub: Subscription) -> bool:
    """True when ``sub`` hands its messages over directly."""
    return isinstance(getattr(sub, "_pending_queue", None), _HandOver)
