"""Session key layout: nothing that read access to the namespace shows works as a cookie or a bearer token.

The attacker here holds a read-only view of the namespace (a read token, the
gateway's read token, a support laptop, `manage.py cfkv ls`): every key name,
every metadata value and every value, signed values read without the secret.
"""

import io
import json
import time
import zlib

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.core import signing
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from django_cfkv import get_kv, inspect
from django_cfkv.checks import check_session_settings
from django_cfkv.sessions import SessionStore, hashed_id, is_valid_key, revoke_all_sessions, user_sessions
from django_cfkv.sessions.keys import new_key

from .helpers import logged_in_with, populate

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]


def leaves(value):
    """Every string, number and dict key inside a JSON value, as text."""
    if isinstance(value, dict):
        return {str(k) for k in value} | {text for v in value.values() for text in leaves(v)}
    if isinstance(value, list):
        return {text for v in value for text in leaves(v)}
    return set() if value is None else {str(value)}


def read_without_the_secret(text):
    """Return what a stored value says: JSON as it is, a signed value's payload (signing is not encryption)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        payload = text.split(":", 1)[0]
        data = signing.b64_decode(payload.lstrip(".").encode())
        return json.loads(zlib.decompress(data) if payload.startswith(".") else data)
    except (ValueError, zlib.error):
        return None


def harvest(kv):
    """Everything read access shows: key names and their parts, metadata, values and what they hold."""
    found = set()
    for info in kv.iter_keys():
        found |= {info.name, *info.name.split(":")} | leaves(info.metadata)
        text = kv.get(info.name).decode("utf-8", "replace")
        found |= {text} | leaves(read_without_the_secret(text))
    return found


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_nothing_read_access_shows_works_as_a_cookie_or_a_token(site, fmt):
    site.SESSION_CFKV_FORMAT = fmt
    admin, ids = populate(fmt)
    found = harvest(get_kv())
    assert {SessionStore.kv_key(i) for i in ids} <= found  # the harvest saw every session
    # ... and the index of each signed-in user's sessions: its names, their parts, its metadata.
    entries = {name for name in found if name.startswith("session:user:")}
    assert {name.rsplit(":", 1)[1] for name in entries} == {hashed_id(i) for i in ids[:1] + ids[2:4]}  # signed in
    assert not any(i in text for i in ids for text in found)
    for candidate in sorted(found):
        assert logged_in_with(candidate) == (None, None), candidate
    # The sessions themselves still work, for whoever holds their ids.
    assert logged_in_with(ids[0]) == (admin.pk, admin.pk)


@pytest.mark.parametrize("fmt", ["signed", "json"])
def test_the_plain_layout_hands_read_access_every_login(site, fmt):
    site.SESSION_CFKV_FORMAT = fmt
    site.SESSION_CFKV_KEY_LAYOUT = "plain"  # the documented risk of opting in
    admin, _ = populate(fmt)
    assert any(logged_in_with(candidate) == (admin.pk, admin.pk) for candidate in harvest(get_kv()))


def test_a_signed_session_copied_to_another_key_is_refused(site, caplog):
    """Whoever can write the namespace cannot move a signed session to a key whose id they know."""
    admin, ids = populate("signed")
    kv, attacker_id = get_kv(), "attackerchosenid0123456789abcdef"
    kv.put(SessionStore.kv_key(attacker_id), kv.get(SessionStore.kv_key(ids[0])))  # the superuser's login
    with caplog.at_level("WARNING", logger="django.security.SuspiciousSession"):
        assert logged_in_with(attacker_id) == (None, None)
    assert "written for another session key" in caplog.text
    assert logged_in_with(ids[0]) == (admin.pk, admin.pk)


def test_a_signed_value_written_before_the_binding_is_still_read(site):
    key = "olderthanthebinding0123456789abc"
    envelope = {"createdAt": 1, "expiresAt": int((time.time() + 600) * 1000), "data": {"n": 7}}
    get_kv().put(SessionStore.kv_key(key), signing.dumps(
        envelope, salt=SessionStore.key_salt_value(), serializer=SessionStore().serializer, compress=True))
    assert SessionStore(key).load() == {"n": 7}


def test_a_signed_value_written_before_the_binding_can_be_copied_until_it_is_saved(site):
    """The binding's limit, from a namespace writer's side: a value written before it names no key, so it is
    read under any key until it is next saved (the save binds it) or expires."""
    victim, attacker_id = "olderthanthebinding0123456789abc", "attackerchosenid0123456789abcdef"
    envelope = {"createdAt": 1, "expiresAt": int((time.time() + 600) * 1000), "data": {"n": 7}}
    kv = get_kv()
    kv.put(SessionStore.kv_key(victim), signing.dumps(
        envelope, salt=SessionStore.key_salt_value(), serializer=SessionStore().serializer, compress=True))
    kv.put(SessionStore.kv_key(attacker_id), kv.get(SessionStore.kv_key(victim)))
    assert SessionStore(attacker_id).load() == {"n": 7}  # read under the key the writer chose
    saved = SessionStore(victim)
    saved["n"] = 8
    saved.save()  # the victim's next save binds its value to its key
    kv.put(SessionStore.kv_key(attacker_id), kv.get(SessionStore.kv_key(victim)))
    assert SessionStore(attacker_id).load() == {}


def test_a_64_hex_key_name_is_never_a_session_id():
    assert not is_valid_key(hashed_id("x" * 32), "json") and not is_valid_key("0" * 64, "json")
    assert len(hashed_id("abc")) == 64 and hashed_id("abc") == hashed_id("abc").lower()


def test_a_worker_uuid_is_a_session_id_in_the_json_format_only():
    """crypto.randomUUID() ids come from Worker code, which reads and writes JSON sessions: a signed-format site
    has no UUID sessions, so a UUID cookie there names nothing it could have made."""
    uuid = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
    assert is_valid_key(uuid, "json") and not is_valid_key(uuid, "signed")


@pytest.mark.parametrize("key", [None, 12345678901234567890, b"abcdefgh12345678", ["abcdefgh12345678"]])
def test_a_session_id_is_text(key):
    assert not is_valid_key(key, "json") and not is_valid_key(key, "signed")


def test_a_new_id_is_djangos_32_characters_of_its_alphabet():
    """32 characters of 36, as Django's own engines make them: 165 random bits, and a cookie of Django's size."""
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50 and {len(k) for k in keys} == {32}
    assert set("".join(keys)) <= set(VALID_KEY_CHARS) and all(is_valid_key(k, "signed") for k in keys)


def test_kv_key_is_the_prefix_and_the_ids_sha256(settings):
    # sha256sum of the id's bytes, lowercase hex: what crypto.subtle.digest gives a Worker.
    assert SessionStore.kv_key("abcdefgh12345678") == (
        "session:25f94a2a5c7fbaf499c665bc73d67c1c87e496da8985131633ee0a95819db2e8")
    settings.SESSION_CFKV_KEY_LAYOUT = "plain"
    assert SessionStore.kv_key("abcdefgh12345678") == "session:abcdefgh12345678"


# Operators' views never print a usable id


def run(*args):
    out = io.StringIO()
    call_command("cfkv", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.parametrize("layout", ["hashed", "plain"])
def test_ls_get_stats_and_rm_dry_run_never_print_a_usable_id(site, layout):
    site.SESSION_CFKV_FORMAT = "json"
    site.SESSION_CFKV_KEY_LAYOUT = layout
    _, ids = populate("json")
    names = [info.name for info in get_kv().iter_keys()]
    outputs = [run("ls"), run("ls", "--json"), run("stats"), run("stats", "--json", "--sizes"),
               run("rm", "--prefix", "session:", "--dry-run")]
    outputs += [run("get", name) + run("get", name, "--json") for name in names]
    for output in outputs:
        assert not any(i in output for i in ids)
    listed = json.loads(run("ls", "--json"))["keys"]
    if layout == "plain":
        assert all(row["key"].endswith("…") for row in listed if row["kind"] == "sessions")
    else:
        assert sorted(row["key"] for row in listed) == sorted(names)  # hashed names are shown whole


def test_display_key_cuts_only_session_keys_holding_an_id():
    assert inspect.display_key("session:k3x9w2m8q7v1p0z5r4t6y8u2i1o3a5s7") == "session:k3x9…"
    assert inspect.display_key("session:0b6f1c2e-1111-4222-8333-444455556666") == "session:0b6f…"
    assert inspect.display_key("api:k3x9w2m8q7v1p0z5r4t6y8u2i1o3a5s7", {"kind": "session"}) == "api:k3x9…"
    hashed = "session:" + hashed_id("k3x9w2m8q7v1p0z5r4t6y8u2i1o3a5s7")
    assert inspect.display_key(hashed) == hashed
    cache_key = "cache::1:k3x9w2m8q7v1p0z5r4t6y8u2i1o3a5s7"
    assert inspect.display_key(cache_key) == cache_key


# Sessions written in the plain layout, after an upgrade


def old_layout_site(site, fmt="json"):
    """Sessions made under the plain layout (a login, a token, a Worker's and an expired one), then the upgrade."""
    site.SESSION_CFKV_FORMAT = fmt
    site.SESSION_CFKV_KEY_LAYOUT = "plain"
    admin, ids = populate(fmt)
    dead = SessionStore()
    dead["n"] = 1
    dead.set_expiry(1)
    dead.create()
    del site.SESSION_CFKV_KEY_LAYOUT  # the default, hashed
    return admin, ids, dead.session_key


def test_migrate_sessions_moves_every_live_session_once(site, clock, cfkv_calls):
    admin, ids, dead = old_layout_site(site)
    kv = get_kv()
    before = {info.name: info for info in kv.iter_keys()}
    assert logged_in_with(ids[0]) == (None, None)  # until the move, the old sessions are not found
    clock(2)  # `dead` is past its exact expiry
    cfkv_calls.reset()
    out = run("migrate-sessions")
    assert "Found 6 sessions stored under their ids" in out and "Moved 5 to hashed keys; deleted 6" in out
    if site.CFKV["default"]["BACKEND"] == "cloudflare":  # one list, one bulk read, write and delete
        assert cfkv_calls.counts == {"list": 1, "bulk_get": 1, "bulk_put": 1, "bulk_delete": 1}
    assert logged_in_with(ids[0]) == (admin.pk, admin.pk)  # the browser's login
    assert logged_in_with(ids[2])[1] == admin.pk  # a token
    assert logged_in_with(ids[4])[1] == admin.pk  # a Worker's session
    after = {info.name: info for info in kv.iter_keys() if not info.name.startswith("session:user:")}
    assert sorted(after) == sorted(SessionStore.kv_key(i) for i in ids)
    moved = after[SessionStore.kv_key(ids[2])]
    old = before["session:" + ids[2]]
    assert moved.metadata == old.metadata and moved.expiration == old.expiration
    assert json.loads(run("migrate-sessions", "--json"))["found"] == 0


@pytest.mark.parametrize("fmt", ["json", "signed"])
def test_migrated_sessions_are_in_their_users_index_at_once(site, fmt):
    admin, ids, _ = old_layout_site(site, fmt)
    ann = get_user_model().objects.get(username="ann")
    run("migrate-sessions")
    # Before any of them is used again: the browser's login, the token (and the Worker's session) are listed.
    signed_in = 3 if fmt == "json" else 2
    assert len(user_sessions(admin)) == signed_in and len(user_sessions(ann)) == 1
    assert revoke_all_sessions(admin) == signed_in
    assert logged_in_with(ids[0]) == (None, None) and logged_in_with(ids[2]) == (None, None)
    assert logged_in_with(ids[3])[1] == ann.pk


@pytest.mark.parametrize("fmt, field, queries", [("signed", "pk", 0), ("json", "pk", 1), ("signed", "username", 3)])
def test_naming_moved_sessions_users_queries_only_what_a_session_does_not_say(site, fmt, field, queries):
    """As documented: a query per signed-in session, unless users are named by pk and Django wrote the session
    (the Worker's session, in the json format, names its user without Django's auth hash)."""
    old_layout_site(site, fmt)
    site.SESSION_CFKV_USER_FIELD = field
    made = []
    with connection.execute_wrapper(lambda execute, sql, *args: made.append(sql) or execute(sql, *args)):
        run("migrate-sessions")
    assert len(made) == queries


def test_values_a_writer_planted_cannot_stop_the_move_or_its_index(site, clock):
    admin, _, _ = old_layout_site(site)
    clock(2)  # the expired session is left out
    now_ms = int(time.time() * 1000)
    emoji = "\U0001f600" * 64  # 12 bytes each in JSON: 1,536 bytes in the two fields
    planted = {"0b6f1c2e-1111-4222-8333-444455556666": {"userId": str(admin.pk), "expiresAt": 1e300},
               "0b6f1c2e-1111-4222-8333-444455556667": {
                   "userId": str(admin.pk), "expiresAt": now_ms + 3_600_000,
                   "data": {"_cfkv_client": {"via": "bearer", "device": emoji, "where": emoji}}}}
    for session_id, value in planted.items():
        get_kv().put("session:" + session_id, json.dumps(value), expiration_ttl=3600)
    assert json.loads(run("migrate-sessions", "--json"))["moved"] == 7
    listed = user_sessions(admin)
    assert len(listed) == 5  # the login, the token, the Worker's session and the two planted ones
    assert any(entry.device.startswith("\U0001f600") and entry.device.endswith("…") for entry in listed)
    expirations = {info.name: info.expiration for info in get_kv().iter_keys(prefix="session:")}
    entries = [name for name in expirations if name.startswith("session:user:")]
    assert len(entries) == 6  # and ann's token
    for name in entries:  # each entry expires with its session, whatever expiresAt says
        assert expirations[name] == expirations["session:" + name.rsplit(":", 1)[1]] is not None


def test_migrate_sessions_dry_run_drop_and_rerun(site):
    _, ids, _ = old_layout_site(site)
    kv = get_kv()
    names = sorted(info.name for info in kv.iter_keys())
    assert json.loads(run("migrate-sessions", "--dry-run", "--json"))["moved"] == 6
    assert sorted(info.name for info in kv.iter_keys()) == names
    # An interrupted run wrote one new key, which requests have changed since: it is kept as it is.
    kv.put(SessionStore.kv_key(ids[2]), b"newer")
    report = json.loads(run("migrate-sessions", "--json"))
    assert report["moved"] == 5 and report["deleted"] == 6
    assert kv.get(SessionStore.kv_key(ids[2])) == b"newer"


def test_migrate_sessions_drop_logs_everyone_out(site):
    _, ids, _ = old_layout_site(site)
    assert "deleted 6 old keys" in run("migrate-sessions", "--drop")
    assert list(get_kv().iter_keys()) == []
    assert logged_in_with(ids[2]) == (None, None)


def test_migrate_sessions_refuses_the_plain_layout(site):
    site.SESSION_CFKV_KEY_LAYOUT = "plain"
    with pytest.raises(CommandError, match="SESSION_CFKV_KEY_LAYOUT is 'plain'"):
        run("migrate-sessions")


# Settings mistakes are check errors


@pytest.mark.parametrize("name, value, error_id", [
    ("SESSION_CFKV_KEY_LAYOUT", "sha256", "django_cfkv.E201"),
    ("SESSION_CFKV_FORMAT", "pickle", "django_cfkv.E202"),
    ("SESSION_CFKV_ON_LOAD_ERROR", "ignore", "django_cfkv.E203"),
    ("SESSION_CFKV_USER_FIELD", "no_such_field", "django_cfkv.E204"),
    ("SESSION_CFKV_USER_INDEX", "yes", "django_cfkv.E205"),
])
def test_bad_session_settings_are_check_errors(settings, name, value, error_id):
    assert check_session_settings() == []
    setattr(settings, name, value)
    [error] = check_session_settings()
    assert error.id == error_id and name in error.msg and error.hint


def test_the_plain_layout_warns_that_sessions_are_not_indexed_by_user(settings):
    settings.SESSION_CFKV_KEY_LAYOUT = "plain"
    [warning] = check_session_settings()
    assert warning.id == "django_cfkv.W201" and "migrate-sessions" in warning.hint
    settings.SESSION_CFKV_USER_INDEX = False  # said plainly: no warning
    assert check_session_settings() == []


def test_a_bad_layout_fails_when_a_store_is_made(settings):
    settings.SESSION_CFKV_KEY_LAYOUT = "sha256"
    with pytest.raises(Exception, match="SESSION_CFKV_KEY_LAYOUT is 'sha256'"):
        SessionStore()
