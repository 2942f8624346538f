"""Helpers the session engine's tests share: requests with a token, sessions as a Worker writes them, a namespace
as a live site fills it, and a KV that serves stale reads as a Cloudflare location does."""

import json
import time
import uuid

from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from django_cfkv import get_kv
from django_cfkv.local import LocalKV
from django_cfkv.sessions import SessionStore, issue_token
from django_cfkv.testing import RunningEmulator


def auth(token):
    """Return the test client's keyword arguments for ``Authorization: Bearer <token>``."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def assert_invalid_token(response):
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["error"] == "invalid_token"
    assert "sessionid" not in response.cookies


def spent(calls):
    """Return the KV calls ``calls`` (a KVCalls) counted since the last look, by endpoint, and count afresh."""
    counts = calls.counts
    calls.reset()
    return counts


def stored(session_key):
    """Return the stored value and metadata of ``session_key``'s session (None: nothing stored)."""
    return get_kv().get_with_metadata(SessionStore.kv_key(session_key))


def worker_session(user_id, *, email="ann@example.com", ttl_ms=3_600_000, session_id=None):
    """Store a session as Workers session code does (``{userId, email, createdAt, expiresAt}`` under a
    ``crypto.randomUUID()`` id); return ``(id, value)``."""
    now = int(time.time() * 1000)
    session_id = session_id or str(uuid.uuid4())
    value = {"userId": user_id, "email": email, "createdAt": now, "expiresAt": now + ttl_ms}
    get_kv().put(SessionStore.kv_key(session_id), json.dumps(value), expiration_ttl=3600)
    return session_id, value


def populate(fmt):
    """Fill the namespace as a live site does; return the superuser and every session id handed out."""
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    ann = get_user_model().objects.create_user("ann", "ann@example.com", "pw")
    browser, visitor = Client(), Client()
    browser.get(f"/login/{admin.pk}/")
    browser.get("/bump/")
    visitor.get("/bump/")  # an anonymous session holding data
    ids = [browser.cookies["sessionid"].value, visitor.cookies["sessionid"].value,
           issue_token(None, admin), issue_token(None, ann)]
    if fmt == "json":
        ids.append(worker_session(str(admin.pk), email="w@example.com")[0])
    return admin, ids


def logged_in_with(candidate):
    """Return the user pks a cookie and a bearer token equal to ``candidate`` are served as (None: anonymous)."""
    cookie = Client().get("/whoami/", HTTP_COOKIE=f"sessionid={candidate}")
    bearer = Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {candidate}")
    return cookie.json()["user"], (bearer.json().get("user") if bearer.status_code == 200 else None)


class EdgeCachedKV(LocalKV):
    """KV as a Cloudflare location serves it: a value or a listing read once is served from its cache after a
    delete."""

    def __init__(self, path):
        super().__init__(path)
        self.edge = {}

    def get(self, key):
        if key not in self.edge:
            self.edge[key] = super().get(key)
        return self.edge[key]

    def list_keys(self, prefix=None, limit=1000, cursor=None):
        listing = ("list", prefix, limit, cursor)
        if listing not in self.edge:
            self.edge[listing] = super().list_keys(prefix=prefix, limit=limit, cursor=cursor)
        return self.edge[listing]


def edge_cached_settings(tmp_path):
    """Return a CFKV setting whose default alias is an EdgeCachedKV."""
    return {"default": {"BACKEND": f"{EdgeCachedKV.__module__}.EdgeCachedKV",
                        "OPTIONS": {"path": str(tmp_path / "kv.sqlite3")}}}


class OnItsOwnEmulator:
    """For a test class: the "default" alias is an emulator of the class's own, over HTTP, for all its tests."""

    @classmethod
    def setUpClass(cls):
        cls.emulator = RunningEmulator()
        cls.addClassCleanup(cls.emulator.stop)
        cls._cfkv = override_settings(CFKV={"default": cls.emulator.alias_settings()})
        cls._cfkv.enable()
        cls.addClassCleanup(cls._cfkv.disable)
        super().setUpClass()
