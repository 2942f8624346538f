"""The session engine's async faces, native: each KV call awaited on the request's own event loop, none in a thread.

Django's own async session tests and its session middleware tests run through them, and the
attacks the sync tests make (a tampered value, a forged key, a revoked token) are made through
them too.
"""

import asyncio
import functools
import logging
import threading
from contextlib import contextmanager
from unittest import mock

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.http import HttpResponse
from django.test import AsyncClient, Client, SimpleTestCase, override_settings
from django.utils.functional import SimpleLazyObject

from django_cfkv import get_kv
from django_cfkv.client import KVClient
from django_cfkv.exceptions import KVConnectionError
from django_cfkv.sessions import (
    SessionStore,
    aissue_token,
    arevoke_all_sessions,
    arevoke_other_sessions,
    arevoke_token,
    auser_sessions,
    issue_token,
    revoke_token,
    user_sessions,
)
from django_cfkv.sessions.middleware import SessionMiddleware
from django_cfkv.testing import assert_kv_calls

from .helpers import OnItsOwnEmulator
from .test_bad_input import FORGED
from .test_django_contract import SessionTestsMixin, load_django_session_tests
from .test_user_sessions import ref_of

OURS = "django_cfkv.sessions.middleware.SessionMiddleware"
DJANGOS = "django.contrib.sessions.middleware.SessionMiddleware"
BEARER_AND_AUTH = [
    "django_cfkv.bearer.BearerSessionMiddleware", "django.contrib.auth.middleware.AuthenticationMiddleware"]


def with_cookie(client, session_key):
    """Return the test client (Client or AsyncClient) sending ``sessionid=session_key`` (None: no cookie)."""
    if session_key is not None:
        client.cookies["sessionid"] = session_key
    return client


class SeenCalls:
    """The REST client's calls while watched: blocking ones (by thread name), awaited ones (by thread id), and the
    most awaited at once."""

    def __init__(self):
        self.blocking, self.awaited, self.in_flight, self.peak = [], [], 0, 0


@contextmanager
def watched_kv_calls():
    """Watch KVClient's operations: each blocking one (``_run``) and each awaited one (``_arun``)."""
    seen, run, arun = SeenCalls(), KVClient._run, KVClient._arun

    def blocking(self, plan):
        seen.blocking.append(threading.current_thread().name)
        return run(self, plan)

    async def awaited(self, plan):
        seen.awaited.append(threading.get_ident())
        seen.in_flight += 1
        seen.peak = max(seen.peak, seen.in_flight)
        try:
            return await arun(self, plan)
        finally:
            seen.in_flight -= 1

    with mock.patch.object(KVClient, "_run", blocking), mock.patch.object(KVClient, "_arun", awaited):
        yield seen


# Django's async session tests, each KV call watched


def on_the_loop(test):
    """Run one of Django's async tests: no blocking KV call, and every awaited one on the test's own thread."""

    @functools.wraps(test)
    async def run(self):
        loop_thread = threading.get_ident()
        with watched_kv_calls() as seen:
            await test(self)
        assert seen.blocking == [], f"blocking KV calls (in threads {seen.blocking}) in an async test"
        assert set(seen.awaited) <= {loop_thread}, "a KV call was awaited off the test's event loop"
        type(self).awaited_calls += len(seen.awaited)
        type(self).tests_run += 1

    return run


def native_async_tests(mixin):
    """Return the mixin's async tests (``*_async``), each through on_the_loop(), and what they use."""
    members = {name: value for name, value in vars(mixin).items() if not name.startswith(("test_", "__"))}
    tests = {name: on_the_loop(test) for name, test in vars(mixin).items()
             if name.startswith("test_") and iscoroutinefunction(test)}
    assert len(tests) >= 20, "Django's SessionTestsMixin has fewer async tests than expected"
    return {**members, **tests}


class EmulatorNativeAsyncSessionTests(OnItsOwnEmulator, SimpleTestCase):
    """KVClient over HTTP to the emulator, through the awaited calls only (Django's async tests are added below)."""

    backend = SessionStore
    awaited_calls = tests_run = 0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.addClassCleanup(cls.check_calls_were_awaited)

    @classmethod
    def check_calls_were_awaited(cls):
        if cls.tests_run >= 20:  # the whole class ran (not a selection of its tests)
            assert cls.awaited_calls > 10, f"only {cls.awaited_calls} awaited KV calls: the tests did not reach KV"


for _name, _member in native_async_tests(SessionTestsMixin).items():
    if _name != "backend":
        setattr(EmulatorNativeAsyncSessionTests, _name, _member)


@override_settings(SESSION_CFKV_FORMAT="json")
class EmulatorNativeAsyncJSONSessionTests(EmulatorNativeAsyncSessionTests):
    awaited_calls = tests_run = 0


# Django's session middleware tests, on ours: in a sync stack and in an async one


class InAsyncStack:
    """Our SessionMiddleware in an async stack, called as Django's tests call a middleware: the test's view runs in
    a thread, as Django runs a sync view under ASGI; the middleware awaits the session."""

    def __init__(self, get_response):
        self.middleware = SessionMiddleware(sync_to_async(get_response))
        assert iscoroutinefunction(self.middleware)

    def __call__(self, request):
        return async_to_sync(self.middleware)(request)

    def __getattr__(self, name):
        return getattr(self.middleware, name)


class AsDjangoRunsThem:
    """Django's middleware tests expect its default engine (one reads the database): the middleware serves any."""

    def setUp(self):
        engine = override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db")
        engine.enable()
        self.addCleanup(engine.disable)
        super().setUp()


class OursInSyncStack(AsDjangoRunsThem, load_django_session_tests("SessionMiddlewareTests",
                                                                  SessionMiddleware=SessionMiddleware)):
    pass


class OursInAsyncStack(AsDjangoRunsThem, load_django_session_tests("SessionMiddlewareTests",
                                                                   SessionMiddleware=InAsyncStack)):
    pass


@pytest.mark.urls("tests.sessions.urls")
@pytest.mark.parametrize(("middleware", "blocking"), [(OURS, False), (DJANGOS, True)])
def test_in_an_async_stack_ours_saves_the_session_awaiting_kv_djangos_in_a_thread(emu, settings, middleware,
                                                                                  blocking):
    settings.MIDDLEWARE = [middleware]
    with watched_kv_calls() as seen:
        first = async_to_sync(AsyncClient().get)("/abump/")
    assert first.json() == {"n": 1} and first.cookies["sessionid"].value
    assert seen.awaited or blocking
    assert bool(seen.blocking) is blocking  # Django's saves in its sync thread; ours awaits asave()
    with watched_kv_calls() as seen:
        second = async_to_sync(with_cookie(AsyncClient(), first.cookies["sessionid"].value).get)("/abump/")
    assert second.json() == {"n": 2} and bool(seen.blocking) is blocking


@pytest.mark.urls("tests.sessions.urls")
def test_ours_answers_a_sync_stack_as_djangos_does(emu, settings):
    answers = []
    for middleware in (DJANGOS, OURS):
        settings.MIDDLEWARE = [middleware]
        client = Client()
        first, second = client.get("/bump/"), client.get("/bump/")
        ended = client.get("/logout/")
        answers.append([(r.json(), sorted(r.cookies["sessionid"].items()) if "sessionid" in r.cookies else None,
                         r.headers.get("Vary")) for r in (first, second, ended)])
        for r in (first, second):  # the key differs; its attributes do not
            assert r.cookies["sessionid"].value
    strip = [[(j, [(k, v) for k, v in c if k != "expires"] if c else c, vary) for j, c, vary in a] for a in answers]
    assert strip[0] == strip[1]


# A session load and two KV reads, gathered


@pytest.mark.urls("tests.sessions.urls")
def test_a_view_gathering_the_session_and_two_reads_has_them_in_flight_together(emu, settings):
    settings.MIDDLEWARE = [OURS]
    get_kv().put("page:a", b"1")
    session = SessionStore()
    session["n"] = 5
    session.save()
    with watched_kv_calls() as seen:
        response = async_to_sync(with_cookie(AsyncClient(), session.session_key).get)("/agathered/")
    assert response.json() == {"n": 5, "a": True, "b": False}
    assert seen.blocking == [] and len(seen.awaited) == 3
    assert seen.peak == 3  # the session's GET and both reads were sent before any answer came back


# The user's sessions, awaited


@pytest.mark.django_db
def test_a_users_sessions_listed_and_revoked_awaiting_kv(emu, user, other):
    tokens = [issue_token(None, user) for _ in range(3)]
    issue_token(None, other)
    with watched_kv_calls() as seen:
        listed = async_to_sync(auser_sessions)(user)
    assert sorted(s.ref for s in listed) == sorted(s.ref for s in user_sessions(user))
    assert len(listed) == 3 and seen.blocking == [] and seen.awaited

    class Request:  # what arevoke_other_sessions() reads of a request: its session and its user, awaited
        session = SessionStore(tokens[0])

        async def auser(self):
            return user

    with watched_kv_calls() as seen:
        assert async_to_sync(arevoke_other_sessions)(Request()) == 2
        assert async_to_sync(arevoke_all_sessions)(user) == 1
    assert seen.blocking == [] and seen.awaited
    assert user_sessions(user) == [] and len(user_sessions(other)) == 1


@pytest.mark.django_db
@pytest.mark.urls("tests.sessions.urls")
def test_the_async_sessions_page_lists_and_signs_out_awaiting_kv(emu, settings, user):
    settings.MIDDLEWARE = [OURS, *BEARER_AND_AUTH]
    laptop, phone = Client(), Client()
    for browser in (laptop, phone):
        browser.get(f"/login/{user.pk}/")
    token = issue_token(None, user)
    client = with_cookie(AsyncClient(), laptop.cookies["sessionid"].value)
    with watched_kv_calls() as seen:
        listed = async_to_sync(client.get)("/async-account/sessions/")
        one = async_to_sync(client.post)("/async-account/sessions/", {"action": "one", "ref": ref_of(phone)})
        signed_out = async_to_sync(client.post)("/async-account/sessions/", {"action": "others"})
    assert listed.status_code == 200 and listed.content.decode().count('name="ref"') == 2
    assert one["Location"].endswith("?signed_out=1") and signed_out["Location"].endswith("?signed_out=1")
    assert seen.blocking == [] and len(seen.awaited) >= 5  # the session each time, the listing, the sign-outs
    assert phone.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert laptop.get("/whoami/").json()["user"] == user.pk


class AsStaleAsOnDjango52:
    """A request whose user login() or logout() set, with the user ``auser()`` cached before: on Django 5.2
    they leave that one (a proxy's RemoteUserMiddleware logs users in and out so, in an async stack)."""

    def __init__(self, user, cached):
        self.user, self.cached = user, cached

    async def auser(self):
        return self.cached


@pytest.mark.django_db
def test_the_request_user_set_by_login_or_logout_wins_over_a_stale_auser(user, other):
    from django.contrib.auth.models import AnonymousUser

    from django_cfkv.ratelimit.identity import arequest_user

    logged_out = AsStaleAsOnDjango52(AnonymousUser(), cached=user)
    assert async_to_sync(arequest_user)(logged_out).is_authenticated is False
    assert async_to_sync(logged_out.auser)().is_authenticated is False  # the stale one is replaced too
    logged_in = AsStaleAsOnDjango52(other, cached=AnonymousUser())
    assert async_to_sync(arequest_user)(logged_in) == other and logged_in.user == other

    class Lazy:  # AuthenticationMiddleware's user, not read yet: awaited, then set for templates to read
        user = SimpleLazyObject(lambda: pytest.fail("a blocking query for the user"))

        async def auser(self):
            return user

    request = Lazy()
    assert async_to_sync(arequest_user)(request) == user and request.user == user


# Tokens issued and revoked, awaited


@pytest.mark.django_db
def test_a_token_issued_awaiting_kv_is_what_issue_token_makes(emu, cfkv_calls, user, rf):
    from django.contrib.auth.signals import user_logged_in

    cfkv_calls.reset()
    issue_token(None, user, max_age=600)
    blocking_calls, seen_users = cfkv_calls.counts, []
    user_logged_in.connect(lambda sender, request, user, **kw: seen_users.append(user), weak=False, dispatch_uid="t")
    request = rf.get("/")
    request.user, request.auser = None, None  # as AuthenticationMiddleware leaves them: both are replaced
    try:
        cfkv_calls.reset()
        with watched_kv_calls() as seen:
            token = async_to_sync(aissue_token)(request, user, max_age=600)
    finally:
        user_logged_in.disconnect(dispatch_uid="t")
    assert seen.blocking == [] and seen.awaited and cfkv_calls.counts == blocking_calls
    assert seen_users == [user] and request.user == user and async_to_sync(request.auser)() == user
    user.refresh_from_db()
    assert user.last_login is not None  # Django's own receiver ran
    stored = SessionStore(token)
    assert stored["_auth_user_id"] == str(user.pk) and stored["_auth_user_hash"] == user.get_session_auth_hash()
    assert 0 < stored.get_expiry_age() <= 600  # max_age, not SESSION_COOKIE_AGE (two weeks)
    assert [s.kind for s in user_sessions(user)] == ["bearer", "bearer"]


@pytest.mark.parametrize("token", ["../not-a-token", "", "x" * 5000])
def test_revoking_what_is_no_token_awaited_sends_nothing(token):
    with assert_kv_calls(0):
        async_to_sync(arevoke_token)(token)


# The attacks of the sync tests, through the async path too


@pytest.fixture(params=["sync", "async"])
def served_as(request, site):
    """Return ``served_as(cookie=..., token=...)``: the response of Django's stack (sync client, sync view) or of
    ours in an async stack (AsyncClient, an async view)."""
    mode = request.param
    site.MIDDLEWARE = [DJANGOS if mode == "sync" else OURS, *BEARER_AND_AUTH]
    site.ROOT_URLCONF = "tests.sessions.urls"

    def serve(path="whoami", cookie=None, token=None):
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        if mode == "sync":
            return with_cookie(Client(), cookie).get(f"/{path}/", headers=headers)
        return async_to_sync(with_cookie(AsyncClient(), cookie).get)(f"/a{path}/", headers=headers)

    serve.mode = mode
    return serve


def user_of(response):
    return response.json()["user"] if response.status_code == 200 else response.status_code


@pytest.mark.django_db
def test_a_tampered_signed_session_is_anonymous(served_as, user):
    token = issue_token(None, user)
    assert user_of(served_as(cookie=token)) == user.pk and user_of(served_as(token=token)) == user.pk
    kv, key = get_kv(), SessionStore.kv_key(token)
    raw = kv.get(key)
    kv.put(key, raw[:-6] + (b"AAAAAA" if not raw.endswith(b"AAAAAA") else b"BBBBBB"))
    assert user_of(served_as(cookie=token)) is None
    assert user_of(served_as(token=token)) == 401


@pytest.mark.django_db
def test_a_namespace_writer_cannot_forge_a_signed_session_through_either_stack(served_as, user):
    chosen = "writerchosenid0123456789abcdefgh"
    get_kv().put(SessionStore.kv_key(chosen), f'{{"userId": "{user.pk}", "createdAt": 0, "expiresAt": 9e15}}')
    assert user_of(served_as(cookie=chosen)) is None
    assert user_of(served_as(token=chosen)) == 401


@pytest.mark.django_db
def test_a_forged_well_formed_cookie_is_not_adopted(served_as):
    forged = "attackerchosenkey0123456789abcde"
    response = served_as("bump", cookie=forged)
    assert response.status_code == 200 and response.cookies["sessionid"].value != forged
    assert SessionStore(forged).load() == {}


@pytest.mark.django_db
@pytest.mark.parametrize("cookie", [c for c in FORGED if c.isprintable() and c.isascii() and ";" not in c])
def test_a_forged_cookie_never_reaches_kv(served_as, cookie):
    with assert_kv_calls(0):
        response = served_as(cookie=cookie)
    assert user_of(response) is None


@pytest.mark.parametrize("cookie", FORGED)
def test_invalid_session_keys_cause_no_io_awaited(cookie):
    async def use():
        store = SessionStore(cookie)
        assert store.session_key is None
        assert await store.aload() == {} and list(await store.aitems()) == []
        assert await store.aexists(cookie) is False
        await store.adelete(cookie)

    with assert_kv_calls(0):
        asyncio.run(use())


@pytest.mark.django_db
@pytest.mark.parametrize("revoke", ["revoke_token", "arevoke_token", "arevoke_all_sessions"])
def test_a_revoked_token_is_refused(served_as, user, revoke):
    token = issue_token(None, user)
    assert user_of(served_as(token=token)) == user.pk
    if revoke == "revoke_token":
        revoke_token(token)
    elif revoke == "arevoke_token":
        with watched_kv_calls() as seen:
            async_to_sync(arevoke_token)(token)
        assert seen.blocking == [] and bool(seen.awaited) == isinstance(get_kv(), KVClient)  # LocalKV: no HTTP
    else:
        assert async_to_sync(arevoke_all_sessions)(user) == 1
    assert user_of(served_as(token=token)) == 401
    assert user_of(served_as(cookie=token)) is None


# The same calls, blocking or awaited


def follow(awaited, target, name, *args):
    """Call ``target.name(*args)``, or await its async twin ``a<name>`` (in an event loop of async_to_sync's, whose
    database queries come back to this thread, as under an ASGI server)."""
    if awaited:
        return async_to_sync(getattr(target, "a" + name))(*args)
    return getattr(target, name)(*args)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_awaited_and_blocking_store_make_the_same_calls(emu, settings, cfkv_calls, user, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    spent_by_mode = []
    for awaited in (False, True):
        cfkv_calls.reset()
        steps = []
        store = SessionStore()
        store["_auth_user_id"], store["n"] = str(user.pk), 1
        follow(awaited, store, "create")  # a signed-in session: its index entry, then the session
        steps.append(dict(cfkv_calls.counts))
        again = SessionStore(store.session_key)
        assert follow(awaited, again, "load")["n"] == 1
        again["n"] = 2
        follow(awaited, again, "save")
        follow(awaited, again, "cycle_key")  # the old key and its entry go; the new one is written by the next save
        follow(awaited, again, "save")
        assert follow(awaited, again, "exists", again.session_key) is True
        follow(awaited, again, "delete")
        assert follow(awaited, again, "exists", again.session_key) is False
        steps.append(dict(cfkv_calls.counts))
        spent_by_mode.append(steps)
    assert spent_by_mode[0] == spent_by_mode[1]


@pytest.mark.parametrize("awaited", [False, True])
def test_clear_expired_awaited_or_not(emu, clock, cfkv_calls, awaited):
    for age in (1, 3600):
        store = SessionStore()
        store["n"] = age
        store.set_expiry(age)
        store.save()
    clock(5)
    cfkv_calls.reset()
    assert follow(awaited, SessionStore, "clear_expired") == 1
    assert cfkv_calls.counts == {"list": 1, "bulk_delete": 1}


@pytest.mark.django_db
def test_on_the_embedded_store_the_awaited_store_runs_sqlite_in_django_cfkvs_worker_threads(settings, tmp_path, user):
    """SQLite calls block, so the embedded store's twins run them in django-cfkv's long-lived worker threads: never
    on the event loop, nor in a thread of asgiref's sync_to_async."""
    from django_cfkv.local import LocalKV

    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}
    threads_used = []

    def recorded(method):
        def call(self, *args, **kwargs):
            threads_used.append(threading.current_thread().name)
            return method(self, *args, **kwargs)
        return call

    names = ("get", "put", "delete", "delete_many", "list_keys")
    with mock.patch.multiple(LocalKV, **{name: recorded(getattr(LocalKV, name)) for name in names}):
        store = SessionStore()
        store["_auth_user_id"], store["n"] = str(user.pk), 1
        follow(True, store, "create")
        again = SessionStore(store.session_key)
        assert follow(True, again, "load")["n"] == 1
        follow(True, again, "cycle_key")
        follow(True, again, "save")
        follow(True, again, "delete")
        assert follow(True, SessionStore, "clear_expired") == 0
    assert len(threads_used) >= 6
    assert all(name.startswith("django-cfkv") for name in threads_used), threads_used


# Concurrency, cancels and overrides: what the awaited paths must keep as the blocking ones keep it


def test_changes_gathered_before_the_session_is_loaded_share_one_load_and_are_all_saved(emu, cfkv_calls):
    first = SessionStore()
    first["n"] = 0
    first.save()
    cfkv_calls.reset()
    store = SessionStore(first.session_key)

    async def view():  # each aset() loads the session first: with a load apiece, the last one loaded wins
        await asyncio.gather(store.aset("a", 1), store.aset("b", 2), store.aget("n"))
        await store.asave()

    async_to_sync(view)()
    assert dict(cfkv_calls.counts) == {"get": 1, "put": 1}
    assert SessionStore(first.session_key).load() == {"n": 0, "a": 1, "b": 2}


def test_a_store_loaded_awaiting_kv_can_still_be_copied_and_pickled(emu):
    """As one loaded blocking: Django's setUpTestData deep-copies what a test class keeps."""
    import copy
    import pickle

    first = SessionStore()
    first["n"] = 1
    first.save()
    store = SessionStore(first.session_key)
    assert async_to_sync(store.aget)("n") == 1
    assert copy.deepcopy(store)["n"] == 1 and pickle.loads(pickle.dumps(store))["n"] == 1


class HeldWrite:
    """KVClient.aput held until released: a save in flight, at the moment the client of the request goes away."""

    def __init__(self, monkeypatch):
        self.started, self.release, aput = asyncio.Event(), asyncio.Event(), KVClient.aput

        async def held_aput(client, *args, **kwargs):
            self.started.set()
            await self.release.wait()
            return await aput(client, *args, **kwargs)

        monkeypatch.setattr(KVClient, "aput", held_aput)

    async def cancel_in_flight(self, task):
        """Cancel ``task`` (as Django's ASGI handler does on http.disconnect) while its write is held; then let
        the write go, and return whether the task ended cancelled."""
        await self.started.wait()
        task.cancel()
        await asyncio.sleep(0.01)  # the cancel is delivered while the write is held
        self.release.set()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False


def request_with(cookie=None, **headers):
    """An ASGI request with the session cookie set as parsed (Django 5.2 reads "<id>," from a cookie header
    its test factory builds)."""
    from django.test import AsyncRequestFactory

    request = AsyncRequestFactory().get("/", headers=headers)
    if cookie is not None:
        request.COOKIES = {"sessionid": cookie}
    return request


@pytest.mark.django_db
@pytest.mark.parametrize("middleware", ["cookie", "bearer"])
def test_a_request_whose_client_goes_away_mid_save_still_saves_its_session(emu, monkeypatch, user, middleware):
    """As Django's middleware, whose save runs in a thread nothing stops, a save once begun lands whole."""
    from django_cfkv.bearer import BearerSessionMiddleware

    if middleware == "cookie":
        stored = SessionStore()
        stored["n"] = 1
        stored.save()
        key, wrap = stored.session_key, SessionMiddleware
        request = request_with(cookie=key)
    else:
        key, wrap = issue_token(None, user), BearerSessionMiddleware
        request = request_with(authorization=f"Bearer {key}")

    async def view(request):
        await request.session.aset("n", 2)  # a change the view has made, and the client will not hear of
        return HttpResponse("ok")

    async def serve():
        held = HeldWrite(monkeypatch)
        return await held.cancel_in_flight(asyncio.ensure_future(wrap(view)(request)))

    assert async_to_sync(serve)() is True  # the cancel still reaches the request, once the save is done
    assert SessionStore(key).load()["n"] == 2 and request.session.session_key == key  # saved where it was


def test_a_save_that_fails_after_its_request_is_cancelled_is_logged_without_the_session(emu, monkeypatch, caplog):
    stored = SessionStore()
    stored["n"] = 1
    stored.save()
    request = request_with(cookie=stored.session_key)

    async def refused(client, *args, **kwargs):
        raise KVConnectionError("Could not reach Workers KV for PUT put.")

    monkeypatch.setattr(KVClient, "aput", refused)

    async def view(request):
        await request.session.aset("n", 2)
        return HttpResponse("ok")

    async def serve():
        held = HeldWrite(monkeypatch)
        return await held.cancel_in_flight(asyncio.ensure_future(SessionMiddleware(view)(request)))

    with caplog.at_level(logging.DEBUG):
        assert async_to_sync(serve)() is True  # the cancel, not the failure, reaches the cancelled request
    assert "failed (KVConnectionError)" in caplog.text and request.session.session_key == stored.session_key
    assert stored.session_key not in caplog.text and SessionStore(stored.session_key).load()["n"] == 1


@pytest.mark.parametrize("middleware", [DJANGOS, OURS])
def test_an_engine_that_overrides_only_save_has_it_called_in_an_async_stack(settings, middleware):
    """Any SESSION_ENGINE: an override of save() alone is not skipped by the awaited save (it runs in a thread)."""
    from django.test import AsyncRequestFactory
    from django.utils.module_loading import import_string

    from . import engine_with_own_save

    settings.SESSION_ENGINE = "tests.sessions.engine_with_own_save"
    engine_with_own_save.SAVES.clear()

    async def view(request):
        await request.session.aset("n", 1)
        return HttpResponse("ok")

    response = async_to_sync(import_string(middleware)(view))(AsyncRequestFactory().get("/"))
    assert response.cookies["sessionid"].value and engine_with_own_save.SAVES
