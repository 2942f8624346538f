"""HTTP transport: how one API call is sent, retried, bounded in time and counted. Knows no Django.

One job per module. The first five do no I/O (they read the clock, statuses and headers),
so the blocking and the async way of sending share them; the rest send:

- ``policy``      the retry policy and the deadline: "retry after N s" or "give up"
- ``quota``       Retry-After and Ratelimit headers, the budget left, the account-wide block
- ``accounting``  calls counted by endpoint (``calls``), and the hooks run before each call
- ``logs``        what records and messages say of a call: never its key
- ``exchange``    one call's attempts as steps (send this, sleep that): the one retry loop, with the
                  hooks, the quota, the count, each attempt's window and the error for a failed attempt
- ``session``     the pooled requests.Session shared by threads (no cookies, fork-safe), the token check
- ``deadline``    urllib3 connections whose reads end at the attempt's wall-clock end
- ``body``        the capped body readers (requests' and aiohttp's)
- ``sync``        ``Transport``: follows a call's steps blocking (``run``) or awaited (``arun``)
- ``aio``         awaiting with aiohttp (the ``async`` extra): one session per event loop, closed with it;
                  imported only when aiohttp is installed
"""

from .accounting import CallCounter, calls, request_hooks
from .exchange import CHUNK_BYTES, Answer, Attempt, BaseTransport, ResponseTooLargeError, Wait
from .logs import RedactKVURLs
from .policy import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    RETRY_STATUSES,
    RetryPolicy,
    checked_deadline,
)
from .quota import LOW_BUDGET, Quota, account_block, parse_ratelimit, parse_retry_after
from .session import POOL_SIZE, checked_token
from .sync import Transport, native_async

__all__ = [
    "Answer", "Attempt", "BaseTransport", "Wait", "native_async",
    "BACKOFF_BASE", "BACKOFF_CAP", "CHUNK_BYTES", "DEFAULT_DEADLINE", "DEFAULT_MAX_RETRIES", "DEFAULT_TIMEOUT",
    "LOW_BUDGET", "POOL_SIZE", "RETRY_STATUSES", "CallCounter", "Quota", "RedactKVURLs", "ResponseTooLargeError",
    "RetryPolicy", "Transport", "account_block", "calls", "checked_deadline", "checked_token", "parse_ratelimit",
    "parse_retry_after", "request_hooks",
]
