"""BearerSessionMiddleware, issue_token/revoke_token and Worker-made sessions, through Django's test client."""

import json
import logging
import time

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.signals import user_logged_in
from django.test import AsyncClient, Client

from django_cfkv import get_kv, sessions
from django_cfkv.exceptions import KVRateLimitError
from django_cfkv.sessions import SessionStore, issue_token, revoke_token

from .helpers import assert_invalid_token, auth, edge_cached_settings, spent, worker_session

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django_cfkv.bearer.BearerSessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture(autouse=True)
def bearer_settings(settings):
    settings.MIDDLEWARE = MIDDLEWARE


def test_valid_token_authenticates_without_cookies(user):
    token = issue_token(None, user)
    assert len(token) == 32 and token.isalnum() and token.islower()
    response = Client().get("/whoami/", **auth(token))
    assert response.json() == {"user": user.pk, "n": None, "bearer": True}
    assert "sessionid" not in response.cookies
    assert "Authorization" in response["Vary"]


def test_token_writes_stay_in_the_token_session_and_set_no_cookie(user):
    token = issue_token(None, user)
    client = Client()
    response = client.get("/bump/", **auth(token))
    assert response.json() == {"n": 1} and "sessionid" not in response.cookies
    assert client.get("/whoami/", **auth(token)).json()["n"] == 1
    assert client.get("/whoami/").json() == {"user": None, "n": None, "bearer": False}


def test_header_wins_over_the_cookie_which_is_not_read(emu, user, other, cfkv_calls):
    client = Client()
    client.get(f"/login/{other.pk}/")  # a cookie session for another user
    token = issue_token(None, user)
    cfkv_calls.reset()
    assert client.get("/whoami/", **auth(token)).json()["user"] == user.pk
    assert cfkv_calls.counts == {"get": 1}  # the token's session only
    assert client.get("/whoami/").json()["user"] == other.pk  # the cookie flow is untouched


def test_issue_token_does_what_login_does(user, rf):
    seen = []
    user_logged_in.connect(lambda sender, request, user, **kw: seen.append(user), weak=False, dispatch_uid="t")
    try:
        request = rf.get("/")
        first, second = issue_token(request, user), issue_token(request, user)
    finally:
        user_logged_in.disconnect(dispatch_uid="t")
    assert seen == [user, user] and request.user == user
    assert first != second  # a new session each time
    user.refresh_from_db()
    assert user.last_login is not None
    stored = sessions.SessionStore(first)
    assert stored["_auth_user_id"] == str(user.pk)
    assert stored["_auth_user_hash"] == user.get_session_auth_hash()


def test_password_change_invalidates_tokens(user):
    token = issue_token(None, user)
    user.set_password("new")
    user.save()
    client = Client()
    assert client.get("/whoami/", **auth(token)).json()["user"] is None  # flushed by Django's hash check
    assert_invalid_token(client.get("/whoami/", **auth(token)))


def test_expired_token(user, clock):
    token = issue_token(None, user, max_age=30)
    assert Client().get("/whoami/", **auth(token)).json()["user"] == user.pk
    clock(31)
    assert_invalid_token(Client().get("/whoami/", **auth(token)))


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_max_age_is_an_absolute_lifetime_however_often_the_token_is_used(settings, user, clock, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30  # each use would slide the expiry
    token = issue_token(None, user, max_age=120)
    client = Client()
    for _ in range(2):
        clock(59)  # used every 59 s: at 59 s and 118 s
        assert client.get("/whoami/", **auth(token)).json()["user"] == user.pk
    clock(3)  # 121 s after it was issued
    assert_invalid_token(client.get("/whoami/", **auth(token)))


def test_a_session_ends_at_its_absolute_expiry_even_if_a_worker_slid_it(json_format, user, clock):
    token = issue_token(None, user, max_age=120)
    kv, key = get_kv(), SessionStore.kv_key(token)
    value = json.loads(kv.get(key))
    assert value["expiresAt"] <= value["absoluteExpiresAt"] <= (time.time() + 121) * 1000
    value["expiresAt"] += 3_600_000  # a Worker's refresh() that ignores absoluteExpiresAt
    kv.put(key, json.dumps(value))
    assert Client().get("/whoami/", **auth(token)).json()["user"] == user.pk
    clock(121)
    assert_invalid_token(Client().get("/whoami/", **auth(token)))


def test_refresh_within_the_absolute_lifetime_stops_at_its_end(settings, user, clock):
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    token = issue_token(None, user, max_age=3600)
    clock(1800)
    store = SessionStore(token)
    store.set_expiry(7200)  # a longer idle age cannot carry the session past its end
    store.save()
    _, expires = sessions.decode_value(get_kv().get(SessionStore.kv_key(token)))
    assert expires == pytest.approx(time.time() + 3600, abs=2)  # the real clock: issued + max_age
    assert 1795 <= store.get_expiry_age() <= 1801


def test_token_lifetime_defaults_to_session_cookie_age(user, settings):
    token = issue_token(None, user)
    _, expires = sessions.decode_value(get_kv().get(SessionStore.kv_key(token)))
    assert abs(expires - (time.time() + settings.SESSION_COOKIE_AGE)) < 5


def test_unknown_and_altered_tokens(user):
    token = issue_token(None, user)
    altered = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert_invalid_token(Client().get("/whoami/", **auth(altered)))
    assert_invalid_token(Client().get("/whoami/", **auth("z" * 32)))


def test_tampered_stored_value(user):
    token = issue_token(None, user)
    kv = get_kv()
    raw = kv.get(SessionStore.kv_key(token))
    kv.put(SessionStore.kv_key(token), raw[:-4] + (b"AAAA" if not raw.endswith(b"AAAA") else b"BBBB"))
    assert_invalid_token(Client().get("/whoami/", **auth(token)))


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer ../../x", "Bearer a b c d e f g h",
                                    "Bearer " + "A" * 32, "Bearer " + "a" * 41, "bearer \x00aaaaaaaaa",
                                    "Bearer 123e4567-e89b-12d3-a456-426614174000"])
def test_malformed_token_is_401_without_kv_calls_or_cookie_fallback(emu, user, header, cfkv_calls):
    client = Client()
    client.get(f"/login/{user.pk}/")  # a valid cookie must not rescue a bad header
    cfkv_calls.reset()
    assert_invalid_token(client.get("/whoami/", HTTP_AUTHORIZATION=header))
    assert cfkv_calls.total == 0


def test_other_schemes_and_no_header_keep_the_cookie_flow(user):
    client = Client()
    client.get(f"/login/{user.pk}/")
    assert client.get("/whoami/").json()["user"] == user.pk
    assert client.get("/whoami/", HTTP_AUTHORIZATION="Basic YTpi").json()["user"] == user.pk


def test_csrf_exempt_with_the_header_only(user):
    token = issue_token(None, user)
    client = Client(enforce_csrf_checks=True)
    assert client.post("/post-bump/", **auth(token)).status_code == 200
    client.get(f"/login/{user.pk}/")
    assert client.post("/post-bump/").status_code == 403  # cookie requests keep CSRF checks


def test_logout_and_revoke(user):
    client = Client()
    token = issue_token(None, user)
    assert client.get("/logout/", **auth(token)).status_code == 200
    assert_invalid_token(client.get("/whoami/", **auth(token)))
    token = issue_token(None, user)
    revoke_token(token)
    assert_invalid_token(client.get("/whoami/", **auth(token)))
    revoke_token("../not-a-token")  # names no session: nothing to do


def test_sliding_expiry_writes_at_most_once_per_interval(emu, settings, user, clock, cfkv_calls):
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    token = issue_token(None, user)
    client = Client()
    cfkv_calls.reset()
    client.get("/read/", **auth(token))
    assert spent(cfkv_calls) == {"get": 1}
    clock(31)
    client.get("/read/", **auth(token))
    assert spent(cfkv_calls) == {"get": 1, "put": 2}  # the token and its entry in the user's index
    _, expires = sessions.decode_value(get_kv().get(SessionStore.kv_key(token)))
    assert expires > time.time() + settings.SESSION_COOKIE_AGE + 25  # slid forward by the clock
    cfkv_calls.reset()
    client.get("/read/", **auth(token))
    assert spent(cfkv_calls) == {"get": 1}


def test_async_stack(user):
    token = issue_token(None, user)

    async def run():
        client = AsyncClient()
        ok = await client.get("/awhoami/", headers={"Authorization": f"Bearer {token}"})
        bad = await client.get("/awhoami/", headers={"Authorization": "Bearer " + "q" * 32})
        return ok, bad

    ok, bad = async_to_sync(run)()
    assert ok.json() == {"user": user.pk, "n": None, "bearer": True}
    assert_invalid_token(bad)


# Sessions a Worker wrote (JSON format)


@pytest.fixture
def json_format(settings):
    settings.SESSION_CFKV_FORMAT = "json"


def test_worker_made_session_authenticates_and_keeps_worker_fields(json_format, user):
    key, seeded = worker_session(user.pk)
    client = Client()
    assert client.get("/whoami/", **auth(key)).json() == {"user": user.pk, "n": None, "bearer": True}
    assert client.get("/bump/", **auth(key)).json() == {"n": 1}
    value = json.loads(get_kv().get(SessionStore.kv_key(key)))
    assert value["userId"] == user.pk and value["email"] == seeded["email"]
    assert value["createdAt"] == seeded["createdAt"]
    assert value["data"]["n"] == 1 and value["expiresAt"] >= seeded["expiresAt"]
    assert client.get("/whoami/", **auth(key)).json()["n"] == 1


def test_worker_made_session_by_email(json_format, settings, user):
    settings.SESSION_CFKV_USER_FIELD = "email"
    key, _ = worker_session(user.email)
    assert Client().get("/whoami/", **auth(key)).json()["user"] == user.pk


def test_worker_made_session_expired_or_for_nobody(json_format, user):
    expired, _ = worker_session(user.pk, ttl_ms=-1000)
    assert_invalid_token(Client().get("/whoami/", **auth(expired)))
    nobody, _ = worker_session(999999)
    assert Client().get("/whoami/", **auth(nobody)).json()["user"] is None


@pytest.mark.parametrize("value", ["[" * 100_000, '{"userId": "1", "expiresAt": 1' + "0" * 400 + "}",
                                   '{"userId": "1", "createdAt": -1' + "0" * 400 + "}"],
                         ids=["nested", "huge-expiry", "huge-created"])
def test_a_planted_session_value_a_float_cannot_hold_or_json_cannot_nest_is_no_session(json_format, user, value):
    """A namespace writer's value at a session's key: as no session (a cookie gets a new one, a token a 401),
    never a RecursionError or OverflowError (a 500 on every request that carries it)."""
    token = "plantedsessionkey0123456789abcde"
    get_kv().put(SessionStore.kv_key(token), value)
    client = Client(raise_request_exception=False)
    assert_invalid_token(client.get("/whoami/", **auth(token)))
    client.cookies["sessionid"] = token
    response = client.get("/whoami/")
    assert response.status_code == 200 and response.json()["user"] is None


def inexact_user_ids(pk):
    """Worker-written userId values that some lookup would coerce into the user with this integer pk."""
    return [True if pk == 1 else False, pk + 0.0, pk + 0.9, f"0{pk}", f" {pk}", f"{pk} ", f"+{pk}",
            f"{pk}.0", chr(0xFF10 + pk) if pk < 10 else f"\uff11{pk}", [pk], {"id": pk}, 10**30, -(10**30)]


def test_worker_user_id_names_a_user_only_in_its_exact_form(json_format, user, other):
    assert user.pk == 1  # `true` is 1 to a database
    for pk in (user.pk, other.pk):
        for user_id in (pk, str(pk)):  # the JSON integer, or the string Django writes
            key, _ = worker_session(user_id)
            assert Client().get("/whoami/", **auth(key)).json()["user"] == pk, user_id
        for user_id in inexact_user_ids(pk):
            key, _ = worker_session(user_id)
            response = Client().get("/whoami/", **auth(key))
            assert response.status_code == 200 and response.json()["user"] is None, user_id


def test_inexact_user_id_beside_django_auth_data_is_anonymous_never_a_500(json_format, user):
    client = Client(raise_request_exception=False)
    for user_id in inexact_user_ids(user.pk):
        token = issue_token(None, user)  # backend and auth hash in data: Django's own check follows
        kv, key = get_kv(), SessionStore.kv_key(token)
        value = json.loads(kv.get(key))
        value["userId"] = user_id
        kv.put(key, json.dumps(value))
        response = client.get("/whoami/", **auth(token))
        assert response.status_code == 200 and response.json()["user"] is None, user_id


def test_worker_user_id_by_email_must_match_exactly(json_format, settings, user):
    settings.SESSION_CFKV_USER_FIELD = "email"
    for user_id in ("ANN@example.com", " ann@example.com", "ann@example.com ", ["ann@example.com"], 1):
        key, _ = worker_session(user_id)
        assert Client().get("/whoami/", **auth(key)).json()["user"] is None, user_id


def test_django_writes_user_id_as_a_string(json_format, user):
    token = issue_token(None, user)
    assert json.loads(get_kv().get(SessionStore.kv_key(token)))["userId"] == str(user.pk)


def test_worker_changing_user_id_in_place_logs_the_session_out(json_format, user, other):
    token = issue_token(None, user)
    kv = get_kv()
    value = json.loads(kv.get(SessionStore.kv_key(token)))
    value["userId"] = other.pk  # Django's auth hash in data is bound to `user`
    kv.put(SessionStore.kv_key(token), json.dumps(value))
    assert Client().get("/whoami/", **auth(token)).json()["user"] is None


def test_refused_token_leaves_the_cookie_session_untouched(emu, settings, user, cfkv_calls):
    settings.SESSION_SAVE_EVERY_REQUEST = True
    client = Client()
    client.get(f"/login/{user.pk}/")
    cfkv_calls.reset()
    assert_invalid_token(client.get("/whoami/", **auth("z" * 32)))
    assert cfkv_calls.counts == {"get": 1}  # the token's lookup, never the cookie's session


def test_revoking_the_own_token_is_not_undone_by_the_refresh(user, clock, settings):
    token = issue_token(None, user)
    clock(settings.SESSION_COOKIE_AGE / 2)  # the end-of-request refresh is due
    assert Client().get("/revoke-own/", **auth(token)).status_code == 200
    assert get_kv().get(SessionStore.kv_key(token)) is None
    assert_invalid_token(Client().get("/whoami/", **auth(token)))


def test_token_revoked_elsewhere_is_not_brought_back_from_the_near_cache(user, settings, clock):
    settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = 300
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    token = issue_token(None, user)
    client = Client()
    assert client.get("/whoami/", **auth(token)).json()["user"] == user.pk  # near-cached now
    get_kv().delete(SessionStore.kv_key(token))  # revoked by another process
    clock(31)  # the end-of-request refresh is due
    assert client.get("/whoami/", **auth(token)).status_code == 400  # SessionInterrupted
    assert get_kv().get(SessionStore.kv_key(token)) is None


@pytest.fixture
def stale_reads(settings, tmp_path):
    settings.CFKV = edge_cached_settings(tmp_path)


def test_token_revoked_here_is_refused_here_while_kv_reads_are_stale(stale_reads, user):
    token = issue_token(None, user)
    client = Client()
    assert client.get("/whoami/", **auth(token)).json()["user"] == user.pk  # the edge now holds a copy
    revoke_token(token)
    assert get_kv().get(SessionStore.kv_key(token)) is not None  # KV still serves the copy
    assert_invalid_token(client.get("/whoami/", **auth(token)))


def test_token_logged_out_here_is_refused_here_while_kv_reads_are_stale(stale_reads, user):
    token = issue_token(None, user)
    client = Client()
    assert client.get("/whoami/", **auth(token)).json()["user"] == user.pk
    assert client.get("/logout/", **auth(token)).status_code == 200
    assert_invalid_token(client.get("/whoami/", **auth(token)))


# The store unreachable: a 503 with Retry-After, never a 500


@pytest.mark.parametrize("on_load_error", ["empty", "raise"])
def test_store_unreachable_on_load_is_503_with_retry_after(emu, settings, user, on_load_error):
    settings.SESSION_CFKV_ON_LOAD_ERROR = on_load_error
    token = issue_token(None, user)
    emu.set_faults(rate_503=1.0)
    response = Client().get("/whoami/", **auth(token))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"] == "temporarily_unavailable" and "sessionid" not in response.cookies


def test_failed_expiry_refresh_keeps_the_response_and_is_logged(emu, settings, user, clock, caplog):
    settings.SESSION_CFKV_REFRESH_INTERVAL = 30
    token = issue_token(None, user)
    kv = get_kv()
    before = kv.get(SessionStore.kv_key(token))
    clock(31)  # a refresh is due; KV answers 429 once the view has read the session
    with caplog.at_level(logging.WARNING, logger="django_cfkv.sessions"):
        response = Client().get("/read-then-kv-refuses/", **auth(token))
    assert response.status_code == 200 and response.json() == {"n": None}
    assert "refresh not written" in caplog.text and "KVRateLimitError" in caplog.text
    emu.clear_faults()
    with pytest.raises(KVRateLimitError):  # a real change is never dropped silently
        Client().get("/read-then-kv-refuses/?change=1", **auth(token))
    emu.clear_faults()
    assert kv.get(SessionStore.kv_key(token)) == before
