"""Middleware: rate limiting and bearer sessions, the thin Django side of :mod:`django_cfkv.ratelimit`
and :mod:`django_cfkv.bearer`.

The request and response side of rate limiting (identity, counting, the 429
and its headers) lives in :mod:`django_cfkv.ratelimit`, beside the decorator
that needs it; its names stay importable from here.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async

from .bearer import BearerSessionMiddleware  # noqa: F401  (django_cfkv.middleware.BearerSessionMiddleware)
from .exceptions import Ratelimited
from .ratelimit import (  # noqa: F401  (re-exported: they lived here)
    add_headers,
    check_request,
    client_value,
    count_request,
    get_limiter,
    header_values,
    identify,
    limit_view,
    limited_response,
)


class RateLimitMiddleware:
    """Apply ``CFKV_RATELIMIT["RULES"]`` to every request, and answer ``Ratelimited`` with a 429.

    Works in sync and async stacks. Put it after AuthenticationMiddleware when
    a rule keys on ``user``. It never turns a request into a 500: a failing
    store is handled by ``FAIL_OPEN``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        usages = self._check(request)
        if any(u.limited for u in usages):
            return limited_response(request, usages)
        return add_headers(self.get_response(request), usages)

    async def __acall__(self, request):
        # Counting may call KV (blocking I/O) and read request.user: run it in a thread.
        usages = await sync_to_async(self._check)(request)
        if any(u.limited for u in usages):
            return await sync_to_async(limited_response)(request, usages)
        return add_headers(await self.get_response(request), usages)

    def _check(self, request):
        try:
            return check_request(request)
        except Exception as exc:  # never a 500 because of the limiter
            get_limiter().log_failure(exc)
            return []

    def process_exception(self, request, exception):
        """Answer a ``Ratelimited`` raised by a ``@ratelimit`` view with the 429 response."""
        if isinstance(exception, Ratelimited):
            usages = exception.usage if isinstance(exception.usage, (list, tuple)) else []
            return limited_response(request, list(usages), exception)
        return None

