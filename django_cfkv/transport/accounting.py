"""What the process knows of its API calls: counts by endpoint, and the hooks that watch or police them.

Every attempt is counted, retries included, because every attempt costs one of the
1,200 calls per 5 minutes that Cloudflare allows a user.
"""

import threading
from collections.abc import Callable

_lock = threading.Lock()  # one for every counter, so :func:`record` counts a call twice under one


class CallCounter:
    """Thread-safe count of API calls by endpoint; ``total`` sums them."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}  # a plain dict: a Counter's += costs it more, on every call

    def record(self, endpoint: str) -> None:
        with _lock:
            self._counts[endpoint] = self._counts.get(endpoint, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """Return a plain dict copy of the counts so far."""
        with _lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with _lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with _lock:
            self._counts.clear()


#: Every call made by every client in this process; tests and benchmarks read it.
calls = CallCounter()


def record(counter: CallCounter, endpoint: str) -> None:
    """Count one call in ``counter`` (a transport's) and in the process's :data:`calls`, under one lock."""
    with _lock:
        counter._counts[endpoint] = counter._counts.get(endpoint, 0) + 1
        calls._counts[endpoint] = calls._counts.get(endpoint, 0) + 1


#: The seam for tools that watch or police calls (django_cfkv.testing keeps tests on loopback
#: with it): callables run as ``hook(method, url)`` before each call is sent. One may raise to
#: stop the call; nothing is sent then and its error reaches the caller. The package adds none.
request_hooks: list[Callable[[str, str], None]] = []


def before_call(method: str, url: str) -> None:
    """Run every request hook for a call about to be sent."""
    for hook in request_hooks:
        hook(method, url)
