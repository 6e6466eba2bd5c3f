"""Wait for a condition with a deadline instead of sleeping and then asserting."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL = 0.02


def _timeout_message(
    timeout: float,
    what: str,
    state: Callable[[], object] | None,
    last_error: BaseException | None,
) -> str:
    msg = f"timed out after {timeout}s waiting for {what}"
    if state is not None:
        try:
            msg += f"\nlast state: {state()!r}"
        except Exception as exc:  # the state probe must not hide the timeout
            msg += f"\nlast state: <state() raised {exc!r}>"
    if last_error is not None:
        msg += f"\nlast error: {last_error!r}"
    return msg


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,
    what: str,
    interval: float = DEFAULT_INTERVAL,
    *,
    state: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return that value.

    Raises ``AssertionError("timed out after {timeout}s waiting for {what}")`` at the
    deadline, followed by ``state()`` (if given) and the last ignored exception.
    Exceptions listed in ``ignore`` count as "not yet"; any other exception propagates.
    The predicate is always evaluated once more at the deadline.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except ignore as exc:
            last_error = exc
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(_timeout_message(timeout, what, state, last_error))
        await asyncio.sleep(min(interval, remaining))


def wait_for_sync(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = DEFAULT_INTERVAL,
    *,
    state: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Blocking twin of :func:`wait_for` for sync tests and helpers (no awaitables)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ignore as exc:
            last_error = exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(_timeout_message(timeout, what, state, last_error))
        time.sleep(min(interval, remaining))
