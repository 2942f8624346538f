"""HTTP transport: the pooled session, timeouts and deadline, retries, call accounting.

Retries live here, in our own loop, rather than in urllib3's ``Retry``: they
then apply to every adapter (``responses`` included) and honour Cloudflare's
``Retry-After``. Time is bounded twice, by the wall clock: an attempt may take
at most connect + read timeout seconds (the read timeout bounds the whole
answer, not each socket read, so a server dripping bytes cannot hold a call),
and a call, retries and waits included, at most ``deadline`` seconds. An answer
larger than any KV can give is refused while it streams, never read whole.

429s: only one that speaks for the whole account (Cloudflare's ``Ratelimit``
header says no call is left) stops other calls, for its Retry-After and never
more than the five minutes Cloudflare blocks an over-quota user. A 429 about one
key (one write per second) or one call fails that call alone. Every attempt is
counted, because every attempt costs one of the 1,200 calls per 5 minutes that
Cloudflare allows a user.

Threads: one ``requests.Session`` is shared by all threads of a process. Its
connection pool (urllib3) is thread-safe; the parts of a Session that are not
(cookie handling, redirect re-authentication) are switched off: cookies are
refused and redirects are not followed. Headers are set once, at construction.
After a fork the child builds a new Session rather than share sockets.

Logs: urllib3 logs each request line at DEBUG, and a KV URL's path holds the
key (which may be a session id). A filter on urllib3's loggers replaces keys,
cursors and prefixes in KV URLs with placeholders; the records stay.
"""

import http.client
import http.cookiejar
import io
import logging
import math
import os
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import __version__, clock, limits
from .exceptions import (
    CFKVConfigurationError,
    KVConnectionError,
    KVMalformedResponseError,
    KVRateLimitError,
    KVTimeout,
)

logger = logging.getLogger("django_cfkv")

DEFAULT_TIMEOUT = (5.0, 30.0)
DEFAULT_MAX_RETRIES = 3
DEFAULT_DEADLINE = 30.0  # seconds one call may take, every attempt and wait included
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
LOW_BUDGET = 100  # warn when Cloudflare says fewer calls than this remain in the window
POOL_SIZE = 32
CHUNK_BYTES = 64 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class CallCounter:
    """Thread-safe count of API calls by endpoint; ``total`` sums them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def record(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1

    def snapshot(self) -> dict[str, int]:
        """Return a plain dict copy of the counts so far."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


#: Every call made by every client in this process; tests and benchmarks read it.
calls = CallCounter()

#: The seam for tools that watch or police calls (django_cfkv.testing keeps tests on loopback
#: with it): callables run as ``hook(method, url)`` before each call is sent. One may raise to
#: stop the call; nothing is sent then and its error reaches the caller. The package adds none.
request_hooks: list[Callable[[str, str], None]] = []


class ResponseTooLargeError(KVMalformedResponseError):
    """An answer larger than any Workers KV can give (it was not read whole)."""


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def parse_retry_after(value: str | None) -> float | None:
    """Return Retry-After in seconds (delta or HTTP date), at most Cloudflare's 5-minute block; or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - clock.now()
        except (TypeError, ValueError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    # Anything longer is not an answer Cloudflare gives, and honouring it could
    # keep a site from KV until a restart.
    return min(float(limits.QUOTA_BLOCK_SECONDS), max(0.0, seconds))


_RATELIMIT_RE = re.compile(r"\br=(\d+)(?:.*?\bt=(\d+))?")


def parse_ratelimit(value: str | None) -> tuple[int, int | None] | None:
    """Parse Cloudflare's ``Ratelimit: "default";r=50;t=30`` into (remaining, reset_seconds)."""
    match = _RATELIMIT_RE.search(value or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def account_block(response: requests.Response) -> float:
    """Return the seconds Cloudflare refuses every call of the account, if this 429 says so; else 0.

    Only the REST quota (1,200 calls per 5 minutes) stops every call, and its
    ``Ratelimit`` header then counts no call left. A 429 without that proof may
    be about one key (one write per second) or one call (concurrent bulk
    operations): it leaves other calls alone. Cloudflare documents no error
    code that tells them apart, so none is trusted, and neither is the size of
    Retry-After alone: blocking wrongly would refuse a site's every call.
    """
    budget = parse_ratelimit(response.headers.get("Ratelimit"))
    if response.status_code != 429 or budget is None or budget[0] != 0:
        return 0.0
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    reset = min(budget[1] or 0, limits.QUOTA_BLOCK_SECONDS)
    return retry_after if retry_after is not None else float(reset)


class Transport:
    """Send requests with a timeout, a deadline, bounded retries and call accounting."""

    def __init__(self, api_token: str, *, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, deadline: float = DEFAULT_DEADLINE) -> None:
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        self.timeout: tuple[float, float] = (timeout[0], timeout[1])
        self.max_retries = max_retries
        self.deadline = checked_deadline(deadline)
        self.calls = CallCounter()
        # (remaining, reset_seconds, seen_at) from the last Ratelimit header
        self.budget: tuple[int, int | None, float] | None = None
        self._token = checked_token(api_token)
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._pid: int | None = None
        self._last_budget_warning = 0.0
        self._blocked_until = 0.0  # monotonic time until which Cloudflare refuses every call of the account

    def __repr__(self) -> str:
        return f"<Transport timeout={self.timeout} max_retries={self.max_retries} deadline={self.deadline}>"

    @property
    def session(self) -> requests.Session:
        if self._session is None or self._pid != os.getpid():
            with self._lock:
                if self._session is None or self._pid != os.getpid():
                    self._session, self._pid = self._build_session(), os.getpid()
        return self._session

    def _build_session(self) -> requests.Session:
        session = requests.Session()
        session.cookies.set_policy(_NoCookies())
        session.headers.update({
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"django-cfkv/{__version__}",
        })
        adapter = _Adapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self) -> None:
        """Close pooled connections (a new pool is made on next use)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def request(self, method: str, url: str, *, endpoint: str, idempotent: bool = True,
                max_bytes: int = limits.MAX_RESPONSE_BYTES, **kwargs: Any) -> requests.Response:
        """Send one API call, retrying transient failures; return the final Response, body read.

        Connection errors, timeouts, 429 and 5xx are retried when ``idempotent``,
        at most ``max_retries`` times and within ``deadline`` seconds in all. A
        Retry-After longer than what is left is not waited for: the 429 is
        returned at once for the caller to raise. A body over ``max_bytes``
        raises ResponseTooLargeError.
        """
        for hook in request_hooks:
            hook(method, url)
        blocked = self._blocked_until - clock.monotonic()
        if blocked > 0:  # Cloudflare refuses every call until then: spare the round trip and the quota
            raise KVRateLimitError(
                f"Cloudflare's API refuses every call of this account for another {blocked:.0f} s (it "
                "answered 429 with no call left in its quota); no call was sent. Past 1,200 calls per "
                "5 minutes every call is refused for 5 minutes: see 'Scaling past the REST quota'.",
                status=429, retry_after=blocked, account_wide=True)
        deadline = clock.monotonic() + self.deadline
        attempt = 0
        while True:
            try:
                response = self._attempt(method, url, endpoint, deadline, max_bytes, kwargs)
            except KVConnectionError:
                delay = self._backoff(attempt)
                if not (idempotent and self._can_retry(attempt, deadline, delay)):
                    raise
                self._sleep(delay, deadline)
                attempt += 1
                continue
            self._note_budget(response)
            if response.status_code not in RETRY_STATUSES or not idempotent:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if not self._can_retry(attempt, deadline, delay):
                block = account_block(response)
                if block:
                    self._blocked_until = max(self._blocked_until, clock.monotonic() + block)
                return response
            logger.info("KV %s %s got HTTP %s; retrying in %.2f s", method, endpoint,
                        response.status_code, delay)
            self._sleep(delay, deadline)
            attempt += 1

    def _attempt(self, method: str, url: str, endpoint: str, deadline: float, max_bytes: int,
                 kwargs: dict[str, Any]) -> requests.Response:
        """Send one attempt and read its body by ``deadline`` and at most connect + read seconds."""
        started = clock.monotonic()
        ends = min(deadline, started + sum(self.timeout))
        if ends - started <= 0:
            raise KVTimeout(f"Workers KV did not answer {_where(method, endpoint, url)}: the call's deadline "
                            f"({self.deadline:g} s) passed.")
        timeout = (min(self.timeout[0], ends - started), min(self.timeout[1], ends - started))
        self.calls.record(endpoint)
        calls.record(endpoint)
        _attempt_state.ends, _attempt_state.read_timeout = ends, timeout[1]
        try:
            response = self.session.request(method, url, timeout=timeout, allow_redirects=False, stream=True,
                                            **kwargs)
            try:
                response._content = _read_body(response, max_bytes, method, endpoint, url)
            finally:
                response.close()  # a no-op once the body is read: the connection is back in the pool
        except requests.RequestException as exc:
            late, where = clock.monotonic() >= ends, _where(method, endpoint, url)
            logger.info("KV %s failed (%s)%s", where, type(exc).__name__, "; out of time" if late else "")
            # Not chained: requests' text repeats the URL, whose key may be a session id.
            raise _translate(exc, where, late) from None
        finally:
            _attempt_state.ends = None
        logger.debug("KV %s %s -> %s in %.1f ms", method, endpoint, response.status_code,
                     (clock.monotonic() - started) * 1000)
        return response

    def _can_retry(self, attempt: int, deadline: float, delay: float) -> bool:
        """Return True if another attempt is allowed and ``delay`` leaves time to make it."""
        return attempt < self.max_retries and clock.monotonic() + delay < deadline

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter."""
        delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** attempt))
        return delay / 2 + self._jitter(delay / 2)

    def _jitter(self, span: float) -> float:
        """Return a random share of ``span``; separate so tests can make it fixed."""
        return random.uniform(0, span)

    def _sleep(self, seconds: float, deadline: float) -> None:
        clock.sleep(max(0.0, min(seconds, deadline - clock.monotonic())))

    def _note_budget(self, response: requests.Response) -> None:
        parsed = parse_ratelimit(response.headers.get("Ratelimit"))
        if parsed is None:
            return
        self.budget = (parsed[0], parsed[1], clock.now())
        now = clock.monotonic()
        if parsed[0] < LOW_BUDGET and now - self._last_budget_warning > 30:
            self._last_budget_warning = now
            logger.warning(
                "Cloudflare API budget is low: %d calls left in this window (resets in %s s). "
                "Past it every call is refused for 5 minutes; see 'Scaling past the REST quota'.",
                parsed[0], parsed[1],
            )


def _where(method: str, endpoint: str, url: str) -> str:
    """Name a call for messages by its host and endpoint: the URL's path holds the key."""
    return f"{method} {endpoint} on {urlsplit(url).netloc}"


def _read_body(response: requests.Response, max_bytes: int, method: str, endpoint: str, url: str) -> bytes:
    """Return the body, read in chunks; refuse one over ``max_bytes`` before holding it whole."""
    declared = response.headers.get("Content-Length", "")
    chunks, size = [], int(declared) if declared.isdigit() else 0
    if size <= max_bytes:
        size = 0
        for chunk in response.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                break
            chunks.append(chunk)
    if size > max_bytes:
        raise ResponseTooLargeError(
            f"Workers KV's answer to {_where(method, endpoint, url)} is larger than any KV can give "
            f"({max_bytes} bytes), so it was not read. Check BASE_URL.", status=response.status_code)
    return b"".join(chunks)


# The wall-clock end of the attempt this thread is making, read by the
# connections' responses (urllib3 makes them in the thread that sends).
_attempt_state = threading.local()


class _DeadlineReader(io.RawIOBase):
    """A socket reader whose every recv waits at most until the attempt's end."""

    def __init__(self, raw: Any, sock: Any, ends: float, read_timeout: float | None) -> None:
        super().__init__()
        self._raw, self._sock, self._ends, self._read_timeout = raw, sock, ends, read_timeout

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def readinto(self, buffer: Any) -> int | None:
        left = self._ends - clock.monotonic()
        if left <= 0:
            raise TimeoutError("the attempt ran out of time")  # urllib3 makes it a ReadTimeoutError
        self._sock.settimeout(min(left, self._read_timeout) if self._read_timeout else left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """http.client's response, reading status, headers and body by the attempt's end."""

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        ends = getattr(_attempt_state, "ends", None)
        if ends is not None:
            self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, ends, _attempt_state.read_timeout))


_deadline_classes: dict[type, type] = {}


def _with_deadline(connection_class: type) -> type:
    """Return a subclass of urllib3's connection class whose responses keep the attempt's deadline."""
    if connection_class not in _deadline_classes:
        _deadline_classes[connection_class] = type(
            connection_class.__name__, (connection_class,), {"response_class": _DeadlineResponse})
    return _deadline_classes[connection_class]


class _Adapter(HTTPAdapter):
    """Give each pool deadline-keeping connections."""

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> Any:
        pool: Any = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        if not getattr(pool, "_cfkv_ready", False):
            pool.ConnectionCls = _with_deadline(pool.ConnectionCls)
            pool._cfkv_ready = True
        return pool


def checked_token(token: str) -> str:
    """Return the API token without surrounding whitespace; refuse one no HTTP header can carry.

    Otherwise requests' own error, which quotes the whole header, would put
    the token into exception text and logs.
    """
    if not isinstance(token, str):
        return token
    token = token.strip()  # a trailing newline from a file or an env var is a common slip
    if not all(33 <= ord(char) < 127 for char in token):
        raise CFKVConfigurationError(
            "The Cloudflare API token contains spaces, control or non-ASCII characters, so no HTTP "
            "header can carry it. Copy API_TOKEN (or $CLOUDFLARE_API_TOKEN) again from the dashboard.",
            "django_cfkv.E008",
        )
    return token


def checked_deadline(deadline: object) -> float:
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline) \
            or deadline <= 0:
        raise CFKVConfigurationError(f"DEADLINE must be a number of seconds > 0, not {deadline!r}.",
                                     "django_cfkv.E009",
                                     "For example DEADLINE = 30, or leave it unset for the default.")
    return float(deadline)


def _translate(exc: requests.RequestException, where: str, late: bool) -> KVConnectionError:
    """Turn a requests failure into a KVConnectionError naming the host and endpoint only:
    the URL's path holds the key, which may be a session id."""
    if late or isinstance(exc, requests.Timeout):
        return KVTimeout(f"Workers KV did not answer {where} in time ({type(exc).__name__}).")
    return KVConnectionError(f"Could not reach Workers KV for {where} ({type(exc).__name__}).")


# Logs

_KEY_IN_PATH = re.compile(r"(/storage/kv/namespaces/[^/\s'\"?#]+/(?:values|metadata)/)[^\s'\"?#]+")
_SECRET_PARAM = re.compile(r"([?&](?:cursor|prefix)=)[^&\s'\"#]*")


class RedactKVURLs(logging.Filter):
    """Replace the key, cursor and prefix in KV API URLs of a log record with placeholders."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is left to logging's own handling
            return True
        redacted = _SECRET_PARAM.sub(r"\1<redacted>", _KEY_IN_PATH.sub(r"\1<key>", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# Every urllib3 logger that can print a URL. A logger's filters see only the
# records made on it, so each gets one.
_URL_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
                "urllib3.response", "urllib3.util.retry", "urllib3.http2.connection")


def _install_log_filter() -> None:
    for name in _URL_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactKVURLs) for f in target.filters):
            target.addFilter(RedactKVURLs())


_install_log_filter()
