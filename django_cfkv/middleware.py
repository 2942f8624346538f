"""Middleware: rate limiting and bearer sessions, the thin Django side of :mod:`django_cfkv.ratelimit`
and :mod:`django_cfkv.bearer`.

RateLimitMiddleware is written once, as Django's ``MiddlewareMixin`` hooks,
and serves sync and async stacks alike: under ASGI the mixin runs the hooks
in a thread, where counting may wait for KV. The request and response side
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
        usages = self._check(request)
        if any(u.limited for u in usages):
            return limited_response(request, usages)  # it carries its headers: nothing left for the response
        setattr(request, USAGES, usages)
        return None

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """Add the RateLimit headers of what the request was counted against."""
        return add_headers(response, getattr(request, USAGES, ()))

    def _check(self, request: HttpRequest) -> list[Usage]:
        try:
            return check_request(request)
        except MISCONFIGURED:
            raise  # a mistake to fix, not an outage (no client address, a refused token...): FAIL_OPEN never hides it
        except Exception as exc:  # never a 500 because the store failed
            get_limiter().log_failure(exc)
            return []

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        """Answer a ``Ratelimited`` raised by a ``@ratelimit`` view with the 429 response."""
        if isinstance(exception, Ratelimited):
            usages = exception.usage if isinstance(exception.usage, (list, tuple)) else []
            return limited_response(request, list(usages), exception)
        return None
