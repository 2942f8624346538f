"""Middleware: rate limiting (the request and response side of :mod:`django_cfkv.ratelimit`)."""

import logging
from functools import wraps

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpResponse, JsonResponse
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils.module_loading import import_string

from .exceptions import Ratelimited
from .ratelimit import client_value, get_limiter

logger = logging.getLogger("django_cfkv.ratelimit")


def identify(request, rule, limiter):
    """Return the identity ``rule`` counts this request under, or None when the rule does not apply."""
    kind, arg = rule.key, rule.key_arg
    if kind in ("user", "user_or_ip"):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        if kind == "user":
            return None
    if kind in ("ip", "user_or_ip"):
        return "ip:" + limiter.client_address(request.META)
    if kind == "header":
        return f"header:{arg.lower()}:{client_value(request.headers.get(arg, ''))}"
    if kind in ("get", "post"):  # the last value, as request.GET[name] and request.POST[name] give the view
        values = request.GET if kind == "get" else request.POST
        return f"{kind}:{arg}:{client_value(values.get(arg, ''))}"
    value = arg(rule.name, request)
    return None if value is None else f"callable:{value}"


def count_request(request, rules):
    """Count the request against each of ``rules``; return their Usages."""
    limiter = get_limiter()
    usages = []
    for rule in rules:
        try:
            identity = identify(request, rule, limiter)
        except Exception as exc:  # a user's key callable, or a broken request
            limiter.log_failure(exc)
            usages.append(limiter.unavailable(rule))
            continue
        if identity is not None:
            usages.append(limiter.hit(rule, identity))
    limiter.after_request()
    return usages


def check_request(request):
    """Return the Usages of every configured rule matching the request (empty when disabled)."""
    limiter = get_limiter()
    if not limiter.enabled:
        return []
    return count_request(request, limiter.matching(request.path_info, request.method))


def header_values(usages):
    """Return the RateLimit-Policy and RateLimit header values for ``usages``.

    Syntax of draft-ietf-httpapi-ratelimit-headers-10 (section 3 and 4,
    https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/), also what
    Cloudflare's API sends: Structured Field lists of quoted policy names with
    ``q`` (quota) and ``w`` (window, s), and ``r`` (remaining) and ``t`` (seconds to reset).
    """
    return {
        "RateLimit-Policy": ", ".join(f'"{u.policy}";q={u.limit};w={u.period}' for u in usages),
        "RateLimit": ", ".join(f'"{u.policy}";r={u.remaining};t={u.reset}' for u in usages),
    }


def add_headers(response, usages):
    """Add the RateLimit headers for ``usages`` to ``response`` (after any already there)."""
    for name, value in header_values([u for u in usages if u is not None]).items():
        if value:
            if name in response.headers:
                value = f"{response.headers[name]}, {value}"
            response.headers[name] = value
    return response


def limited_response(request, usages, exception=None):
    """Return the answer to a request over its limit: 429 with Retry-After and RateLimit headers.

    ``CFKV_RATELIMIT["VIEW"]`` (a view taking ``(request, exception)``)
    replaces the body; otherwise JSON for clients that prefer it, else a short
    HTML page (template ``django_cfkv/ratelimited.html``).
    """
    limited = [u for u in usages if u.limited] or usages
    retry_after = max((u.reset for u in limited), default=60)
    response = None
    view = get_limiter().options["VIEW"]
    if view:
        try:
            exception = exception or Ratelimited("Rate limit exceeded.", usage=limited)
            response = import_string(view)(request, exception)
        except Exception as exc:
            logger.exception("CFKV_RATELIMIT['VIEW'] failed; answering with the default 429 (%s).", exc)
    if response is None:
        response = _default_response(request, retry_after)
    if "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(retry_after)
    return add_headers(response, usages)


def _default_response(request, retry_after):
    if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
        return JsonResponse({"error": "rate_limited", "detail": "Too many requests. Try again later.",
                             "retry_after": retry_after}, status=429)
    try:
        body = render_to_string("django_cfkv/ratelimited.html", {"retry_after": retry_after})
    except TemplateDoesNotExist:
        body = f"<!doctype html><title>Too many requests</title><h1>Too many requests</h1>" \
               f"<p>Try again in {retry_after} seconds.</p>"
    return HttpResponse(body, status=429)


def limit_view(view, rule, *, block=True):
    """Wrap ``view`` to count each request against ``rule`` (see ``django_cfkv.ratelimit.ratelimit``)."""
    def check(request):
        limiter = get_limiter()
        if not limiter.enabled or not rule.matches(request.path_info, request.method):
            return []
        usages = count_request(request, [rule])
        if any(u.limited for u in usages):
            if block:
                raise Ratelimited("Rate limit exceeded.", usage=usages)
            request.limited = True
        else:
            request.limited = getattr(request, "limited", False)
        return usages

    if iscoroutinefunction(view):
        @wraps(view)
        async def async_wrapper(request, *args, **kwargs):
            usages = await sync_to_async(check)(request)
            return add_headers(await view(request, *args, **kwargs), usages)

        return async_wrapper

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        usages = check(request)
        return add_headers(view(request, *args, **kwargs), usages)

    return wrapper


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


from .bearer import BearerSessionMiddleware  # noqa: E402,F401
