"""Pages of the example site: each shows one part of django-cfkv at work."""

import time
from datetime import datetime, timezone

from django.conf import settings
from django.contrib.auth.decorators import user_passes_test
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from django_cfkv import get_kv, inspect
from django_cfkv.cache import cached
from django_cfkv.transport import calls

from .kvinfo import describe_store, session_kv_key


def home(request):
    """Count this session's visits and show where the session lives in KV."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    key = session_kv_key(request.session)
    metadata = None
    if key:
        # One extra read, only to show what KV holds for this session.
        metadata = get_kv(settings.SESSION_CFKV_ALIAS).get_metadata(key)
    expires = (metadata or {}).get("expires")
    return render(request, "demo/home.html", {
        "visits": request.session["visits"],
        "session_key": request.session.session_key,
        "kv_key": key,
        "kv_metadata": metadata,
        "kv_expires": datetime.fromtimestamp(expires, timezone.utc) if expires else None,
        "expiry_date": request.session.get_expiry_date(),
        "store": describe_store(),
    })


@cached(60 * 5)
def slow_report():
    """Return figures that take EXAMPLE_SLOW_SECONDS to compute: stands in for a costly query."""
    started = time.time()
    time.sleep(settings.EXAMPLE_SLOW_SECONDS)
    return {
        "computed_at": started,
        "compute_seconds": time.time() - started,
        "primes": _primes_below(5000)[-5:],
    }


def _primes_below(n):
    sieve = bytearray([1]) * n
    sieve[:2] = b"\x00\x00"
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytearray(len(sieve[i * i::i]))
    return [i for i, prime in enumerate(sieve) if prime]


@require_http_methods(["GET", "POST"])
def slow(request):
    """Serve the slow report from the KV cache; a POST forgets it."""
    if request.method == "POST":
        slow_report.invalidate()
        return redirect("slow")
    started = time.time()
    report = slow_report()
    elapsed = time.time() - started
    # The report records when it was computed: before this request means the cache answered.
    hit = report["computed_at"] < started
    response = render(request, "demo/slow.html", {
        "report": report,
        "hit": hit,
        "elapsed_ms": elapsed * 1000,
        "saved_ms": max(0.0, report["compute_seconds"] - elapsed) * 1000 if hit else 0.0,
    })
    response["X-Cache"] = "hit" if hit else "miss"
    return response


@user_passes_test(lambda user: user.is_staff)
def namespace(request):
    """List and summarise the namespace with the code behind `manage.py cfkv ls` and `stats`."""
    prefix = request.GET.get("prefix") or None
    kv = get_kv(settings.SESSION_CFKV_ALIAS)
    before = calls.total
    summary = inspect.summarize(kv, prefix)
    entries, more = inspect.list_entries(kv, prefix, limit=100)
    now = time.time()
    return render(request, "demo/namespace.html", {
        "prefix": prefix or "",
        "summary": summary,
        "kinds": [(kind, summary["kinds"][kind]) for kind in inspect.KINDS],
        "expiry": [(bucket, summary["expiry"][bucket]) for bucket in inspect.EXPIRY_BUCKETS],
        "entries": [inspect.describe(info, now) for info in entries],
        "more": more,
        "api_calls": calls.total - before,
        "store": describe_store(),
    })


def api_docs(request):
    """Describe the JSON API with ready-to-paste curl commands."""
    return render(request, "demo/api.html", {"base": request.build_absolute_uri("/")[:-1]})


def ratelimited(request, exception):
    """Answer a request over its rate limit (CFKV_RATELIMIT["VIEW"]): JSON under /api/, else a page."""
    usages = [u for u in (exception.usage or []) if u.limited] or list(exception.usage or [])
    retry_after = max((u.reset for u in usages), default=60)
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "rate_limited", "retry_after": retry_after,
                             "limits": [{"policy": u.policy, "limit": u.limit, "period": u.period}
                                        for u in usages]}, status=429)
    return render(request, "demo/429.html", {"usages": usages, "retry_after": retry_after}, status=429)
