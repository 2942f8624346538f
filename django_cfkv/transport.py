"""HTTP transport: the pooled session, timeouts, retries and call accounting.

Retries live here, in our own loop, rather than in urllib3's ``Retry``: they
then apply to every adapter (``responses`` included) and honour Cloudflare's
``Retry-After``. The waiting between attempts is bounded (``max_retry_time``)
and each attempt by the (connect, read) timeout, so a web request is never held
for minutes. A 429 whose Retry-After is longer than that is returned at once,
and calls are not sent again until it has passed: Cloudflare refuses them all
anyway. Every attempt is counted, because every attempt costs one of the 1,200
calls per 5 minutes that Cloudflare allows a user.

Threads: one ``requests.Session`` is shared by all threads of a process. Its
connection pool (urllib3) is thread-safe; the parts of a Session that are not
(cookie handling, redirect re-authentication) are switched off: cookies are
refused and redirects are not followed. Headers are set once, at construction.
After a fork the child builds a new Session rather than share sockets.
"""

import http.cookiejar
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import __version__
from .exceptions import CFKVConfigurationError, KVConnectionError, KVRateLimitError, KVTimeout

logger = logging.getLogger("django_cfkv")

DEFAULT_TIMEOUT = (5.0, 30.0)
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_TIME = 15.0  # seconds a call may spend waiting between attempts
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
LOW_BUDGET = 100  # warn when Cloudflare says fewer calls than this remain in the window
POOL_SIZE = 32
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class CallCounter:
    """Thread-safe count of API calls by endpoint; ``total`` sums them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = Counter()

    def record(self, endpoint):
        with self._lock:
            self._counts[endpoint] += 1

    def snapshot(self):
        """Return a plain dict copy of the counts so far."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self):
        with self._lock:
            return sum(self._counts.values())

    def reset(self):
        with self._lock:
            self._counts.clear()


#: Every call made by every client in this process; tests and benchmarks read it.
calls = CallCounter()

# Callables run before each request with the URL; one may raise to stop it.
# django_cfkv.testing uses this to keep tests on loopback.
request_guards = []


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie, request):
        return False


def _parse_retry_after(value):
    """Return Retry-After in seconds (delta or HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_RATELIMIT_RE = re.compile(r"\br=(\d+)(?:.*?\bt=(\d+))?")


def parse_ratelimit(value):
    """Parse Cloudflare's ``Ratelimit: "default";r=50;t=30`` into (remaining, reset_seconds)."""
    match = _RATELIMIT_RE.search(value or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


class Transport:
    """Send requests with a timeout, bounded retries and call accounting."""

    def __init__(self, api_token, *, timeout=DEFAULT_TIMEOUT, max_retries=DEFAULT_MAX_RETRIES,
                 max_retry_time=DEFAULT_MAX_RETRY_TIME):
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        self.timeout = tuple(timeout)
        self.max_retries = max_retries
        self.max_retry_time = max_retry_time
        self.calls = CallCounter()
        self.budget = None  # (remaining, reset_seconds, seen_at) from the last Ratelimit header
        self.connections_opened = 0
        self._token = _checked_token(api_token)
        self._lock = threading.Lock()
        self._session = None
        self._pid = None
        self._last_budget_warning = 0.0
        self._blocked_until = 0.0  # monotonic time until which Cloudflare said it refuses every call

    def __repr__(self):
        return f"<Transport timeout={self.timeout} max_retries={self.max_retries}>"

    @property
    def session(self):
        if self._session is None or self._pid != os.getpid():
            with self._lock:
                if self._session is None or self._pid != os.getpid():
                    self._session, self._pid = self._build_session(), os.getpid()
        return self._session

    def _build_session(self):
        session = requests.Session()
        session.cookies.set_policy(_NoCookies())
        session.headers.update({
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"django-cfkv/{__version__}",
        })
        adapter = _CountingAdapter(self, pool_connections=4, pool_maxsize=POOL_SIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self):
        """Close pooled connections (a new pool is made on next use)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def request(self, method, url, *, endpoint, idempotent=True, **kwargs):
        """Send one API call, retrying transient failures; return the final Response.

        Connection errors, timeouts, 429 and 5xx are retried when ``idempotent``,
        at most ``max_retries`` times and ``max_retry_time`` seconds of waiting.
        A Retry-After longer than what is left is not waited for: the 429 is
        returned at once for the caller to raise.
        """
        for guard in request_guards:
            guard(url)
        blocked = self._blocked_until - time.monotonic()
        if blocked > 0:  # Cloudflare refuses every call until then: spare the round trip and the quota
            raise KVRateLimitError(
                f"Cloudflare's API refuses calls for another {blocked:.0f} s (it answered 429 with "
                "Retry-After); no call was sent. Past 1,200 calls per 5 minutes every call is refused "
                "for 5 minutes: see 'Scaling past the REST quota'.", status=429, retry_after=blocked)
        deadline = time.monotonic() + self.max_retry_time
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                self.calls.record(endpoint)
                calls.record(endpoint)
                response = self.session.request(
                    method, url, timeout=self.timeout, allow_redirects=False, **kwargs
                )
            except requests.RequestException as exc:
                error = _translate(exc, method, url, endpoint)
                if not (idempotent and self._can_retry(attempt, deadline, None)):
                    # Not chained: requests' text repeats the URL, whose key may be a session id.
                    raise error from None
                logger.info("KV %s %s failed (%s); retrying", method, endpoint, type(exc).__name__)
                self._sleep(self._backoff(attempt), deadline)
                attempt += 1
                continue
            logger.debug("KV %s %s -> %s in %.1f ms", method, endpoint, response.status_code,
                         (time.monotonic() - started) * 1000)
            self._note_budget(response)
            if response.status_code not in RETRY_STATUSES or not idempotent:
                return response
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            if not self._can_retry(attempt, deadline, retry_after):
                if response.status_code == 429 and retry_after:
                    self._blocked_until = time.monotonic() + retry_after
                return response
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            logger.info("KV %s %s got HTTP %s; retrying in %.2f s", method, endpoint,
                        response.status_code, delay)
            response.close()
            self._sleep(delay, deadline)
            attempt += 1

    def _can_retry(self, attempt, deadline, retry_after):
        if attempt >= self.max_retries:
            return False
        wait = retry_after if retry_after is not None else 0.0
        return time.monotonic() + wait <= deadline

    def _backoff(self, attempt):
        """Capped exponential backoff with jitter."""
        delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** attempt))
        return delay / 2 + self._jitter(delay / 2)

    def _jitter(self, span):
        """Return a random share of ``span``; separate so tests can make it fixed."""
        return random.uniform(0, span)

    def _sleep(self, seconds, deadline):
        time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

    def _note_budget(self, response):
        parsed = parse_ratelimit(response.headers.get("Ratelimit"))
        if parsed is None:
            return
        self.budget = (parsed[0], parsed[1], time.time())
        now = time.monotonic()
        if parsed[0] < LOW_BUDGET and now - self._last_budget_warning > 30:
            self._last_budget_warning = now
            logger.warning(
                "Cloudflare API budget is low: %d calls left in this window (resets in %s s). "
                "Past it every call is refused for 5 minutes; see 'Scaling past the REST quota'.",
                parsed[0], parsed[1],
            )


class _CountingAdapter(HTTPAdapter):
    """Count new TCP connections, so benchmarks can show they are reused."""

    def __init__(self, transport, **kwargs):
        self._transport = transport
        super().__init__(**kwargs)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        conn = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        _count_new_connections(conn, self._transport)
        return conn


def _count_new_connections(pool, transport):
    if getattr(pool, "_cfkv_counted", False):
        return
    original = pool._new_conn

    def _new_conn():
        transport.connections_opened += 1
        return original()

    pool._new_conn = _new_conn
    pool._cfkv_counted = True


def _checked_token(token):
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
            "header can carry it. Copy API_TOKEN (or $CLOUDFLARE_API_TOKEN) again from the dashboard."
        )
    return token


def _translate(exc, method, url, endpoint):
    """Turn a requests failure into a KVConnectionError naming the host and endpoint only:
    the URL's path holds the key, which may be a session id."""
    where = f"{method} {endpoint} on {urlsplit(url).netloc}"
    if isinstance(exc, requests.Timeout):
        return KVTimeout(f"Workers KV did not answer {where} in time ({type(exc).__name__}).")
    return KVConnectionError(f"Could not reach Workers KV for {where} ({type(exc).__name__}).")
