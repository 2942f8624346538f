"""Transport: send one API call over the pooled session, retrying as the policy says.

The loop is all this module does: the policy (``policy``) says whether and when to
try again, the quota (``quota``) whether to send at all, the deadline connections
(``deadline``) bound each attempt by the wall clock, and the body reader (``body``)
refuses an answer larger than KV can give. requests' failures become KVConnectionError
or KVTimeout here, naming the host and endpoint only.
"""

import logging
from typing import Any

import requests

from .. import clock, limits
from ..exceptions import KVConnectionError, KVTimeout
from . import accounting, deadline
from .accounting import CallCounter
from .body import read_body
from .logs import install_filter, where
from .policy import DEFAULT_DEADLINE, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Attempts, RetryPolicy, checked_timeout
from .quota import Quota
from .session import SharedSession

logger = logging.getLogger("django_cfkv")


class Transport:
    """Send requests with a timeout, a deadline, bounded retries and call accounting."""

    def __init__(self, api_token: str, *, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, deadline: float = DEFAULT_DEADLINE) -> None:
        self.timeout = checked_timeout(timeout)
        self.policy = RetryPolicy(max_retries, deadline)
        self.calls = CallCounter()  # this transport's calls; accounting.calls counts the process's
        self.quota = Quota()
        self._shared = SharedSession(api_token)

    def __repr__(self) -> str:
        return f"<Transport timeout={self.timeout} max_retries={self.max_retries} deadline={self.deadline}>"

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

    @property
    def session(self) -> requests.Session:
        return self._shared.get()

    def close(self) -> None:
        """Close pooled connections (a new pool is made on next use)."""
        self._shared.close()

    def request(self, method: str, url: str, *, endpoint: str, idempotent: bool = True,
                max_bytes: int = limits.MAX_RESPONSE_BYTES, **kwargs: Any) -> requests.Response:
        """Send one API call, retrying transient failures; return the final Response, body read.

        Connection errors, timeouts, 429 and 5xx are retried when ``idempotent``,
        at most ``max_retries`` times and within ``deadline`` seconds in all. A
        Retry-After longer than what is left is not waited for: the 429 is
        returned at once for the caller to raise. A body over ``max_bytes``
        raises ResponseTooLargeError.
        """
        accounting.before_call(method, url)
        self.quota.check()
        attempts = self.policy.start(idempotent)
        while True:
            try:
                response = self._attempt(method, url, endpoint, attempts, max_bytes, kwargs)
            except KVConnectionError:
                delay = attempts.after_error()
                if delay is None:
                    raise
            else:
                self.quota.note(response.headers)
                delay = attempts.after_answer(response.status_code, response.headers)
                if delay is None:
                    if idempotent:  # a refusal it stopped retrying may speak for the whole account
                        self.quota.note_refusal(response.status_code, response.headers)
                    return response
                logger.info("KV %s %s got HTTP %s; retrying in %.2f s", method, endpoint,
                            response.status_code, delay)
            clock.sleep(attempts.wait(delay))

    def _attempt(self, method: str, url: str, endpoint: str, attempts: Attempts, max_bytes: int,
                 kwargs: dict[str, Any]) -> requests.Response:
        """Send one attempt and read its body within the attempt's window."""
        started = clock.monotonic()
        window = attempts.window(self.timeout)
        if window is None:
            raise KVTimeout(f"Workers KV did not answer {where(method, endpoint, url)}: the call's deadline "
                            f"({self.deadline:g} s) passed.")
        ends, timeout = window
        self.calls.record(endpoint)
        accounting.calls.record(endpoint)
        try:
            with deadline.until(ends, timeout[1]):
                response = self.session.request(method, url, timeout=timeout, allow_redirects=False,
                                                stream=True, **kwargs)
                try:
                    response._content = read_body(response, max_bytes, method, endpoint, url)
                finally:
                    response.close()  # a no-op once the body is read: the connection is back in the pool
        except requests.RequestException as exc:
            late, named = clock.monotonic() >= ends, where(method, endpoint, url)
            logger.info("KV %s failed (%s)%s", named, type(exc).__name__, "; out of time" if late else "")
            # Not chained: requests' text repeats the URL, whose key may be a session id.
            raise _translate(exc, named, late) from None
        logger.debug("KV %s %s -> %s in %.1f ms", method, endpoint, response.status_code,
                     (clock.monotonic() - started) * 1000)
        return response


def _translate(exc: requests.RequestException, where: str, late: bool) -> KVConnectionError:
    """Turn a requests failure into a KVConnectionError naming the host and endpoint only:
    the URL's path holds the key, which may be a session id."""
    if late or isinstance(exc, requests.Timeout):
        return KVTimeout(f"Workers KV did not answer {where} in time ({type(exc).__name__}).")
    return KVConnectionError(f"Could not reach Workers KV for {where} ({type(exc).__name__}).")


install_filter()
