"""The retry policy and the deadline: which failures are tried again, after how long, and when to give up.

No I/O: a policy reads the clock and an answer's status and headers, and says "retry after
N s" or "give up" (None). Whatever sends the calls asks it after every attempt, then sleeps
(or awaits) and sends again.

Retries live here, in our own loop, rather than in urllib3's ``Retry``: they then apply to
every adapter (``responses`` included) and honour Cloudflare's ``Retry-After``. Time is bounded
twice, by the wall clock: an attempt may take at most connect + read timeout seconds, and a
call, retries and waits included, at most ``deadline`` seconds. A Retry-After longer than
what is left is not waited for: the answer is given up on at once.
"""

import math
import random
from collections.abc import Mapping

from .. import clock, limits
from ..exceptions import CFKVConfigurationError
from .quota import parse_retry_after

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds of one attempt
DEFAULT_MAX_RETRIES = 3
DEFAULT_DEADLINE = 30.0  # seconds one call may take, every attempt and wait included
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Timeout = tuple[float, float]


def checked_timeout(timeout: float | tuple[float, float]) -> Timeout:
    """Return ``timeout`` as (connect, read) seconds; one number is both."""
    if isinstance(timeout, (int, float)):
        timeout = (float(timeout), float(timeout))
    return (timeout[0], timeout[1])


def checked_deadline(deadline: object) -> float:
    """Return ``deadline`` as seconds, or raise the configuration error saying what to set."""
    if not limits.is_seconds(deadline):
        raise CFKVConfigurationError(f"DEADLINE must be a number of seconds > 0, not {deadline!r}.",
                                     "django_cfkv.E009",
                                     "For example DEADLINE = 30, or leave it unset for the default.")
    return float(deadline)


class RetryPolicy:
    """At most ``max_retries`` more attempts after the first, all within ``deadline`` seconds,
    spaced by Retry-After or capped exponential backoff with jitter."""

    def __init__(self, max_retries: int = DEFAULT_MAX_RETRIES, deadline: float = DEFAULT_DEADLINE) -> None:
        self.max_retries = max_retries
        self.deadline = checked_deadline(deadline)

    def __repr__(self) -> str:
        return f"<RetryPolicy max_retries={self.max_retries} deadline={self.deadline}>"

    def backoff(self, retry: int) -> float:
        """Return the wait before retry number ``retry`` (0 first): capped exponential, with jitter."""
        delay = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** retry))
        return delay / 2 + self.jitter(delay / 2)

    def jitter(self, span: float) -> float:
        """Return a random share of ``span``; separate so tests can make it fixed."""
        return random.uniform(0, span)


class Attempts:
    """One call's attempts under ``policy``: how many retries so far, and the wall-clock deadline of them all
    (it runs from the first attempt's window). Only an ``idempotent`` call is ever retried."""

    def __init__(self, policy: RetryPolicy, idempotent: bool) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.deadline = math.inf  # on clock.monotonic(), from the first window
        self.started = 0.0  # when the latest attempt started, on clock.monotonic()
        self.retries = 0

    def window(self, timeout: Timeout) -> tuple[float, Timeout] | None:
        """Return (end, (connect, read)) for the next attempt, or None when the deadline has passed.

        The attempt ends at most connect + read seconds from now, and never after the deadline.
        """
        started = self.started = clock.monotonic()  # one reading of the clock for both
        if not self.retries:  # the first attempt: the call's deadline runs from now
            self.deadline = started + self.policy.deadline
        connect, read = timeout
        ends = started + connect + read
        if started < ends <= self.deadline:  # the common case: the attempt's own timers, as set
            return ends, timeout
        ends = self.deadline
        left = ends - started
        if left <= 0:
            return None
        return ends, (min(connect, left), min(read, left))

    def after_error(self) -> float | None:
        """After a connection error or timeout: return the seconds to wait before trying again, or None."""
        delay = self.policy.backoff(self.retries)
        return delay if self.idempotent and self._can_retry(delay) else None

    def after_answer(self, status: int, headers: Mapping[str, str]) -> float | None:
        """After an answer: return the seconds to wait before asking again, or None to keep this answer
        (a success, an error no retry mends, or no attempt or time left)."""
        if status not in RETRY_STATUSES or not self.idempotent:
            return None
        retry_after = parse_retry_after(headers.get("Retry-After"))
        delay = retry_after if retry_after is not None else self.policy.backoff(self.retries)
        return delay if self._can_retry(delay) else None

    def wait(self, delay: float) -> float:
        """Count one retry; return the seconds to sleep before it: ``delay``, cut at the deadline."""
        self.retries += 1
        return max(0.0, min(delay, self.deadline - clock.monotonic()))

    def _can_retry(self, delay: float) -> bool:
        return self.retries < self.policy.max_retries and clock.monotonic() + delay < self.deadline
