"""The fault matrix on the features: cache get/set/get_many/set_many, session
load/save/create, the rate limiter and ``manage.py cfkv sweep``.

Each fault is one of Cloudflare's documented failures (shared reference,
sections 1-4) served by the emulator's fault injection, by `responses`, or by
a misbehaving loopback socket. For each the outcome is asserted: a typed error,
or the documented degradation (IGNORE_EXCEPTIONS, SESSION_CFKV_ON_LOAD_ERROR,
FAIL_OPEN), logged. Acknowledged writes are readable once the fault clears.
"""

import io
import logging
import re

import pytest
import responses
from django.contrib.sessions.backends.base import UpdateError
from django.core.management import CommandError, call_command
from django.test import Client

from django_cfkv import ratelimit as rl
from django_cfkv.cache import CloudflareKVCache
from django_cfkv.exceptions import KVError
from django_cfkv.sessions import SessionStore

from .conftest import ACCOUNT, NS, TOKEN, failure

CF_BASE = "https://api.cloudflare.com/client/v4"
RETRY = {"MAX_RETRIES": 1, "TIMEOUT": 0.15}

# name: (where the fault comes from, is it transient (IGNORE_EXCEPTIONS hides it) per the error tree)
FAULTS = {
    "429_retry_after": ("emulator", True),
    "429_bare": ("emulator", True),
    "503": ("emulator", True),
    "500": ("responses", True),
    "502": ("responses", True),
    "504": ("responses", True),
    "read_timeout": ("socket", True),
    "connect_timeout": ("socket", True),
    "refused": ("socket", True),
    "reset": ("socket", True),
    "401": ("responses", False),
    "403": ("emulator", False),
    "missing_namespace": ("emulator", False),
    "malformed_200": ("responses", True),  # an answer no KV gives (KVMalformedResponseError): as a 5xx
    "success_false_200": ("responses", False),
}
TRANSIENT = [name for name, (_, transient) in FAULTS.items() if transient]


@pytest.fixture(params=list(FAULTS))
def fault(request, settings, emulator, listener, closed_port, slept):
    """Point CFKV alias "faulty" at a KV that fails with the parametrized fault."""
    name = request.param
    alias = {**emulator.alias_settings(), **RETRY}
    if name == "429_retry_after":
        emulator.set_faults(rate_429=1.0, retry_after=1)
    elif name == "429_bare":
        emulator.set_faults(rate_429=1.0, retry_after=-1)
    elif name == "503":
        emulator.set_faults(rate_503=1.0)
    elif name == "403":
        alias["API_TOKEN"] = "a-token-the-emulator-refuses"
    elif name == "missing_namespace":
        alias["NAMESPACE_ID"] = "n" * 40  # no namespace id is that long
    elif name == "read_timeout":
        alias["BASE_URL"] = listener("silent").base_url
    elif name == "connect_timeout":
        alias["BASE_URL"] = listener("backlog").base_url
    elif name == "reset":
        alias["BASE_URL"] = listener("reset").base_url
    elif name == "refused":
        alias["BASE_URL"] = f"http://127.0.0.1:{closed_port}/client/v4"
    mock = None
    if FAULTS[name][0] == "responses":
        alias.update(ACCOUNT_ID=ACCOUNT, NAMESPACE_ID=NS, API_TOKEN=TOKEN, BASE_URL=CF_BASE)
        mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        mock.add_passthru(emulator.base_url)
        status, body = {
            "500": (500, failure(10001, "service temporarily unavailable")),
            "502": (502, "<html>502 Bad Gateway</html>"),
            "504": (504, "<html>504 Gateway Time-out</html>"),
            "401": (401, failure(10000, "Authentication error")),
            "malformed_200": (200, "<html>Welcome to the captive portal</html>"),
            "success_false_200": (200, failure(10001, "service temporarily unavailable")),
        }[name]
        for method in ("GET", "PUT", "POST", "DELETE"):
            kwargs = {"body": body} if isinstance(body, str) else {"json": body}
            mock.add(method, re.compile(re.escape(CF_BASE) + ".*"), status=status, **kwargs)
        mock.start()
    settings.CFKV = {**settings.CFKV, "faulty": alias}
    try:
        yield name
    finally:
        if mock is not None:
            mock.stop()
            mock.reset()
        emulator.clear_faults()


def _warned(caplog, logger_name):
    return [r for r in caplog.records if r.name.startswith(logger_name) and r.levelno >= logging.WARNING]


# The cache


CACHE_OPS = {
    "get": (lambda c: c.get("k", "default"), "default"),
    "set": (lambda c: c.set("k", {"v": 1}, 300), None),
    "get_many": (lambda c: c.get_many(["a", "b"]), {}),
    "set_many": (lambda c: c.set_many({"a": 1, "b": 2}, 300), ["a", "b"]),
}


def _cache_outcome(op, fault, ignore):
    if op == "get" and fault in ("malformed_200", "success_false_200"):
        return "miss"  # a value read is raw bytes: these bytes are not a cache entry, so a miss
    if ignore and FAULTS[fault][1]:
        return "degraded"
    return "raise"


@pytest.mark.parametrize("ignore", [False, True], ids=["raise", "ignore_exceptions"])
@pytest.mark.parametrize("op", CACHE_OPS)
def test_cache_under_fault(fault, caplog, op, ignore):
    outcome = _cache_outcome(op, fault, ignore)
    cache = CloudflareKVCache("faulty", {"OPTIONS": {"IGNORE_EXCEPTIONS": ignore}})
    call, fallback = CACHE_OPS[op]
    caplog.set_level(logging.WARNING)
    if outcome == "raise":
        with pytest.raises(KVError):
            call(cache)
        return
    result = call(cache)
    if outcome == "miss":
        assert result == "default"
        return
    assert result == fallback
    assert _warned(caplog, "django_cfkv.cache"), "an ignored failure must be logged"


def test_cache_set_many_partial_failure_reports_exactly_the_keys_not_stored(settings, emulator):
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    cache = CloudflareKVCache("faulty", {})
    data = {f"key{i}": {"n": i} for i in range(40)}
    emulator.set_faults(bulk_unsuccessful=0.5)
    failed = cache.set_many(data, 300)
    emulator.clear_faults()
    assert failed and len(failed) < 40
    got = cache.get_many(list(data))
    assert set(got) == set(data) - set(failed)
    assert all(got[k] == data[k] for k in got)


def test_cache_acknowledged_sets_are_readable_after_random_faults(settings, emulator, slept):
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    cache = CloudflareKVCache("faulty", {})
    emulator.set_faults(rate_503=0.3, rate_429=0.1, retry_after=0)
    acked, raised = {}, 0
    for i in range(80):
        try:
            cache.set(f"k{i}", ["value", i], 300)
        except KVError:
            raised += 1
        else:
            acked[f"k{i}"] = ["value", i]
    emulator.clear_faults()
    assert raised and acked
    assert cache.get_many(list(acked)) == acked


# Sessions


@pytest.fixture
def session_settings(settings):
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.SESSION_CFKV_ALIAS = "faulty"
    return settings


@pytest.mark.parametrize("on_error", ["empty", "raise"])
def test_session_load_under_fault(fault, session_settings, caplog, on_error):
    session_settings.SESSION_CFKV_ON_LOAD_ERROR = on_error
    store = SessionStore("a" * 32)
    if fault in ("malformed_200", "success_false_200"):
        # The value read answered 200 with bytes that are no session: a tampered session, empty.
        assert store.load() == {} and not store.load_failed
        return
    if on_error == "raise":
        with pytest.raises(KVError):
            store.load()
        return
    caplog.set_level(logging.ERROR)
    assert store.load() == {}
    assert store.load_failed and store.session_key == "a" * 32  # the cookie is kept
    assert _warned(caplog, "django_cfkv.sessions")
    store["changed"] = True
    with pytest.raises(KVError):  # never overwrite the stored session with the empty stand-in
        store.save()


@pytest.mark.parametrize("op", ["save", "create"])
def test_session_writes_under_fault_always_raise(fault, session_settings, op):
    store = SessionStore()
    store["cart"] = [1, 2, 3]
    with pytest.raises((KVError, UpdateError)):
        store.save() if op == "save" else store.create()


def test_session_acknowledged_saves_load_back_after_random_faults(session_settings, emulator, slept):
    session_settings.CFKV = {**session_settings.CFKV, "faulty": {**emulator.alias_settings(), **RETRY}}
    emulator.set_faults(rate_503=0.3, rate_429=0.1, retry_after=0)
    acked, raised = {}, 0
    for i in range(60):
        store = SessionStore()
        store["n"] = i
        try:
            store.save()
        except KVError:
            raised += 1
        else:
            acked[store.session_key] = i
    emulator.clear_faults()
    assert raised and acked
    for key, n in acked.items():
        assert SessionStore(key).load() == {"n": n}


# The rate limiter


LIMITER_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_cfkv.middleware.RateLimitMiddleware",
]


@pytest.mark.parametrize("fail_open", [True, False])
def test_limiter_under_fault_follows_fail_open_and_never_500s(fault, settings, caplog, fail_open):
    settings.ROOT_URLCONF = "tests.ratelimit_urls"
    settings.MIDDLEWARE = LIMITER_MIDDLEWARE
    settings.CFKV_RATELIMIT = {"ALIAS": "faulty", "FAIL_OPEN": fail_open, "RULES": [
        {"path": r"^/login/$", "methods": ["POST"], "rate": "3/m", "key": "ip"}]}
    caplog.set_level(logging.ERROR)
    try:
        client = Client()
        codes = [client.post("/login/").status_code for _ in range(5)]
        decorated = [client.get("/decorated/").status_code for _ in range(3)]
    finally:
        rl.reset_limiter()
    if fail_open:
        # Allowed while KV fails, but this process's own count is still enforced.
        assert codes == [200, 200, 200, 429, 429]
        assert decorated == [200, 200, 429]
    else:
        assert codes == [429] * 5 and decorated == [429] * 3
    assert _warned(caplog, "django_cfkv.ratelimit")


# manage.py cfkv sweep


def _sweep(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("cfkv", "sweep", "--alias", "faulty", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_sweep_under_fault_fails_with_a_command_error_and_deletes_nothing(fault):
    with pytest.raises(CommandError) as info:
        _sweep()
    assert TOKEN not in str(info.value) and str(info.value)


def _seed_sweepable(kv):
    import time

    past, future = time.time() - 3600, time.time() + 3600
    items = [{"key": f"cache:old{i}", "value": "x", "expiration_ttl": 600,
              "metadata": {"kind": "cache", "expires": past}} for i in range(30)]
    items += [{"key": f"cache:live{i}", "value": "x", "expiration_ttl": 7200,
               "metadata": {"kind": "cache", "expires": future}} for i in range(30)]
    items += [{"key": f"other{i}", "value": "x", "metadata": {"expires": past}} for i in range(5)]
    kv.put_many(items)
    return {i["key"] for i in items if "live" in i["key"] or i["key"].startswith("other")}


def test_sweep_with_bulk_partial_failure_says_so_and_a_rerun_finishes(settings, emulator, slept):
    client = emulator.client()
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(client.namespace_id), **RETRY}}
    keep = _seed_sweepable(client)
    emulator.set_faults(bulk_unsuccessful=0.5)
    with pytest.raises(CommandError, match="run the command again"):
        _sweep()
    emulator.clear_faults()
    assert keep <= {k.name for k in client.iter_keys()}  # nothing live was touched
    out, _ = _sweep()
    assert {k.name for k in client.iter_keys()} == keep
    client.close()


def test_sweep_under_random_faults_never_deletes_a_live_entry(settings, emulator, slept):
    client = emulator.client()
    settings.CFKV = {**settings.CFKV, "faulty": {**emulator.alias_settings(client.namespace_id), **RETRY}}
    keep = _seed_sweepable(client)
    emulator.set_faults(rate_503=0.3, bulk_unsuccessful=0.2)
    for _ in range(8):
        try:
            _sweep()
        except CommandError:
            continue
    emulator.clear_faults()
    names = {k.name for k in client.iter_keys()}
    assert keep <= names
    _sweep()
    assert {k.name for k in client.iter_keys()} == keep
    client.close()
