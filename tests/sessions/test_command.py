"""``manage.py cfkv sessions --user USERNAME [--revoke]``: a user's sessions for operators, on the emulator."""

import io
import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from django_cfkv.sessions import issue_token, user_sessions

from .helpers import spent
from .test_user_sessions import IPHONE, MIDDLEWARE, browser, ref_of

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def site(settings, emu):
    settings.MIDDLEWARE = MIDDLEWARE


def cfkv(*args):
    out = io.StringIO()
    call_command("cfkv", "sessions", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_it_lists_the_users_sessions_and_never_prints_a_session_id_or_token(user, other, cfkv_calls):
    laptop, phone, token = browser(user), browser(user, IPHONE), issue_token(None, user)
    browser(other)
    spent(cfkv_calls)
    report = json.loads(cfkv("--user", "ann", "--json"))
    assert spent(cfkv_calls) == {"list": 1}  # the user's own index: one list call, never the namespace
    assert report["user"] == "ann" and report["revoked"] is None and report["api_calls"] == {"list": 1}
    by_ref = {row["ref"]: row for row in report["sessions"]}
    assert set(by_ref) == {s.ref for s in user_sessions(user)} and len(by_ref) == 3
    assert by_ref[ref_of(laptop)]["device"] == "Firefox on Linux" and by_ref[ref_of(phone)]["kind"] == "cookie"
    assert by_ref[ref_of(laptop)]["expires"] > by_ref[ref_of(laptop)]["last_seen"] > 0
    text = cfkv("--user", "ann")
    assert text.startswith("3 sessions of 'ann'") and ref_of(phone) in text
    assert "cookie: Safari on iPhone, 203.0.113.9" in text
    for secret in (laptop.cookies["sessionid"].value, phone.cookies["sessionid"].value, token):
        assert secret not in text and secret not in json.dumps(report)


def test_revoke_signs_the_user_out_everywhere_and_no_one_else(user, other, cfkv_calls):
    laptop, token, bob = browser(user), issue_token(None, user), browser(other)
    spent(cfkv_calls)
    text = cfkv("--user", "ann", "--revoke")
    assert text.startswith("Signed 'ann' out of 2 sessions.")
    assert spent(cfkv_calls) == {"list": 1, "bulk_delete": 1}
    assert laptop.get("/whoami/").json()["user"] is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert bob.get("/whoami/").json()["user"] == other.pk and user_sessions(user) == []


def test_an_unknown_user_is_an_error_that_changes_nothing(user, cfkv_calls):
    laptop = browser(user)
    spent(cfkv_calls)
    with pytest.raises(CommandError, match="No user whose username is 'nobody': nothing was listed or signed out"):
        cfkv("--user", "nobody", "--revoke")
    assert spent(cfkv_calls) == {} and laptop.get("/whoami/").json()["user"] == user.pk


def test_without_the_user_index_it_says_what_to_set(user, settings):
    settings.SESSION_CFKV_USER_INDEX = False
    with pytest.raises(CommandError, match="SESSION_CFKV_USER_INDEX is False"):
        cfkv("--user", "ann")


@pytest.mark.parametrize("field, username, says", [
    ("email", "shared@example.com", "Several users have email 'shared@example.com'"),  # Django warns (auth.W004)
    ("id", "abc", "'abc' is not a value id can hold"),
])
def test_a_username_that_names_no_one_user_is_an_error_that_changes_nothing(user, other, monkeypatch, cfkv_calls,
                                                                            field, username, says):
    get_user_model().objects.filter(pk__in=[user.pk, other.pk]).update(email="shared@example.com")
    monkeypatch.setattr(get_user_model(), "USERNAME_FIELD", field)
    laptop = browser(user)
    spent(cfkv_calls)
    with pytest.raises(CommandError, match=re.escape(says)):
        cfkv("--user", username, "--revoke")
    assert spent(cfkv_calls) == {} and laptop.get("/whoami/").json()["user"] == user.pk
