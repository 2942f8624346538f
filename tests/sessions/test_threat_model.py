"""What the threat model (docs/explanation/security.md) says a namespace writer CAN do, from the writer's side.

The "cannot" half lives with each feature's tests (the threat model names them); these
tests keep the "can" half honest, so the documentation never promises more
than the code gives.
"""

import json
import time

import pytest

from django_cfkv import get_kv
from django_cfkv.sessions import SessionStore, memory

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
