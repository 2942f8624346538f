"""Transport: send one API call over the pooled requests session, and await one with aiohttp.

The retry loop is :meth:`~django_cfkv.transport.exchange.BaseTransport.exchange`'s; this module
only sends its attempts and sleeps its waits. The deadline connections (``deadline``) bound each
attempt by the wall clock, and the body reader (``body``) refuses an answer larger than KV can
give. requests' failures become KVConnectionError or KVTimeout, naming the host and endpoint only.

:meth:`Transport.arun` runs the same steps from async code: natively with aiohttp when the
``async`` extra is installed (:mod:`django_cfkv.transport.aio`), else this module's blocking
:meth:`Transport.run` in a worker thread (:mod:`django_cfkv.threads`).
"""

import functools
import importlib.util
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import requests

from .. import clock, limits, threads
from ..exceptions import KVError
from . import deadline
from .body import read_body
from .exchange import Attempt, BaseTransport, Finish, Outcome, Steps, failed
from .logs import install_filter
from .policy import DEFAULT_DEADLINE, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from .session import SharedSession

if TYPE_CHECKING:
    from .aio import LoopSessions


class Transport(BaseTransport):
    """Send requests with a timeout, a deadline, bounded retries and call accounting, blocking or awaited."""

    def __init__(self, api_token: str, *, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, deadline: float = DEFAULT_DEADLINE) -> None:
        super().__init__(timeout=timeout, max_retries=max_retries, deadline=deadline)
        self._shared = SharedSession(api_token)
        self._loops: LoopSessions | None = None  # aiohttp's sessions, one per event loop, made on first await
        self._lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        return self._shared.get()

    def close(self) -> None:
        """Close pooled connections, blocking and async (a new pool is made on next use)."""
        self._shared.close()
        if self._loops is not None:
            self._loops.close()

    async def aclose(self) -> None:
        """Close the running event loop's pooled connections now (they close when the loop ends anyway)."""
        if self._loops is not None:
            await self._loops.aclose()

    def request(self, method: str, url: str, *, endpoint: str, idempotent: bool = True,
                max_bytes: int = limits.MAX_RESPONSE_BYTES, **kwargs: Any) -> requests.Response:
        """Send one API call (see :meth:`exchange`); return the final Response, body read."""
        return self.run(self.exchange(method, url, endpoint=endpoint, idempotent=idempotent, max_bytes=max_bytes,
                                      **kwargs))

    def run(self, steps: Steps[Any], finish: Finish = None) -> Any:
        """Follow a call's steps, blocking: send each attempt with requests, sleep each wait. Return their end,
        or what ``finish`` makes of it."""
        outcome: Outcome = None
        while True:
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value if finish is None else finish(done.value)
            if isinstance(step, Attempt):
                outcome = self._attempt(step)
            else:
                clock.sleep(step.seconds)
                outcome = None

    def arun(self, steps: Steps[Any], finish: Finish = None) -> Awaitable[Any]:
        """Return what follows a call's steps when awaited (see :meth:`run`): with aiohttp when installed, else
        :meth:`run` in a thread. (Not a coroutine itself: the caller awaits the one it returns, one layer fewer
        per call.)"""
        loops = self._loops or self._loop_sessions()
        if loops is None:
            return threads.run(self.run, steps, finish)
        return loops.run(steps, finish)

    def _loop_sessions(self) -> "LoopSessions | None":
        """Return the aiohttp sessions (one per event loop) this transport awaits with, or None without aiohttp."""
        if not native_async():
            return None
        from .aio import LoopSessions

        with self._lock:
            if self._loops is None:
                self._loops = LoopSessions(self._shared.token)
        return self._loops

    def _attempt(self, attempt: Attempt) -> Outcome:
        """Send one attempt and read its body within its window; return the Response or the KVError."""
        try:
            with deadline.until(attempt.ends, attempt.timeout[1]):
                response = self.session.request(attempt.method, attempt.url, params=attempt.params,
                                                data=attempt.data, headers=attempt.headers, timeout=attempt.timeout,
                                                allow_redirects=False, stream=True)
                try:
                    response._content = read_body(response, attempt)
                finally:
                    response.close()  # a no-op once the body is read: the connection is back in the pool
        except requests.RequestException as exc:
            return failed(attempt, exc, timed_out=isinstance(exc, requests.Timeout))
        except KVError as exc:  # an answer too large
            return exc
        return response


@functools.cache
def native_async() -> bool:
    """Return True if aiohttp (the ``async`` extra) is installed: async calls then need no thread."""
    return importlib.util.find_spec("aiohttp") is not None


install_filter()
