"""Wait for a condition, not for a guessed time: `await wait_until(lambda: ..., within=seconds)`.

A sleep used as synchronisation is either too short on a loaded machine (a flaky test) or too long
everywhere (a slow one). `wait_until` polls the condition and returns as soon as it holds, so its
deadline can be generous. The one sleep it makes is the polling interval.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["wait_until", "wait_until_sync"]

T = TypeVar("T")
Explain = str | Callable[[], str | Awaitable[str]]


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]],
    within: float = ...,
    interval: float = ...,
    *,
    message: Explain = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def wait_until(
    predicate: Callable[[], T],
    within: float = ...,
    interval: float = ...,
    *,
    message: Explain = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def wait_until(
    predicate: Callable[[], Any],
    within: float = 10.0,
    interval: float = 0.05,
    *,
    message: Explain = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `predicate` (plain or async) every `interval` s until it returns something truthy; return that.

    Exceptions of the `ignore` types count as "not yet" (a server that is not listening yet). After
    `within` s, AssertionError with `message` (a string, or a function returning the explanation, for
    a failure report that says where things were) and the last ignored exception, if any.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = ""  # the last ignored exception, as text: the exception itself would keep its frames alive
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except ignore as exc:
            last = repr(exc)
        if loop.time() >= deadline:
            break
        await asyncio.sleep(interval)
    text = message if isinstance(message, str) else message()
    if inspect.isawaitable(text):
        text = await text
    detail = f" (last error: {last})" if last else ""
    raise AssertionError(f"{text} not reached within {within:g} s{detail}")


def wait_until_sync(
    predicate: Callable[[], T],
    within: float = 10.0,
    interval: float = 0.05,
    *,
    message: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`wait_until` for a test without an event loop (a blocking test driving a child process)."""
    deadline = time.monotonic() + within
    last = ""  # the last ignored exception, as text: the exception itself would keep its frames alive
    while True:
        try:
            if value := predicate():
                return value
        except ignore as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f" (last error: {last})" if last else ""
    raise AssertionError(f"{message} not reached within {within:g} s{detail}")
