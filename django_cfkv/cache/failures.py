"""``OPTIONS["IGNORE_EXCEPTIONS"]``: which failures it may hide, and the guard that hides them (logged).

Only what may pass by itself is hidden: connection errors, 429, 5xx and answers
no KV gives (a broken server or proxy, as a 5xx is). A refused token, a bad key
or a configuration error always raises.

A hidden failure is logged as a warning on ``django_cfkv.cache`` saying which
operation failed on which alias. ``LOG_IGNORED_EXCEPTIONS`` (an option, or
django-redis' ``DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS``) set to True logs it as
django-redis does instead: an error "Exception ignored" with the traceback, on
``DJANGO_REDIS_LOGGER`` when set; set to False, nothing is logged.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..exceptions import KVBulkError, KVConnectionError, KVError, KVMalformedResponseError, KVRateLimitError

T = TypeVar("T")
F = TypeVar("F")


def transient(exc: BaseException) -> bool:
    """Return True for the failures IGNORE_EXCEPTIONS may hide: connection errors, 429, 5xx and
    answers no KV gives (a broken server or proxy, as a 5xx is)."""
    if isinstance(exc, (KVConnectionError, KVRateLimitError, KVMalformedResponseError)):
        return True
    if isinstance(exc, KVBulkError):
        if exc.partial:
            return True
        if exc.__cause__ is not None:  # a bulk call failed as a whole: judge by its cause
            return transient(exc.__cause__)
    status = getattr(exc, "status", None)
    return status is not None and (status >= 500 or status == 429)


class Guard:
    """Run a cache operation's KV calls; with IGNORE_EXCEPTIONS, turn a transient failure into a
    logged fallback value, as django-redis' ``omit_exception`` does."""

    def __init__(self, alias: str, ignore_exceptions: bool, log_ignored: bool | None = None,
                 logger_name: str = "django_cfkv.cache") -> None:
        self.alias, self.ignore_exceptions = alias, ignore_exceptions
        self.log_mode, self.logger = log_ignored, logging.getLogger(logger_name)

    def __call__(self, operation: str, fallback: F, func: Callable[..., T], *args: Any) -> T | F:
        """Return ``func(*args)``, or ``fallback`` (logged) if it failed in a way this cache ignores."""
        try:
            return func(*args)
        except KVError as exc:
            if not self.ignores(exc):
                raise
            self.log_ignored(operation, exc)
            return fallback

    async def acall(self, operation: str, fallback: F, func: Callable[..., Awaitable[T]], *args: Any) -> T | F:
        """The async twin of calling the guard: ``await func(*args)``, or ``fallback`` (logged) as above."""
        try:
            return await func(*args)
        except KVError as exc:
            if not self.ignores(exc):
                raise
            self.log_ignored(operation, exc)
            return fallback

    def ignores(self, exc: KVError) -> bool:
        """Return True if this cache hides ``exc`` (IGNORE_EXCEPTIONS and a transient failure)."""
        return self.ignore_exceptions and transient(exc)

    def log_ignored(self, operation: str, exc: KVError) -> None:
        if self.log_mode is None:
            self.logger.warning("Cache %s on CFKV alias %r failed and was ignored: %s",
                                operation, self.alias, exc, exc_info=exc)
        elif self.log_mode:  # django-redis' record, word for word, for the filters and alerts built on it
            self.logger.error("Exception ignored", exc_info=exc)
