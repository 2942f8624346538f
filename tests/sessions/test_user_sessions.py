"""A user's sessions: listed from the user's own index, signed out one at a time, the others, or all.

Each behaviour runs on the embedded store, on the emulator over HTTP and on the Worker gateway under
Miniflare (``backend`` fixture). Call counts are taken over HTTP (the emulator).
"""

import json
import re
import time
from pathlib import Path

import pytest
import requests
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from django_cfkv import get_kv, maintenance
from django_cfkv.exceptions import CFKVConfigurationError
from django_cfkv.sessions import (
    SessionStore,
    arevoke_all_sessions,
    arevoke_other_sessions,
    arevoke_session,
    auser_sessions,
    hashed_id,
    issue_token,
    revoke_all_sessions,
    revoke_other_sessions,
    revoke_session,
    revoke_token,
    user_index_key,
    user_sessions,
)
from tests.gateway.server import GatewayServer

from .helpers import edge_cached_settings, logged_in_with, spent
from .test_worker import WORKER, bearer

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django_cfkv.bearer.BearerSessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture(scope="module")
def gateway():
    """The Worker gateway, with the sharing Worker (tests/workers/session-store.mjs) on the same namespace."""
    with GatewayServer(extra_worker=WORKER, extra_binding="SESSIONS",
                       extra_vars={"SESSION_KEY_LAYOUT": "hashed", "USER_INDEX_KEY": user_index_key()}) as server:
        yield server


@pytest.fixture(params=["local", "emulator", "gateway"])
def backend(request, settings, tmp_path):
    """Sessions on a fresh namespace: the embedded store, the emulator over HTTP, or the Worker gateway."""
    settings.MIDDLEWARE = MIDDLEWARE
    if request.param == "local":
        settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    elif request.param == "emulator":
        settings.CFKV = {"default": request.getfixturevalue("cfkv_emulator").alias_settings(MAX_RETRIES=0)}
    else:
        settings.CFKV = {"default": request.getfixturevalue("gateway").settings()}
        get_kv().delete_many([info.name for info in get_kv().iter_keys()])  # the module shares one namespace
    return request.param


def browser(user, agent=FIREFOX, address="203.0.113.9", **headers):
    """Return a test client signed in as ``user`` from a client with this User-Agent and address."""
    client = Client(HTTP_USER_AGENT=agent, REMOTE_ADDR=address, **headers)
    client.get(f"/login/{user.pk}/")
    return client


def request_of(client):
    """Return a request object carrying ``client``'s session, as a view would see it."""
    session = SessionStore(client.cookies["sessionid"].value)
    return type("Request", (), {"session": session, "user": None})()


def ref_of(client):
    return hashed_id(client.cookies["sessionid"].value)


def entry_names():
    return sorted(info.name for info in get_kv().iter_keys(prefix="session:user:"))


# Listing


def test_a_sign_in_is_listed_with_its_client(backend, user):
    laptop = browser(user)
    token = issue_token(None, user)
    sessions = user_sessions(user, request=request_of(laptop))
    assert len(sessions) == 2
    cookie, bearer = sessions  # the request's own first
    assert cookie.current and cookie.ref == ref_of(laptop) and cookie.kind == "cookie"
    assert cookie.device == "Firefox on Linux" and cookie.location == "203.0.113.9"
    assert bearer.kind == "bearer" and not bearer.current and bearer.ref == hashed_id(token)
    now = time.time()
    for session in sessions:
        assert abs(session.created.timestamp() - now) < 5 and abs(session.last_seen.timestamp() - now) < 5
        assert abs(session.expires.timestamp() - (now + 1209600)) < 5  # SESSION_COOKIE_AGE
    assert user_sessions(get_user_model().objects.create_user("zed")) == []


def test_anonymous_sessions_and_other_users_are_not_listed(backend, user, other):
    Client().get("/bump/")  # an anonymous session: no index entry
    browser(other)
    assert user_sessions(user) == []
    assert [s.device for s in user_sessions(other)] == ["Firefox on Linux"]
    assert len(entry_names()) == 1


def test_logout_and_revoke_token_remove_the_entry(backend, user):
    laptop = browser(user)
    token = issue_token(None, user)
    assert len(entry_names()) == 2
    laptop.get("/logout/")
    revoke_token(token)
    assert entry_names() == [] and user_sessions(user) == []


def test_the_entry_expires_with_its_session(backend, user, clock, settings):
    settings.SESSION_COOKIE_AGE = 120
    browser(user)
    [entry] = list(get_kv().iter_keys(prefix="session:user:"))
    [session] = [info for info in get_kv().iter_keys() if info.name not in entry_names()]
    # The same TTL, given by two PUTs that KV may receive either side of a second's boundary.
    assert session.expiration - 1 <= entry.expiration <= session.expiration
    assert entry.metadata["expires"] == session.metadata["expires"]  # the exact expiry, which reads go by
    clock(121)
    assert user_sessions(user) == []  # past its exact expiry, though KV keeps it a little longer
    call_command("clearsessions")
    assert list(get_kv().iter_keys()) == []


def test_sweep_removes_leftover_entries(backend, user, clock, settings):
    settings.SESSION_COOKIE_AGE = 60
    laptop = browser(user)
    SessionStore.get_kv().delete(SessionStore.kv_key(laptop.cookies["sessionid"].value))  # gone, its entry left
    kv = get_kv()
    for info in kv.iter_keys():  # and kept by KV past its expiry, as KV may (its TTL only cleans up)
        kv.put(info.name, kv.get(info.name), expiration_ttl=3600, metadata=info.metadata)
    clock(200)  # past the exact expiry and the sweep's grace
    assert user_sessions(user) == []
    report = maintenance.sweep(kv)
    assert report["deleted"] == 1 and list(kv.iter_keys()) == []


# Signing out


def test_revoke_session_signs_one_session_out(backend, user):
    laptop, phone = browser(user), browser(user, IPHONE, "2001:db8:1:2::5")
    assert revoke_session(user, ref_of(phone)) is True
    assert phone.get("/whoami/").json()["user"] is None
    assert laptop.get("/whoami/").json()["user"] == user.pk
    assert [s.ref for s in user_sessions(user)] == [ref_of(laptop)]
    assert revoke_session(user, ref_of(phone)) is False  # gone already


def test_a_user_cannot_revoke_another_users_session(backend, user, other):
    theirs = browser(other)
    assert revoke_session(user, ref_of(theirs)) is False
    assert theirs.get("/whoami/").json()["user"] == other.pk
    with pytest.raises(ValueError, match="user_sessions"):
        revoke_session(user, "../" + ref_of(theirs)[3:])


def test_revoke_other_sessions_keeps_the_requests_own(backend, user):
    laptop, phone = browser(user), browser(user, IPHONE)
    token = issue_token(None, user)
    request = request_of(laptop)
    request.user = user
    assert revoke_other_sessions(request) == 2
    assert phone.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert laptop.get("/whoami/").json()["user"] == user.pk
    assert [s.ref for s in user_sessions(user)] == [ref_of(laptop)]


def test_revoke_all_sessions_signs_out_everywhere(backend, user, other):
    laptop, phone, theirs = browser(user), browser(user, IPHONE), browser(other)
    token = issue_token(None, user)
    assert revoke_all_sessions(user) == 3
    assert laptop.get("/whoami/").json()["user"] is None and phone.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert theirs.get("/whoami/").json()["user"] == other.pk
    assert user_sessions(user) == [] and revoke_all_sessions(user) == 0


def test_a_password_change_with_revoke_other_sessions_signs_the_others_out(backend, user):
    laptop, phone = browser(user), browser(user, IPHONE)
    assert laptop.get("/change-password/?to=new").json() == {"signed_out": 1}
    assert laptop.get("/whoami/").json()["user"] == user.pk
    assert phone.get("/whoami/").json()["user"] is None
    assert [s.ref for s in user_sessions(user)] == [ref_of(laptop)]


def test_a_revocation_is_refused_here_at_once_while_kv_reads_are_stale(settings, tmp_path, user):
    settings.CFKV = edge_cached_settings(tmp_path)
    settings.MIDDLEWARE = MIDDLEWARE
    phone = browser(user, IPHONE)
    token = issue_token(None, user)
    assert phone.get("/whoami/").json()["user"] == user.pk  # the edge now holds a copy
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert len(user_sessions(user)) == 2  # and a copy of the listing
    assert revoke_all_sessions(user) == 2
    assert get_kv().get(SessionStore.kv_key(token)) is not None  # still served by this location
    assert len(list(get_kv().iter_keys(prefix=index_entry_name(user, "")))) == 2  # listed there too
    assert phone.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert user_sessions(user) == []


def test_async_twins(backend, user):
    laptop, phone = browser(user), browser(user, IPHONE)
    request = request_of(laptop)
    request.user = user
    listed = async_to_sync(auser_sessions)(user, request=request)
    assert [s.current for s in listed] == [True, False]
    assert async_to_sync(arevoke_session)(user, ref_of(phone)) is True
    issue_token(None, user)
    assert async_to_sync(arevoke_other_sessions)(request) == 1
    assert async_to_sync(arevoke_all_sessions)(user) == 1
    assert laptop.get("/whoami/").json()["user"] is None


# From the attacker's side


def test_a_ref_is_never_a_session_id_or_token(backend, user):
    laptop = browser(user)
    issue_token(None, user)
    refs = [s.ref for s in user_sessions(user)]
    assert len(refs) == 2
    for ref in refs:
        assert logged_in_with(ref) == (None, None)
        assert logged_in_with(ref[:32]) == (None, None) and logged_in_with(ref[32:]) == (None, None)
    assert laptop.get("/whoami/").json()["user"] == user.pk


def test_index_entries_name_no_session_id_token_or_user(backend, settings):
    settings.SESSION_CFKV_FORMAT = "json"  # the format that keeps userId in the clear in the session itself
    user = get_user_model().objects.create_user("ann.the.user", "ann@example.com", "pw", pk=918273645)
    laptop = browser(user, "Firefox/128.0 ann@example.com")  # whatever a client sends is shown, not hidden
    token = issue_token(None, user)
    secrets = {laptop.cookies["sessionid"].value, token, str(user.pk), user.username}
    shown = []
    for info in get_kv().iter_keys(prefix="session:user:"):
        shown += [info.name, json.dumps(info.metadata), get_kv().get(info.name).decode()]
    assert len(shown) == 6
    assert not any(secret in text for secret in secrets for text in shown)


def test_a_hostile_user_agent_is_cut_to_fit_kvs_metadata_limit(backend, user):
    agent = "\U0001f600" * 400 + "\x00\x07\u202e" * 50
    browser(user, agent)
    [entry] = list(get_kv().iter_keys(prefix="session:user:"))
    assert len(json.dumps(entry.metadata).encode()) <= 1024
    [session] = user_sessions(user)
    assert len(session.device) <= 64 and session.device.endswith("…") and "\x00" not in session.device


# What a sign-in and a listing cost (KV API calls, over HTTP)


def test_api_calls_of_sign_in_page_views_and_listings(emu, user, settings, clock, cfkv_calls):
    settings.MIDDLEWARE = MIDDLEWARE
    settings.SESSION_SAVE_EVERY_REQUEST = True
    client = Client(HTTP_USER_AGENT=FIREFOX)
    client.get(f"/login/{user.pk}/")
    assert spent(cfkv_calls) == {"put": 2}  # the session and, just before, its index entry
    client.get("/whoami/")
    assert spent(cfkv_calls) == {"get": 1}  # a page view: one read, no write
    client.get("/bump/")
    assert spent(cfkv_calls) == {"get": 1, "put": 1}  # a change of data: the entry is not rewritten
    clock(61)
    client.get("/whoami/")
    assert spent(cfkv_calls) == {"get": 1, "put": 2}  # the refresh, at most once per interval, moves both
    token = issue_token(None, user)
    browser(user)
    spent(cfkv_calls)
    assert len(user_sessions(user)) == 3
    assert spent(cfkv_calls) == {"list": 1}
    revoke_token(token)
    assert spent(cfkv_calls) == {"get": 1, "bulk_delete": 1}  # its user, read to find its entry
    client.get("/logout/")
    assert spent(cfkv_calls) == {"get": 1, "bulk_delete": 1}


def test_a_token_issued_from_a_signed_in_browser_leaves_its_cookie_session_alone(emu, user, settings, cfkv_calls):
    settings.MIDDLEWARE = MIDDLEWARE
    laptop = browser(user)
    spent(cfkv_calls)
    token = laptop.get(f"/token/{user.pk}/", HTTP_USER_AGENT="curl/8.5.0").json()["token"]
    assert spent(cfkv_calls) == {"put": 2}  # the token and its entry; the cookie session is not written
    devices = {s.ref: s.device for s in user_sessions(user)}
    assert devices == {ref_of(laptop): "Firefox on Linux", hashed_id(token): "curl"}


def test_a_token_issued_to_a_client_without_a_cookie_starts_no_cookie_session(emu, user, settings, cfkv_calls):
    settings.MIDDLEWARE = MIDDLEWARE
    response = Client(HTTP_USER_AGENT="curl/8.5.0").get(f"/token/{user.pk}/")
    assert "sessionid" not in response.cookies
    assert spent(cfkv_calls) == {"put": 2}  # the token and its entry, nothing else
    assert [s.device for s in user_sessions(user)] == ["curl"]


@pytest.mark.parametrize("revoke, calls", [
    (lambda user, refs, request: revoke_session(user, refs[1]), {"list": 1, "bulk_delete": 1}),
    (lambda user, refs, request: revoke_other_sessions(request), {"list": 1, "bulk_delete": 1}),
    (lambda user, refs, request: revoke_all_sessions(user), {"list": 1, "bulk_delete": 1}),
])
def test_api_calls_of_each_revocation(emu, user, cfkv_calls, revoke, calls):
    laptop = browser(user)
    browser(user, IPHONE)
    request = request_of(laptop)
    request.user = user
    refs = [s.ref for s in user_sessions(user, request=request)]
    spent(cfkv_calls)
    revoke(user, refs, request)
    assert spent(cfkv_calls) == calls


def test_api_calls_of_listing_and_revoking_2000_sessions(emu, user, cfkv_calls):
    from django_cfkv.sessions import index

    now, identity = time.time(), str(user.pk)
    refs = [hashed_id(f"session{n:05d}aaaaaaaaaaaaaaaa") for n in range(2000)]
    get_kv().put_many([{"key": index.entry_key("session:", identity, ref), "value": "", "expiration_ttl": 3600,
                        "metadata": index.entry_metadata(now + 3600, now * 1000, now, {"via": "bearer"}, None)}
                       for ref in refs])
    spent(cfkv_calls)
    assert len(user_sessions(user)) == 2000
    assert spent(cfkv_calls) == {"list": 2}
    assert revoke_all_sessions(user) == 2000
    assert spent(cfkv_calls) == {"list": 2, "bulk_delete": 1}  # 4,000 keys: one bulk delete
    assert list(get_kv().iter_keys()) == []


# Settings


def test_secret_key_rotation_keeps_older_entries_listed_and_revocable(backend, user, settings):
    old = browser(user)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-the-rotation-test"
    new = browser(user, IPHONE)
    assert {s.ref for s in user_sessions(user)} == {ref_of(old), ref_of(new)}
    assert revoke_all_sessions(user) == 2
    assert old.get("/whoami/").json()["user"] is None and list(get_kv().iter_keys()) == []


def test_without_the_index_a_sign_in_costs_no_extra_write(emu, user, settings, cfkv_calls):
    settings.SESSION_CFKV_USER_INDEX = False
    client = browser(user)
    assert spent(cfkv_calls) == {"put": 1}
    assert "_cfkv_client" not in SessionStore(client.cookies["sessionid"].value).load()
    with pytest.raises(CFKVConfigurationError, match="SESSION_CFKV_USER_INDEX") as raised:
        user_sessions(user)
    assert raised.value.id == "django_cfkv.E205"


def test_the_plain_layout_keeps_no_index(backend, user, settings):
    settings.SESSION_CFKV_KEY_LAYOUT = "plain"
    browser(user)
    assert entry_names() == []
    with pytest.raises(CFKVConfigurationError, match="hashed layout"):
        revoke_all_sessions(user)


# Shared with Workers: the Worker code the docs show, under Miniflare, on sessions Django made


@pytest.fixture
def shared(settings, gateway):
    """Django on the gateway, sessions in the JSON format a Worker reads; the namespace emptied first."""
    settings.CFKV = {"default": gateway.settings()}
    settings.MIDDLEWARE = MIDDLEWARE
    settings.SESSION_CFKV_FORMAT = "json"
    get_kv().delete_many([info.name for info in get_kv().iter_keys()])
    return gateway


def worker(gateway, method, path, **kwargs):
    response = requests.request(method, f"{gateway.extra_url}{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize("fmt", ["json", "signed"])
def test_a_worker_lists_and_revokes_the_sessions_django_made(shared, user, fmt, settings):
    settings.SESSION_CFKV_FORMAT = fmt
    laptop = browser(user)
    token = issue_token(None, user)
    listed = worker(shared, "GET", f"/users/{user.pk}/sessions")
    assert {s["ref"] for s in listed} == {s.ref for s in user_sessions(user)} == {ref_of(laptop), hashed_id(token)}
    by_ref = {s["ref"]: s for s in listed}
    assert by_ref[ref_of(laptop)]["device"] == "Firefox on Linux" and by_ref[hashed_id(token)]["via"] == "bearer"
    assert worker(shared, "DELETE", f"/users/{user.pk}/sessions/{hashed_id(token)}") == {"revoked": True}
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401  # Django sees it
    assert [s.ref for s in user_sessions(user)] == [ref_of(laptop)]
    assert worker(shared, "DELETE", f"/users/{user.pk + 1}/sessions/{ref_of(laptop)}") == {"revoked": False}
    assert worker(shared, "DELETE", f"/users/{user.pk}/sessions") == {"revoked": 1}
    assert laptop.get("/whoami/").json()["user"] is None and user_sessions(user) == []


def test_a_workers_sign_out_everywhere_deletes_only_session_keys_its_listing_names(shared, user):
    """A name planted under the user's prefix (a namespace writer's) never steers the Worker's deletes elsewhere."""
    from django_cfkv.sessions import index

    laptop, now = browser(user), time.time()
    planted = index.user_prefixes("session:", str(user.pk))[0] + "victim"
    get_kv().put(planted, "", expiration_ttl=3600, metadata=index.entry_metadata(now + 3600, None, now, {}, None))
    get_kv().put("session:victim", "kept", expiration_ttl=3600)
    assert worker(shared, "DELETE", f"/users/{user.pk}/sessions") == {"revoked": 1}
    assert laptop.get("/whoami/").json()["user"] is None and get_kv().get("session:victim") == b"kept"


def test_django_lists_and_revokes_a_session_a_worker_made(shared, user):
    client = {"via": "bearer", "device": "Workers app", "where": "NL"}
    made = worker(shared, "POST", "/sessions", json={"userId": str(user.pk), "email": user.email, "client": client})
    [session] = user_sessions(user)
    assert session.ref == hashed_id(made["id"]) and (session.device, session.location) == ("Workers app", "NL")
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {made['id']}").json()["user"] == user.pk
    assert revoke_session(user, session.ref) is True
    assert worker(shared, "GET", "/session", headers=bearer(made["id"])) is None
    assert worker(shared, "GET", f"/users/{user.pk}/sessions") == []


def test_a_worker_refresh_moves_the_entry_with_the_session(shared, user, settings):
    settings.SESSION_COOKIE_AGE = 600  # shorter than the Worker's week: its refresh slides it
    laptop = browser(user)
    laptop_id = bearer(laptop.cookies["sessionid"].value)
    assert worker(shared, "GET", "/session", headers=laptop_id)["userId"] == str(user.pk)
    names = {info.name: info for info in get_kv().iter_keys()}
    entry = names[index_entry_name(user, ref_of(laptop))]
    session = names[SessionStore.kv_key(laptop.cookies["sessionid"].value)]
    assert abs(entry.expiration - session.expiration) <= 1  # two PUTs, maybe a second apart
    assert entry.expiration > time.time() + 6 * 24 * 3600
    [listed] = user_sessions(user)
    assert listed.expires.timestamp() > time.time() + 6 * 24 * 3600 and listed.device == "Firefox on Linux"
    worker(shared, "DELETE", "/session", headers=laptop_id)  # the Worker's logout
    assert entry_names() == [] and laptop.get("/whoami/").json()["user"] is None


def index_entry_name(user, ref):
    from django_cfkv.sessions import index

    return index.entry_key("session:", str(user.pk), ref)


def test_the_worker_code_is_the_code_the_docs_show():
    page = (Path(__file__).resolve().parents[2] / "docs" / "howto" / "user-sessions.md").read_text()
    shown = re.search(r"```js\n(.*?)```", page[page.index("## From a Worker"):], re.S).group(1)
    source = WORKER.read_text()
    functions = re.findall(r"^(?:export )?async function (\w+)\(.*?^\}$", shown, re.M | re.S)
    assert {"userPrefix", "indexSession", "listSessions", "revokeSession", "revokeAllSessions",
            "deleteSession"} <= set(functions)
    for block in re.findall(r"^(?:export )?async function \w+\(.*?^\}$", shown, re.M | re.S):
        assert block in source, block
