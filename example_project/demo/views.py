"""Pages of the example site: each shows one part of django-cfkv at work."""

import logging
import time
from datetime import datetime, timezone

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import user_passes_test
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from django_cfkv import get_kv, inspect
from django_cfkv.cache import cached
from django_cfkv.exceptions import KVError
from django_cfkv.ratelimit import describe_shard, get_limiter
from django_cfkv.sessions.views import UserSessionsView
from django_cfkv.transport import calls

from .kvinfo import describe_store, session_kv_key

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying what KV did not let finish (as
# BearerSessionMiddleware's 503 says).
RETRY_AFTER = 5


def unavailable(response):
    """Turn ``response`` into the 503 for a request that Workers KV did not let finish."""
    response.status_code = 503
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def home(request):
    """Count this session's visits and show where the session lives in KV.

    Written to degrade as a view on KV should: when KV cannot be reached the
    page still renders and says that the visit was not counted.
    """
    session = request.session
    session["visits"] = session.get("visits", 0) + 1
    try:
        # Saved here rather than by SessionMiddleware after the view: a write
        # that fails is then a sentence on this page instead of a 500.
        session.save()
        counted = True
    except UpdateError:  # ended while this request ran (a logout elsewhere): a 400, as from SessionMiddleware
        raise SessionInterrupted("The session was deleted before the request completed.") from None
    except KVError as exc:
        logger.warning("Visit not counted: Workers KV did not answer (%s).", type(exc).__name__)
        session.modified = False  # nothing for SessionMiddleware to try again
        counted = False
    key = session_kv_key(session)
    metadata, metadata_read = None, True
    if key and counted:
        try:
            # One extra read, only to show what KV holds for this session.
            metadata = get_kv(settings.SESSION_CFKV_ALIAS).get_metadata(key)
        except KVError as exc:
            logger.warning("Session metadata not read: Workers KV did not answer (%s).", type(exc).__name__)
            metadata_read = False
    return render(request, "demo/home.html", {
        "counted": counted,
        "session_unread": getattr(session, "load_failed", False),
        "visits": session["visits"] if counted else None,
        # Only the start: the whole id belongs in the HttpOnly cookie, out of reach of a page's scripts.
        "session_id_start": (request.session.session_key or "")[:6],
        "kv_key": key and inspect.display_key(key),  # in the plain layout a key name is a usable id
        "kv_metadata": metadata,
        "kv_metadata_read": metadata_read,
        "kv_expires": _exact_expiry(metadata),
        "expiry_date": request.session.get_expiry_date(),
        "store": describe_store(),
    })


def _exact_expiry(metadata):
    """Return the datetime of the metadata's "expires", or None: anyone who can write KV writes metadata."""
    expires = metadata.get("expires") if isinstance(metadata, dict) else None
    if not isinstance(expires, (int, float)) or isinstance(expires, bool):
        return None
    try:
        return datetime.fromtimestamp(expires, timezone.utc)
    except (OverflowError, OSError, ValueError):  # out of datetime's range, or NaN
        return None


class LoginView(auth_views.LoginView):
    """django.contrib.auth's login page; when KV cannot store the session, a 503 page instead of a 500.

    The page states the limit on login attempts from the limiter's own rule and,
    after a failed try, the tries left in this window from the limiter's count.
    """

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        limiter = get_limiter()
        rules = limiter.matching(self.request.path_info, "POST") if limiter.enabled else []
        context["limit"] = rules[0] if rules else None
        usage = getattr(self.request, "ratelimit_usage", None)  # get_usage(), by demo.middleware on a POST
        if usage is not None:
            context["usage"] = {"remaining": max(0, usage["limit"] - usage["count"]), "reset": usage["time_left"]}
        return context

    def form_valid(self, form):
        session = self.request.session
        key_before, visits = session.session_key, session.get("visits", 0)
        try:
            response = super().form_valid(form)
            # login() put the user in the session: save it here, so that a write KV
            # refuses is this page rather than a 500 from SessionMiddleware.
            session.save()
        except KVError as exc:
            logger.warning("Sign-in not completed: Workers KV did not answer (%s).", type(exc).__name__)
            self.request.user = AnonymousUser()
            context = self.get_context_data(form=form, kv_unavailable=True)
            return unavailable(self.render_to_response(context))
        if key_before:
            # Only the first characters: enough to see that the key changed.
            messages.success(self.request, (
                f"Signed in. The session moved to a new key ({key_before[:6]}… is now {session.session_key[:6]}…), "
                f"as Django does at every login so that a key known before is no use after, "
                f"and it kept its data: {visits} visit{'s' if visits != 1 else ''} so far."))
        else:
            messages.success(self.request, "Signed in: your new session is stored in KV.")
        return response


class LogoutView(auth_views.LogoutView):
    """django.contrib.auth's logout; when KV cannot delete the session, a 503 page says the user is still
    signed in (rather than a 500 after the cookie is dropped and the stored session kept)."""

    def post(self, request, *args, **kwargs):
        kept = dict(request.session.items())
        try:
            response = super().post(request, *args, **kwargs)
        except KVError as exc:
            logger.warning("Sign-out not completed: Workers KV did not answer (%s).", type(exc).__name__)
            # flush() emptied the session before KV refused the DELETE: put the data
            # back, so the browser keeps its cookie and can simply try again.
            request.session.update(kept)
            return unavailable(render(request, "demo/unavailable.html", {
                "message": "Workers KV did not answer, so you are still signed in: your session was not "
                           "deleted. Log out again in a few seconds."}))
        messages.info(request, "Signed out: your session was deleted from KV.")
        return response


class SessionsView(UserSessionsView):
    """The signed-in user's sessions with sign-out buttons: django-cfkv's page in this site's look."""

    template_name = "demo/sessions.html"


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
        messages.success(request, "Forgot the cached report: slow_report.invalidate() deleted its key in KV, "
                                  "so the next view of this page computes it again.")
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


EXPIRY_LABELS = {
    "expired": "Expired",
    "lt_1h": "Within an hour",
    "lt_1d": "Within a day",
    "lt_7d": "Within a week",
    "later": "Later",
    "never": "Never",
}


@user_passes_test(lambda user: user.is_staff)
def namespace(request):
    """List and summarise the namespace with the code behind `manage.py cfkv ls` and `stats`."""
    prefix = request.GET.get("prefix") or None
    kv = get_kv(settings.SESSION_CFKV_ALIAS)
    before = calls.total
    try:
        summary = inspect.summarize(kv, prefix)
        entries, more = inspect.list_entries(kv, prefix, limit=100)
    except KVError as exc:
        logger.warning("Namespace not listed: Workers KV did not answer (%s).", type(exc).__name__)
        return render(request, "demo/namespace.html", {
            "prefix": prefix or "", "unavailable": True, "api_calls": calls.total - before,
            "store": describe_store()})
    now = time.time()
    expiry = [(bucket, EXPIRY_LABELS[bucket], summary["expiry"][bucket]) for bucket in inspect.EXPIRY_BUCKETS]
    return render(request, "demo/namespace.html", {
        "prefix": prefix or "",
        "summary": summary,
        "kinds": [(kind, summary["kinds"][kind]) for kind in inspect.KINDS],
        "expiry": expiry,
        "expiry_most": max(count for _, _, count in expiry),
        "entries": [dict(inspect.describe(info, now), usage=_shard_usage(info.metadata)) for info in entries],
        "windows": _rate_limit_windows(entries),
        "more": more,
        "api_calls": calls.total - before,
        "store": describe_store(),
    })


def _count(value):
    """Return ``value`` if it is a count (an int >= 0), else None: anyone who can write KV writes metadata."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _shard_usage(metadata):
    """Return (count, limit) from a rate-limit shard's metadata, or None."""
    if not isinstance(metadata, dict) or metadata.get("kind") != "ratelimit":
        return None
    count, limit = _count(metadata.get("count")), _count(metadata.get("limit"))
    return None if count is None or not limit else (count, limit)


def _rate_limit_windows(infos):
    """Add up the listed rate-limit shards of each (policy, client, window): every process writes its
    own shard, and the limiter compares their sum with the limit."""
    windows = {}
    for info in infos:
        shard = describe_shard(info.name, info.metadata)
        usage = _shard_usage(info.metadata)
        if shard is None or usage is None:
            continue
        window = windows.setdefault((shard["policy"], shard["client"], shard["period"], shard["window"]), {
            "policy": shard["policy"], "client": shard["client"], "period": shard["period"],
            "ends": shard["window_end"], "expired": shard["expired"], "count": 0, "limit": usage[1], "shards": 0})
        window["count"] += usage[0]
        window["shards"] += 1
    return sorted(windows.values(), key=lambda window: (-window["ends"], window["policy"]))


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
    # The way back: the form again after a refused POST, else the same page.
    back = request.path if request.method == "POST" else request.get_full_path()
    return render(request, "demo/429.html", {"usages": usages, "retry_after": retry_after, "back": back,
                                             "posted": request.method == "POST"}, status=429)
