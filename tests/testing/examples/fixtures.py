"""A user's pytest tests using the cfkv fixtures (run by tests/testing/test_plugin.py)."""

import asyncio

import pytest
from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from django.test import RequestFactory

from django_cfkv import get_kv, transport
from django_cfkv.exceptions import KVAPIError, KVRateLimitError
from django_cfkv.ratelimit import ratelimit
from django_cfkv.sessions import SessionStore


def test_aliases_point_at_the_emulator(cfkv, cfkv_emulator):
    assert cfkv is get_kv("default")
    for alias in ("default", "sessions", "limits"):
        assert settings.CFKV[alias]["BASE_URL"] == cfkv_emulator.base_url
        assert settings.CFKV[alias]["NAMESPACE_ID"] != "production-namespace"
        assert "production-token" not in repr(settings.CFKV[alias])
    assert cfkv_emulator.base_url.startswith("http://127.0.0.1:")
    assert cfkv_emulator.base_url.endswith("/client/v4")
    assert settings.CFKV["default"]["MAX_RETRIES"] == 1  # the user's retry policy is kept


@ratelimit(rate="2/m", key="ip", block=False)
def limited_view(request):
    return HttpResponse("limited" if request.limited else "ok")


def hit_limited_view():
    return limited_view(RequestFactory().get("/")).content


SESSION_KEY = []


def test_writes_here(cfkv):
    cfkv.put("greeting", b"hello")
    get_kv("limits").put("counter", b"1")
    assert get_kv("sessions").get("greeting") == b"hello"  # same namespace in settings, same in the test
    assert get_kv("limits").get("greeting") is None
    cache.set("cached", "value", 300)
    session = SessionStore()
    session["user"] = "ada"
    session.save()
    SESSION_KEY.append(session.session_key)
    assert SessionStore(session.session_key).load() == {"user": "ada"}
    assert [hit_limited_view() for _ in range(3)] == [b"ok", b"ok", b"limited"]


def test_limiter_calls_are_this_tests(cfkv, cfkv_calls):
    assert [hit_limited_view() for _ in range(3)] == [b"ok", b"ok", b"limited"]
    # One list on the first request; each later request writes its count before it returns.
    assert cfkv_calls.counts == {"list": 1, "bulk_put": 2}


def test_next_test_sees_none_of_it(cfkv):
    assert cfkv.get("greeting") is None
    assert get_kv("limits").get("counter") is None
    assert list(cfkv.iter_keys()) == []
    assert cache.get("cached") is None
    assert not SessionStore().exists(SESSION_KEY[0])
    assert hit_limited_view() == b"ok"  # no count kept from the test before


def test_settings_restored_after_a_test():
    assert settings.CFKV["default"]["NAMESPACE_ID"] == "production-namespace"
    assert "BASE_URL" not in settings.CFKV["default"]
    assert transport.request_hooks == []


def test_fault_context(cfkv, cfkv_emulator, cfkv_calls):
    cfkv.put("k", b"v")
    with cfkv_emulator.faults(rate_429=1.0, retry_after=0):
        with pytest.raises(KVRateLimitError):
            cfkv.get("k")
    assert cfkv_calls["get"] == 2  # one retry (MAX_RETRIES 1), both answered 429
    assert cfkv.get("k") == b"v"


def test_faults_left_on(cfkv, cfkv_emulator):
    cfkv_emulator.set_faults(rate_503=1.0)
    with pytest.raises(KVAPIError):
        cfkv.put("k", b"v")


def test_faults_left_on_are_off_in_the_next_test(cfkv):
    cfkv.put("k", b"v")
    assert cfkv.get("k") == b"v"


def test_call_budget(cfkv, cfkv_calls):
    cfkv.put("a", b"1")
    cfkv.get("a")
    cfkv.get_many(["a", "b"])
    assert cfkv_calls.counts == {"put": 1, "get": 1, "bulk_get": 1}
    assert cfkv_calls.total == 3
    cfkv_calls.reset()
    cfkv.get("a")
    assert cfkv_calls.total == 1



def test_async_calls_are_counted(cfkv, cfkv_calls):
    async def view():
        await cfkv.aput("a", b"1")
        return await asyncio.gather(cfkv.aget("a"), get_kv("limits").aget("a"), cfkv.aget_many(["a", "b"]))

    assert asyncio.run(view()) == [b"1", None, {"a": b"1"}]
    assert cfkv_calls.counts == {"put": 1, "get": 2, "bulk_get": 1}
