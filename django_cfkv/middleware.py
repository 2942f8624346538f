"""Middleware: rate limiting and bearer sessions, the thin Django side of :mod:`django_cfkv.ratelimit`
and :mod:`django_cfkv.bearer`.

RateLimitMiddleware is written once, as Django's ``MiddlewareMixin`` hooks,
and serves sync and async stacks alike: in an async stack it counts with the
same decisions, awaiting KV on the event loop (no thread). The request and response side
of rate limiting (identity, counting, the 429 and its headers) lives in
:mod:`django_cfkv.ratelimit`; its names stay importable from here.
"""

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from .bearer import BearerSessionMiddleware  # noqa: F401  (django_cfkv.middleware.BearerSessionMiddleware)
from .exceptions import Ratelimited
from .ratelimit import (  # noqa: F401  (re-exported: they lived here)
    Usage,
    acheck_request,
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
from .ratelimit.limiter import MISCONFIGURED

USAGES = "_cfkv_ratelimit_usages"  # the request attribute carrying what was counted to the response


class RateLimitMiddleware(MiddlewareMixin):
    """Apply ``CFKV_RATELIMIT["RULES"]`` to every request, and answer ``Ratelimited`` with a 429.

    Works in sync and async stacks. Put it after AuthenticationMiddleware when
    a rule keys on ``user``. A failing store never turns a request into a
    500 (``FAIL_OPEN`` decides); a configuration mistake does: a refused token,
    an alias or cache that does not exist, or a request with no client address
    to count an ``ip`` key by (``django_cfkv.E118``).
    """

    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        """Count the request against the matching rules; answer 429 when one is over its limit."""
        try:
            usages = check_request(request)
        except Exception as exc:
            usages = _not_counted(exc)
        return self._admit(request, usages)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """In an async stack: as the sync hooks, KV awaited on the event loop rather than the hooks in a thread."""
        try:
            usages = await acheck_request(request)
        except Exception as exc:
            usages = _not_counted(exc)
        response = self._admit(request, usages)
        if response is None:
            response = await self.get_response(request)  # type: ignore[misc]  # async in an async stack
        return self.process_response(request, response)

    def _admit(self, request: HttpRequest, usages: list[Usage]) -> HttpResponseBase | None:
        if any(u.limited for u in usages):
            return limited_response(request, usages)  # it carries its headers: nothing left for the response
        setattr(request, USAGES, usages)
        return None

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Add the RateLimit headers of what the request was counted against."""
        return add_headers(response, getattr(request, USAGES, ()))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        """Answer a ``Ratelimited`` raised by a ``@ratelimit`` view with the 429 response."""
        if isinstance(exception, Ratelimited):
            usages = exception.usage if isinstance(exception.usage, (list, tuple)) else []
            return limited_response(request, list(usages), exception)
        return None


def _not_counted(exc: Exception) -> list[Usage]:
    if isinstance(exc, MISCONFIGURED):
        raise exc  # a mistake to fix, not an outage (no client address, a refused token...): FAIL_OPEN never hides it
    get_limiter().log_failure(exc)  # never a 500 because the store failed
    return []
