"""A user's Django TestCase tests using override_cfkv() and assert_kv_calls()."""

import asyncio

from django.conf import settings
from django.test import SimpleTestCase, TestCase

from django_cfkv import get_kv
from django_cfkv.testing import assert_kv_calls, override_cfkv


@override_cfkv()
class ClassDataTests(TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.from_setup_class = get_kv().get("from-test-data")

    @classmethod
    def setUpTestData(cls):
        assert "127.0.0.1" in settings.CFKV["default"]["BASE_URL"]
        cls.cfkv.put("from-test-data", b"class")

    def test_1_sees_class_data_and_writes(self):
        self.assertEqual(self.from_setup_class, b"class")
        self.assertEqual(get_kv().get("from-test-data"), b"class")
        self.cfkv.put("from-test-1", b"one")
        self.cfkv.delete("from-test-data")

    def test_2_sees_class_data_not_test_1(self):
        self.assertIs(self.cfkv, get_kv())
        self.assertEqual(self.cfkv.get("from-test-data"), b"class")
        self.assertIsNone(self.cfkv.get("from-test-1"))

    async def test_3_async_sees_class_data_not_test_1(self):
        self.assertEqual(await self.cfkv.aget("from-test-data"), b"class")
        self.assertIsNone(await get_kv().aget("from-test-1"))
        await self.cfkv.aput("from-test-3", b"three")


class OutsideTests(SimpleTestCase):
    def test_settings_untouched_outside(self):
        self.assertEqual(settings.CFKV["default"]["NAMESPACE_ID"], "production-namespace")

    def test_context_manager(self):
        with override_cfkv() as kv:
            kv.put("k", b"v")
            self.assertEqual(get_kv("sessions").get("k"), b"v")
            with assert_kv_calls(2) as calls:
                kv.get("k")
                get_kv("limits").get("k")
            self.assertEqual(calls.counts, {"get": 2})
        self.assertEqual(settings.CFKV["default"]["NAMESPACE_ID"], "production-namespace")
        with override_cfkv() as kv:
            self.assertIsNone(kv.get("k"))

    async def test_async_context_manager(self):
        with override_cfkv() as kv:
            await kv.aput("k", b"v")
            with assert_kv_calls(2) as calls:
                await asyncio.gather(kv.aget("k"), get_kv("limits").aget("k"))
            self.assertEqual(calls.counts, {"get": 2})
        self.assertEqual(settings.CFKV["default"]["NAMESPACE_ID"], "production-namespace")

    @override_cfkv()
    async def test_async_function_decorator(self):
        await get_kv().aput("k", b"v")
        self.assertEqual([info.name async for info in get_kv().aiter_keys()], ["k"])

    @override_cfkv()
    def test_function_decorator(self):
        get_kv().put("k", b"v")
        with self.assertRaisesMessage(AssertionError, "2 != 1 : 2 KV API calls made, 1 expected. "
                                                      "Calls by endpoint: get: 1, put: 1."):
            with assert_kv_calls(1):
                get_kv().put("k", b"w")
                get_kv().get("k")
