"""Cloudflare's quota as its answers state it: Retry-After, the Ratelimit budget, and the account-wide block.

No I/O: everything here reads an answer's status and headers, and the clock.

Only a 429 that speaks for the whole account (Cloudflare's ``Ratelimit`` header says no
call is left) stops other calls, for its Retry-After and never more than the five minutes
Cloudflare blocks an over-quota user. A 429 about one key (one write per second) or one
call fails that call alone.
"""

import logging
import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from .. import clock, limits
from ..exceptions import KVRateLimitError

logger = logging.getLogger("django_cfkv")

LOW_BUDGET = 100  # warn when Cloudflare says fewer calls than this remain in the window
# At most 9 digits: budgets are about 1,200, and int() refuses numbers past 4,300 digits.
_RATELIMIT_RE = re.compile(r"\br=(\d{1,9})\b(?:.*?\bt=(\d{1,9})\b)?")


def parse_retry_after(value: str | None) -> float | None:
    """Return Retry-After in seconds (delta or HTTP date), at most Cloudflare's 5-minute block; or None."""
    if not value:
        return None
    first = value.partition(",")[0].strip()  # a header sent twice: requests joins the two, aiohttp gives the first
    try:
        seconds = float(first if first.isdigit() else value)
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


def parse_ratelimit(value: str | None) -> tuple[int, int | None] | None:
    """Parse Cloudflare's ``Ratelimit: "default";r=50;t=30`` into (remaining, reset_seconds)."""
    match = _RATELIMIT_RE.search(value or "")
    return None if match is None else _numbers(match)


def _numbers(match: re.Match[str]) -> tuple[int, int | None]:
    """(remaining, reset_seconds) of a Ratelimit header the regular expression matched."""
    return int(match[1]), int(match[2]) if match[2] else None


def account_block(status: int, headers: Mapping[str, str]) -> float:
    """Return the seconds Cloudflare refuses every call of the account, if this answer says so; else 0.

    Only the REST quota (1,200 calls per 5 minutes) stops every call, and its
    ``Ratelimit`` header then counts no call left. A 429 without that proof may
    be about one key (one write per second) or one call (concurrent bulk
    operations): it leaves other calls alone. Cloudflare documents no error
    code that tells them apart, so none is trusted, and neither is the size of
    Retry-After alone: blocking wrongly would refuse a site's every call.
    """
    if status != 429:  # checked first: every final answer of a call is asked
        return 0.0
    budget = parse_ratelimit(headers.get("Ratelimit"))
    if budget is None or budget[0] != 0:
        return 0.0
    retry_after = parse_retry_after(headers.get("Retry-After"))
    reset = min(budget[1] or 0, limits.QUOTA_BLOCK_SECONDS)
    return retry_after if retry_after is not None else float(reset)


class Quota:
    """What Cloudflare's answers said of one token's quota: the calls left, and until when none is taken."""

    def __init__(self) -> None:
        self._seen: tuple[re.Match[str], float] | None = None  # the last Ratelimit header read, and when (epoch)
        self._blocked_until = 0.0  # monotonic time until which Cloudflare refuses every call of the account
        self._last_warning = 0.0

    @property
    def budget(self) -> tuple[int, int | None, float] | None:
        """(remaining, reset_seconds, seen_at epoch) from the last Ratelimit header that could be read, or None."""
        if self._seen is None:
            return None
        match, seen_at = self._seen
        return (*_numbers(match), seen_at)

    def check(self) -> None:
        """Raise KVRateLimitError, sending nothing, while Cloudflare refuses every call of the account."""
        if not self._blocked_until:  # never blocked: the common case reads no clock
            return
        blocked = self._blocked_until - clock.monotonic()
        if blocked > 0:  # spare the round trip and the quota
            raise KVRateLimitError(
                f"Cloudflare's API refuses every call of this account for another {blocked:.0f} s (it "
                "answered 429 with no call left in its quota); no call was sent. Past 1,200 calls per "
                "5 minutes every call is refused for 5 minutes: see 'Scaling past the REST quota'.",
                status=429, retry_after=blocked, account_wide=True)

    def note(self, headers: Mapping[str, str]) -> None:
        """Keep the budget an answer's Ratelimit header states; warn (at most every 30 s) when it is low.

        Every answer has one: it is matched here, and its numbers are made a tuple only when asked for
        (:attr:`budget`), which spares every call a few µs. One that cannot be read leaves the last budget.
        """
        header = headers.get("Ratelimit")
        match = None if header is None else _RATELIMIT_RE.search(header)
        if match is None:
            return
        self._seen = (match, clock.now())
        remaining = int(match[1])
        if remaining < LOW_BUDGET and (now := clock.monotonic()) - self._last_warning > 30:
            self._last_warning = now
            logger.warning(
                "Cloudflare API budget is low: %d calls left in this window (resets in %s s). "
                "Past it every call is refused for 5 minutes; see 'Scaling past the REST quota'.",
                remaining, _numbers(match)[1],
            )

    def note_refusal(self, status: int, headers: Mapping[str, str]) -> None:
        """Block every call for as long as a final refusal says the whole account is refused."""
        block = account_block(status, headers)
        if block:
            self._blocked_until = max(self._blocked_until, clock.monotonic() + block)
