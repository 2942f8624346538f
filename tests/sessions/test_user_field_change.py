"""A user whose SESSION_CFKV_USER_FIELD value changes: their index follows it, so every session of theirs stays
in their list and in "Sign out everywhere", and none is left under the former value for its next holder."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from django_cfkv import get_kv
from django_cfkv.exceptions import KVError
from django_cfkv.sessions import SessionStore, hashed_id, index, revoke_all_sessions, user_sessions

from .helpers import spent, worker_session

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def by_email(settings, tmp_path):
    """Users named by email, on a namespace of each test's own (the emulator's, where a test asks for it)."""
    settings.SESSION_CFKV_USER_FIELD = "email"
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}


def signed_in(user):
    client = Client()
    client.get(f"/login/{user.pk}/")
    assert client.get("/whoami/").json()["user"] == user.pk
    return client


def index_entries():
    return [info.name for info in get_kv().list_keys(prefix=SessionStore.key_prefix() + index.USER_SEGMENT).keys]


def test_a_hijacker_who_changes_the_email_is_still_signed_out_everywhere(user):
    owner, hijacker = signed_in(user), signed_in(user)
    hijacker_user = get_user_model().objects.get(pk=user.pk)
    hijacker_user.email = "mallory@example.net"
    hijacker_user.save()
    assert len(user_sessions(hijacker_user)) == 2  # both sessions, signed in still, listed under the new value
    assert hijacker.get("/whoami/").json()["user"] == user.pk
    assert revoke_all_sessions(hijacker_user) == 2
    assert hijacker.get("/whoami/").json()["user"] is None
    assert owner.get("/whoami/").json()["user"] is None
    assert index_entries() == []


def test_the_former_values_next_holder_sees_none_of_the_sessions(user):
    signed_in(user)
    user.email = "ann@new.example.com"
    user.save()
    newcomer = get_user_model().objects.create_user("newcomer", "ann@example.com", "pw")
    assert user_sessions(newcomer) == []
    assert revoke_all_sessions(newcomer) == 0
    assert len(user_sessions(user)) == 1


def test_in_the_json_format_sessions_naming_the_former_value_are_deleted(settings, user):
    settings.SESSION_CFKV_FORMAT = "json"
    browser = signed_in(user)
    worker_id, _ = worker_session("ann@example.com")  # a Worker's session, with no auth hash of Django's
    worker_ref = index.entry_key(SessionStore.key_prefix(), "ann@example.com", hashed_id(worker_id))
    get_kv().put(worker_ref, b"", expiration_ttl=3600,
                 metadata={"kind": "session", "expires": 4_000_000_000, "via": "bearer"})
    user.email = "ann@new.example.com"
    user.save()
    assert get_kv().get(SessionStore.kv_key(worker_id)) is None
    assert get_kv().get(SessionStore.kv_key(browser.cookies["sessionid"].value)) is None
    assert index_entries() == []
    # The former value's next holder is not signed in by a session that still named it.
    newcomer = get_user_model().objects.create_user("newcomer", "ann@example.com", "pw")
    browser.cookies["sessionid"] = worker_id
    assert browser.get("/whoami/").json()["user"] is None
    assert user_sessions(newcomer) == []


def test_a_move_costs_a_listing_a_bulk_write_and_a_bulk_delete(emu, cfkv_calls, user):
    signed_in(user), signed_in(user)
    spent(cfkv_calls)
    user.email = "ann@new.example.com"
    user.save()
    assert spent(cfkv_calls) == {"list": 1, "bulk_put": 1, "bulk_delete": 1}
    user.first_name = "Ann"
    user.save()  # the same value
    user.save(update_fields=["last_login"])  # as login() saves
    get_user_model().objects.create_user("cat", "cat@example.com", "pw")
    assert spent(cfkv_calls) == {}


def test_a_kv_failure_stops_the_change_and_loses_nothing(emu, user):
    signed_in(user)
    user.email = "ann@new.example.com"
    with emu.faults(rate_503=1.0), pytest.raises(KVError):
        user.save()
    assert get_user_model().objects.get(pk=user.pk).email == "ann@example.com"
    user.save()  # tried again once KV answers
    assert get_user_model().objects.get(pk=user.pk).email == "ann@new.example.com"
    assert len(user_sessions(user)) == 1


def test_nothing_moves_when_users_are_named_by_pk_or_not_indexed(settings, emu, cfkv_calls, user):
    settings.SESSION_CFKV_USER_FIELD = "pk"
    signed_in(user)
    spent(cfkv_calls)
    user.email = "ann@new.example.com"
    user.save()
    settings.SESSION_CFKV_USER_FIELD, settings.SESSION_CFKV_USER_INDEX = "email", False
    user.email = "ann@other.example.com"
    user.save()
    assert spent(cfkv_calls) == {}
