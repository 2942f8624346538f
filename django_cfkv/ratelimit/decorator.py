"""The ``@ratelimit`` decorator: one view, one rule, django-ratelimit's way."""

import re
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.http import HttpRequest

from ..exceptions import Ratelimited
from .limiter import Usage, count_request, get_limiter
from .response import add_headers
from .rules import Rule, compile_rule

View = Callable[..., Any]  # a Django view, sync or async

#: Every method: ``@ratelimit(..., method=ratelimit.ALL)`` (the default).
ALL = None
#: The methods that write: ``@ratelimit(..., method=ratelimit.UNSAFE)``.
UNSAFE = ("DELETE", "PATCH", "POST", "PUT")


def ratelimit(rate: str, key: Any = "ip", *, method: str | Iterable[str] | None = ALL, group: str | None = None,
              block: bool = True) -> Callable[[View], View]:
    """Limit a view to ``rate`` requests per ``key``, like django-ratelimit's decorator.

    Over the limit, ``block=True`` raises :class:`~django_cfkv.exceptions.Ratelimited`
    (a ``PermissionDenied``: RateLimitMiddleware answers it with a 429 and
    Retry-After, Django alone with a 403); ``block=False`` sets
    ``request.limited = True`` and calls the view. ``group`` (default: the
    view's dotted name) shares one count between views. Mistakes in the
    arguments raise CFKVConfigurationError (an ImproperlyConfigured) when the module is imported.
    """
    def decorator(view: View) -> View:
        rule = compile_rule({"rate": rate, "key": key, "methods": method, "group": group or view_group(view)})
        return limit_view(view, rule, block=block)

    return decorator


ratelimit.ALL, ratelimit.UNSAFE = ALL, UNSAFE  # type: ignore[attr-defined]  # as django-ratelimit's


def view_group(view: Callable[..., Any]) -> str:
    """Return the default group of a decorated view: its dotted name, made safe for KV keys."""
    name = f"{getattr(view, '__module__', '')}.{getattr(view, '__qualname__', repr(view))}"
    return re.sub(r"[^\w.\-/]", "_", name)[-100:]


def limit_view(view: View, rule: Rule, *, block: bool = True) -> View:
    """Wrap ``view`` to count each request against ``rule`` (see ``django_cfkv.ratelimit.ratelimit``)."""
    def check(request: HttpRequest) -> list[Usage]:
        limiter = get_limiter()
        if not limiter.enabled or not rule.matches(request.path_info, request.method or ""):
            return []
        usages = count_request(request, [rule])
        if any(u.limited for u in usages):
            if block:
                raise Ratelimited("Rate limit exceeded.", usage=usages)
            request.limited = True  # type: ignore[attr-defined]
        else:
            request.limited = getattr(request, "limited", False)  # type: ignore[attr-defined]
        return usages

    if iscoroutinefunction(view):
        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            usages = await sync_to_async(check)(request)  # counting may call KV: not on the event loop
            return add_headers(await view(request, *args, **kwargs), usages)

        return async_wrapper

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        usages = check(request)
        return add_headers(view(request, *args, **kwargs), usages)

    return wrapper
