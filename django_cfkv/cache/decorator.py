"""``@cached``: cache a function's results (sync or async) with stampede protection.

Keys are ``cached:<module.qualname>:<arguments as JSON>``, the same in every
process, and different for arguments that differ (see :func:`_encode`).
"""

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any, Protocol

from django.core.cache import caches
from django.db.models import Model

from .aio import aget_or_compute
from .backend import CloudflareKVCache


class CachedFunction(Protocol):
    """What ``@cached`` returns: the function (sync or async), and its cache keys and invalidation."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the cached result for these arguments, computing and storing it on a miss."""

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Delete the cached result for these arguments; return True if there was one."""

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> bool:
        """The async form of ``invalidate``."""

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """Return the cache key of these arguments (before KEY_PREFIX and VERSION)."""


def cached(timeout: float | None, *, key: str | Callable[..., str] | None = None, alias: str = "default",
           version: int | None = None) -> Callable[[Callable[..., Any]], CachedFunction]:
    """Cache a function's results (sync or async) with stampede protection.

    The cache key is ``cached:<module.qualname>:<arguments as JSON>`` (the
    argument part hashed with SHA-256 when long). Arguments that are not plain
    JSON (tuples, sets, dicts with other keys, dates, model instances, other
    values by their repr) are tagged with their type, so different arguments
    get different keys: ``{1, 2}``, ``[1, 2]`` and ``(1, 2)``, ``{1: "x"}``
    and ``{"1": "x"}``, a date and its ISO string. ``key`` replaces it: a str replaces the
    qualified name, a callable takes the function's arguments and returns the
    whole key. ``None`` results are cached too. The wrapped
    function gains ``invalidate(*args, **kwargs)`` and ``ainvalidate(...)``.
    """
    def decorator(func: Callable[..., Any]) -> CachedFunction:
        def cache_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if callable(key):
                return key(*args, **kwargs)
            name = key or f"{func.__module__}.{func.__qualname__}"
            return f"cached:{name}:{_arguments_key(args, kwargs)}"

        wrapper = _wrapper(func, cache_key, alias, timeout, version)

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            """Delete the cached result for these arguments; return True if there was one."""
            return caches[alias].delete(cache_key(args, kwargs), version=version)

        async def ainvalidate(*args: Any, **kwargs: Any) -> bool:
            return await caches[alias].adelete(cache_key(args, kwargs), version=version)

        wrapper.invalidate, wrapper.ainvalidate, wrapper.cache_key = invalidate, ainvalidate, \
            lambda *a, **kw: cache_key(a, kw)
        return wrapper

    return decorator


def _wrapper(func: Callable[..., Any], cache_key: Callable[[tuple[Any, ...], dict[str, Any]], str], alias: str,
             timeout: float | None, version: int | None) -> Any:
    """Return ``func`` wrapped to answer from the cache under ``cache_key(args, kwargs)``: a coroutine
    function awaits the cache (CloudflareKVCache's stampede protection included), others call get_or_set."""
    wrapper: Any
    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache, k = caches[alias], cache_key(args, kwargs)
            if isinstance(cache, CloudflareKVCache):
                return await cache._aget_or_compute(k, lambda: func(*args, **kwargs), timeout, version)
            return await aget_or_compute(cache, k, lambda: func(*args, **kwargs), timeout, version)
    else:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return caches[alias].get_or_set(cache_key(args, kwargs), lambda: func(*args, **kwargs),
                                            timeout, version=version)
    return wrapper


_LONG_ARGUMENTS = 200
_JSON_SCALARS = (str, int, float, bool, type(None))


def _arguments_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Return a text form of the arguments that is the same in every process and differs between
    arguments that differ (see _encode)."""
    text = _json([[_encode(arg) for arg in args], _encode(kwargs)])
    if len(text) > _LONG_ARGUMENTS:  # a short form starts with "[", so it never looks like a hashed one
        return "sha256-" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _encode(obj: Any) -> Any:
    """Return a JSON form of an argument that no other argument shares.

    Strings, numbers, booleans, None, lists and dicts whose keys are strings not
    starting with ``~`` are written as JSON. Everything else becomes a one-key
    object whose key starts with ``~`` and names its type: ``~tuple``, ``~set``,
    ``~dict`` (any other dict, as sorted [key, value] pairs), ``~model``, and
    ``~module.Type`` for dates (their ISO form) and other values (their repr).
    So a plain dict can never pass for a tagged value, and every JSON tree
    decodes to one argument.
    """
    kind = type(obj)
    if kind in _JSON_SCALARS:  # exact types: a subclass (an IntEnum) is tagged by its repr below
        return obj
    if isinstance(obj, list):
        return [_encode(item) for item in obj]
    if isinstance(obj, dict):
        if all(type(k) is str and not k.startswith("~") for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"~dict": sorted(([_encode(k), _encode(v)] for k, v in obj.items()), key=_json)}
    if isinstance(obj, tuple):
        return {"~tuple": [_encode(item) for item in obj]}
    if isinstance(obj, (set, frozenset)):  # equal sets are one value: one key for both types
        return {"~set": sorted((_encode(item) for item in obj), key=_json)}
    if isinstance(obj, Model):
        if obj.pk is None:
            raise TypeError(f"cached() cannot build a key from an unsaved {obj._meta.label} instance (its pk "
                            "is None, as for every unsaved one). Save it first, or pass key=callable.")
        return {"~model": [obj._meta.label, _encode(obj.pk)]}
    tag = f"~{kind.__module__}.{kind.__qualname__}"  # always has a dot: no clash with the tags above
    if hasattr(obj, "isoformat"):  # date, datetime, time
        return {tag: obj.isoformat()}
    text = repr(obj)
    if " at 0x" in text:
        raise TypeError(f"cached() cannot build a stable key from {text}: its repr differs between "
                        "processes. Pass key=callable to build the key yourself.")
    return {tag: text}
