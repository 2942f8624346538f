"""Pinging: does a namespace answer, how fast, how much API budget is left, is it a django-cfkv gateway."""

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .. import limits
from ..client import DEFAULT_BASE_URL
from ..client.answer import decoded
from ..types import KV

GATEWAY_SERVICE = "django-cfkv-gateway"
GATEWAY_HEALTH_PATH = "/__cfkv/health"
_API_HOST = urlsplit(DEFAULT_BASE_URL).hostname
_Result = TypeVar("_Result")


def _timed(steps: list[dict[str, Any]], name: str, fn: Callable[..., _Result], *args: Any, **kwargs: Any
           ) -> _Result:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    steps.append({"step": name, "ms": round((time.perf_counter() - started) * 1000, 2)})
    return result


def ping(kv: KV, *, read_only: bool = False) -> dict[str, Any]:
    """Check that ``kv`` answers and return a report with each step's latency.

    Reads one list page (limit 10); unless ``read_only``, also writes, reads
    back and deletes a probe key (it carries a 60 s TTL, so it goes even if the
    delete is lost). API calls: 1 read-only, else 4; plus 1 to ask a gateway
    for its version when BASE_URL is not Cloudflare's API.
    ``probe`` is "ok", "stale" (the read did not see the write yet: Cloudflare
    does not promise read-after-write over REST) or None when ``read_only``.
    Raises KVError when a call fails.
    """
    steps: list[dict[str, Any]] = []
    probe = None
    _timed(steps, "list", kv.list_keys, limit=limits.LIST_MIN_LIMIT)
    if not read_only:
        key, value = f"cfkv:ping:{uuid.uuid4().hex}", uuid.uuid4().hex.encode()
        _timed(steps, "put", kv.put, key, value, expiration_ttl=limits.MIN_TTL)
        read = _timed(steps, "get", kv.get, key)
        _timed(steps, "delete", kv.delete, key)
        # Not an error when it differs: Cloudflare does not promise read-after-write
        # over REST (two calls may reach different data centres).
        probe = "ok" if read == value else "stale"
    transport = getattr(kv, "transport", None)
    report = {
        "backend": type(kv).__name__,
        "namespace_id": getattr(kv, "namespace_id", getattr(kv, "namespace", None)),
        "base_url": getattr(kv, "base_url", None),
        "path": getattr(kv, "path", None),
        "read_only": read_only,
        "probe": probe,
        "steps": steps,
        "budget": None,
        "gateway": gateway_health(kv),
    }
    if transport is not None and transport.budget is not None:
        remaining, reset, seen_at = transport.budget
        report["budget"] = {"remaining": remaining, "reset_seconds": reset, "seen_at": seen_at}
    return report


def gateway_health(kv: KV) -> dict[str, Any] | None:
    """Return the django-cfkv gateway's health result {"service", "version", "namespace_id"}
    when ``kv`` talks to one, else None. One API call, skipped for Cloudflare's own API."""
    base_url, transport = getattr(kv, "base_url", None), getattr(kv, "transport", None)
    if not base_url or transport is None or urlsplit(base_url).hostname == _API_HOST:
        return None
    root = base_url[: -len("/client/v4")] if base_url.endswith("/client/v4") else base_url
    try:
        response = transport.request("GET", root + GATEWAY_HEALTH_PATH, endpoint="health")
        data = decoded(response) if response.status_code == 200 else None  # UTF-8 JSON, as every answer is read
    except Exception:  # not a gateway (or not answering this path): that is all we need to know
        return None
    result = data.get("result") if isinstance(data, dict) and data.get("success") is True else None
    if isinstance(result, dict) and result.get("service") == GATEWAY_SERVICE:
        return {"service": GATEWAY_SERVICE, "version": result.get("version"),
                "namespace_id": result.get("namespace_id")}
    return None
