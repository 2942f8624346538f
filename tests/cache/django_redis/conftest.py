"""Settings for django-redis' own tests, pointing at CloudflareKVCache, as django-redis' ``tests/settings/*.py``
and ``conftest.py`` point them at Redis: each test runs once per store (LocalKV, KVClient + the emulator) and
entry format (pickle, json, zlib-compressed pickle), on a fresh namespace.

The aliases are django-redis': ``default``, ``sample`` (its replica setting: the same namespace here),
``with_prefix`` (KEY_PREFIX "test-prefix") and ``doesnotexist`` (a server that is not there: the REST client
on a closed loopback port, without retries).
"""

import types
from pathlib import Path
from unittest import mock

import pytest
from django.core.cache import cache as default_cache
from django.core.cache import caches

from django_cfkv import clock as cfkv_clock
from django_cfkv.cache import CloudflareKVCache
from tests.support.faults import closed_port  # noqa: F401 (fixture)

from . import suite

HERE = Path(__file__).resolve().parent
MODULES = suite.load()
LISTED = suite.expected_failures()
suite.check_listed(LISTED, MODULES)

BACKEND = "django_cfkv.cache.CloudflareKVCache"


def pytest_generate_tests(metafunc):
    if "cache_settings" in metafunc.fixturenames:
        metafunc.parametrize("cache_settings", suite.CONFIGURATIONS)


def pytest_collection_modifyitems(config, items):
    """Mark each listed test as a strict expected failure: it must fail with the listed exception, and
    if it passes the run fails (the list then says something no longer true: remove the line)."""
    for item in items:
        if Path(str(item.path)).parent != HERE:
            continue
        node = item.nodeid.split("/")[-1]
        path, _, configuration = node.partition("[")
        for entry in LISTED:
            if entry.path == path and entry.configuration in (None, configuration.rstrip("]")):
                item.add_marker(pytest.mark.xfail(strict=True, reason=entry.reason, raises=entry.error))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail a test of the suite that skips itself: in this suite nothing is skipped, a test that cannot pass
    here is listed instead."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and Path(str(item.path)).parent == HERE:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped itself ({report.longrepr[-1]}); django-redis' tests are never "
                           f"skipped here: make it pass, or list it in {suite.SKIP_LIST.name} with its reason.")
    return report


def _caches(store_alias, down_alias, options):
    cache = {"BACKEND": BACKEND, "LOCATION": store_alias, "OPTIONS": options}
    return {
        "default": cache,
        "doesnotexist": {**cache, "LOCATION": down_alias},
        "sample": cache,
        "with_prefix": {**cache, "KEY_PREFIX": "test-prefix"},
    }


@pytest.fixture(autouse=True)
def django_redis_settings(cache_settings, settings, tmp_path, request, closed_port):  # noqa: F811
    """django-redis' settings for ``cache_settings`` ("<store>-<format>"), its names mapped to ours,
    and its ``time.sleep`` moving django_cfkv's clock."""
    store, fmt = cache_settings.split("-")
    if store == "local":
        store_config = {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}
    else:
        emulator = request.getfixturevalue("cfkv_emulator")
        emulator.reset_quota()
        store_config = emulator.alias_settings(MAX_RETRIES=0)
    down = {"BACKEND": "cloudflare", "ACCOUNT_ID": "0" * 32, "NAMESPACE_ID": "0" * 32, "API_TOKEN": "token",
            "BASE_URL": f"http://127.0.0.1:{closed_port}/client/v4", "MAX_RETRIES": 0}
    clock = suite.VirtualTime()
    # Through pytest-django's ``settings``, the one stack django-redis' tests add to: an override_settings()
    # here would be undone before theirs, and their teardown would then restore ours for every later test.
    settings.CFKV = {"redis": store_config, "redis_down": down}
    settings.CACHES = _caches("redis", "redis_down", suite.FORMATS[fmt])
    settings.USE_TZ = False
    with suite.names_mapped(), \
            mock.patch.object(CloudflareKVCache, "client", property(lambda c: suite.DefaultClient(suite.FORMATS[fmt])),
                              create=True), \
            mock.patch.object(MODULES["test_backend"], "time", clock), \
            mock.patch.object(cfkv_clock, "now", clock.now):
        caches["default"]  # noqa: B018  the cache exists before the test, as in django-redis' runs
        yield


@pytest.fixture
def cache(cache_settings):
    """django-redis' ``cache`` fixture: the default cache of the configuration, cleared after the test.

    """
    yield default_cache
    default_cache.clear()


@pytest.fixture
def mocker():
    """pytest-mock's ``mocker``, as far as django-redis' tests use it: ``mocker.patch.object``, undone after."""
    patchers = []

    def patch_object(target, attribute, *args, **kwargs):
        patchers.append(mock.patch.object(target, attribute, *args, **kwargs))
        return patchers[-1].start()

    yield types.SimpleNamespace(patch=types.SimpleNamespace(object=patch_object))
    for patcher in reversed(patchers):
        patcher.stop()
