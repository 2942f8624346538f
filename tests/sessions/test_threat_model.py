"""What the threat model (docs/explanation/security.md) says a namespace writer CAN do, from the writer's side.

The "cannot" half lives with each feature's tests (the threat model names them); these
tests keep the "can" half honest, so the documentation never promises more
than the code gives.
"""

import json
import time

import pytest
from django.test import Client

from django_cfkv import get_kv
from django_cfkv.sessions import SessionStore, memory, revoke_all_sessions, user_sessions

from .helpers import logged_in_with, populate

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]


def forged_json_session(user_id):
    now = int(time.time() * 1000)
    return json.dumps({"userId": str(user_id), "createdAt": now, "expiresAt": now + 3_600_000})


def test_a_namespace_writer_can_forge_a_json_session_for_any_user(site):
    site.SESSION_CFKV_FORMAT = "json"
    admin, _ = populate("json")
    chosen = "writerchosenid0123456789abcdefgh"
    get_kv().put(SessionStore.kv_key(chosen), forged_json_session(admin.pk))
    assert logged_in_with(chosen) == (admin.pk, admin.pk)


def test_a_namespace_writer_cannot_forge_a_signed_session(site):
    admin, _ = populate("signed")
    chosen = "writerchosenid0123456789abcdefgh"
    get_kv().put(SessionStore.kv_key(chosen), forged_json_session(admin.pk))
    assert logged_in_with(chosen) == (None, None)


def test_a_namespace_writer_can_put_back_a_signed_session_it_read_before_a_logout(site):
    admin, ids = populate("signed")
    kv, key = get_kv(), SessionStore.kv_key(ids[0])
    kept = kv.get(key)  # read before the logout
    SessionStore(ids[0]).delete()
    memory.recently_deleted.clear()  # as another process, which has not seen this logout
    assert logged_in_with(ids[0]) == (None, None)
    kv.put(key, kept)  # replayed under its own key, before its signed expiry
    assert logged_in_with(ids[0]) == (admin.pk, admin.pk)


def test_a_namespace_writer_can_hide_a_session_from_its_users_list(site, user):
    """An index entry is a key like any other: deleted, its session is neither listed nor signed out everywhere."""
    browser = Client()
    browser.get(f"/login/{user.pk}/")
    kv = get_kv()
    kv.delete_many([info.name for info in kv.iter_keys(prefix="session:user:")])
    assert user_sessions(user) == [] and revoke_all_sessions(user) == 0
    assert browser.get("/whoami/").json()["user"] == user.pk


def test_read_access_sees_each_users_devices_networks_and_times_but_not_who(site, user, other):
    for who in (user, user, other):
        Client(HTTP_USER_AGENT="curl/8.5.0", REMOTE_ADDR="203.0.113.9").get(f"/login/{who.pk}/")
    owners = {}
    for info in get_kv().iter_keys(prefix="session:user:"):
        owner = info.name.split(":")[2]
        owners.setdefault(owner, []).append(info.metadata)
    assert sorted(len(entries) for entries in owners.values()) == [1, 2]  # who has how many sessions
    assert all(meta["device"] == "curl" and meta["where"] == "203.0.113.9" and meta["seen"]
               for entries in owners.values() for meta in entries)
    assert not ({str(user.pk), str(other.pk)} & set(owners))  # but not which user: an HMAC keyed from SECRET_KEY
