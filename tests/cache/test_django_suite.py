"""Django's own cache contract (``BaseCacheTests`` from ``tests/cache/tests.py``) run on
CloudflareKVCache, on LocalKV, on KVClient + the emulator, and there with the near cache on.

The test module is read from the sdist of the installed Django (fetched during set-up by
tests/third_party.py), not vendored. It imports ``.models`` (a ``Poll`` model), so its folder
is loaded as a package registered under a name of our own and installed as an app for these
classes.

Django's tests sleep past 1-2 s timeouts. Here those sleeps advance the package's clock
(django_cfkv.clock) instead, so the suite runs in seconds; real-time expiry is covered
by tests/cache/test_backend.py::test_one_second_timeout_misses_after_one_second.
"""

import importlib
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.db import connection
from django.test import TestCase, override_settings

from django_cfkv import clock as cfkv_clock
from django_cfkv.testing import RunningEmulator
from tests.third_party import django_tests_dir

PACKAGE = "cfkv_django_cache_tests"
INSTALLED_APPS = [*settings.INSTALLED_APPS, PACKAGE]


def _load_django_cache_tests():
    """Import Django's cache/tests.py as ``PACKAGE.tests``, with its models app installed."""
    name = f"{PACKAGE}.tests"
    if name not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(django_tests_dir() / "cache")]
        sys.modules[PACKAGE] = package
        with override_settings(INSTALLED_APPS=INSTALLED_APPS):
            module = importlib.import_module(name)
        # Its settings name the key function by its original module path.
        module._caches_setting_base["custom_key2"]["KEY_FUNCTION"] = f"{name}.custom_key_func"
    return sys.modules[name]


django_cache_tests = _load_django_cache_tests()
Poll = django_cache_tests.Poll


class _VirtualClock:
    """``time`` for Django's test module: sleep() advances the package's clock instead of waiting."""

    def __init__(self):
        self.offset = 0.0

    def now(self):
        return time.time() + self.offset

    def sleep(self, seconds):
        self.offset += seconds

    def __getattr__(self, name):
        return getattr(time, name)


CACHES = django_cache_tests.caches_setting_for_tests(
    BACKEND="django_cfkv.cache.CloudflareKVCache", LOCATION="cachetests",
    exclude={"cull", "zero_cull"},
)


class CloudflareKVCacheSuite(django_cache_tests.BaseCacheTests):
    """Django's BaseCacheTests with a virtual clock and KV-specific skips."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with connection.cursor() as cursor:  # the Poll table, inside the class's transaction
            cursor.execute(
                f'CREATE TABLE IF NOT EXISTS "{Poll._meta.db_table}" ("id" integer NOT NULL PRIMARY KEY '
                'AUTOINCREMENT, "question" varchar(200) NOT NULL, "answer" varchar(200) NOT NULL, '
                '"pub_date" datetime NOT NULL)'
            )

    def setUp(self):
        super().setUp()
        clock = _VirtualClock()
        for patcher in (mock.patch.object(django_cache_tests, "time", clock),
                        mock.patch.object(cfkv_clock, "now", clock.now)):
            patcher.start()
            self.addCleanup(patcher.stop)

    def test_cull(self):
        self.skipTest("Workers KV has no MAX_ENTRIES to cull to; the backend refuses the option.")

    def test_zero_cull(self):
        self.skipTest("Workers KV has no MAX_ENTRIES to cull to; the backend refuses the option.")

    def test_cull_delete_when_store_empty(self):
        self.skipTest("Workers KV has no MAX_ENTRIES to cull to; the backend refuses the option.")


_LOCAL_DIR = tempfile.mkdtemp(prefix="cfkv-django-cache-")


@override_settings(
    INSTALLED_APPS=INSTALLED_APPS, CACHES=CACHES,
    CFKV={**settings.CFKV, "cachetests": {"BACKEND": "local", "PATH": str(Path(_LOCAL_DIR) / "kv.sqlite3")}},
)
class LocalKVCacheTests(CloudflareKVCacheSuite, TestCase):
    pass


@override_settings(INSTALLED_APPS=INSTALLED_APPS, CACHES=CACHES)
class EmulatorKVCacheTests(CloudflareKVCacheSuite, TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emulator = RunningEmulator()
        cls._cfkv = override_settings(CFKV={**settings.CFKV, "cachetests": cls.emulator.alias_settings()})
        cls._cfkv.enable()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls._cfkv.disable()
        cls.emulator.stop()


NEAR_CACHES = django_cache_tests.caches_setting_for_tests(
    BACKEND="django_cfkv.cache.CloudflareKVCache", LOCATION="cachetests",
    OPTIONS={"NEAR_CACHE_TIMEOUT": 60}, exclude={"cull", "zero_cull"},
)


@override_settings(CACHES=NEAR_CACHES)
class NearCacheDjangoCacheTests(EmulatorKVCacheTests):
    """The emulator suite as it is, with the near cache on."""
