"""The one clock seam: every decision in django_cfkv that depends on time reads it here.

Expiry, windows, backoff, deadlines and ages call :func:`now`,
:func:`monotonic` and :func:`sleep` through this module (``clock.now()``), so a
test moves time for the whole package in one place, without touching the
``time`` module that pytest, Django and every other thread share::

    monkeypatch.setattr(clock, "now", lambda: start + 3600)

Async code waits through :func:`asleep`, which a test moves as it moves :func:`sleep`.

Nothing here knows Django.
"""

import asyncio
import time


def now() -> float:
    """Return the wall-clock time in epoch seconds (what KV's expiries are in)."""
    return time.time()  # read at each call: a suite that patches time.time moves this clock too


def monotonic() -> float:
    """Return seconds on a clock that never goes back (for ages, intervals and deadlines)."""
    return time.monotonic()


def sleep(seconds: float) -> None:
    """Wait ``seconds`` (a backoff, a wait for a lock or for KV's one write per second)."""
    time.sleep(seconds)


async def asleep(seconds: float) -> None:
    """Wait ``seconds`` without holding the event loop (the async client's backoff and Retry-After)."""
    await asyncio.sleep(seconds)
