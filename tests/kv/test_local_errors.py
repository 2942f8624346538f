"""LocalKV's failures are KVErrors, so the cache and sessions degrade as on Cloudflare:
a write lock held by another process is a KVTimeout after BUSY_TIMEOUT, and a file
that cannot be read a KVConnectionError. Never a raw sqlite3 error, never a 500."""

import subprocess
import sys
import textwrap
import time

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.test import Client, override_settings

from django_cfkv.exceptions import KVConnectionError, KVTimeout
from django_cfkv.local import LocalKV

BEARER_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django_cfkv.bearer.BearerSessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture
def locked(tmp_path):
    """A store whose write lock another process holds (a long transaction) until the test ends."""
    path = tmp_path / "kv.sqlite3"
    LocalKV(path).put("k", b"before")  # a real store, in WAL mode
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM kv")
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield path
    holder.kill()
    holder.wait()


@pytest.fixture(params=["corrupt", "directory"])
def unreadable(request, tmp_path):
    """A PATH SQLite cannot use: a file that is not a database, or a directory."""
    path = tmp_path / "kv.sqlite3"
    if request.param == "corrupt":
        path.write_bytes(b"this is not a SQLite database, whatever its name says\n" * 200)
    else:
        path.mkdir()
    return path


def test_a_held_write_lock_is_a_kvtimeout_after_the_busy_timeout(locked):
    kv = LocalKV(locked, busy_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(KVTimeout, match="BUSY_TIMEOUT"):
        kv.put("k", b"after")
    assert time.monotonic() - started < 5  # 0.3 s asked; it was a fixed 30 s
    assert kv.get("k") == b"before"  # readers are not blocked (WAL)


def test_a_held_write_lock_is_ignored_by_the_cache_under_ignore_exceptions(locked):
    cache = {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default",
             "OPTIONS": {"IGNORE_EXCEPTIONS": True}}
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(locked), "BUSY_TIMEOUT": 0.3}},
                           CACHES={"default": cache}):
        caches["default"].set("greeting", "hello")  # logged and dropped, not raised
        assert caches["default"].get("greeting", "missing") == "missing"


@pytest.mark.parametrize("call", ["get", "put", "list_keys", "delete_many"])
def test_an_unusable_file_is_a_kvconnectionerror(unreadable, call):
    kv = LocalKV(unreadable)
    with pytest.raises(KVConnectionError, match="cannot be used"):
        {"get": lambda: kv.get("k"), "put": lambda: kv.put("k", b"v"), "list_keys": lambda: kv.list_keys(),
         "delete_many": lambda: kv.delete_many(["k"])}[call]()


@pytest.mark.urls("tests.sessions.urls")
def test_an_unusable_file_gives_cookie_requests_an_empty_session(unreadable, settings):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(unreadable)}}
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    client = Client()
    client.cookies["sessionid"] = "k3v9q2m8x7c4b1n6z5l0p8r2t4y6u1w3"
    response = client.get("/read/")
    assert response.status_code == 200 and response.json() == {"n": None}


@pytest.mark.urls("tests.sessions.urls")
@pytest.mark.django_db
def test_an_unusable_file_gives_bearer_requests_a_503(unreadable, settings):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(unreadable)}}
    settings.SESSION_ENGINE = "django_cfkv.sessions"
    settings.MIDDLEWARE = BEARER_MIDDLEWARE
    response = Client().get("/whoami/", HTTP_AUTHORIZATION="Bearer k3v9q2m8x7c4b1n6z5l0p8r2t4y6u1w3")
    assert response.status_code == 503 and response["Retry-After"]


@pytest.mark.parametrize("value, ok", [(5, True), (0.5, True), (0, False), (-1, False), ("5", False),
                                       (True, False), (float("inf"), False)])
def test_busy_timeout_setting_is_checked(settings, value, ok):
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": "kv.sqlite3", "BUSY_TIMEOUT": value}}
    from django_cfkv.checks import check_cfkv_setting

    ids = [e.id for e in check_cfkv_setting()]
    assert ("django_cfkv.E010" not in ids) == ok
    if not ok:
        call_command("check", "--fail-level", "CRITICAL")  # reported, never a crash
