"""HTTP transport: how one API call is sent, retried, bounded in time and counted. Knows no Django.

One job per module. The first three do no I/O (they read the clock, statuses and
headers), so any way of sending shares them; the rest send with requests:

- ``policy``      the retry policy and the deadline: "retry after N s" or "give up"
- ``quota``       Retry-After and Ratelimit headers, the budget left, the account-wide block
- ``accounting``  calls counted by endpoint (``calls``), and the hooks run before each call
- ``logs``        what records and messages say of a call: never its key
- ``session``     the pooled requests.Session shared by threads (no cookies, fork-safe), the token check
- ``deadline``    urllib3 connections whose reads end at the attempt's wall-clock end
- ``body``        the capped body reader
- ``sync``        ``Transport``: the loop that sends, waits and retries
"""

from .accounting import CallCounter, calls, request_hooks
from .body import CHUNK_BYTES, ResponseTooLargeError
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
from .sync import Transport

__all__ = [
    "BACKOFF_BASE", "BACKOFF_CAP", "CHUNK_BYTES", "DEFAULT_DEADLINE", "DEFAULT_MAX_RETRIES", "DEFAULT_TIMEOUT",
    "LOW_BUDGET", "POOL_SIZE", "RETRY_STATUSES", "CallCounter", "Quota", "RedactKVURLs", "ResponseTooLargeError",
    "RetryPolicy", "Transport", "account_block", "calls", "checked_deadline", "checked_token", "parse_ratelimit",
    "parse_retry_after", "request_hooks",
]
