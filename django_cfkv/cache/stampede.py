"""Stampede protection for ``get_or_set`` and ``@cached`` (``OPTIONS["STAMPEDE_PROTECTION"]``).

Two defences. A missing value is computed once per process while other callers
wait for it (at most STAMPEDE_WAIT seconds), threads on a ``threading.Event``
and coroutines on an ``asyncio.Future`` of their event loop (holding no
thread). And each reader may recompute a value early as its expiry nears
(XFetch, Vattani et al., VLDB 2015; STAMPEDE_BETA), so that one process
refreshes while the rest keep serving the current value.
"""

import asyncio
import math
import random
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from .. import clock
from ..transport import CallCounter
from .codec import Entry

#: Process-wide counts of stampede events: "computed", "waited", "early_refresh", "served_while_refreshing".
stampede_events = CallCounter()

#: The uniform draw in [0, 1) behind early recomputation. Tests replace this name, never ``random.random``.
uniform: Callable[[], float] = random.random

Store = Callable[[Any, float], None]  # write a computed value and how long it took
AStore = Callable[[Any, float], Awaitable[None]]  # the same, awaited

_MISSING = object()
_flights: dict[Hashable, Any] = {}  # flight key -> _Flight (threads) or asyncio.Future (one event loop)
_flights_lock = threading.Lock()


class _Flight:
    """One in-process computation of a key that other callers may wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = _MISSING


class Stampede:
    """The stampede protection of one cache: its alias, STAMPEDE_BETA and STAMPEDE_WAIT."""

    def __init__(self, alias: str, beta: float, wait: float) -> None:
        self.alias, self.beta, self.wait = alias, beta, wait

    def refresh_early(self, entry: Entry) -> bool:
        """XFetch: recompute if now - delta*beta*ln(rand) >= expiry."""
        if entry.expires is None or not entry.delta:
            return False
        return clock.now() - entry.delta * self.beta * math.log(1.0 - uniform()) >= entry.expires

    def get_or_compute(self, kv_key: str, entry: Entry | None, compute: Callable[[], Any], store: Store) -> Any:
        """Return the value of ``entry`` (what a read of ``kv_key`` found; None: a miss), or if it is
        missing or due for early recomputation, ``compute()`` it once in this process and ``store`` it."""
        if entry is not None and not self.refresh_early(entry):
            return entry.value
        flight_key = (self.alias, kv_key)
        flight, leader = _join_flight(flight_key)
        if leader:
            stampede_events.record("computed" if entry is None else "early_refresh")
            return self._compute_and_store(compute, store, flight_key, flight)
        if entry is not None:  # another thread is refreshing: serve the current value
            stampede_events.record("served_while_refreshing")
            return entry.value
        stampede_events.record("waited")
        if flight.done.wait(self.wait) and flight.value is not _MISSING:
            return flight.value
        # The computation failed or is too slow: compute without coordination.
        stampede_events.record("computed")
        value, delta = _timed(compute)
        store(value, delta)
        return value

    def _compute_and_store(self, compute: Callable[[], Any], store: Store, flight_key: Hashable,
                           flight: _Flight) -> Any:
        value = _MISSING
        try:
            value, delta = _timed(compute)
            store(value, delta)
            return value
        finally:
            _land(flight_key, flight, value)  # a failure releases the waiters with nothing

    async def aget_or_compute(self, kv_key: str, entry: Entry | None, acompute: Callable[[], Awaitable[Any]],
                              store: AStore) -> Any:
        """The async twin of get_or_compute, for coroutine functions.

        The first caller on this event loop computes; the others await an
        asyncio.Future it made (at most STAMPEDE_WAIT seconds, holding no
        thread), and compute themselves if it fails or is too slow.
        """
        if entry is not None and not self.refresh_early(entry):
            return entry.value
        loop = asyncio.get_running_loop()
        flight_key = (self.alias, kv_key, id(loop))
        with _flights_lock:
            future = _flights.get(flight_key)
            leader = future is None
            if future is None:
                future = _flights[flight_key] = loop.create_future()
        if not leader:
            if entry is not None:  # another task is refreshing: serve the current value
                stampede_events.record("served_while_refreshing")
                return entry.value
            stampede_events.record("waited")
            try:
                value = await asyncio.wait_for(asyncio.shield(future), self.wait)
            except asyncio.TimeoutError:
                value = _MISSING
            if value is not _MISSING:
                return value
            # The computation failed or is too slow: compute without coordination.
        stampede_events.record("computed" if entry is None or not leader else "early_refresh")
        value = _MISSING
        try:
            start = clock.monotonic()
            value = await acompute()
            delta = clock.monotonic() - start
            await store(value, delta)
            return value
        finally:
            if leader:  # a failure (or cancellation) releases the waiters with nothing
                with _flights_lock:
                    _flights.pop(flight_key, None)
                if not future.done():
                    future.set_result(value)


def _join_flight(flight_key: Hashable) -> tuple[_Flight, bool]:
    """Return (flight, True) to the caller that must compute, (flight, False) to the others."""
    with _flights_lock:
        flight = _flights.get(flight_key)
        if flight is None:
            flight = _flights[flight_key] = _Flight()
            return flight, True
        return flight, False


def _land(flight_key: Hashable, flight: _Flight, value: Any) -> None:
    with _flights_lock:
        _flights.pop(flight_key, None)
    flight.value = value
    flight.done.set()


def _timed(compute: Callable[[], Any]) -> tuple[Any, float]:
    start = clock.monotonic()
    value = compute()
    return value, clock.monotonic() - start
