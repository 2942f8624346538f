"""The ``@ratelimit`` decorator: one view, one limit, django-ratelimit's signature and behaviour."""

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from ..exceptions import Ratelimited
from .limiter import Usage, get_limiter
from .response import add_headers
from .rules import Rule
from .usage import ALL, UNSAFE, Rate, ViewLimit, view_group, view_limit

View = Callable[..., Any]  # a Django view, sync or async

__all__ = ["ALL", "UNSAFE", "limit_view", "ratelimit", "view_group"]


def ratelimit(group: str | None = None, key: Any = None, rate: Rate = None,
              method: str | Iterable[str] | None = ALL, block: bool = True) -> Callable[[View], View]:
    """Limit a view to ``rate`` requests per ``key``, as django-ratelimit's decorator (same arguments, same order).

    ``group`` (default: the view's dotted name) shares one count between views;
    ``key`` is ``"ip"``, ``"user"``, ``"user_or_ip"``, ``"header:<name>"``,
    ``"get:<name>"``, ``"post:<name>"`` or a callable ``(group, request)``;
    ``rate`` is ``"5/m"``, ``"100/10"`` (seconds), ``"0/m"``, a ``(count,
    seconds)`` tuple, ``None`` (never limited) or a callable ``(group, request)``
    returning one. Every request sets ``request.limited``. Over the limit,
    ``block=True`` raises :class:`~django_cfkv.exceptions.Ratelimited` (a
    ``PermissionDenied``: RateLimitMiddleware answers it with a 429 and
    Retry-After, Django alone with a 403), or ``RATELIMIT_EXCEPTION_CLASS``
    when set; ``block=False`` sets ``request.limited = True`` and calls the
    view. The RateLimit headers go on what the view returns when it is a
    response; anything else is returned untouched. Mistakes in the arguments
    raise CFKVConfigurationError (an ImproperlyConfigured) when the module is imported.
    """
    limit = view_limit("-" if group is None else group, key, rate, method)  # checked now, not per request

    def decorator(view: View) -> View:
        named = limit if group is not None else limit._replace(rule=limit.rule._replace(name=view_group(view)))
        return limit_view(view, named, block=block)

    return decorator


ratelimit.ALL, ratelimit.UNSAFE = ALL, UNSAFE  # type: ignore[attr-defined]  # as django-ratelimit's


def limit_view(view: View, rule: Rule | ViewLimit, *, block: bool = True) -> View:
    """Wrap ``view`` to count each request against ``rule`` (see ``django_cfkv.ratelimit.ratelimit``)."""
    limit = rule if isinstance(rule, ViewLimit) else ViewLimit(rule, None)

    def verdict(request: HttpRequest, usage: Usage | None) -> list[Usage]:
        earlier = getattr(request, "limited", False)  # a stacked decorator's verdict stands
        limited = usage is not None and usage.limited
        request.limited = limited or earlier  # type: ignore[attr-defined]
        if limited and block:
            raise _exception(usage)
        return [usage] if usage is not None else []

    if iscoroutinefunction(view):
        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            usages = verdict(request, await limit.ausage(request))  # KV awaited on the event loop
            return _with_headers(await view(request, *args, **kwargs), usages)

        return async_wrapper

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        usages = verdict(request, limit.usage(request))
        return _with_headers(view(request, *args, **kwargs), usages)

    return wrapper


def _with_headers(result: Any, usages: list[Usage]) -> Any:
    # Headers go on responses only: a view may return anything (a template context, a bool in tests).
    return add_headers(result, usages) if isinstance(result, HttpResponseBase) else result


def _exception(usage: Usage | None) -> BaseException:
    cls = get_limiter().options["EXCEPTION_CLASS"]  # django-ratelimit's RATELIMIT_EXCEPTION_CLASS
    if cls is None:
        return Ratelimited("Rate limit exceeded.", usage=[usage])
    return (import_string(cls) if isinstance(cls, str) else cls)()
