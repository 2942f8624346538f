"""Rate limiting on Workers KV: rules in settings (RateLimitMiddleware) or ``@ratelimit`` on a view.

Where each part lives:

* :mod:`~django_cfkv.ratelimit.rules`: rates (``"5/m"``), compiled rules and their keys
* :mod:`~django_cfkv.ratelimit.options`: the ``CFKV_RATELIMIT`` setting, its defaults and its mistakes
* :mod:`~django_cfkv.ratelimit.identity`: who a request counts as (addresses, trusted proxies, folded values)
* :mod:`~django_cfkv.ratelimit.shards`: fixed windows, the KV keys that count them, and what they hold
* :mod:`~django_cfkv.ratelimit.counters`: counting on KV without lost updates
* :mod:`~django_cfkv.ratelimit.flushing`: writing the counts' shards to KV, backing off when it fails
* :mod:`~django_cfkv.ratelimit.strict`: strict mode, counting with a cache's atomic incr
* :mod:`~django_cfkv.ratelimit.limiter`: the process-wide limiter that counts a request against its rules
* :mod:`~django_cfkv.ratelimit.response`: the RateLimit headers and the 429
* :mod:`~django_cfkv.ratelimit.usage`: limits given in code: ``get_usage()``, ``is_ratelimited()``, their ``a`` twins
* :mod:`~django_cfkv.ratelimit.decorator`: ``@ratelimit``

:class:`django_cfkv.middleware.RateLimitMiddleware` applies the configured
rules to every request on top of these. Every name below is importable from
``django_cfkv.ratelimit``.
"""

from .counters import (
    EVICT_SCAN,
    FIRST_WRITE_DELAY,
    LOG_EVERY,
    MAX_SHARDS,
    MIN_WRITE_COUNT,
    OUTAGE_BACKOFF,
    CacheCounter,
    ShardedCounter,
)
from .decorator import limit_view, ratelimit
from .identity import (
    CLOUDFLARE_IPV4,
    CLOUDFLARE_IPV6,
    CLOUDFLARE_WORKERS_CLIENT,
    UNPARSABLE,
    client_hash,
    client_ip,
    client_value,
    group_ip,
    identify,
    meta_name,
    parse_networks,
    request_address,
)
from .limiter import (
    Limiter,
    Usage,
    acheck_request,
    acount_request,
    check_request,
    count_per_request,
    count_request,
    get_limiter,
    reset_limiter,
)
from .options import DEFAULTS, compile_settings
from .response import add_headers, header_values, limited_response
from .rules import (
    PREFIXED_KEYS,
    RULE_FIELDS,
    SIMPLE_KEYS,
    UNITS,
    ConfigProblem,
    Rule,
    compile_key,
    compile_rule,
    looks_like_rate,
    parse_rate,
)
from .shards import SHARD_PREFIX, TTL_MARGIN, describe_shard, shard_prefix, window
from .usage import (
    ALL,
    UNSAFE,
    ViewLimit,
    aget_usage,
    ais_ratelimited,
    get_usage,
    is_ratelimited,
    view_group,
    view_limit,
)

__all__ = [
    "ALL", "CLOUDFLARE_IPV4", "CLOUDFLARE_IPV6", "CLOUDFLARE_WORKERS_CLIENT", "DEFAULTS", "EVICT_SCAN",
    "FIRST_WRITE_DELAY", "LOG_EVERY", "MAX_SHARDS", "MIN_WRITE_COUNT", "OUTAGE_BACKOFF", "PREFIXED_KEYS",
    "RULE_FIELDS", "SHARD_PREFIX", "SIMPLE_KEYS", "TTL_MARGIN", "UNITS", "UNPARSABLE", "UNSAFE", "CacheCounter",
    "ConfigProblem", "Limiter", "Rule", "ShardedCounter", "Usage", "ViewLimit", "acheck_request", "acount_request",
    "add_headers", "aget_usage", "ais_ratelimited", "check_request",
    "client_hash", "client_ip", "client_value", "compile_key", "compile_rule", "compile_settings",
    "count_per_request", "count_request", "describe_shard", "get_limiter", "get_usage", "group_ip", "header_values",
    "identify", "is_ratelimited", "limit_view", "limited_response", "looks_like_rate", "meta_name",
    "parse_networks", "parse_rate", "ratelimit", "request_address", "reset_limiter", "shard_prefix", "view_group",
    "view_limit", "window",
]
