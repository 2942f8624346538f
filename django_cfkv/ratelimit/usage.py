"""Limits given in code, django-ratelimit's way: ``get_usage()``, ``is_ratelimited()``, and what ``@ratelimit``
checks once and resolves per request.

A :class:`ViewLimit` holds the arguments (group, key, rate, method), checked
when it is made, so a mistake raises when the view's module is imported. The
rate may be decided per request: ``None`` (never limited), a callable or the
dotted path of one ``(group, request) -> rate``, a ``(count, seconds)`` tuple
or a string such as ``"5/m"``, ``"100/10"`` (seconds) or ``"0/m"`` (always
limited).
"""

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .limiter import Usage, acount_request, count_request, get_limiter
from .rules import ConfigProblem, Rule, compile_rule, looks_like_rate, parse_rate, plain_callable

#: Every method: ``method=ALL`` (the default); django-ratelimit's ``(None,)`` means the same.
ALL = None
#: The methods that write: ``method=UNSAFE``.
UNSAFE = ("DELETE", "PATCH", "POST", "PUT")

Rate = str | tuple[int, int] | Callable[[str, HttpRequest], Any] | None


class ViewLimit(NamedTuple):
    """A limit given in code: a rule whose rate (``rate``, when not None) is resolved per request."""

    rule: Rule  # the group, key and methods; its limit and period are the rate's when the rate is fixed
    rate: Rate  # None: the rule's; else the callable (or its dotted path) that decides it per request

    def rule_for(self, request: HttpRequest) -> Rule | None:
        """Return the rule for this request, or None when its method or its rate says not to limit it."""
        rule = self.rule
        if not rule.matches(request.path_info, request.method or ""):
            return None
        if self.rate is None:
            return rule
        rate = self.rate
        if isinstance(rate, str):
            rate = plain_callable(import_string(rate), "rate", "django_cfkv.E104")
        rate = rate(rule.name, request) if callable(rate) else rate
        if rate is None:
            return None
        limit, period = parse_rate(rate)
        return rule._replace(limit=limit, period=period)

    def usage(self, request: HttpRequest, *, increment: bool = True) -> Usage | None:
        """Count the request (or only look, without ``increment``); None when nothing limits it."""
        if not get_limiter().enabled:
            return None
        rule = self.rule_for(request)
        if rule is None:
            return None
        usages = count_request(request, [rule], increment=increment)
        return usages[0] if usages else None

    async def ausage(self, request: HttpRequest, *, increment: bool = True) -> Usage | None:
        """The async twin of :meth:`usage`: KV awaited on the event loop. A rate the project's own code
        decides per request is asked in a thread, as Django runs sync code (it may query the database)."""
        if not get_limiter().enabled:
            return None
        projects_code = self.rate is not None and self.rate is not _never  # it may query the database
        rule = await sync_to_async(self.rule_for)(request) if projects_code else self.rule_for(request)
        if rule is None:
            return None
        usages = await acount_request(request, [rule], increment=increment)
        return usages[0] if usages else None


def view_limit(group: str | None, key: Any, rate: Rate, method: str | Iterable[str] | None,
               fn: Callable[..., Any] | None = None) -> ViewLimit:
    """Return the ViewLimit of django-ratelimit's arguments; raise ConfigProblem saying what to fix."""
    if looks_like_rate(group):  # ratelimit("5/m"): the rate where the group goes, django-ratelimit's order
        parse_rate(group)
        raise ConfigProblem(f"The rate-limit group {group!r} is a rate.", "django_cfkv.E104",
                            f"The arguments are (group, key, rate, method, block), as django-ratelimit's: write "
                            f"rate={group!r} and key=, such as key='ip'.")
    if group is None:
        if fn is None:
            raise ConfigProblem("get_usage() and is_ratelimited() need group= or fn=.", "django_cfkv.E107",
                                "Pass group='<name>' to share a count, or fn=<the view>.")
        group = view_group(fn)
    methods = () if method is None or method == (None,) else method
    if rate is None:
        rate = _never
    decided = callable(rate) or (isinstance(rate, str) and "." in rate)  # per request
    if callable(rate):
        plain_callable(rate, "rate", "django_cfkv.E104")
    rule = compile_rule({"rate": "1/s" if decided else rate, "key": key, "methods": methods, "group": group})
    return ViewLimit(rule, rate if decided else None)


def _never(group: str, request: HttpRequest) -> None:
    return None  # rate=None: never limited, as django-ratelimit


def view_group(view: Callable[..., Any]) -> str:
    """Return the default group of a view: its dotted name (a bound method's class included), made safe
    for KV keys."""
    if isinstance(view, functools.partial):
        view = view.func
    name = f"{getattr(view, '__module__', '')}.{getattr(view, '__qualname__', repr(view))}"
    return re.sub(r"[^\w.\-/]", "_", name)[-100:]


def get_usage(request: HttpRequest, group: str | None = None, fn: Callable[..., Any] | None = None,
              key: Any = None, rate: Rate = None, method: str | Iterable[str] | None = ALL,
              increment: bool = False) -> dict[str, Any] | None:
    """Return where the request stands, as django-ratelimit's ``get_usage``: ``{"count", "limit",
    "should_limit", "time_left"}``, or None when nothing limits it (disabled, another method, rate None).

    ``increment=True`` counts the request; without it the count is only read.
    """
    return _as_dict(view_limit(group, key, rate, method, fn).usage(request, increment=increment))


async def aget_usage(request: HttpRequest, group: str | None = None, fn: Callable[..., Any] | None = None,
                     key: Any = None, rate: Rate = None, method: str | Iterable[str] | None = ALL,
                     increment: bool = False) -> dict[str, Any] | None:
    """The async twin of :func:`get_usage` (django-ratelimit has none): the count is read, or counted,
    awaiting KV on the event loop."""
    return _as_dict(await view_limit(group, key, rate, method, fn).ausage(request, increment=increment))


def is_ratelimited(request: HttpRequest, group: str | None = None, fn: Callable[..., Any] | None = None,
                   key: Any = None, rate: Rate = None, method: str | Iterable[str] | None = ALL,
                   increment: bool = False) -> bool:
    """Return whether the request is over the limit, as django-ratelimit's ``is_ratelimited``."""
    usage = get_usage(request, group, fn, key, rate, method, increment)
    return usage is not None and usage["should_limit"]


async def ais_ratelimited(request: HttpRequest, group: str | None = None, fn: Callable[..., Any] | None = None,
                          key: Any = None, rate: Rate = None, method: str | Iterable[str] | None = ALL,
                          increment: bool = False) -> bool:
    """The async twin of :func:`is_ratelimited`."""
    usage = await aget_usage(request, group, fn, key, rate, method, increment)
    return usage is not None and usage["should_limit"]


def _as_dict(usage: Usage | None) -> dict[str, Any] | None:
    """Return a Usage as django-ratelimit's dict."""
    if usage is None:
        return None
    return {"count": usage.count, "limit": usage.limit, "should_limit": usage.limited, "time_left": usage.reset}


# As django-ratelimit's: get_usage.ALL, is_ratelimited.UNSAFE...
get_usage.ALL, get_usage.UNSAFE = ALL, UNSAFE  # type: ignore[attr-defined]
is_ratelimited.ALL, is_ratelimited.UNSAFE = ALL, UNSAFE  # type: ignore[attr-defined]
aget_usage.ALL, aget_usage.UNSAFE = ALL, UNSAFE  # type: ignore[attr-defined]
ais_ratelimited.ALL, ais_ratelimited.UNSAFE = ALL, UNSAFE  # type: ignore[attr-defined]
