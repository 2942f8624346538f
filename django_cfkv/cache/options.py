"""The cache's ``OPTIONS``: their defaults, and their checks (a wrong kind of value is refused at start).

django-redis' settings ``DJANGO_REDIS_IGNORE_EXCEPTIONS``, ``DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS`` and
``DJANGO_REDIS_LOGGER`` are read here too, with django-redis' meanings: an option in OPTIONS wins over them.
"""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from .. import conf
from ..exceptions import CFKVConfigurationError
from ..nearcache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES
from .codec import EntryCodec

OPTION_DEFAULTS: dict[str, Any] = {
    "SERIALIZER": "pickle",
    "COMPRESS_MIN_BYTES": None,
    "HASH_LONG_KEYS": False,
    "IGNORE_EXCEPTIONS": False,
    "LOG_IGNORED_EXCEPTIONS": None,
    "KV_PREFIX": "cache:",
    "STAMPEDE_PROTECTION": True,
    "STAMPEDE_BETA": 1.0,
    "STAMPEDE_WAIT": 10.0,
    "NEAR_CACHE_TIMEOUT": 0,
    "NEAR_CACHE_MAX_ENTRIES": DEFAULT_MAX_ENTRIES,
    "NEAR_CACHE_MAX_BYTES": DEFAULT_MAX_BYTES,
}

# django-redis' OPTIONS that mean nothing on KV: refused, saying what takes their place.
_CLIENT = "KV is reached through the CFKV alias that LOCATION names, with one HTTP connection pool per process"
DJANGO_REDIS_OPTIONS = {
    **dict.fromkeys(("CLIENT_CLASS", "REDIS_CLIENT_CLASS", "REDIS_CLIENT_KWARGS", "CONNECTION_POOL_CLASS",
                     "CONNECTION_POOL_KWARGS", "CONNECTION_FACTORY", "PARSER_CLASS", "CLOSE_CONNECTION"), _CLIENT),
    **dict.fromkeys(("SOCKET_CONNECT_TIMEOUT", "SOCKET_TIMEOUT"), "set the CFKV alias' TIMEOUT and DEADLINE"),
    **dict.fromkeys(("PASSWORD", "USERNAME"), "the CFKV alias' API_TOKEN authenticates"),
    **dict.fromkeys(("SENTINELS", "SENTINEL_KWARGS", "REPLICA_READ_ONLY"),
                    "KV has no replicas to choose: Cloudflare replicates the namespace"),
    "COMPRESSOR": "set COMPRESS_MIN_BYTES (zlib) instead",
    "PICKLE_VERSION": "entries are pickled with the highest protocol, and signed",
}


NAME_ERROR = "django_cfkv.E302"  # an option CloudflareKVCache does not take
VALUE_ERROR = "django_cfkv.E303"  # an option or setting of the wrong kind


class CacheOptions(NamedTuple):
    """A cache's checked OPTIONS."""

    codec: EntryCodec  # SERIALIZER, COMPRESS_MIN_BYTES
    kv_prefix: str
    hash_long_keys: bool
    ignore_exceptions: bool
    log_ignored_exceptions: bool | None  # None: a warning with the details; True: django-redis' error; False: none
    logger_name: str
    stampede_protection: bool
    stampede_beta: float
    stampede_wait: float
    near_bounds: tuple[float, int, int]  # NEAR_CACHE_TIMEOUT (0: off), _MAX_ENTRIES, _MAX_BYTES


def parse(params: Mapping[str, Any]) -> CacheOptions:
    """Return the checked OPTIONS of a ``CACHES`` entry; raise CFKVConfigurationError saying what to fix."""
    options = dict(params.get("OPTIONS") or {})
    _check_names(options)
    opts = {**OPTION_DEFAULTS, **_django_redis_settings(options), **options}
    try:
        codec = EntryCodec(opts["SERIALIZER"], opts["COMPRESS_MIN_BYTES"])
    except ValueError as exc:
        raise CFKVConfigurationError(f"CloudflareKVCache OPTIONS: {exc}", VALUE_ERROR,
                                     "SERIALIZER is 'pickle' or 'json'; COMPRESS_MIN_BYTES a number of bytes or "
                                     "None.") from exc
    kv_prefix = opts["KV_PREFIX"]
    if not isinstance(kv_prefix, str) or len(kv_prefix.encode()) > 128:
        raise CFKVConfigurationError("OPTIONS['KV_PREFIX'] must be a str of at most 128 bytes.", VALUE_ERROR,
                                     "Leave it unset for 'cache:'.")
    return CacheOptions(
        codec=codec,
        kv_prefix=kv_prefix,
        hash_long_keys=_flag(opts, "HASH_LONG_KEYS"),
        ignore_exceptions=_flag(opts, "IGNORE_EXCEPTIONS"),
        log_ignored_exceptions=(None if opts["LOG_IGNORED_EXCEPTIONS"] is None
                                else _flag(opts, "LOG_IGNORED_EXCEPTIONS")),
        logger_name=_logger_name(),
        stampede_protection=_flag(opts, "STAMPEDE_PROTECTION"),
        stampede_beta=_number(opts, "STAMPEDE_BETA", zero_ok=True, hint=" (0: no early recomputation)"),
        stampede_wait=_number(opts, "STAMPEDE_WAIT", zero_ok=True, hint=" seconds (0: never wait)"),
        near_bounds=_near_bounds(opts),
    )


def _check_names(options: Mapping[str, Any]) -> None:
    """Raise CFKVConfigurationError for an OPTIONS name CloudflareKVCache does not take: Django's culling,
    django-redis' own, a serializer class, or an unknown one."""
    for culling in ("MAX_ENTRIES", "CULL_FREQUENCY"):
        if culling in options:
            raise CFKVConfigurationError(
                f"CloudflareKVCache does not support OPTIONS['{culling}']: Workers KV has no entry "
                "limit to cull to. Remove it; entries leave KV when they expire.", NAME_ERROR,
                f"Remove OPTIONS['{culling}'] (Django's other caches read it; KV needs no culling)."
            )
    redis_only = sorted(set(options) & set(DJANGO_REDIS_OPTIONS))
    if redis_only:
        name = redis_only[0]
        raise CFKVConfigurationError(f"CloudflareKVCache does not take django-redis' OPTIONS['{name}']: "
                                     f"{DJANGO_REDIS_OPTIONS[name]}. Remove it.", NAME_ERROR,
                                     f"Remove OPTIONS['{name}'].")
    serializer = options.get("SERIALIZER")
    if isinstance(serializer, str) and "." in serializer:
        raise CFKVConfigurationError(
            f"OPTIONS['SERIALIZER'] is {serializer!r}, a class; CloudflareKVCache takes 'pickle' or 'json'.",
            VALUE_ERROR, "'pickle' for django-redis' PickleSerializer, 'json' for its JSONSerializer (there is no "
            "msgpack)."
        )
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise CFKVConfigurationError(
            f"Unknown CloudflareKVCache OPTIONS {', '.join(unknown)}; valid: {', '.join(OPTION_DEFAULTS)}.",
            NAME_ERROR, "Remove or correct it. Django's own TIMEOUT, KEY_PREFIX and VERSION go beside OPTIONS, "
            "not in it."
        )


def _django_redis_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the OPTIONS that django-redis' global settings give, where set (OPTIONS win over them)."""
    found = {}
    for option in ("IGNORE_EXCEPTIONS", "LOG_IGNORED_EXCEPTIONS"):
        value = conf.setting(f"DJANGO_REDIS_{option}")
        if value is not None:
            if not isinstance(value, bool):
                raise CFKVConfigurationError(f"DJANGO_REDIS_{option} must be True or False; got {value!r}.",
                                             VALUE_ERROR, "True or False, without quotes.")
            found[option] = value
    return found


def _logger_name() -> str:
    """Return the logger of ignored failures: DJANGO_REDIS_LOGGER, or django_cfkv.cache."""
    name = conf.setting("DJANGO_REDIS_LOGGER")
    if name is None:
        return "django_cfkv.cache"
    if not isinstance(name, str) or not name:
        raise CFKVConfigurationError(f"DJANGO_REDIS_LOGGER must be a logger's name; got {name!r}.", VALUE_ERROR,
                                     "Leave it unset for 'django_cfkv.cache'.")
    return name


def _near_bounds(opts: dict[str, Any]) -> tuple[float, int, int]:
    """Return (timeout, max entries, max bytes) of the near cache from OPTIONS; timeout 0 is off."""
    if opts["NEAR_CACHE_TIMEOUT"] is None:
        opts = {**opts, "NEAR_CACHE_TIMEOUT": 0}
    return (_number(opts, "NEAR_CACHE_TIMEOUT", zero_ok=True, hint=" seconds (0: off)"),
            _number(opts, "NEAR_CACHE_MAX_ENTRIES"), _number(opts, "NEAR_CACHE_MAX_BYTES"))


def _number(opts: dict[str, Any], name: str, *, zero_ok: bool = False, hint: str = "") -> Any:
    """Return OPTIONS[name] if it is a finite number above 0 (or 0 when ``zero_ok``)."""
    value = opts[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            value < 0 or (value == 0 and not zero_ok):
        raise CFKVConfigurationError(f"CloudflareKVCache OPTIONS['{name}'] must be a number "
                                     f"{'of 0 or more' if zero_ok else 'above 0'}{hint}; got {value!r}.",
                                     VALUE_ERROR, f"A number without quotes, or leave it unset for "
                                                  f"{OPTION_DEFAULTS[name]!r}.")
    return value


def _flag(opts: dict[str, Any], name: str) -> bool:
    """Return OPTIONS[name] if it is True or False (a string such as "false" would read as True)."""
    if not isinstance(opts[name], bool):
        raise CFKVConfigurationError(
            f"CloudflareKVCache OPTIONS['{name}'] must be True or False; got {opts[name]!r}.", VALUE_ERROR,
            f"True or False, without quotes (the string {opts[name]!r} is not read as either).")
    return opts[name]
