"""Await one API call with aiohttp (the ``async`` extra): one pooled session per event loop, closed with its loop.

Imported only when aiohttp is installed (see :meth:`Transport.arun
<django_cfkv.transport.Transport.arun>`). :meth:`LoopSessions.run` follows a call's steps
(:mod:`.exchange`: the one retry loop) on the running event loop, with no thread: it sends
each attempt here and awaits each wait through :func:`django_cfkv.clock.asleep`.

Sessions. An aiohttp session belongs to the event loop it was made in, so
:class:`LoopSessions` keeps one per loop: under an ASGI server that is one for the process,
and each ``async_to_sync`` or ``asyncio.run()`` gets its own. Each is closed when its loop
ends: it is held open by an async generator, which ``asyncio.run()``, asgiref, uvicorn and
every runner that calls ``loop.shutdown_asyncgens()`` close before the loop stops, and whose
``finally`` closes the session; so no connection outlives its loop and no ResourceWarning is
left behind. ``close()`` (settings changed, from any thread) lets them all go, and each loop
closes its own once the calls still using it end (:class:`Pool`). A loop closed by hand, without
shutting its async generators down, is let go at the next pool made or ``close()``.

As with the requests session: the token is in the headers, set once; no cookie is kept;
redirects are not followed; the proxy and .netrc settings of the environment are not read
(aiohttp's ``trust_env`` would read them on every call, in a thread). An attempt is bounded
by the wall clock: the loop's :class:`~.aio_deadline.Deadlines` cancel it at its window's end,
whatever it is doing (connecting, sending, or reading the status, headers or body), so a
dripped answer is cut there; aiohttp's own timers bound only connecting and, when shorter
than the window, the wait for each read. URLs go to aiohttp as built (``encoded=True``): the
key is one percent-encoded segment, which aiohttp must not quote again or normalise.
"""

import asyncio
import functools
import math
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yarl

from .. import __version__, clock
from ..exceptions import KVError
from .aio_deadline import Deadlines
from .body import aread_body
from .exchange import ACCEPT_ENCODING, POOL_SIZE, Answer, Attempt, Finish, Outcome, Steps, failed

_NEVER_ROUNDED = math.inf  # aiohttp rounds timeouts up to whole seconds past its threshold; not ours


class Pool:
    """One client's connections on one event loop, and the attempts in flight on it.

    A pool that is let go (``retired``: the client closed, from any thread) is never closed under the
    attempts still using it, which aiohttp would abort: it is closed on its loop when the last of them
    ends, or when the loop next makes a pool, or when the loop ends.
    """

    __slots__ = ("deadlines", "retired", "session", "_closing")

    def __init__(self, session: aiohttp.ClientSession, deadlines: Deadlines) -> None:
        self.session, self.deadlines, self.retired = session, deadlines, False
        self._closing: asyncio.Task[None] | None = None  # held, so the loop does not drop the task

    @property
    def idle(self) -> bool:
        return not self.deadlines.in_flight

    def close_soon(self) -> None:
        """Close the session in a task of the running loop (from code that cannot await)."""
        if not self.session.closed and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.session.close())


class LoopSessions:
    """One aiohttp session per event loop, with the token in its headers; each closed when its loop ends."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._lock = threading.Lock()  # loops may run in several threads (asgiref's async_to_sync)
        # A session holds its loop, so a weak mapping could never let one go: the pools of loops that
        # ended or were let go are dropped whenever a loop makes its pool, and by close().
        self._sessions: dict[asyncio.AbstractEventLoop, Pool] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, Pool | None] = (None, None)

    def __repr__(self) -> str:
        return "<LoopSessions>"  # never the token

    def current(self) -> Pool | None:
        """Return the running loop's pool (in use), or None when :meth:`get` must make one."""
        loop = asyncio.get_running_loop()
        last_loop, pool = self._last  # the last call's loop: under an ASGI server, the only one
        if last_loop is not loop:
            with self._lock:
                pool = self._sessions.get(loop)
                self._last = (loop, pool)
        return None if pool is None or pool.retired else pool  # every pool closed is first let go (retired)

    async def get(self) -> Pool:
        """Return the running loop's pool, its session made on first use and closed when the loop ends."""
        pool = self.current()
        if pool is None:
            loop = asyncio.get_running_loop()
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, timeout_ceil_threshold=_NEVER_ROUNDED)
            session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                headers={"Authorization": f"Bearer {self._token}", "User-Agent": f"django-cfkv/{__version__}",
                         "Accept-Encoding": ACCEPT_ENCODING})
            _send_once(session)
            pool = Pool(session, Deadlines(loop))
            with self._lock:
                self._sessions = {lp: p for lp, p in self._sessions.items() if not (p.retired or lp.is_closed())}
                self._sessions[loop] = pool
                self._last = (loop, pool)
            end = _loop_end(loop)
            end.pools.add(pool)  # before any await: a cancel from here on leaves it to the loop's end
            pool.deadlines.in_flight += 1  # promised to this call's attempt: an aclose() meanwhile lets it go
            try:
                await end.start(pool)
            finally:
                pool.deadlines.in_flight -= 1
        return pool

    async def run(self, steps: Steps[Any], finish: Finish = None) -> Any:
        """Follow a call's steps on the running loop: send each attempt with its session, await each wait.
        Return their end, or what ``finish`` makes of it."""
        outcome: Outcome = None
        while True:
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value if finish is None else finish(done.value)
            if isinstance(step, Attempt):
                outcome = await _attempt(self.current() or await self.get(), step)
            else:
                await clock.asleep(step.seconds)
                outcome = None

    async def aclose(self) -> None:
        """Close the running loop's session: now, or once the calls still using it end (a new one is made
        on next use)."""
        with self._lock:
            pool = self._sessions.pop(asyncio.get_running_loop(), None)
            self._last = (None, None)
        if pool is not None:
            pool.retired = True
            if pool.idle:
                await pool.session.close()

    def close(self) -> None:
        """Let every loop's session go (this may run in any thread): each is closed on its own loop (aiohttp's
        sessions are not thread-safe), once the calls using it end (see :class:`Pool`)."""
        with self._lock:
            pools, self._sessions = list(self._sessions.values()), {}
            self._last = (None, None)
        for pool in pools:
            pool.retired = True
        _forget_closed_loops()


def _send_once(session: aiohttp.ClientSession) -> None:
    """Have aiohttp send each request once: it sends a GET, PUT or DELETE again, uncounted, when the
    connection fails before an answer (RFC 9112's retry of idempotent requests). The steps retry what is
    to be retried, counted and within the deadline, as the blocking client (urllib3 sends once) does."""
    if "_retry_connection" in aiohttp.ClientSession.ATTRS:  # aiohttp's own switch (its test client turns it off)
        session._retry_connection = False


class _LoopEnd:
    """What closes a loop's sessions: an async generator started in the loop, which the loop's
    shutdown closes, and whose ``finally`` closes every session still open. It holds them, so
    a client dropped without closing still has its connections closed with the loop."""

    def __init__(self) -> None:
        self.pools: set[Pool] = set()
        self.ended = False
        self._watch: AsyncGenerator[None, None] | None = None  # it holds the loop while it runs, never after

    async def start(self, serving: Pool) -> None:
        """Watch for the loop's end (this runs in the loop), and close the pools let go that no call uses
        (``serving``, just made, serves its call first even if it was let go meanwhile)."""
        if self._watch is None:
            self._watch = self.watch()
            await self._watch.asend(None)  # started in the running loop, so its shutdown closes it
        self.pools = {pool for pool in self.pools if not pool.session.closed}
        for pool in [pool for pool in self.pools if pool.retired and pool.idle and pool is not serving]:
            await pool.session.close()

    async def watch(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self.ended = True
            for pool in self.pools:
                pool.retired = True  # a call the loop runs after its shutdown makes a new one
                await pool.session.close()
            # Each session holds the loop, and so does this generator (asyncio's finalizer): the loop
            # is let go, and with it its entry in _loop_ends.
            self.pools, self._watch = set(), None


_loop_ends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEnd] = weakref.WeakKeyDictionary()
_loop_ends_lock = threading.Lock()


def _loop_end(loop: asyncio.AbstractEventLoop) -> _LoopEnd:
    """Return ``loop``'s one _LoopEnd: held as long as the loop is, so its sessions are closed by its shutdown."""
    _forget_closed_loops()
    with _loop_ends_lock:
        end = _loop_ends.get(loop)
        if end is None or end.ended:  # a loop may run on after shutting its async generators down
            end = _loop_ends[loop] = _LoopEnd()
        return end


def _forget_closed_loops() -> None:
    """Drop what is kept for loops closed without shutting their async generators down (a hand-run loop's
    ``close()``): their sessions hold them, so nothing else would ever let them go."""
    with _loop_ends_lock:
        for loop in [loop for loop in _loop_ends if loop.is_closed()]:
            del _loop_ends[loop]


@functools.lru_cache(maxsize=16)
def _timeout(sock_connect: float | None, sock_read: float | None) -> aiohttp.ClientTimeout:
    """Return aiohttp's timeout for these timers, with no total timer (the window is the Deadlines'). Made once
    per pair, not per attempt (a frozen attrs class: 4.5 µs to make, 0.25 µs to look up): the settings' pair
    serves every first attempt; each retry cut short by the deadline adds one, and 16 are kept."""
    return aiohttp.ClientTimeout(total=None, sock_connect=sock_connect, sock_read=sock_read,
                                 ceil_threshold=_NEVER_ROUNDED)


async def _attempt(pool: Pool, attempt: Attempt) -> Outcome:
    """Send one attempt and read its body within its window; return the Answer or the KVError."""
    url = attempt.url + ("?" + urlencode(attempt.params) if attempt.params else "")  # as requests encodes them
    left = attempt.ends - clock.monotonic()
    connect, read = attempt.timeout
    task = asyncio.current_task()
    if task is None:  # as aiohttp's own timeouts need
        raise RuntimeError("Workers KV calls are awaited in an asyncio task (the window of each is kept by one).")
    # A connect or read timer that cannot end before the window is left out (with the default DEADLINE the
    # read timer never can): aiohttp sets the read timer again on every chunk it reads.
    timeout = _timeout(connect if connect < left else None, read if read < left else None)
    pool.deadlines.start(task, left)
    try:
        async with pool.session.request(attempt.method, yarl.URL(url, encoded=True), data=attempt.data,
                                        headers=attempt.headers, timeout=timeout, allow_redirects=False) as response:
            try:
                body = await aread_body(response, attempt)
            except BaseException:  # too large, or cut: not read whole, so the connection is not reused
                response.close()
                raise
            return Answer(response.status, response.headers, body)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return failed(attempt, exc, timed_out=isinstance(exc, asyncio.TimeoutError))
    except KVError as exc:  # an answer too large
        return exc
    except asyncio.CancelledError:
        if not pool.deadlines.was_cut(task):
            raise  # the caller's cancel, not the window's end
        return failed(attempt, asyncio.TimeoutError(), timed_out=True)
    finally:
        pool.deadlines.end(task)
        if pool.retired and pool.idle:  # the client let it go while this attempt used it
            pool.close_soon()
