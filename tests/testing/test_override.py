"""override_cfkv() on functions, classes and blocks, and the loopback guard it holds up."""

import time
import unittest

import pytest
from django.conf import settings
from django.core.cache import caches
from django.http import HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from django_cfkv import get_kv, transport
from django_cfkv.client import KVClient
from django_cfkv.exceptions import KVError
from django_cfkv.ratelimit import ratelimit
from django_cfkv.testing import KVNetworkBlocked, assert_kv_calls, override_cfkv
from django_cfkv.testing.guards import BLOCKED_HINT

STRAY = ("f" * 32, "production-namespace", "production-token")


def tolerant_lookup():
    """Code under test that treats any KV failure as a miss."""
    try:
        return KVClient(*STRAY).get("k")
    except Exception:
        return None


def run_case(case):
    """Run a TestCase class as unittest would (class fixtures included); return the result."""
    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(case).run(result)
    return result


def problems(result):
    return [(test.id().rsplit(".", 1)[-1], text.strip().splitlines()[-1])
            for test, text in result.errors + result.failures]


def test_override_restores_settings_guards_and_cache_objects(cfkv_emulator):
    original = settings.CFKV
    cache_before = caches["default"]
    with override_cfkv(emulator=cfkv_emulator) as kv:
        assert settings.CFKV["default"]["BASE_URL"] == cfkv_emulator.base_url
        assert kv is get_kv() and isinstance(kv, KVClient)
        assert transport.request_hooks
        assert caches["default"] is not cache_before  # rebuilt from settings inside the override
    assert settings.CFKV == original
    assert transport.request_hooks == []
    assert get_kv().__class__.__name__ == "LocalKV"


def test_aliases_sharing_a_namespace_keep_sharing(cfkv_emulator):
    real = {"ACCOUNT_ID": "f" * 32, "API_TOKEN": "t", "NAMESPACE_ID": "one"}
    config = {"default": real, "sessions": dict(real), "other": {**real, "NAMESPACE_ID": "two"},
              "local": {"BACKEND": "local", "PATH": "/tmp/x.sqlite3"}, "local2": {"BACKEND": "local",
              "PATH": "/tmp/x.sqlite3"}, "custom": {"BACKEND": "myapp.KV"}}
    with override_settings(CFKV=config), override_cfkv(emulator=cfkv_emulator) as kv:
        ids = {alias: s["NAMESPACE_ID"] for alias, s in settings.CFKV.items()}
        kv.put("k", b"v")
        assert get_kv("sessions").get("k") == b"v"
        assert get_kv("other").get("k") is None
    assert ids["default"] == ids["sessions"] and ids["local"] == ids["local2"]
    assert len({ids["default"], ids["other"], ids["local"], ids["custom"]}) == 4
    assert "one" not in ids.values()


def test_nested_overrides(cfkv_emulator):
    with override_cfkv(emulator=cfkv_emulator) as outer:
        outer.put("k", b"outer")
        with override_cfkv(emulator=cfkv_emulator) as inner:
            assert inner.get("k") is None
        assert get_kv().get("k") == b"outer"
        assert transport.request_hooks
        with pytest.raises(KVNetworkBlocked):  # seen by the test: not reported again on the way out
            KVClient(*STRAY).get("k")
    assert transport.request_hooks == []


def test_caught_block_is_reported_when_the_override_ends(cfkv_emulator):
    before = transport.calls.total
    with pytest.raises(KVNetworkBlocked, match="1 KV API call.s. to api.cloudflare.com were stopped"):
        with override_cfkv(emulator=cfkv_emulator):
            assert tolerant_lookup() is None
    assert transport.calls.total == before  # nothing went out
    assert transport.request_hooks == []


def test_block_is_reported_once_when_it_propagates(cfkv_emulator):
    with pytest.raises(KVNetworkBlocked, match="A KV API call to api.cloudflare.com was stopped"):
        with override_cfkv(emulator=cfkv_emulator):
            KVClient(*STRAY).get("k")


def test_block_is_not_a_kv_error():
    # Code that tolerates KV failures (IGNORE_EXCEPTIONS, FAIL_OPEN) must not hide it.
    assert not issubclass(KVNetworkBlocked, KVError)
    assert issubclass(KVNetworkBlocked, AssertionError)


def test_override_on_a_test_case_class(cfkv_emulator):
    seen = {}

    @override_cfkv(emulator=cfkv_emulator)
    class Case(SimpleTestCase):
        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            cls.cfkv.put("class", b"data")

        def setUp(self):
            self.started = True

        def test_a(self):
            assert self.started
            seen["a"] = (self.cfkv.get("class"), self.cfkv.namespace_id)
            self.cfkv.put("from-a", b"1")
            get_kv().delete("class")

        def test_b(self):
            seen["b"] = (self.cfkv.get("class"), self.cfkv.get("from-a"), self.cfkv.namespace_id)

    class Child(Case):
        def test_c(self):
            seen["c"] = self.cfkv.get("class")

    result = run_case(Case)
    assert problems(result) == [] and result.testsRun == 2
    assert seen["a"][0] == b"data" and seen["b"][:2] == (b"data", None)
    assert seen["a"][1] != seen["b"][2]
    assert problems(run_case(Child)) == [] and seen["c"] == b"data"
    assert settings.CFKV["default"]["BACKEND"] == "local"
    assert transport.request_hooks == []


def test_override_on_a_class_reports_blocks_once(cfkv_emulator):
    @override_cfkv(emulator=cfkv_emulator)
    class Case(SimpleTestCase):
        def test_caught(self):
            tolerant_lookup()

        def test_expected(self):
            with self.assertRaises(KVNetworkBlocked):
                KVClient(*STRAY).get("k")

        def test_uncaught(self):
            KVClient(*STRAY).get("k")

        def test_fine(self):
            get_kv().put("k", b"v")

    result = run_case(Case)
    assert result.testsRun == 4
    assert sorted(problems(result)) == [
        ("test_caught", "django_cfkv.testing.KVNetworkBlocked: 1 KV API call(s) to api.cloudflare.com were "
                        "stopped during this test, and the code under test caught the error before it "
                        "reached the test. " + BLOCKED_HINT),
        ("test_uncaught", "django_cfkv.testing.KVNetworkBlocked: A KV API call to api.cloudflare.com was "
                          "stopped: tests must not leave 127.0.0.1. " + BLOCKED_HINT),
    ]


def test_override_refuses_other_classes():
    with pytest.raises(TypeError, match="unittest.TestCase"):
        override_cfkv()(type("NotATest", (), {}))


def test_each_override_starts_a_fresh_api_window(cfkv_emulator):
    with override_cfkv(emulator=cfkv_emulator) as kv:
        for n in range(3):
            kv.put(f"k{n}", b"v")
        kv.get("k0")
        assert kv.transport.budget[0] == 1200 - 4
    with override_cfkv(emulator=cfkv_emulator) as kv:
        kv.get("k0")
        assert kv.transport.budget[0] == 1200 - 1


def test_override_on_an_async_function(cfkv_emulator):
    import asyncio

    @override_cfkv(emulator=cfkv_emulator)
    async def view_test():
        return settings.CFKV["default"]["BASE_URL"], bool(transport.request_hooks)

    assert asyncio.run(view_test()) == (cfkv_emulator.base_url, True)
    assert transport.request_hooks == []


@ratelimit(rate="3/h", key="ip", group="counted-in-the-request")
def limited(request):
    return HttpResponse("ok")


def test_limiter_calls_are_counted_in_the_request_that_made_them(cfkv_emulator):
    factory = RequestFactory()
    with override_cfkv(emulator=cfkv_emulator) as kv:
        with assert_kv_calls(1) as calls:
            limited(factory.get("/"))  # its first request reads the other processes' counts
        assert calls.counts == {"list": 1}
        for _ in range(2):
            with assert_kv_calls(1) as calls:
                limited(factory.get("/"))  # from the second request on, the count is written before it returns
            assert calls.counts == {"bulk_put": 1}
        with assert_kv_calls(0):
            time.sleep(0.3)  # nothing lands later from a background thread
        [shard] = kv.iter_keys(prefix="rl:counted-in-the-request:")
        assert shard.metadata["count"] == 3
    # Outside the helpers the limiter writes in the background again.
    from django_cfkv.ratelimit import get_limiter

    assert get_limiter().counter.background and not get_limiter().counter.per_request
