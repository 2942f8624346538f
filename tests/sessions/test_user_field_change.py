"""A user whose SESSION_CFKV_USER_FIELD value changes: once the change is committed their index follows it, so
every session of theirs stays in their list and in "Sign out everywhere", and none is left under the former value
for its next holder. Each test commits for real (transaction=True): the move runs when the save's
transaction commits, and never for one that fails or is rolled back."""

import contextlib
import io
import json
import logging
import pickle
import time

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import isolate_apps

from django_cfkv import get_kv
from django_cfkv.exceptions import KVAPIError, KVConnectionError
from django_cfkv.sessions import (
    SessionStore,
    arevoke_all_sessions,
    auser_sessions,
    hashed_id,
    index,
    issue_token,
    memory,
    revoke_all_sessions,
    revoke_session,
    user_sessions,
)

from .helpers import auth, spent, worker_session
from .test_bearer import MIDDLEWARE as BEARER_MIDDLEWARE

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def by_email(settings, tmp_path):
    """Users named by email, on a namespace of each test's own (the emulator's, where a test asks for it)."""
    settings.SESSION_CFKV_USER_FIELD = "email"
    settings.CFKV = {"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}


@contextlib.contextmanager
def queries(expected):
    """Count the queries made inside (Django's own count logs each query's SQL, a password hash included)."""
    made = []
    with connection.execute_wrapper(lambda execute, sql, *args: made.append(sql) or execute(sql, *args)):
        yield
    assert len(made) == expected, made


def signed_in(user):
    client = Client()
    client.get(f"/login/{user.pk}/")
    assert client.get("/whoami/").json()["user"] == user.pk
    return client


def index_entries(user_id=None):
    """The names of the index entries listed (under ``user_id``'s prefix, else any); not a move's marker."""
    prefix = SessionStore.key_prefix() + index.USER_SEGMENT
    if user_id is not None:
        prefix = index.user_prefixes(SessionStore.key_prefix(), user_id)[0]
    return [info.name for info in get_kv().list_keys(prefix=prefix).keys if index.is_ref(info.name.rsplit(":")[-1])]


def raw_session(session_key):
    raw = get_kv().get(SessionStore.kv_key(session_key))
    return None if raw is None else json.loads(raw)


def test_a_hijacker_who_changes_the_email_is_still_signed_out_everywhere(user):
    owner, hijacker = signed_in(user), signed_in(user)
    response = hijacker.get("/change-email/", {"to": "mallory@example.net"})
    assert response.status_code == 200
    assert hijacker.get("/whoami/").json()["user"] == user.pk
    user.refresh_from_db()
    assert len(user_sessions(user)) == 2  # both sessions, signed in still, listed under the new value
    assert index_entries("ann@example.com") == []
    assert revoke_all_sessions(user) == 2
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


@isolate_apps("django_cfkv")
def test_a_save_through_a_proxy_of_the_user_model_moves_it_too(user):
    class StaffMember(User):
        class Meta:
            proxy = True
            app_label = "django_cfkv"

    signed_in(user)
    staff = StaffMember.objects.get(pk=user.pk)
    staff.email = "ann@new.example.com"
    staff.save()
    user.refresh_from_db()
    assert len(user_sessions(user)) == 1
    assert index_entries("ann@example.com") == []


def test_a_save_rolled_back_or_refused_moves_nothing(settings, user, other):
    signed_in(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        user.email = "ann@new.example.com"
        user.save()
        raise RuntimeError("the view failed after the save")
    user.refresh_from_db()
    assert user.email == "ann@example.com" and len(user_sessions(user)) == 1
    # Named by a unique field, a save of another user's value is refused by the database.
    settings.SESSION_CFKV_USER_FIELD = "username"
    signed_in(user)
    user.username = other.username
    with pytest.raises(IntegrityError):
        user.save()
    user.refresh_from_db()
    assert len(user_sessions(user)) == 1
    assert user_sessions(other) == []


def swap_emails(ann, bob, then=lambda: None):
    """Ann and Bob swap emails in one transaction, by way of a third (then ``then``, in the same transaction)."""
    with transaction.atomic():
        ann.email, bob.email = "swap@example.com", "ann@example.com"
        ann.save(), bob.save()
        ann.email = "bob@example.com"
        ann.save()
        then()


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_two_users_who_swap_emails_in_one_transaction_keep_their_own_sessions(settings, user, other, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    ann, bob = signed_in(user), signed_in(other)
    swap_emails(user, other)
    # Still signed in, each listed for its own user only.
    assert [s.ref for s in user_sessions(user)] == [hashed_id(ann.cookies["sessionid"].value)]
    assert [s.ref for s in user_sessions(other)] == [hashed_id(bob.cookies["sessionid"].value)]
    assert ann.get("/whoami/").json()["user"] == user.pk and bob.get("/whoami/").json()["user"] == other.pk


def test_a_transaction_that_puts_the_value_back_moves_nothing(user):
    signed_in(user)
    with transaction.atomic():
        user.email = "ann@new.example.com"
        user.save()
        user.email = "ann@example.com"
        user.save()
    assert len(user_sessions(user)) == 1
    assert len(index_entries("ann@example.com")) == 1


def test_entries_under_a_fallback_key_move_with_the_latest_of_each(settings, user, clock):
    signed_in(user)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-these-tests"
    clock(120)
    again = signed_in(user)  # listed under the new key only
    assert len(user_sessions(user)) == 2
    user.email = "ann@new.example.com"
    user.save()
    listed = user_sessions(user)
    assert len(listed) == 2 and listed[0].ref == hashed_id(again.cookies["sessionid"].value)
    assert all(name.startswith(index.user_prefixes(SessionStore.key_prefix(), "ann@new.example.com")[0])
               for name in index_entries())


def test_in_the_json_format_the_users_sessions_follow_and_a_workers_naming_the_former_value_go(settings, user, clock):
    settings.SESSION_CFKV_FORMAT = "json"
    browser, hijacker = signed_in(user), signed_in(user)
    token = issue_token(None, user)
    worker_id, _ = worker_session("ann@example.com")  # a Worker's session, with no auth hash of Django's
    get_kv().put(index.entry_key(SessionStore.key_prefix(), "ann@example.com", hashed_id(worker_id)), b"",
                 expiration_ttl=3600, metadata={"kind": "session", "expires": 4_000_000_000, "via": "bearer"})
    clock(120)  # an expiry refresh is due: the request that makes the change writes its own session after it
    assert browser.get("/change-email/", {"to": "ann@new.example.com"}).status_code == 200
    # Django's sessions name the new value, and are listed under it; the Worker's, which would sign in the
    # former value's next holder, is gone.
    for session_key in (browser.cookies["sessionid"].value, hijacker.cookies["sessionid"].value, token):
        assert raw_session(session_key)["userId"] == "ann@new.example.com"
    assert raw_session(worker_id) is None
    assert browser.get("/whoami/").json()["user"] == user.pk and browser.get("/whoami/").json()["n"] is None
    user.refresh_from_db()
    assert len(user_sessions(user)) == 3 and index_entries("ann@example.com") == []
    newcomer = get_user_model().objects.create_user("newcomer", "ann@example.com", "pw")
    worker = Client()
    worker.cookies["sessionid"] = worker_id
    assert worker.get("/whoami/").json()["user"] is None
    assert user_sessions(newcomer) == []
    # Support puts the owner's email back and signs them out everywhere: the hijacker too.
    user.email = "ann@example.com"
    newcomer.delete()
    user.save()
    assert revoke_all_sessions(user) == 3
    assert hijacker.get("/whoami/").json()["user"] is None


def test_the_command_refuses_a_former_value_another_user_holds_now(settings, user):
    settings.SESSION_CFKV_FORMAT = "json"
    get_user_model().objects.filter(pk=user.pk).update(email="ann@new.example.com")  # sends no signal
    carol = get_user_model().objects.create_user("carol", "ann@example.com", "pw")
    carol_browser = signed_in(carol)
    with pytest.raises(CommandError, match="Another user's email is that value now"):
        call_command("cfkv", "sessions", "--user", "ann", "--former", "ann@example.com")
    assert carol_browser.get("/whoami/").json()["user"] == carol.pk
    assert len(user_sessions(carol)) == 1


def test_two_changes_within_kvs_listing_lag_still_move_every_session(user, monkeypatch):
    hijacker = signed_in(user)
    written = {}
    kv = get_kv()
    real_put_many, real_list = kv.put_many, kv.list_keys

    def put_many(items):
        items = list(items)
        written.update((item["key"], time.monotonic()) for item in items)
        return real_put_many(items)

    def list_keys(*args, **kwargs):  # as Cloudflare lists keys: a minute after their write
        page = real_list(*args, **kwargs)
        return page._replace(keys=[info for info in page.keys if info.name not in written])

    monkeypatch.setattr(kv, "put_many", put_many)
    monkeypatch.setattr(kv, "list_keys", list_keys)
    assert hijacker.get("/change-email/", {"to": "b@example.net"}).status_code == 200
    assert hijacker.get("/change-email/", {"to": "c@example.net"}).status_code == 200
    monkeypatch.undo()
    user.refresh_from_db()
    assert index_entries("b@example.net") == []
    assert revoke_all_sessions(user) == 1
    assert hijacker.get("/whoami/").json()["user"] is None


def test_tokens_kept_for_workers_with_cookie_sessions_elsewhere_follow_too(settings, user):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    token = issue_token(None, user)
    user.email = "ann@new.example.com"
    user.save()
    assert [s.ref for s in user_sessions(user)] == [hashed_id(token)]


@pytest.mark.parametrize("name, value", [("SESSION_CFKV_USER_INDEX", "yes"), ("SESSION_CFKV_KEY_LAYOUT", "Hashed"),
                                         ("SESSION_CFKV_USER_FIELD", "emial")])
def test_a_settings_mistake_is_for_manage_py_check_not_every_save_of_a_user(settings, user, name, value):
    setattr(settings, name, value)
    user.save(update_fields=["last_login"])
    user.email = "ann@new.example.com"
    user.save()
    get_user_model().objects.create_user("dan", "dan@example.com", "pw")


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_a_move_costs_a_listing_a_read_and_a_bulk_call_of_each_kind(settings, emu, cfkv_calls, user, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    signed_in(user), signed_in(user)
    spent(cfkv_calls)
    user.email = "ann@new.example.com"
    user.save()
    assert spent(cfkv_calls) == {"list": 1, "get": 1, "bulk_get": 1, "bulk_put": 1, "bulk_delete": 1}
    with queries(2):  # the value before the save, and the save
        user.first_name = "Ann"
        user.save()
    with queries(1):  # as login() saves: this save leaves the value alone
        user.save(update_fields=["last_login"])
    get_user_model().objects.create_user("cat", "cat@example.com", "pw")
    assert spent(cfkv_calls) == {}


def test_a_kv_failure_after_the_commit_is_logged_and_the_command_moves_it(emu, user, caplog, capsys):
    browser = signed_in(user)
    user.email = "ann@new.example.com"
    with emu.faults(rate_503=1.0), caplog.at_level(logging.INFO, logger="django_cfkv"):
        user.save()  # committed: a KV failure cannot undo it
    assert get_user_model().objects.get(pk=user.pk).email == "ann@new.example.com"
    warning, = [record for record in caplog.records if record.levelno == logging.WARNING
                and "could not follow a change" in record.getMessage()]
    message = warning.getMessage()
    assert "cfkv sessions --user" in message and "ann@example.com" not in message
    assert browser.cookies["sessionid"].value not in caplog.text
    assert user_sessions(user) == []  # still under the former value
    call_command("cfkv", "sessions", "--user", "ann", "--former", "ann@example.com")
    assert "Moved 1 session from 'ann'" in capsys.readouterr().out
    assert len(user_sessions(user)) == 1
    assert index_entries("ann@example.com") == []


def test_nothing_moves_when_users_are_named_by_pk_or_not_indexed(settings, emu, cfkv_calls, user):
    settings.SESSION_CFKV_USER_FIELD = "pk"
    signed_in(user)
    spent(cfkv_calls)
    with queries(1):
        user.email = "ann@new.example.com"
        user.save()
    settings.SESSION_CFKV_USER_FIELD, settings.SESSION_CFKV_USER_INDEX = "email", False
    user.email = "ann@other.example.com"
    user.save()
    assert spent(cfkv_calls) == {}


def test_a_site_with_no_sessions_in_kv_pays_a_listing_and_a_read_for_a_change(settings, emu, cfkv_calls, user):
    """Tokens may be kept for Workers with cookie sessions elsewhere, which nothing here can tell apart."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    spent(cfkv_calls)
    user.email = "ann@new.example.com"
    user.save()
    assert spent(cfkv_calls) == {"list": 1, "get": 1}


def test_a_settings_mistake_found_after_the_commit_is_logged_not_raised_from_save(settings, user, caplog):
    signed_in(user)
    settings.CFKV = {"default": {"BACKEND": "cloudflare"}}  # manage.py check names it; the save has committed then
    user.email = "ann@new.example.com"
    with caplog.at_level(logging.WARNING, logger="django_cfkv"):
        user.save()
    assert get_user_model().objects.get(pk=user.pk).email == "ann@new.example.com"
    assert "could not follow a change" in caplog.text and "ACCOUNT_ID" in caplog.text


@pytest.mark.parametrize("field", ["email", "pk"])
@pytest.mark.parametrize("changed_first", [False, True])
def test_a_deleted_user_is_signed_out_everywhere(settings, user, field, changed_first):
    """Else a json session a Worker wrote (no auth hash) would sign in whoever is given the value next."""
    settings.SESSION_CFKV_FORMAT, settings.SESSION_CFKV_USER_FIELD = "json", field
    user_id = "ann@example.com" if field == "email" else str(user.pk)
    browser = signed_in(user)
    worker_id, _ = worker_session(user_id)
    get_kv().put(index.entry_key(SessionStore.key_prefix(), user_id, hashed_id(worker_id)), b"",
                 expiration_ttl=3600, metadata={"kind": "session", "expires": 4_000_000_000, "via": "bearer"})
    with transaction.atomic():
        if changed_first:
            user.email = "ann@new.example.com"
            user.save()
        user.delete()
    assert raw_session(worker_id) is None and raw_session(browser.cookies["sessionid"].value) is None
    assert index_entries() == []
    newcomer = get_user_model().objects.create_user("newcomer", "ann@example.com", "pw")
    worker = Client()
    worker.cookies["sessionid"] = worker_id
    assert worker.get("/whoami/").json()["user"] is None
    assert user_sessions(newcomer) == []


def test_only_deletions_of_users_are_heard_so_other_models_keep_djangos_fast_delete():
    from django.contrib.auth.models import Permission
    from django.db.models.signals import post_delete

    assert post_delete.has_listeners(User) and not post_delete.has_listeners(Permission)


def test_a_site_with_no_kv_alias_for_sessions_is_left_alone(settings, user, caplog):
    settings.CFKV = {"cache": {"BACKEND": "local", "PATH": settings.CFKV["default"]["PATH"]}}
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    with caplog.at_level(logging.DEBUG, logger="django_cfkv"):
        user.email = "ann@new.example.com"
        user.save()
        user.delete()
    assert caplog.records == []


class Lag:
    """KV as Cloudflare lists and reads it within a minute: keys written in that minute are not listed yet, and keys
    deleted in it are still listed and still read (the value a location cached)."""

    def __init__(self, monkeypatch, hide_new=True, keep_deleted=True):
        self.kv = kv = get_kv()
        self.written, self.deleted_infos, self.deleted_values = set(), {}, {}
        real_put, real_put_many, real_list = kv.put, kv.put_many, kv.list_keys
        real_delete, real_delete_many, real_get, real_get_many = kv.delete, kv.delete_many, kv.get, kv.get_many

        def remember(keys):
            for key in keys:
                for info in real_list(prefix=key).keys:
                    if info.name == key:
                        self.deleted_infos[key] = info
                value = real_get_many([key]).get(key)
                if value is not None:
                    self.deleted_values[key] = value

        def put(key, *args, **kwargs):
            self.written.add(key)
            return real_put(key, *args, **kwargs)

        def put_many(items):
            items = list(items)
            self.written.update(item["key"] for item in items)
            return real_put_many(items)

        def delete(key):
            if keep_deleted:
                remember([key])
            return real_delete(key)

        def delete_many(keys):
            keys = list(keys)
            if keep_deleted:
                remember(keys)
            return real_delete_many(keys)

        def list_keys(prefix=None, limit=1000, cursor=None):
            page = real_list(prefix=prefix, limit=limit, cursor=cursor)
            keys = [i for i in page.keys if not (hide_new and i.name in self.written)]
            names = {i.name for i in keys}
            keys += [i for n, i in self.deleted_infos.items() if n.startswith(prefix or "") and n not in names]
            return page._replace(keys=keys)

        def get(key):
            found = real_get(key)
            return self.deleted_values.get(key) if found is None else found

        def get_many(keys):
            keys = list(keys)
            found = real_get_many(keys)
            return {**{k: v for k, v in self.deleted_values.items() if k in keys}, **found}

        for name, fn in [("put", put), ("put_many", put_many), ("delete", delete), ("delete_many", delete_many),
                         ("list_keys", list_keys), ("get", get), ("get_many", get_many)]:
            monkeypatch.setattr(kv, name, fn)


def test_in_the_json_format_a_session_revoked_in_the_last_minute_is_not_brought_back(settings, user, monkeypatch):
    """The owner signs the hijacker out, then changes the email, while KV still lists and serves what was revoked."""
    settings.SESSION_CFKV_FORMAT = "json"
    owner, hijacker = signed_in(user), signed_in(user)
    hijack_key = hijacker.cookies["sessionid"].value
    Lag(monkeypatch, hide_new=False)
    assert revoke_session(user, hashed_id(hijack_key)) is True
    assert owner.get("/change-email/", {"to": "ann@new.example.com"}).status_code == 200
    monkeypatch.undo()
    assert raw_session(hijack_key) is None
    assert hijacker.get("/whoami/").json()["user"] is None and owner.get("/whoami/").json()["user"] == user.pk


@pytest.mark.parametrize("sign_out", ["one", "all"])
def test_in_the_minute_after_a_change_the_list_and_each_sign_out_find_the_moved_sessions(user, monkeypatch, sign_out):
    """The hijacker changes the email; the owner signs them out at once, while KV lists none of the moved entries."""
    hijacker, owner = signed_in(user), signed_in(user)
    hijack_ref, owner_ref = (hashed_id(c.cookies["sessionid"].value) for c in (hijacker, owner))
    Lag(monkeypatch)
    assert hijacker.get("/change-email/", {"to": "ann@new.example.com"}).status_code == 200
    user.refresh_from_db()
    assert index_entries("ann@new.example.com") == []  # KV lists none of them yet
    assert {session.ref for session in user_sessions(user)} == {hijack_ref, owner_ref}
    if sign_out == "one":
        assert revoke_session(user, hijack_ref) is True
    else:
        assert revoke_all_sessions(user) == 2
    monkeypatch.undo()
    assert hijacker.get("/whoami/").json()["user"] is None
    assert owner.get("/whoami/").json()["user"] == (user.pk if sign_out == "one" else None)


def test_with_a_user_field_each_listing_and_sign_out_reads_the_last_moves_marker(settings, emu, cfkv_calls, user):
    laptop, phone = signed_in(user), signed_in(user)
    spent(cfkv_calls)
    [_, ref] = sorted(session.ref for session in user_sessions(user))
    assert spent(cfkv_calls) == {"list": 1, "get": 1}
    assert revoke_session(user, ref) is True
    assert spent(cfkv_calls) == {"list": 1, "bulk_delete": 1}  # listed already: no marker read for it
    assert revoke_all_sessions(user) == 1
    assert spent(cfkv_calls) == {"list": 1, "get": 1, "bulk_delete": 1}
    assert laptop.get("/whoami/").json()["user"] is None and phone.get("/whoami/").json()["user"] is None


def marker_of(identity):
    return get_kv().get(index.moved_key(SessionStore.key_prefix(), identity))


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_two_users_who_swap_emails_in_the_minute_still_find_and_sign_out_their_own(settings, user, other, fmt,
                                                                                  monkeypatch):
    """Bob's move away from bob@ leaves Ann's marker there, written a moment before by her move to bob@."""
    settings.SESSION_CFKV_FORMAT = fmt
    ann, bob = signed_in(user), signed_in(other)
    Lag(monkeypatch, keep_deleted=False)
    swap_emails(user, other)
    user.refresh_from_db(), other.refresh_from_db()
    assert [s.ref for s in user_sessions(user)] == [hashed_id(ann.cookies["sessionid"].value)]
    assert [s.ref for s in user_sessions(other)] == [hashed_id(bob.cookies["sessionid"].value)]
    assert revoke_all_sessions(user) == 1
    monkeypatch.undo()
    assert ann.get("/whoami/").json()["user"] is None and bob.get("/whoami/").json()["user"] == other.pk


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_the_next_holder_of_a_value_reads_nothing_of_the_former_holders_marker(user, monkeypatch, twin):
    """Ann moves ann@ -> v@ -> w@ within the minute; Mallory takes v@, then w@ once Ann is deleted, while KV still
    serves both of Ann's markers. Nothing of Ann's is listed for her, and her sign-outs end nothing of Ann's."""
    ann = signed_in(user)
    lag = Lag(monkeypatch)
    user.email = "v@example.com"
    user.save()
    user.email = "w@example.com"
    user.save()
    lag.deleted_infos.clear()  # KV serves what the second move deleted (the v@ marker), and lists none of it
    assert marker_of("v@example.com") is not None and marker_of("w@example.com") is not None
    mallory = get_user_model().objects.create_user("mallory", "v@example.com", "pw")
    memory.recently_deleted.clear()  # another process
    if twin == "sync":
        assert user_sessions(mallory) == [] and revoke_all_sessions(mallory) == 0
    else:
        assert async_to_sync(auser_sessions)(mallory) == [] and async_to_sync(arevoke_all_sessions)(mallory) == 0
    monkeypatch.undo()
    assert ann.get("/whoami/").json()["user"] == user.pk
    user.delete()
    mallory.email = "w@example.com"
    mallory.save()
    assert user_sessions(mallory) == [] and ann.get("/whoami/").json()["user"] is None


def test_a_user_deleted_after_a_swap_leaves_the_other_users_marker(settings, user, other, monkeypatch):
    """Ann and Bob swap emails and Bob is deleted, in one transaction: his sign-out leaves the marker of Ann's move to
    his former email, so Ann's list and sign-out still find her moved session in the minute KV does not list it."""
    ann, bob = signed_in(user), signed_in(other)
    Lag(monkeypatch, keep_deleted=False)
    swap_emails(user, other, then=other.delete)
    user.refresh_from_db()
    assert marker_of("bob@example.com") is not None
    assert [s.ref for s in user_sessions(user)] == [hashed_id(ann.cookies["sessionid"].value)]
    assert revoke_all_sessions(user) == 1
    monkeypatch.undo()
    assert ann.get("/whoami/").json()["user"] is None and bob.get("/whoami/").json()["user"] is None


def test_a_user_who_moves_back_to_a_value_reads_no_marker_of_the_first_move(user, monkeypatch):
    """ann@ -> v@ -> ann@, signed out everywhere, then -> v@ again: the first move's marker went with the move back."""
    signed_in(user)
    Lag(monkeypatch, keep_deleted=False)
    for email in ("v@example.com", "ann@example.com"):
        user.email = email
        user.save()
    assert marker_of("v@example.com") is None
    assert revoke_all_sessions(user) == 1
    user.email = "v@example.com"
    user.save()
    memory.recently_deleted.clear()  # another process
    assert user_sessions(user) == [] and revoke_all_sessions(user) == 0


def test_signing_out_everywhere_deletes_the_move_marker_that_would_list_them_again_elsewhere(user, monkeypatch):
    signed_in(user), signed_in(user)
    Lag(monkeypatch, keep_deleted=False)
    user.email = "v@example.com"
    user.save()
    assert revoke_all_sessions(user) == 2
    memory.recently_deleted.clear()  # another process
    assert marker_of("v@example.com") is None and user_sessions(user) == []


def test_a_sign_out_everywhere_retried_after_a_kv_failure_counts_what_it_signed_out(user, monkeypatch):
    browser = signed_in(user)
    kv = get_kv()
    monkeypatch.setattr(kv, "delete_many", lambda keys: (_ for _ in ()).throw(KVConnectionError("KV is down")))
    with pytest.raises(KVConnectionError):
        revoke_all_sessions(user)
    monkeypatch.undo()
    assert revoke_all_sessions(user) == 1
    assert browser.get("/whoami/").json()["user"] is None


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_values_a_namespace_writer_planted_cannot_fail_the_save_or_stop_the_move(settings, user, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    browser = signed_in(user)
    get_kv().put(index.moved_key(SessionStore.key_prefix(), "ann@example.com"), "[" * 100_000)  # a forged marker
    worker_id, value = worker_session("ann@example.com")
    value["data"] = {"_auth_user_hash": []}  # not a hash
    get_kv().put(SessionStore.kv_key(worker_id), json.dumps(value), expiration_ttl=3600)
    get_kv().put(index.entry_key(SessionStore.key_prefix(), "ann@example.com", hashed_id(worker_id)), b"",
                 expiration_ttl=3600, metadata={"kind": "session", "expires": 4_000_000_000})
    # An entry of the user's own session that says no expiry: the session's own is written with it.
    get_kv().put(index.entry_key(SessionStore.key_prefix(), "ann@example.com", hashed_id(browser.cookies["sessionid"]
                                                                                          .value)),
                 b"", expiration_ttl=3600, metadata={"kind": "session", "seen": 1})
    user.email = "ann@new.example.com"
    user.save()
    assert [s.ref for s in user_sessions(user)] == [hashed_id(browser.cookies["sessionid"].value)]
    assert browser.get("/whoami/").json()["user"] == user.pk


def test_a_typo_in_the_user_field_does_not_fail_a_users_deletion(settings, user):
    settings.SESSION_CFKV_USER_FIELD = "emial"
    user.delete()
    assert not get_user_model().objects.filter(pk=user.pk).exists()


def test_the_command_refuses_a_pk_another_user_has(settings, user, other):
    settings.SESSION_CFKV_FORMAT, settings.SESSION_CFKV_USER_FIELD = "json", "pk"
    worker_id, _ = worker_session(str(other.pk))
    get_kv().put(index.entry_key(SessionStore.key_prefix(), str(other.pk), hashed_id(worker_id)), b"",
                 expiration_ttl=3600, metadata={"kind": "session", "expires": 4_000_000_000, "via": "bearer"})
    with pytest.raises(CommandError, match="Another user's pk is that value now"):
        call_command("cfkv", "sessions", "--user", "ann", "--former", str(other.pk))
    assert raw_session(worker_id) is not None


def test_the_command_says_what_it_moved_in_the_json_format(settings, user, capsys):
    settings.SESSION_CFKV_FORMAT = "json"
    browser = signed_in(user)
    get_user_model().objects.filter(pk=user.pk).update(email="ann@new.example.com")
    call_command("cfkv", "sessions", "--user", "ann", "--former", "ann@example.com")
    assert "Moved 1 session from 'ann'" in capsys.readouterr().out
    assert browser.get("/whoami/").json()["user"] == user.pk
    call_command("cfkv", "sessions", "--user", "ann", "--former", "ann@example.com", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["followed"] == 0 and len(report["sessions"]) == 1  # moved already: nothing left under it


def test_a_rewritten_session_is_not_served_stale_from_the_near_cache(settings, user):
    settings.SESSION_CFKV_FORMAT, settings.SESSION_CFKV_NEAR_CACHE_TIMEOUT = "json", 60
    browser = signed_in(user)
    assert browser.get("/whoami/").json()["user"] == user.pk  # now in this process's near cache
    user.email = "ann@new.example.com"
    user.save()
    assert browser.get("/whoami/").json()["user"] == user.pk


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_the_values_next_holder_in_the_minute_after_a_change_neither_lists_nor_signs_out_the_former_holders(
        user, monkeypatch, twin):
    """Ann moves ann@ -> v@ and Mallory takes ann@ at once, while KV still lists Ann's entries under ann@ (deleted by
    the move): each entry names its holder, so Mallory's list, her sign-outs and her deletion leave Ann's alone."""
    laptop, phone = signed_in(user), signed_in(user)
    Lag(monkeypatch, hide_new=False)
    user.email = "v@example.com"
    user.save()
    assert len(index_entries("ann@example.com")) == 2  # what KV still lists
    mallory = get_user_model().objects.create_user("mallory", "ann@example.com", "pw")
    memory.recently_deleted.clear()  # another process
    ref = hashed_id(laptop.cookies["sessionid"].value)
    if twin == "sync":
        assert user_sessions(mallory) == [] and revoke_session(mallory, ref) is False
        assert revoke_all_sessions(mallory) == 0
    else:
        assert async_to_sync(auser_sessions)(mallory) == [] and async_to_sync(arevoke_all_sessions)(mallory) == 0
    mallory.delete()
    monkeypatch.undo()
    assert laptop.get("/whoami/").json()["user"] == user.pk and phone.get("/whoami/").json()["user"] == user.pk
    assert len(user_sessions(user)) == 2


def test_sessions_a_change_no_signal_saw_left_under_a_value_are_not_its_next_holders(user):
    """An update() moves nothing: until the command moves Ann's entries they stay under ann@, and whoever takes
    ann@ meanwhile does not list or end them."""
    browser = signed_in(user)
    get_user_model().objects.filter(pk=user.pk).update(email="v@example.com")
    mallory = get_user_model().objects.create_user("mallory", "ann@example.com", "pw")
    assert len(index_entries("ann@example.com")) == 1
    assert user_sessions(mallory) == [] and revoke_all_sessions(mallory) == 0
    assert browser.get("/whoami/").json()["user"] == user.pk


def test_an_entry_names_its_holder_only_while_a_field_can_change_and_by_no_id(settings, user):
    """The holder is an HMAC of the pk under the index key: neither the pk nor the email, and none for a pk."""
    signed_in(user)
    [info] = get_kv().list_keys(prefix=index.user_prefixes(SessionStore.key_prefix(), "ann@example.com")[0]).keys
    holder = info.metadata[index.HOLDER]
    assert "ann@example.com" not in json.dumps(info.metadata)
    assert holder == index.owner_name(f"pk:{user.pk}", bytes.fromhex(index.user_index_key()))
    settings.SESSION_CFKV_USER_FIELD = "pk"
    signed_in(user)
    [info] = get_kv().list_keys(prefix=index.user_prefixes(SessionStore.key_prefix(), str(user.pk))[0]).keys
    assert index.HOLDER not in info.metadata


def test_a_users_own_entries_stay_theirs_across_a_key_rotation_and_a_move(settings, user):
    """Signed in under one SECRET_KEY, listed under its successor while it is a fallback; a move then names the
    holder under the new key, so the user keeps the session in their list once the old key is dropped."""
    signed_in(user)
    settings.SECRET_KEY_FALLBACKS, settings.SECRET_KEY = [settings.SECRET_KEY], "a-new-secret-key-" + "x" * 40
    assert len(user_sessions(user)) == 1
    user.email = "v@example.com"
    user.save()
    get_kv().delete(index.moved_key(SessionStore.key_prefix(), "v@example.com"))  # two minutes on: the marker went
    settings.SECRET_KEY_FALLBACKS = []
    assert len(user_sessions(user)) == 1


def test_a_planted_holder_hides_only_the_entry_it_is_on(user, other):
    """A namespace writer's holder (another user's, or not text) on an entry under Ann's prefix hides that entry from
    Ann, and nothing raises."""
    signed_in(user), signed_in(user)
    kv = get_kv()
    bob_holder = index.holder(str(other.pk))[index.HOLDER]
    infos = kv.list_keys(prefix=index.user_prefixes(SessionStore.key_prefix(), "ann@example.com")[0]).keys
    for info, planted in zip(infos, [bob_holder, ["not", "text"]], strict=True):
        kv.put(info.name, b"", expiration_ttl=3600, metadata={**info.metadata, index.HOLDER: planted})
    assert user_sessions(user) == [] and revoke_all_sessions(user) == 0


def test_in_the_json_format_a_worker_session_naming_a_value_is_its_holders_to_list_and_end(settings, user):
    """A Worker's session (no auth hash of Django's) indexed by migrate-sessions is whoever its userId names: after an
    update() moved Ann away from ann@ unseen, it signs Mallory in once she takes ann@, so it is in her list and her
    "Sign out everywhere" ends it."""
    settings.SESSION_CFKV_FORMAT = "json"
    settings.SESSION_CFKV_KEY_LAYOUT = "plain"
    worker_id, _ = worker_session("ann@example.com")
    del settings.SESSION_CFKV_KEY_LAYOUT
    call_command("cfkv", "migrate-sessions", stdout=io.StringIO(), stderr=io.StringIO())
    assert len(user_sessions(user)) == 1
    [info] = get_kv().list_keys(prefix=index.user_prefixes(SessionStore.key_prefix(), "ann@example.com")[0]).keys
    assert index.HOLDER not in info.metadata
    get_user_model().objects.filter(pk=user.pk).update(email="v@example.com")  # no signal
    mallory = get_user_model().objects.create_user("mallory", "ann@example.com", "pw")
    worker_client = Client()
    worker_client.cookies["sessionid"] = worker_id
    assert worker_client.get("/whoami/").json()["user"] == mallory.pk
    assert len(user_sessions(mallory)) == 1 and revoke_all_sessions(mallory) == 1
    assert worker_client.get("/whoami/").json()["user"] is None


@pytest.mark.parametrize("sign_out", ["one", "all"])
def test_in_the_json_format_a_session_naming_the_value_is_its_holders_whoever_signed_in(settings, user, sign_out):
    """Ann's session Django signed in still names ann@ after an update(): Django signs nobody in on it, but a Worker
    serves it to whoever ann@ names, so Mallory, who takes ann@, lists it and signs it out."""
    settings.SESSION_CFKV_FORMAT = "json"
    key = signed_in(user).cookies["sessionid"].value
    get_user_model().objects.filter(pk=user.pk).update(email="v@example.com")
    mallory = get_user_model().objects.create_user("mallory", "ann@example.com", "pw")
    assert raw_session(key)["userId"] == "ann@example.com"
    assert [session.ref for session in user_sessions(mallory)] == [hashed_id(key)]
    if sign_out == "one":
        assert revoke_session(mallory, hashed_id(key)) is True
    else:
        assert revoke_all_sessions(mallory) == 1
    assert raw_session(key) is None


def plant_binary_session(identity):
    """A namespace writer's entry under ``identity``'s prefix naming another holder, with a binary value at its
    session's key (which a bulk read refuses)."""
    kv, ref = get_kv(), "ab" * 32
    prefix = index.user_prefixes(SessionStore.key_prefix(), identity)[0]
    kv.put(prefix + ref, b"", expiration_ttl=3600,
           metadata={"kind": "session", "expires": time.time() + 3600, index.HOLDER: "0" * 32})
    kv.put(SessionStore.ref_key(ref), b"\xff\xfe\x00", expiration_ttl=3600)


@pytest.mark.parametrize(("twin", "kv"), [("sync", "local"), ("sync", "emulator"), ("async", "emulator"),
                                          ("page", "local")])
def test_in_the_json_format_a_planted_binary_value_cannot_stop_a_sign_out_everywhere(request, settings, user, twin,
                                                                                      kv):
    """KV refuses a bulk read that meets a binary value (400): the listing leaves that entry out, and goes on."""
    if kv == "emulator":
        request.getfixturevalue("emu")
    settings.SESSION_CFKV_FORMAT = "json"
    owner, hijacker = signed_in(user), signed_in(user)
    plant_binary_session("ann@example.com")
    assert len(user_sessions(user)) == 2
    if twin == "sync":
        assert revoke_all_sessions(user) == 2
    elif twin == "async":
        assert async_to_sync(arevoke_all_sessions)(user) == 2
    else:
        assert owner.post("/account/sessions/", {"action": "others"})["Location"].endswith("signed_out=1")
    assert hijacker.get("/whoami/").json()["user"] is None


def test_in_the_json_format_a_session_a_password_change_ended_moves_with_the_user(settings, user):
    """A session signed in before a password change names the value with a hash no longer Ann's: Django signs no one
    in on it, but a Worker would serve it to whoever takes the value next, so it follows Ann, into her list."""
    settings.SESSION_CFKV_FORMAT = "json"
    stolen_client = signed_in(user)
    stolen = stolen_client.cookies["sessionid"].value
    user.set_password("new password")
    user.save()
    user.email = "v@example.com"
    user.save()
    assert raw_session(stolen)["userId"] == "v@example.com" and stolen_client.get("/whoami/").json()["user"] is None
    newcomer = get_user_model().objects.create_user("newcomer", "ann@example.com", "pw")
    assert user_sessions(newcomer) == [] and index_entries("ann@example.com") == []
    assert revoke_all_sessions(user) == 1 and raw_session(stolen) is None


@pytest.mark.parametrize("saves", ["1", "2"])
@pytest.mark.parametrize("fmt", ["signed", "json"])
@pytest.mark.parametrize("via", ["cookie", "bearer"])
def test_a_request_that_changes_password_and_email_stays_signed_in_and_listed(settings, user, via, fmt, saves):
    """The move runs when the request's transaction commits, before the request stores its session with the new
    auth hash: the session it finds (a token's key never changes) moves as the user's, and the request's own save
    then completes it."""
    settings.SESSION_CFKV_FORMAT, settings.MIDDLEWARE = fmt, BEARER_MIDDLEWARE
    client = Client()
    if via == "cookie":
        client.get(f"/login/{user.pk}/")
        headers = {}
    else:
        headers = auth(issue_token(None, user, backend="django.contrib.auth.backends.ModelBackend"))
    assert client.get("/whoami/", **headers).json()["user"] == user.pk
    response = client.get("/change-password-and-email/", {"password": "new", "email": "v@example.com",
                                                          "saves": saves}, **headers)
    assert response.status_code == 200
    user.refresh_from_db()
    assert client.get("/whoami/", **headers).json()["user"] == user.pk
    assert len(user_sessions(user)) == 1


def test_in_the_json_format_a_refused_bulk_read_other_than_a_binary_values_raises(settings, user, monkeypatch):
    """Only KV's 400 for a binary value is taken as "no session names the value"; a 408 (or any other refusal)
    fails the sign-out, which would otherwise report sessions it never read as gone."""
    settings.SESSION_CFKV_FORMAT = "json"
    signed_in(user)
    plant_binary_session("ann@example.com")
    kv = get_kv()
    monkeypatch.setattr(kv, "get_many", lambda keys: (_ for _ in ()).throw(KVAPIError("timed out", status=408)))
    with pytest.raises(KVAPIError):
        revoke_all_sessions(user)


def test_in_the_json_format_a_deleted_users_worker_session_goes_whatever_is_planted_beside_it(settings, user):
    settings.SESSION_CFKV_FORMAT = "json"
    worker_id, value = worker_session("ann@example.com")
    prefix = index.user_prefixes(SessionStore.key_prefix(), "ann@example.com")[0]
    get_kv().put(prefix + hashed_id(worker_id), b"", expiration_ttl=3600,  # the Worker's indexSession()
                 metadata={"kind": "session", "expires": value["expiresAt"] / 1000, "via": "bearer"})
    plant_binary_session("ann@example.com")
    user.delete()
    get_user_model().objects.create_user("mallory", "ann@example.com", "pw")
    client = Client()
    client.cookies["sessionid"] = worker_id
    assert client.get("/whoami/").json()["user"] is None  # it would sign Mallory in


def test_in_the_json_format_the_next_holder_reads_the_former_holders_sessions_before_leaving_them(
        settings, emu, cfkv_calls, user, monkeypatch):
    """In the minute after a json move KV still lists Ann's entries under ann@: Mallory's listing reads those
    sessions (one bulk read), finds they name v@ now, and leaves them; her own entries cost no read."""
    settings.SESSION_CFKV_FORMAT = "json"
    laptop = signed_in(user)
    Lag(monkeypatch, hide_new=False)
    user.email = "v@example.com"
    user.save()
    mallory = get_user_model().objects.create_user("mallory", "ann@example.com", "pw")
    signed_in(mallory)
    memory.recently_deleted.clear()  # another process
    spent(cfkv_calls)
    assert len(user_sessions(mallory)) == 1
    assert spent(cfkv_calls) == {"list": 1, "bulk_get": 1, "get": 1}
    assert revoke_all_sessions(mallory) == 1
    monkeypatch.undo()
    assert laptop.get("/whoami/").json()["user"] == user.pk


def test_a_move_keeps_an_entry_whose_metadata_leaves_no_room_for_the_holder(user):
    """A Worker's entry near KV's 1,024 bytes of metadata: the move writes it as it was, without a holder, rather
    than leave the session signed in and unlisted."""
    browser = signed_in(user)
    ref = hashed_id(browser.cookies["sessionid"].value)
    name = index.entry_key(SessionStore.key_prefix(), "ann@example.com", ref)
    meta = {"kind": "session", "expires": 4_000_000_000, "via": "bearer", "ua": "x" * 940}
    get_kv().put(name, b"", expiration_ttl=3600, metadata=meta)
    user.email = "v@example.com"
    user.save()
    assert len(user_sessions(user)) == 1 and revoke_all_sessions(user) == 1
    assert browser.get("/whoami/").json()["user"] is None


@pytest.mark.parametrize("password", ["", "new"])
@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_signing_out_other_devices_in_the_transaction_that_changes_the_email_signs_them_out(settings, user, fmt,
                                                                                              password):
    """The sessions are listed under the former email until the commit moves them: the sign-out finds them there,
    and the move then passes them by."""
    settings.SESSION_CFKV_FORMAT = fmt
    owner, hijacker = signed_in(user), signed_in(user)
    stolen = hijacker.cookies["sessionid"].value
    response = owner.get("/settings-form/", {"email": "v@example.com", "password": password})
    assert response.json()["signed_out"] >= 1  # and the owner's former key: update_session_auth_hash() cycled it
    user.refresh_from_db()
    assert hijacker.get("/whoami/").json()["user"] is None and raw_session(stolen) is None
    assert owner.get("/whoami/").json()["user"] == user.pk
    assert [session.ref for session in user_sessions(user)] == [hashed_id(owner.cookies["sessionid"].value)]


@pytest.mark.parametrize("inside", [False, True])
@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_a_change_rolled_back_leaves_no_value_for_a_later_sign_out_to_take_from_its_next_holder(settings, user, fmt,
                                                                                               inside):
    """A savepoint rolls Ann's change back; she changes her email later through another instance, and Bob takes
    ann@. Signing Ann out everywhere through the first instance, in a transaction or not, leaves Bob signed in."""
    settings.SESSION_CFKV_FORMAT = fmt
    signed_in(user)
    with transaction.atomic():
        with contextlib.suppress(RuntimeError), transaction.atomic():
            user.email = "typo@example.com"
            user.save()
            raise RuntimeError("a check after the save failed")
    fresh = get_user_model().objects.get(pk=user.pk)
    fresh.email = "v@example.com"
    fresh.save()
    bob = get_user_model().objects.create_user("bob2", "ann@example.com", "pw")
    bob_browser = signed_in(bob)
    user.refresh_from_db()
    with transaction.atomic() if inside else contextlib.nullcontext():
        assert revoke_all_sessions(user) == 1
    assert bob_browser.get("/whoami/").json()["user"] == bob.pk


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_signing_out_everywhere_in_the_transaction_of_a_swap_leaves_the_other_users_sessions(settings, user, other,
                                                                                              fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    ann, bob = signed_in(user), signed_in(other)
    swap_emails(user, other, then=lambda: revoke_all_sessions(user))
    assert ann.get("/whoami/").json()["user"] is None and bob.get("/whoami/").json()["user"] == other.pk


def strip_holders(identity="ann@example.com"):
    """Rewrite the entries under ``identity`` without a holder, as a Worker's refresh of them writes them."""
    kv = get_kv()
    for info in kv.list_keys(prefix=index.user_prefixes(SessionStore.key_prefix(), identity)[0]).keys:
        kv.put(info.name, b"", expiration_ttl=3600,
               metadata={name: value for name, value in info.metadata.items() if name != index.HOLDER})


@pytest.mark.parametrize("how", ["change", "savepoint rolled back", "value put back"])
@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_signing_out_everywhere_in_a_changes_transaction_ends_entries_that_name_no_holder(settings, user, fmt, how):
    """Entries a Worker refreshed name no holder: a sign-out in the transaction finds them under the value they
    stay under until the commit, whatever the transaction did to the value before."""
    settings.SESSION_CFKV_FORMAT = fmt
    browser = signed_in(user)
    strip_holders()
    with transaction.atomic():
        if how == "savepoint rolled back":
            with contextlib.suppress(RuntimeError), transaction.atomic():
                user.email = "typo@example.com"
                user.save()
                raise RuntimeError("a check after the save failed")
            user.refresh_from_db()
        else:
            for email in ["v@example.com", *(["ann@example.com"] if how == "value put back" else [])]:
                user.email = email
                user.save()
        signed_out = revoke_all_sessions(user)
    assert signed_out == 1 and browser.get("/whoami/").json()["user"] is None


@pytest.mark.parametrize("field", ["pk", "email"])
def test_a_user_object_with_no_model_state_can_still_be_signed_out(settings, user, field):
    """A user of the site's own making that borrows the model's _meta, as a remote-user backend's may."""
    settings.SESSION_CFKV_USER_FIELD = field

    class Visitor:
        is_authenticated, _meta = True, get_user_model()._meta

        def __init__(self, of):
            self.pk, self.id, self.email = of.pk, of.pk, of.email

        def serializable_value(self, name):
            return getattr(self, name)

    browser = signed_in(user)
    assert revoke_all_sessions(Visitor(user)) == 1 and browser.get("/whoami/").json()["user"] is None


@pytest.mark.parametrize("then", ["moves on", "moves back", "moves on, loaded again"])
@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_a_sign_out_after_passing_through_a_value_another_user_left_in_the_transaction_leaves_theirs(settings, user,
                                                                                                    other, fmt, then):
    """Bob leaves bob@; Ann takes it, then moves on (or back, or on through a second instance of her), and signs out
    everywhere, all before the commit. The moves waiting for the commit say where her sessions still are, whichever
    instance made them; Bob's, still under bob@ until his move (a Worker refreshed their entries: no holder), stay
    his."""
    settings.SESSION_CFKV_FORMAT = fmt
    ann, bob = signed_in(user), signed_in(other)
    strip_holders("bob@example.com")
    with transaction.atomic():
        other.email = "bob2@example.com"
        other.save()
        user.email = "bob@example.com"
        user.save()
        ann_now = get_user_model().objects.get(pk=user.pk) if then.endswith("again") else user
        ann_now.email = "ann@example.com" if then == "moves back" else "ann3@example.com"
        ann_now.save()
        signed_out = revoke_all_sessions(get_user_model().objects.get(pk=user.pk) if then.endswith("again") else user)
    assert signed_out == 1 and ann.get("/whoami/").json()["user"] is None
    assert bob.get("/whoami/").json()["user"] == other.pk


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_a_sign_out_in_a_rotation_of_three_users_values_ends_only_the_users_own(settings, user, other, fmt):
    settings.SESSION_CFKV_FORMAT = fmt
    cat = get_user_model().objects.create_user("cat", "cat@example.com", "pw")
    browsers = {person: signed_in(person) for person in (user, other, cat)}
    with transaction.atomic():
        for person, email in [(user, "t@example.com"), (other, "ann@example.com"), (cat, "bob@example.com"),
                              (user, "cat@example.com")]:
            person.email = email
            person.save()
        revoke_all_sessions(other)
    for person, browser in browsers.items():
        assert browser.get("/whoami/").json()["user"] == (None if person == other else person.pk)


def test_a_user_saved_with_a_new_value_can_still_be_pickled_before_the_commit(user):
    """A view under ATOMIC_REQUESTS that changes the email, then caches the user or queues a job with it."""
    with transaction.atomic():
        user.email = "v@example.com"
        user.save()
        assert pickle.loads(pickle.dumps(user)).email == "v@example.com"

