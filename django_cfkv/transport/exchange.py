"""One API call's attempts as steps that any way of sending follows: the retry loop, without the I/O.

A call is a generator (:meth:`BaseTransport.exchange`) that yields an :class:`Attempt` (send this
request, then give back its answer or the KVError it failed with) or a :class:`Wait` (sleep this
long), and returns the final answer. Everything a call decides happens here, once: the request
hooks, the quota's block, the count of every attempt, each attempt's wall-clock window, whether
and when to try again, and what a failed attempt is called in errors and logs. A driver only
sends and sleeps: :class:`~django_cfkv.transport.sync.Transport` with requests, and
:mod:`django_cfkv.transport.aio` with aiohttp, so the blocking and the async client share one
retry loop::

    steps, outcome = transport.exchange("GET", url, endpoint="get"), None
    while True:
        try:
            step = steps.send(outcome)  # the first send is None: it starts the call
        except StopIteration as done:
            return done.value  # the final answer
        outcome = send(step) if isinstance(step, Attempt) else sleep(step.seconds)

A driver sends the steps itself, with no iterator of ours between: this loop runs once per
attempt of every call, and each layer it does not pass through is CPU the call does not spend.

No I/O: this module reads the clock, statuses and headers.
"""

import logging
from collections.abc import Callable, Generator, Mapping
from typing import Any, NamedTuple, TypeVar

from .. import clock, limits
from ..exceptions import KVConnectionError, KVError, KVMalformedResponseError, KVTimeout
from . import accounting
from .accounting import CallCounter
from .logs import where
from .policy import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Attempts,
    RetryPolicy,
    Timeout,
    checked_timeout,
)
from .quota import Quota

logger = logging.getLogger("django_cfkv")

CHUNK_BYTES = 64 * 1024  # what a body reader asks the socket for at a time
# The encodings asked for, and the only ones read: both HTTP libraries inflate these alike (requests
# would also ask for br or zstd when a module for them is installed, and aiohttp for others).
ACCEPT_ENCODING = "gzip, deflate"
_READ_ENCODINGS = frozenset({"gzip", "deflate", "identity", ""})  # "": an empty header, no encoding to both
POOL_SIZE = 32  # connections a pool keeps to one host (per process, or per event loop)
R = TypeVar("R")


class Answer:
    """The parts of an HTTP answer the client reads: a requests response has them; an async
    driver makes one of these from what aiohttp read."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content


class Attempt(NamedTuple):  # a tuple: made once per attempt, at a fifth of a frozen dataclass's cost
    """Send this request once, within ``timeout`` (connect, read) and by ``ends`` on clock.monotonic()."""

    method: str
    url: str
    endpoint: str  # the name the call is counted under, and named by in messages (its URL holds the key)
    params: Mapping[str, Any] | None
    data: bytes | str | None
    headers: Mapping[str, str] | None
    max_bytes: int  # the largest answer read
    ends: float
    timeout: Timeout

    @property
    def named(self) -> str:
        """The call as messages name it: host and endpoint, never the URL's path (it holds the key)."""
        return where(self.method, self.endpoint, self.url)


class Wait(NamedTuple):
    """Sleep this many seconds before the next attempt."""

    seconds: float


Step = Attempt | Wait
#: What a driver gives back for a step: an Attempt's answer, or the KVError it failed with; None after a Wait.
Outcome = Any
Steps = Generator[Step, Outcome, R]
#: What a driver makes of the steps' end, when they are an operation's one call (None: the end is the result).
Finish = Callable[[Any], Any] | None


class ResponseTooLargeError(KVMalformedResponseError):
    """An answer larger than any Workers KV can give (it was not read whole)."""


class Capped:
    """A body read in chunks that is refused once it passes ``attempt.max_bytes`` (or declares it will)."""

    def __init__(self, attempt: Attempt, status: int, headers: Mapping[str, str]) -> None:
        declared = limits.parse_digits(headers.get("Content-Length", ""), 18)  # the upstream's text
        self.attempt, self.status = attempt, status
        self.full = declared is not None and declared > attempt.max_bytes  # refused on its header alone
        encoding = headers.get("Content-Encoding")
        # One the client did not ask for (x-gzip, "gzip, gzip", br) one HTTP library inflates and the other
        # hands over as it came: neither reads it, so no compressed bytes are ever taken for a value.
        self.encoding = None if encoding is None or encoding.strip().lower() in _READ_ENCODINGS else encoding
        self.unread = self.full or self.encoding is not None  # refused before a byte of the body is read
        self.size = 0
        self.chunks: list[bytes] = []

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; return False once the body is over the cap (stop reading)."""
        self.size += len(chunk)
        self.full = self.full or self.size > self.attempt.max_bytes
        if not self.full:
            self.chunks.append(chunk)
        return not self.full

    def body(self) -> bytes:
        """Return the body read; raise ResponseTooLargeError if it was over the cap, or
        KVMalformedResponseError if it came in an encoding the client does not read."""
        if self.encoding is not None:
            raise KVMalformedResponseError(
                f"Workers KV answered {self.attempt.named} in an encoding the client did not ask for "
                f"({self.encoding[:40]!r}), so it was not read. Check BASE_URL.", status=self.status)
        if self.full:
            raise ResponseTooLargeError(
                f"Workers KV's answer to {self.attempt.named} is larger than any KV can give "
                f"({self.attempt.max_bytes} bytes), so it was not read. Check BASE_URL.", status=self.status)
        return b"".join(self.chunks)


def failed(attempt: Attempt, cause: BaseException, timed_out: bool) -> KVConnectionError:
    """Return (and log) the KVConnectionError, or KVTimeout, for an attempt that got no answer.

    It names the host and endpoint only, and is raised unchained: the HTTP library's own
    text repeats the URL, whose path holds the key (which may be a session id).
    """
    late = clock.monotonic() >= attempt.ends
    logger.info("KV %s failed (%s)%s", attempt.named, type(cause).__name__, "; out of time" if late else "")
    if late or timed_out:
        return KVTimeout(f"Workers KV did not answer {attempt.named} in time ({type(cause).__name__}).")
    return KVConnectionError(f"Could not reach Workers KV for {attempt.named} ({type(cause).__name__}).")


class BaseTransport:
    """What every way of sending one client's calls shares: the attempt timeout, the retry
    policy and deadline, the quota Cloudflare reported, and the calls counted; and the loop
    of one call's attempts (:meth:`exchange`)."""

    def __init__(self, *, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, deadline: float = DEFAULT_DEADLINE) -> None:
        self.timeout = checked_timeout(timeout)
        self.policy = RetryPolicy(max_retries, deadline)
        self.calls = CallCounter()  # this transport's calls; accounting.calls counts the process's
        self.quota = Quota()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} timeout={self.timeout} max_retries={self.max_retries} deadline={self.deadline}>"

    @property
    def max_retries(self) -> int:
        return self.policy.max_retries

    @property
    def deadline(self) -> float:
        return self.policy.deadline

    @property
    def budget(self) -> tuple[int, int | None, float] | None:
        """(remaining, reset_seconds, seen_at epoch) from the last Ratelimit header Cloudflare sent, or None."""
        return self.quota.budget

    def exchange(self, method: str, url: str, *, endpoint: str, idempotent: bool = True,
                 max_bytes: int = limits.MAX_RESPONSE_BYTES, params: Mapping[str, Any] | None = None,
                 data: bytes | str | None = None, headers: Mapping[str, str] | None = None) -> Steps[Any]:
        """Return the steps of one API call; they end with its final answer (body read) or raise a KVError.

        Connection errors, timeouts, 429 and 5xx are retried when ``idempotent``,
        at most ``max_retries`` times and within ``deadline`` seconds in all. A
        Retry-After longer than what is left is not waited for: the 429 is
        the answer at once, for the caller to raise. A body over ``max_bytes``
        is a ResponseTooLargeError, not retried.
        """
        if accounting.request_hooks:
            accounting.before_call(method, url)
        self.quota.check()
        attempts = Attempts(self.policy, idempotent)
        while True:
            window = attempts.window(self.timeout)
            if window is None:
                raise KVTimeout(f"Workers KV did not answer {where(method, endpoint, url)}: the call's deadline "
                                f"({self.deadline:g} s) passed.")
            accounting.record(self.calls, endpoint)
            outcome = yield Attempt(method, url, endpoint, params, data, headers, max_bytes, *window)
            if isinstance(outcome, KVConnectionError):
                delay = attempts.after_error()
                if delay is None:
                    raise outcome
            elif isinstance(outcome, KVError):
                raise outcome
            else:
                status = outcome.status_code
                if logger.isEnabledFor(logging.DEBUG):  # the clock is read for the log line only
                    logger.debug("KV %s %s -> %s in %.1f ms", method, endpoint, status,
                                 (clock.monotonic() - attempts.started) * 1000)
                self.quota.note(outcome.headers)
                delay = attempts.after_answer(status, outcome.headers)
                if delay is None:
                    if idempotent and status == 429:  # a refusal it stopped retrying may speak for the account
                        self.quota.note_refusal(status, outcome.headers)
                    return outcome
                logger.info("KV %s %s got HTTP %s; retrying in %.2f s", method, endpoint, outcome.status_code, delay)
            yield Wait(attempts.wait(delay))
