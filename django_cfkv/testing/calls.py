"""Counting what a test costs: KV API calls (:class:`KVCalls`, :func:`assert_kv_calls`) and connections."""

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import transport


class KVCalls:
    """KV API calls made in this process since creation or ``reset()``, by endpoint.

    Every HTTP attempt counts, retries included: each one costs a call of the
    account's 1,200 per 5 minutes. Endpoints: get, get_metadata, put, delete,
    list, bulk_get, bulk_put, bulk_delete, namespaces.
    """

    def __init__(self) -> None:
        self._end: dict[str, int] | None = None
        self.reset()

    def reset(self) -> None:
        """Count from now on."""
        self._start = transport.calls.snapshot()
        self._end = None

    def stop(self) -> None:
        """Freeze the counts."""
        self._end = transport.calls.snapshot()

    @property
    def counts(self) -> dict[str, int]:
        """Return ``{endpoint: calls}`` for endpoints called at least once."""
        now = self._end if self._end is not None else transport.calls.snapshot()
        counts = {name: n - self._start.get(name, 0) for name, n in sorted(now.items())}
        return {name: n for name, n in counts.items() if n > 0}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __getitem__(self, endpoint: str) -> int:
        return self.counts.get(endpoint, 0)

    def __str__(self) -> str:
        return ", ".join(f"{name}: {n}" for name, n in self.counts.items()) or "none"

    def __repr__(self) -> str:
        return f"<KVCalls total={self.total} ({self})>"


@contextlib.contextmanager
def assert_kv_calls(num: int) -> Iterator[KVCalls]:
    """Fail unless the block makes exactly ``num`` KV API calls (retries included).

    Like ``assertNumQueries()`` for SQL. Yields a ``KVCalls`` to inspect.
    """
    calls = KVCalls()
    yield calls
    calls.stop()
    if calls.total != num:
        raise AssertionError(
            f"{calls.total} != {num} : {calls.total} KV API calls made, {num} expected. "
            f"Calls by endpoint: {calls}."
        )


def connections_opened(kv: Any) -> int:
    """Return how many TCP connections the client ``kv`` (a KVClient, or its transport) has opened
    since its connection pool was made: a number that stays small however many calls it makes
    shows that connections are reused. Each urllib3 pool counts the connections it makes."""
    session = getattr(kv, "transport", kv).session
    adapters = {id(adapter): adapter for adapter in session.adapters.values()}.values()
    pools = [adapter.poolmanager.pools[key] for adapter in adapters for key in adapter.poolmanager.pools.keys()]
    return sum(pool.num_connections for pool in pools)
