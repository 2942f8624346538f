"""Settings for django-ratelimit's own tests, pointing at our backends, as its ``test_settings.py`` points them
at its caches: the rate limiter counts on KV, a fresh namespace per test, through the REST client on the
emulator (each test class as it is) and on the embedded store (``<class>OnLocalKV``).

Its cache aliases, which its tests name in ``RATELIMIT_USE_CACHE``: ``default`` (CloudflareKVCache on that
namespace, so the limiter counts there with shards), ``connection-errors`` and ``connection-errors-redis`` (a
KV that is not there: the REST client on a closed loopback port, without retries) and ``instant-expiration``
(a cache that keeps nothing, Django's DummyCache, as in django-ratelimit's settings).

The settings are applied with one ``override_settings`` around each test, the mechanism its tests use for
theirs, so each of theirs nests inside ours and is undone first; nothing is left behind for later tests.
The package's clock stands still early in a minute's, an hour's and a day's window, so no test's
requests straddle the end of a window.
"""

from pathlib import Path
from unittest import mock

import pytest
from django.test import override_settings

from django_cfkv import clock
from django_cfkv.ratelimit import count_per_request, reset_limiter
from tests.support.faults import closed_port  # noqa: F401 (fixture)

from . import suite

HERE = Path(__file__).resolve().parent
LISTED = suite.listed()
KV_CACHE = "django_cfkv.cache.CloudflareKVCache"
MID_WINDOW = 1_700_006_430.0  # 30 s into a minute, an hour and a day (UTC): far from the end of each


def pytest_collection_modifyitems(config, items):
    """Mark each listed test as a strict expected failure: it must fail with the listed exception, and if it
    passes the run fails (the list then says something no longer true: remove the line)."""
    for item in items:
        if Path(str(item.path)).parent != HERE:
            continue
        test = "tests.py::" + "::".join(item.nodeid.split("::")[1:]).replace(suite.LOCAL_SUFFIX + "::", "::")
        for entry in LISTED:
            if entry.path == test:
                item.add_marker(pytest.mark.xfail(strict=True, reason=entry.reason, raises=entry.error))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail a test of the suite that skips itself: nothing is skipped here, a test that cannot pass is listed."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and Path(str(item.path)).parent == HERE:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped itself; django-ratelimit's tests are never skipped here: make "
                           f"it pass, or list it in third_party_skips.txt with its reason.")
    return report


@pytest.fixture(autouse=True)
def django_ratelimit_settings(request, closed_port, tmp_path):  # noqa: F811
    """django-ratelimit's settings on our backends, its names mapped to ours, the package's clock still."""
    if getattr(request.cls, "cfkv_store", None) == "local":
        store = {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}
    else:
        emulator = request.getfixturevalue("cfkv_emulator")
        emulator.reset_quota()
        store = emulator.alias_settings(MAX_RETRIES=0)
    down = {"BACKEND": "cloudflare", "ACCOUNT_ID": "0" * 32, "NAMESPACE_ID": "0" * 32, "API_TOKEN": "token",
            "BASE_URL": f"http://127.0.0.1:{closed_port}/client/v4", "MAX_RETRIES": 0}
    caches = {
        "default": {"BACKEND": KV_CACHE, "LOCATION": "default"},
        "connection-errors": {"BACKEND": KV_CACHE, "LOCATION": "down"},
        "connection-errors-redis": {"BACKEND": KV_CACHE, "LOCATION": "down"},
        "instant-expiration": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    with suite.names_mapped(), mock.patch.object(clock, "now", lambda: MID_WINDOW), \
            override_settings(CFKV={"default": store, "down": down},
                              CACHES=caches, CFKV_RATELIMIT={}):
        count_per_request(True)  # each request's counts are written before it returns
        try:
            yield
        finally:
            count_per_request(False)
            reset_limiter()
