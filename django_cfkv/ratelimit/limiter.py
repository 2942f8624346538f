"""The limiter: the process-wide object built from ``CFKV_RATELIMIT`` that counts requests against rules.

:func:`get_limiter` returns it, building it on first use; it is forgotten
(its pending counts written first) when a setting it depends on changes, and
after a fork. :func:`check_request` and :func:`count_request` count one
request, for the middleware and the decorator; neither raises because KV
failed (``FAIL_OPEN`` decides instead), only for a mistake in configuration
or a refused token (:data:`MISCONFIGURED`). Their async twins :func:`acheck_request` and
:func:`acount_request` make the same decisions and await the counter's KV calls on the event loop.
"""

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from .. import clock, conf
from ..exceptions import KVAuthError, KVError, KVNotFoundError
from ..text import one_line
from .counters import LOG_EVERY, OUTAGE_BACKOFF, CacheCounter, ShardedCounter
from .identity import UNREAD, arequest_user, callable_path, client_address, client_hash, identify
from .options import compile_settings
from .rules import Rule
from .shards import window

logger = logging.getLogger("django_cfkv.ratelimit")

# Mistakes to fix, not outages: FAIL_OPEN never hides them (a wrong BACKEND, a missing id or alias,
# a refused token, a namespace that does not exist); they propagate like any configuration error.
MISCONFIGURED = (ImproperlyConfigured, KVAuthError, KVNotFoundError)


class Usage(NamedTuple):
    """Where one client stands against one policy after a request."""

    policy: str
    limit: int
    period: int
    count: int  # type: ignore[assignment]  # shadows tuple.count(), as it always has
    reset: int  # seconds until the window ends
    limited: bool

    @property
    def remaining(self) -> int:
        """Return how many more requests the window admits."""
        return max(0, self.limit - self.count)


class Counter(Protocol):
    """What the limiter counts with: ShardedCounter (KV) or CacheCounter (strict mode)."""

    def hit(self, policy: str, client: str, limit: int, period: int, now: float,
            increment: bool = True) -> tuple[int, int, bool]: ...

    async def ahit(self, policy: str, client: str, limit: int, period: int, now: float,
                   increment: bool = True) -> tuple[int, int, bool]: ...


class Limiter:
    """The configured limiter: options, rules and a counter, built from ``CFKV_RATELIMIT``."""

    def __init__(self, raw: object, *, clock: Callable[[], float] | None = None) -> None:
        self.options, self.rules, problems = compile_settings(raw)
        for problem in problems:
            logger.error("%s (run 'manage.py check' for details; the rule or option is ignored)", problem)
        self.enabled = self.options["ENABLED"] is not False
        self.fail_open = self.options["FAIL_OPEN"] is not False
        self.clock = clock  # a callable returning epoch seconds; None: django_cfkv.clock.now
        self._counter: Counter | None = None
        self._counter_lock = threading.Lock()
        self._logged_at = float("-inf")
        self._mistake: tuple[float, BaseException] | None = None  # (until when, a MISCONFIGURED error)

    @property
    def counter(self) -> Counter:
        """Return the counter, built on first use (so that a limiter that counts nothing needs no KV)."""
        if self._counter is None:
            with self._counter_lock:
                if self._counter is None:
                    self._counter = self._build_counter()
        return self._counter

    async def acounter(self) -> Counter:
        """As :attr:`counter`, from async code: a first use builds the KV object in a worker thread."""
        if self._counter is None and not self.options["CACHE"]:
            await conf.aget_kv(self.options["ALIAS"])
        return self.counter

    def _build_counter(self) -> Counter:
        if self.options["CACHE"]:
            from django.core.cache import caches

            return CacheCounter(caches[self.options["CACHE"]])
        return ShardedCounter(conf.get_kv(self.options["ALIAS"]), interval=self.options["SYNC_INTERVAL"],
                              list_budget=self.options["LIST_BUDGET"], per_request=_per_request)

    def matching(self, path: str, method: str) -> list[Rule]:
        """Return the rules that apply to ``method`` on ``path``."""
        return [rule for rule in self.rules if rule.matches(path, method)]

    def _now(self) -> float:
        return self.clock() if self.clock is not None else clock.now()

    def client_address(self, meta: Mapping[str, Any], request: HttpRequest | None = None) -> str:
        """Return the client's grouped address from a WSGI environ / ``request.META`` dict."""
        return client_address(meta, self.options, request)

    def hit(self, rule: Rule, identity: str, now: float | None = None, *, increment: bool = True) -> Usage:
        """Count one request by ``identity`` against ``rule`` (or, with ``increment=False``, only look at
        its count); return its Usage.

        When the store fails, FAIL_OPEN decides (True: allow, still enforcing
        this process's own count on KV; False: refuse); a configuration or
        authentication error (MISCONFIGURED) is raised instead.
        """
        now = self._start(now)
        try:
            counted = self.counter.hit(rule.name, _client(rule, identity), rule.limit, rule.period, now, increment)
        except Exception as exc:
            counted = self._not_counted(exc, rule, now)
        return self._usage(rule, now, counted)

    async def ahit(self, rule: Rule, identity: str, now: float | None = None, *, increment: bool = True) -> Usage:
        """The async twin of :meth:`hit`: the same decisions, the counter's KV calls awaited."""
        now = self._start(now)
        try:
            counter = await self.acounter()
            counted = await counter.ahit(rule.name, _client(rule, identity), rule.limit, rule.period, now, increment)
        except Exception as exc:
            counted = self._not_counted(exc, rule, now)
        return self._usage(rule, now, counted)

    def _start(self, now: float | None) -> float:
        """Return the time to count at; raise the configuration mistake met in the last few seconds."""
        mistake = self._mistake
        if mistake is not None and clock.monotonic() < mistake[0]:
            raise mistake[1].with_traceback(None)  # every request fails alike, without asking KV each time
        return self._now() if now is None else now

    def _not_counted(self, exc: Exception, rule: Rule, now: float) -> tuple[int, int, bool]:
        """Raise a configuration mistake (remembered for a few seconds); log an outage and return its count."""
        if isinstance(exc, MISCONFIGURED):
            self._mistake = (clock.monotonic() + OUTAGE_BACKOFF, exc)
            raise exc
        self.log_failure(exc)
        return _uncounted(rule, now)

    def _usage(self, rule: Rule, now: float, counted: tuple[int, int, bool]) -> Usage:
        count, end, reachable = counted
        limited = count > rule.limit or (not reachable and not self.fail_open)
        return Usage(rule.name, rule.limit, rule.period, count, max(1, math.ceil(end - now)), limited)

    def unavailable(self, rule: Rule, now: float | None = None) -> Usage:
        """Return the Usage for a request that could not be counted (FAIL_OPEN decides)."""
        now = self._now() if now is None else now
        return self._usage(rule, now, _uncounted(rule, now))

    def log_failure(self, exc: BaseException) -> None:
        """Log a failure to count, at most once per LOG_EVERY seconds."""
        mono = clock.monotonic()
        if mono - self._logged_at >= LOG_EVERY:
            self._logged_at = mono
            # The error may quote what a client sent (Django's for a malformed body quotes its Content-Type).
            logger.error("Rate limiting failed (%s: %s); FAIL_OPEN=%s.", type(exc).__name__, one_line(str(exc)),
                         self.fail_open, exc_info=not isinstance(exc, KVError))

    def after_request(self) -> None:
        """Write the request's counts now when the counter works per request (tests); never raises."""
        after = getattr(self._counter, "after_request", None)
        if after is not None:
            try:
                after()
            except Exception as exc:
                self.log_failure(exc)

    async def aafter_request(self) -> None:
        """The async twin of :meth:`after_request` (the write awaited)."""
        after = getattr(self._counter, "aafter_request", None)
        if after is not None:
            try:
                await after()
            except Exception as exc:
                self.log_failure(exc)

    def close(self) -> None:
        """Write what is pending and stop the counter's background writes."""
        close = getattr(self._counter, "close", None)
        if close is not None:
            close()


# The process-wide limiter

_limiter: Limiter | None = None
_limiter_lock = threading.Lock()
_per_request = False


def count_per_request(enabled: bool) -> None:
    """Make limiters built from now on count per request (True) or in the background (False).

    django_cfkv.testing turns this on while an override is active, so each
    request's KV calls happen before its response, whatever the clock says;
    the current limiter is forgotten so that the next request builds one so.
    """
    global _per_request
    if _per_request != bool(enabled):
        _per_request = bool(enabled)
        reset_limiter()


def get_limiter() -> Limiter:
    """Return the process-wide Limiter for the current settings."""
    global _limiter
    limiter = _limiter
    if limiter is None:
        with _limiter_lock:
            if _limiter is None:
                _limiter = Limiter(conf.setting("CFKV_RATELIMIT"))
            limiter = _limiter
    return limiter


def reset_limiter() -> None:
    """Flush and forget the limiter, so the next request reads settings afresh."""
    global _limiter
    with _limiter_lock:
        limiter, _limiter = _limiter, None
    if limiter is not None:
        limiter.close()


def _forget_after_fork() -> None:
    # The child must never write under the parent's process id, nor wait on its locks.
    global _limiter, _limiter_lock
    _limiter, _limiter_lock = None, threading.Lock()


conf.on_reset(reset_limiter, settings=("CFKV_RATELIMIT", "CFKV", "CACHES", "RATELIMIT_*"))
conf.on_reset(_forget_after_fork, after_fork=True)


# Counting a request

def count_request(request: HttpRequest, rules: Iterable[Rule], *, increment: bool = True) -> list[Usage]:
    """Count the request against each of ``rules`` (or only look, without ``increment``); return their
    Usages. A configuration error (no client address to count an ``ip`` key by) raises ImproperlyConfigured."""
    limiter = get_limiter()
    usages = []
    for rule in rules:
        identity = _identity(limiter, rule, request)
        if isinstance(identity, Usage):
            usages.append(identity)
        elif identity is not None:
            usages.append(limiter.hit(rule, identity, increment=increment))
    limiter.after_request()
    return usages


async def acount_request(request: HttpRequest, rules: Iterable[Rule], *, increment: bool = True) -> list[Usage]:
    """The async twin of :func:`count_request`: the same decisions, KV awaited on the event loop."""
    limiter = get_limiter()
    usages = []
    for rule in rules:
        identity = await _aidentity(limiter, rule, request)
        if isinstance(identity, Usage):
            usages.append(identity)
        elif identity is not None:
            usages.append(await limiter.ahit(rule, identity, increment=increment))
    await limiter.aafter_request()
    return usages


def _identity(limiter: Limiter, rule: Rule, request: HttpRequest, user: Any = UNREAD) -> str | Usage | None:
    """Return who the request counts as under ``rule``, None if the rule does not apply, or the Usage of a
    request that could not be identified (logged). No client address raises ImproperlyConfigured."""
    try:
        return identify(request, rule, limiter, user)
    except ImproperlyConfigured:
        raise  # a setting to fix (no client address), not an outage
    except Exception as exc:  # a user's key callable, or a broken request
        limiter.log_failure(exc)
        return limiter.unavailable(rule)


async def _aidentity(limiter: Limiter, rule: Rule, request: HttpRequest) -> str | Usage | None:
    """As :func:`_identity`, from async code. A key the project's own code computes (a callable key or
    RATELIMIT_IP_META_KEY) runs in a thread, as Django runs sync code: it may query the database. The
    user is read with :func:`~django_cfkv.ratelimit.identity.arequest_user`."""
    ip_key = rule.key in ("ip", "user_or_ip")
    if rule.key == "callable" or (ip_key and callable_path(limiter.options.get("IP_META_KEY"))):
        return await sync_to_async(_identity)(limiter, rule, request)
    user = UNREAD
    if rule.key in ("user", "user_or_ip") and hasattr(request, "auser"):
        try:
            user = await arequest_user(request)
        except ImproperlyConfigured:
            raise  # a setting to fix (SESSION_CFKV_ALIAS...), as _identity raises it, not an outage
        except Exception as exc:  # the session or user store failed: as a failed identification
            limiter.log_failure(exc)
            return limiter.unavailable(rule)
    return _identity(limiter, rule, request, user)


def _client(rule: Rule, identity: str) -> str:
    return client_hash(f"{rule.partition}|{identity}")


def check_request(request: HttpRequest) -> list[Usage]:
    """Return the Usages of every configured rule matching the request (empty when disabled)."""
    limiter = get_limiter()
    if not limiter.enabled:
        return []
    return count_request(request, limiter.matching(request.path_info, request.method or ""))


async def acheck_request(request: HttpRequest) -> list[Usage]:
    """The async twin of :func:`check_request`."""
    limiter = get_limiter()
    if not limiter.enabled:
        return []
    return await acount_request(request, limiter.matching(request.path_info, request.method or ""))


def _uncounted(rule: Rule, now: float) -> tuple[int, int, bool]:
    """What a request KV could not count holds: no count, the window's end, unreachable (FAIL_OPEN decides)."""
    return 0, window(now, rule.period)[2], False
