"""API calls per operation, against the theoretical minimum.

Every figure is counted on the wire (django_cfkv.transport.calls) against the
emulator: 1 per single-key read; ceil(n/100) for get_many; ceil(n/10000) for
set_many and delete_many; 0 writes for an unchanged session; the limiter at
most 2 calls per second per client per process; sweep at most ceil(n/1000)
lists plus ceil(n/10000) bulk deletes. Target: equal to the minimum.
"""

import io
import math
import time
from importlib import import_module

from django.core.cache import caches
from django.core.management import call_command
from django.test import override_settings

from django_cfkv import conf
from django_cfkv.testing import RunningEmulator
from django_cfkv.transport import calls

from .common import row


class counted:
    """Count the API calls made inside the block: ``.total`` and ``.by_endpoint``."""

    def __enter__(self):
        self._before = calls.snapshot()
        return self

    def __exit__(self, *exc):
        after = calls.snapshot()
        self.by_endpoint = {k: v - self._before.get(k, 0) for k, v in after.items() if v - self._before.get(k, 0)}
        self.total = sum(self.by_endpoint.values())
        return False


def _check(case, measured, minimum, rows):
    rows.append(row("calls", case, measured.total, "calls", baseline="theoretical minimum",
                    baseline_value=minimum or None, target=f"= {minimum}", ok=measured.total <= minimum,
                    note=", ".join(f"{k} {v}" for k, v in sorted(measured.by_endpoint.items()))))


def run(smoke=False):
    n = 250
    emulator = RunningEmulator()
    rows = []
    try:
        alias = emulator.alias_settings(MAX_RETRIES=0)
        with override_settings(
            CFKV={"default": alias},
            CACHES={"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"}},
            SESSION_ENGINE="django_cfkv.sessions",
        ):
            conf.reset()
            rows += _cache(n)
            rows += _sessions()
            rows += _user_sessions()
            rows += _limiter(2 if smoke else 4)
            rows += _sweep(2000 if smoke else 20000)
            conf.reset()
    finally:
        emulator.stop()
    return rows


def _cache(n):
    rows, cache = [], caches["default"]
    cache.set("one", {"v": 1}, 300)
    with counted() as c:
        cache.get("one")
    _check("cache.get", c, 1, rows)
    with counted() as c:
        cache.set("one", {"v": 2}, 300)
    _check("cache.set", c, 1, rows)
    data = {f"k{i}": i for i in range(n)}
    with counted() as c:
        cache.set_many(data, 300)
    _check(f"cache.set_many({n})", c, math.ceil(n / 10000), rows)
    with counted() as c:
        cache.get_many(list(data))
    _check(f"cache.get_many({n})", c, math.ceil(n / 100), rows)
    with counted() as c:
        cache.delete_many(list(data))
    _check(f"cache.delete_many({n})", c, math.ceil(n / 10000), rows)
    return rows


def _sessions():
    rows = []
    store_class = import_module("django_cfkv.sessions").SessionStore
    session = store_class()
    session["cart"] = [1, 2]
    session.save()
    key = session.session_key
    with counted() as c:
        loaded = store_class(key)
        loaded["cart"]
    _check("session load (unchanged, no write)", c, 1, rows)
    with counted() as c:
        loaded = store_class(key)
        loaded["cart"] = [3]
        loaded.save()
    _check("session load + modify + save", c, 2, rows)
    return rows


def _user_sessions():
    """A user's sessions: a sign-in costs at most one write more than without the index, listings and
    revocations one list per 1,000 of the user's sessions plus one bulk delete, never a namespace listing."""
    from django.contrib.auth import get_user_model, login
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    from django_cfkv import get_kv
    from django_cfkv.sessions import (
        SessionStore,
        index,
        revoke_all_sessions,
        revoke_other_sessions,
        revoke_session,
        user_sessions,
    )

    call_command("migrate", verbosity=0, run_syncdb=True)
    user, _ = get_user_model().objects.get_or_create(username="bench-sessions")
    rows = []

    def sign_in():
        request = RequestFactory().get("/", HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
        request.session, request.user = SessionStore(), AnonymousUser()
        login(request, user)
        request.session.save()
        return request

    with override_settings(SESSION_CFKV_USER_INDEX=False), counted() as unindexed:
        sign_in()
    with counted() as c:
        request = sign_in()
    rows.append(row("calls", "sign-in (login() and save) with the user index", c.total, "calls",
                    baseline="sign-in without the index", baseline_value=unindexed.total,
                    target=f"<= {unindexed.total + 1}", ok=c.total <= unindexed.total + 1,
                    note=", ".join(f"{k} {v}" for k, v in sorted(c.by_endpoint.items()))))
    with counted() as c:
        SessionStore(request.session.session_key).save()  # a page view: load, nothing changed
    _check("page view of a signed-in session, unchanged", c, 1, rows)
    sign_in(), sign_in()
    with counted() as c:
        listed = user_sessions(user, request=request)
    _check(f"user_sessions() of a user with {len(listed)} sessions", c, 1, rows)
    with counted() as c:
        revoke_session(user, listed[-1].ref)
    _check("revoke_session()", c, 2, rows)
    request.user = user
    with counted() as c:
        revoke_other_sessions(request)
    _check("revoke_other_sessions()", c, 2, rows)

    n, now = 2000, time.time()
    get_kv().put_many([{"key": index.entry_key("session:", str(user.pk), f"{i:064x}"), "value": "",
                        "expiration_ttl": 3600, "metadata": index.entry_metadata(now + 3600, now * 1000, now, {}, None)}
                       for i in range(n - 1)])  # and the request's own: 2,000
    with counted() as c:
        listed = user_sessions(user)
    _check(f"user_sessions() of a user with {len(listed):,} sessions", c, math.ceil(n / 1000), rows)
    with counted() as c:
        revoke_all_sessions(user)
    _check(f"revoke_all_sessions() of a user with {n:,} sessions", c, math.ceil(n / 1000) + 1, rows)
    return rows


def _limiter(seconds):
    from django_cfkv.ratelimit import Limiter

    rows = []
    limiter = Limiter({"ALIAS": "default", "RULES": [{"path": r"^/api/", "rate": "1000/m", "key": "ip"}]})
    [rule] = limiter.matching("/api/x", "GET")
    requests_made = 0
    with counted() as c:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            limiter.hit(rule, "203.0.113.9")
            requests_made += 1
            time.sleep(0.002)
        limiter.close()
    budget = 2 * math.ceil(seconds) + 2  # 2 per second, plus the first read and the final flush
    rows.append(row("calls", f"limiter: {requests_made} requests from one client in {seconds} s", c.total,
                    "calls", baseline="2 per second per client per process", baseline_value=budget,
                    target=f"<= {budget}", ok=c.total <= budget,
                    note=", ".join(f"{k} {v}" for k, v in sorted(c.by_endpoint.items()))))
    return rows


def _sweep(n):
    from django_cfkv import get_kv

    rows, kv = [], get_kv()
    past = time.time() - 3600  # well past the sweep's grace for stale listings
    items = [{"key": f"session:{i:032x}", "value": "{}", "expiration_ttl": 3600,
              "metadata": {"kind": "session", "expires": past}} for i in range(n)]
    kv.put_many(items)
    total = sum(1 for _ in kv.iter_keys())  # the earlier cases left a few keys too
    minimum = math.ceil(total / 1000) + math.ceil(n / 10000)
    with counted() as c:
        call_command("cfkv", "sweep", stdout=io.StringIO())
    _check(f"cfkv sweep over {n} expired sessions", c, minimum, rows)
    return rows

