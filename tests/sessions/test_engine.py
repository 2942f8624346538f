"""The KV session engine beyond Django's contract: keys, forged and tampered cookies, expiry,
the JSON format, API-call economy and failures."""

import json
import logging
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management import call_command
from django.test import Client

from django_cfkv import get_kv
from django_cfkv.exceptions import KVError, KVRateLimitError
from django_cfkv.sessions import SessionStore, decode_value, hashed_id

from .helpers import edge_cached_settings, spent, stored

pytestmark = pytest.mark.urls("tests.sessions.urls")


# Keys, metadata, TTL


def test_key_layout_metadata_and_ttl(settings):
    s = SessionStore()
    s["a"] = 1
    s.save()
    entry = stored(s.session_key)
    expected = time.time() + settings.SESSION_COOKIE_AGE
    assert entry.metadata["kind"] == "session"
    assert abs(entry.metadata["expires"] - expected) < 5
    assert abs(entry.expiration - expected) < 5
    assert len(s.session_key) == 32


def test_custom_key_prefix(settings):
    settings.SESSION_CFKV_KEY_PREFIX = "app1:s:"
    s = SessionStore()
    s["a"] = 1
    s.save()
    names = [info.name for info in get_kv().iter_keys()]
    assert "app1:s:" + hashed_id(s.session_key) in names
    assert not any(s.session_key in name for name in names)
    assert SessionStore(s.session_key)["a"] == 1


def test_short_session_gets_kv_ttl_floor_and_exact_expiry_on_load(clock):
    s = SessionStore()
    s["a"] = 1
    s.set_expiry(5)
    s.save()
    entry = stored(s.session_key)
    assert entry.expiration >= time.time() + 55  # KV's 60 s floor, for cleanup only
    assert SessionStore(s.session_key).get("a") == 1
    clock(6)
    late = SessionStore(s.session_key)
    assert late.get("a") is None
    assert late.session_key is None  # never reused: a save draws a new key


def test_absolute_expiry_ends_a_session_however_often_it_is_refreshed(settings, clock):
    settings.SESSION_CFKV_REFRESH_INTERVAL = 0  # every save writes the expiry
    s = SessionStore()
    s["a"] = 1
    s.set_absolute_expiry(100)
    s.save()
    for used in (30, 60, 90):
        clock(30)
        store = SessionStore(s.session_key)
        assert store["a"] == 1 and store.get_expiry_age() <= 100 - used + 1
        store.save()
    clock(11)  # 101 s after it began
    assert SessionStore(s.session_key).load() == {}


def test_must_create_on_an_existing_key_raises_create_error():
    s = SessionStore()
    s.save()
    with pytest.raises(CreateError):
        SessionStore(s.session_key).save(must_create=True)


# Forged cookies (more at the front door: test_bad_input.py) and tampered values


def test_uuid_keys_are_accepted_in_the_json_format_only(settings):
    uuid_key = "123e4567-e89b-12d3-a456-426614174000"
    assert SessionStore(uuid_key).session_key is None
    settings.SESSION_CFKV_FORMAT = "json"
    assert SessionStore(uuid_key).session_key == uuid_key
    assert SessionStore(uuid_key.upper()).session_key is None


TAMPERINGS = {
    # A few bytes of the signed value changed: its signature no longer matches.
    "resigned": lambda raw: raw[:-4] + (b"AAAA" if not raw.endswith(b"AAAA") else b"BBBB"),
    # Rewritten by someone who can write the namespace but has no SECRET_KEY: plain JSON naming a user.
    "unsigned": lambda raw: b'{"data": {"_auth_user_id": "1"}, "expiresAt": 99999999999999}',
}


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_tampered_signed_value_is_an_empty_session_and_logged(caplog, tamper):
    s = SessionStore()
    s["role"] = "admin"
    s.save()
    kv, key = get_kv(), SessionStore.kv_key(s.session_key)
    kv.put(key, TAMPERINGS[tamper](kv.get(key)))
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        assert SessionStore(s.session_key).load() == {}
    assert "Session data corrupted" in caplog.text


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"data": 5}', b'{"expiresAt": "soon"}', b"\xff\xfe"])
def test_unreadable_json_value_is_an_empty_session_and_logged(settings, caplog, raw):
    settings.SESSION_CFKV_FORMAT = "json"
    key = "a" * 32
    get_kv().put(SessionStore.kv_key(key), raw)
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        assert dict(SessionStore(key).items()) == {}
    assert "Session data corrupted" in caplog.text


# The JSON format


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_text_no_utf8_can_hold_is_saved_and_loaded_back(settings, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    session = SessionStore()
    session["q"] = json.loads('"\\ud800"')  # a lone surrogate, as a request's JSON body can carry
    session.save()
    assert SessionStore(session.session_key).load()["q"] == "\ud800"


@pytest.mark.django_db
def test_json_value_is_what_a_worker_reads(settings):
    settings.SESSION_CFKV_FORMAT = "json"
    user = get_user_model().objects.create_user("ann", "ann@example.com", "pw")
    client = Client()
    client.get(f"/login/{user.pk}/")
    client.get("/bump/")
    key = client.cookies["sessionid"].value
    value = json.loads(get_kv().get(SessionStore.kv_key(key)))
    assert set(value) == {"userId", "createdAt", "expiresAt", "data"}
    assert value["userId"] == str(user.pk)  # a string, as Django's _auth_user_id is
    now_ms = time.time() * 1000
    assert value["createdAt"] <= now_ms < value["expiresAt"]
    assert abs(value["expiresAt"] - (now_ms + settings.SESSION_COOKIE_AGE * 1000)) < 5000
    assert value["data"]["n"] == 1
    assert "_auth_user_id" not in value["data"]  # userId is the one source of truth
    assert client.get("/whoami/").json()["user"] == user.pk


@pytest.mark.django_db
def test_json_user_field_email(settings):
    settings.SESSION_CFKV_FORMAT = "json"
    settings.SESSION_CFKV_USER_FIELD = "email"
    user = get_user_model().objects.create_user("bob", "bob@example.com", "pw")
    client = Client()
    client.get(f"/login/{user.pk}/")
    value = json.loads(get_kv().get(SessionStore.kv_key(client.cookies["sessionid"].value)))
    assert value["userId"] == "bob@example.com"
    assert client.get("/whoami/").json()["user"] == user.pk


def test_decode_value_for_the_cfkv_command(settings):
    s = SessionStore()
    s["a"] = 1
    s.save()
    data, expires = decode_value(get_kv().get(SessionStore.kv_key(s.session_key)))
    assert data == {"a": 1}
    assert abs(expires - (time.time() + settings.SESSION_COOKIE_AGE)) < 5
    seed = b'{"userId": 7, "email": "e@x", "createdAt": 1, "expiresAt": 2000}'
    assert decode_value(seed, format="json") == ({"userId": 7, "email": "e@x"}, 2.0)
    with pytest.raises(ValueError):
        decode_value(b"garbage")


def test_unknown_format_is_a_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.SESSION_CFKV_FORMAT = "pickle"
    with pytest.raises(ImproperlyConfigured, match="SESSION_CFKV_FORMAT"):
        SessionStore()


# API-call economy (KVClient + emulator)


@pytest.mark.django_db
def test_call_economy_per_request(emu, cfkv_calls):
    user = get_user_model().objects.create_user("cal", "c@example.com", "pw")
    client = Client()
    client.get("/bump/")
    assert spent(cfkv_calls) == {"put": 1}  # a new session: one PUT, no existence check
    client.get("/read/")
    assert spent(cfkv_calls) == {"get": 1}  # unchanged: one GET, no write
    client.get("/bump/")
    assert spent(cfkv_calls) == {"get": 1, "put": 1}  # modified: one PUT
    client.get(f"/login/{user.pk}/")
    # The new key is written once, after its entry in the user's index (the one extra write of a sign-in).
    assert spent(cfkv_calls) == {"get": 1, "delete": 1, "put": 2}
    assert client.get("/whoami/").json()["user"] == user.pk
    assert spent(cfkv_calls) == {"get": 1}
    client.get("/logout/")
    assert spent(cfkv_calls) == {"get": 1, "bulk_delete": 1}  # the session and its index entry, in one call


def test_save_every_request_refreshes_at_most_once_per_interval(emu, settings, clock, cfkv_calls):
    settings.SESSION_SAVE_EVERY_REQUEST = True
    client = Client()
    client.get("/bump/")
    cfkv_calls.reset()
    client.get("/read/")
    assert spent(cfkv_calls) == {"get": 1}
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    clock(31)
    client.get("/read/")
    assert spent(cfkv_calls) == {"get": 1, "put": 1}
    client.get("/read/")
    assert spent(cfkv_calls) == {"get": 1}


def test_clear_expired_reads_only_the_listing_and_deletes_in_bulk(emu, clock, cfkv_calls):
    live, dead = SessionStore(), SessionStore()
    live["a"] = dead["a"] = 1
    dead.set_expiry(1)
    live.save()
    dead.save()
    kv = get_kv()
    kv.put("session:foreign", b"{}")  # no metadata: left to its KV TTL
    kv.put("cache:x", b"1", metadata={"kind": "session", "expires": 0})  # outside the prefix
    clock(5)
    cfkv_calls.reset()
    call_command("clearsessions")
    assert spent(cfkv_calls) == {"list": 1, "bulk_delete": 1}
    assert kv.get(SessionStore.kv_key(dead.session_key)) is None
    assert kv.get(SessionStore.kv_key(live.session_key)) is not None
    assert kv.get("session:foreign") is not None and kv.get("cache:x") is not None


# Failures


def test_session_deleted_meanwhile_answers_400(emu):
    client = Client()
    client.get("/bump/")
    assert client.get("/delete-then-write/").status_code == 400


@pytest.fixture
def unreachable(settings):
    settings.CFKV = {"default": {"BACKEND": "cloudflare", "ACCOUNT_ID": "a", "NAMESPACE_ID": "n",
                                 "API_TOKEN": "t", "BASE_URL": "http://127.0.0.1:9/client/v4",
                                 "MAX_RETRIES": 0, "TIMEOUT": (1.0, 1.0)}}


def test_load_error_serves_an_empty_session_and_keeps_the_stored_one(unreachable, caplog):
    key = "k" * 32
    with caplog.at_level(logging.ERROR, logger="django_cfkv.sessions"):
        s = SessionStore(key)
        assert s.get("a") is None
    assert s.load_failed and "could not be loaded" in caplog.text
    s.save()  # unmodified: nothing to write, nothing lost
    s["a"] = 1
    with pytest.raises(KVError, match="not saved"):
        s.save()  # never replace the stored session with an empty stand-in
    client = Client()
    client.cookies["sessionid"] = key
    response = client.get("/read/")
    assert response.status_code == 200 and "sessionid" not in response.cookies  # cookie kept


def test_load_error_raise(unreachable, settings):
    settings.SESSION_CFKV_ON_LOAD_ERROR = "raise"
    with pytest.raises(KVError):
        SessionStore("k" * 32).load()


def test_save_error_always_raises(emu):
    emu.set_faults(rate_503=1.0)
    s = SessionStore()
    s["a"] = 1
    with pytest.raises(KVError):
        s.save()


# A session deleted elsewhere is never written back


@pytest.fixture
def near_cache(settings):
    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 300
    settings.SESSION_CFKV_REFRESH_INTERVAL = 0  # every save writes the expiry


def revoked_elsewhere_but_near_cached():
    """Return a store loaded from the near cache after another process deleted its session in KV."""
    s = SessionStore()
    s["_auth_user_id"] = "1"
    s.create()
    SessionStore(s.session_key).load()  # fills the near cache
    get_kv().delete(SessionStore.kv_key(s.session_key))  # another process's logout: no local trace
    stale = SessionStore(s.session_key)
    assert stale.load() == {"_auth_user_id": "1"}  # the documented near-cache staleness on reads
    return stale


def test_refresh_of_a_near_cached_copy_checks_kv_first(near_cache):
    stale = revoked_elsewhere_but_near_cached()
    with pytest.raises(UpdateError):
        stale.save()
    assert stored(stale.session_key) is None


def test_update_of_a_near_cached_copy_checks_kv_first(near_cache):
    stale = revoked_elsewhere_but_near_cached()
    stale["n"] = 1
    with pytest.raises(UpdateError):
        stale.save()
    assert stored(stale.session_key) is None


def test_near_cached_refresh_costs_one_get_only_when_a_write_is_due(emu, near_cache, settings, clock, cfkv_calls):
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    s = SessionStore()
    s["a"] = 1
    s.create()
    SessionStore(s.session_key).load()
    cfkv_calls.reset()
    fresh = SessionStore(s.session_key)
    fresh.load()
    fresh.save()  # no refresh due: no call at all
    assert spent(cfkv_calls) == {}
    clock(31)
    due = SessionStore(s.session_key)
    due.load()
    due.save()
    due["a"] = 2
    due.save()  # the first write's check covers this store's later writes
    assert spent(cfkv_calls) == {"get": 1, "put": 2}


def test_failed_expiry_refresh_of_a_cookie_session_keeps_the_response(emu, settings, clock, caplog):
    settings.SESSION_SAVE_EVERY_REQUEST = True
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    client = Client()
    client.get("/bump/")
    clock(31)  # a refresh is due; KV answers 429 once the view has read the session
    with caplog.at_level(logging.WARNING, logger="django_cfkv.sessions"):
        assert client.get("/read-then-kv-refuses/").json() == {"n": 1}
    assert "refresh not written" in caplog.text and "KVRateLimitError" in caplog.text
    emu.clear_faults()
    with pytest.raises(KVRateLimitError):  # a modified session still raises
        client.get("/read-then-kv-refuses/?change=1")
    emu.clear_faults()
    assert client.get("/read/").json() == {"n": 1}  # the stored session is unchanged


# A session deleted in this process reads as missing here, whatever KV serves


def test_logged_out_session_is_anonymous_here_while_kv_reads_are_stale(settings, tmp_path, user):
    settings.CFKV = edge_cached_settings(tmp_path)
    browser, copy = Client(), Client()
    browser.get(f"/login/{user.pk}/")
    copy.cookies["sessionid"] = browser.cookies["sessionid"].value  # the same cookie, another tab
    assert copy.get("/whoami/").json()["user"] == user.pk  # the edge now holds a copy
    browser.get("/logout/")
    assert get_kv().get(SessionStore.kv_key(copy.cookies["sessionid"].value)) is not None  # still served
    assert copy.get("/whoami/").json()["user"] is None


def test_save_of_a_session_that_is_gone_before_it_was_read_is_an_update_error():
    store = SessionStore("gone" * 8)  # a well-formed key under which nothing is stored
    with pytest.raises(UpdateError):
        store.save()  # its load finds nothing: there is no session to update
    assert store.session_key is None


def test_a_deleted_key_created_anew_on_purpose_is_read_again():
    key = "k" * 32
    store = SessionStore(key)
    store.save(must_create=True)
    store.delete()
    assert not SessionStore().exists(key)
    SessionStore(key).save(must_create=True)  # save() without a load: written under this key
    assert SessionStore().exists(key)


# login() on a session a Worker wrote


def worker_cookie(user_id, email):
    """Store a session as a Worker does, created long ago; return a client whose cookie holds its id."""
    key = "0b6f1c2e-1111-4222-8333-444455556666"
    get_kv().put(SessionStore.kv_key(key), json.dumps(
        {"userId": user_id, "email": email, "createdAt": 1, "expiresAt": (time.time() + 3600) * 1000}))
    client = Client()
    client.cookies["sessionid"] = key
    return client


@pytest.mark.django_db
def test_login_on_a_worker_session_for_nobody_drops_its_fields(settings):
    settings.SESSION_CFKV_FORMAT = "json"
    user = get_user_model().objects.create_user("new", "new@example.com", "pw")
    client = worker_cookie(999999, "old@example.com")  # userId names no user here
    client.get(f"/login/{user.pk}/")
    value = json.loads(get_kv().get(SessionStore.kv_key(client.cookies["sessionid"].value)))
    assert value["userId"] == str(user.pk) and "email" not in value
    assert value["createdAt"] > 1


@pytest.mark.django_db
def test_cycle_key_for_the_same_user_keeps_the_worker_fields(settings):
    settings.SESSION_CFKV_FORMAT = "json"
    user = get_user_model().objects.create_user("ann", "ann@example.com", "pw")
    client = worker_cookie(user.pk, "ann@example.com")
    session = SessionStore(client.cookies["sessionid"].value)
    session.cycle_key()  # what update_session_auth_hash() does after a password change
    session.save()
    value = json.loads(get_kv().get(SessionStore.kv_key(session.session_key)))
    assert value["userId"] == user.pk and value["email"] == "ann@example.com" and value["createdAt"] == 1
