"""`manage.py check` catches what would break requests, each mistake with an id and a hint, never a traceback;
what a check reports is also refused clearly at run time, for servers that never run checks."""

import os
import socket

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

from django_cfkv import get_kv
from django_cfkv.checks import check_session_settings
from django_cfkv.exceptions import CFKVConfigurationError
from django_cfkv.middleware import RateLimitMiddleware
from django_cfkv.sessions import per_user

KV_CACHE = "django_cfkv.cache.CloudflareKVCache"
SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
BEARER = "django_cfkv.middleware.BearerSessionMiddleware"
LIMITER = "django_cfkv.middleware.RateLimitMiddleware"


def check_output(**settings):
    """Return what `manage.py check` prints for ``settings``, errors and warnings alike."""
    with override_settings(**settings):
        try:
            call_command("check", stdout=(out := _Text()), stderr=out)
        except SystemCheckError as exc:
            return str(exc)
        return out.text


class _Text:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def reported(output, check_id):
    """Return the message and hint `check` printed for ``check_id``."""
    lines = output.splitlines()
    found = [i for i, line in enumerate(lines) if f"({check_id})" in line]
    assert found, f"{check_id} not reported:\n{output}"
    message = lines[found[0]]
    hint = lines[found[0] + 1].strip() if found[0] + 1 < len(lines) else ""
    assert hint.startswith("HINT:"), f"{check_id} has no hint:\n{output}"
    return message, hint


# Sessions

@pytest.mark.parametrize("name, value, check_id", [
    ("SESSION_CFKV_FORMAT", "JSON", "django_cfkv.E202"),
    ("SESSION_CFKV_ALIAS", "sessions", "django_cfkv.E206"),
    ("SESSION_CFKV_KEY_PREFIX", "", "django_cfkv.E207"),
    ("SESSION_CFKV_KEY_PREFIX", 5, "django_cfkv.E207"),
    ("SESSION_CFKV_REFRESH_INTERVAL", "60", "django_cfkv.E208"),
    ("SESSION_CFKV_NEAR_CACHE_TIMEOUT", -1, "django_cfkv.E209"),
    ("SESSION_CFKV_KEY_LAYOUT", "Hashed", "django_cfkv.E201"),
    ("SESSION_CFKV_ON_LOAD_ERROR", "ignore", "django_cfkv.E203"),
    ("SESSION_CFKV_USER_FIELD", "mail", "django_cfkv.E204"),
    ("SESSION_CFKV_USER_FIELD", "email", "django_cfkv.E204"),  # Django's User: several users may have no email
    ("SESSION_CFKV_USER_INDEX", "yes", "django_cfkv.E205"),
])
def test_every_session_setting_that_breaks_requests_is_a_check_error(name, value, check_id):
    output = check_output(SESSION_ENGINE="django_cfkv.sessions", **{name: value})
    message, _ = reported(output, check_id)
    assert name in message and repr(value) in message


def test_a_unique_user_field_that_cannot_be_null_names_users():
    output = check_output(SESSION_ENGINE="django_cfkv.sessions", SESSION_CFKV_USER_FIELD="username")
    assert "E204" not in output


def test_a_shared_user_field_is_no_error_without_the_index():  # a userId several users have names no one
    output = check_output(SESSION_ENGINE="django_cfkv.sessions", SESSION_CFKV_USER_FIELD="email",
                          SESSION_CFKV_USER_INDEX=False)
    assert "E204" not in output


@isolate_apps("django_cfkv")
def test_user_fields_unique_by_a_constraint_or_a_relation_name_users_as_the_index_does(monkeypatch, settings):
    class Badge(models.Model):  # noqa: DJ008 (a test's model, never shown)
        class Meta:
            app_label = "django_cfkv"

    class BadgeUser(AbstractBaseUser):
        email = models.EmailField()
        badge = models.OneToOneField(Badge, on_delete=models.CASCADE)
        USERNAME_FIELD = "email"

        class Meta:
            app_label = "django_cfkv"
            constraints = [models.UniqueConstraint(fields=["email"], name="one_email")]

    monkeypatch.setattr("django.contrib.auth.get_user_model", lambda: BadgeUser)
    for field in ("email", "badge"):
        settings.SESSION_CFKV_USER_FIELD = field
        assert "E204" not in str(check_session_settings())
    # The index writes a user's entries under a query's value: a related field's id, which a look-up must match.
    assert per_user.user_identity(BadgeUser(pk=3, email="a@example.com", badge=Badge(pk=7))) == "7"


def test_the_session_alias_is_checked_only_where_sessions_live_in_kv():
    cfkv = {"cache": {"BACKEND": "local", "PATH": os.devnull + ".x"}}  # no "default" alias
    elsewhere = check_output(CFKV=cfkv, SESSION_ENGINE="django.contrib.sessions.backends.db")
    assert "E206" not in elsewhere
    message, hint = reported(check_output(CFKV=cfkv, SESSION_ENGINE="django_cfkv.sessions"), "django_cfkv.E206")
    assert "'default'" in message and "'cache'" in hint


@pytest.mark.parametrize("bearer", [BEARER, "django_cfkv.sessions.bearer.BearerSessionMiddleware",
                                    "django_cfkv.bearer.BearerSessionMiddleware"])
def test_bearer_tokens_need_the_session_alias_by_any_import_path_of_the_middleware(bearer):
    """Bearer tokens keep sessions in KV even when cookie sessions do not."""
    cfkv = {"cache": {"BACKEND": "local", "PATH": os.devnull + ".x"}}  # no "default" alias
    output = check_output(CFKV=cfkv, SESSION_ENGINE="django.contrib.sessions.backends.db",
                          MIDDLEWARE=[SESSION, bearer, AUTH])
    reported(output, "django_cfkv.E206")


# The cache

def test_a_cache_location_naming_no_alias_is_a_check_error():
    output = check_output(CACHES={"default": {"BACKEND": KV_CACHE, "LOCATION": "sessions"}})
    message, hint = reported(output, "django_cfkv.E301")
    assert "CACHES['default']['LOCATION'] is 'sessions'" in message and "'default'" in hint


@pytest.mark.parametrize("options, check_id, says", [
    ({"MAX_ENTRIES": 1000}, "django_cfkv.E302", "MAX_ENTRIES"),
    ({"FOO": 1}, "django_cfkv.E302", "Unknown CloudflareKVCache OPTIONS FOO"),
    ({"CLIENT_CLASS": "django_redis.client.DefaultClient"}, "django_cfkv.E302", "CLIENT_CLASS"),
    ({"IGNORE_EXCEPTIONS": "true"}, "django_cfkv.E303", "must be True or False; got 'true'"),
    ({"STAMPEDE_WAIT": "10"}, "django_cfkv.E303", "STAMPEDE_WAIT"),
])
def test_cache_options_mistakes_are_check_errors_not_a_traceback(options, check_id, says):
    # Django's own cache checks build every cache: the mistake must not escape from there as a traceback.
    caches_setting = {"default": {"BACKEND": KV_CACHE, "LOCATION": "default", "OPTIONS": options}}
    message, hint = reported(check_output(CACHES=caches_setting), check_id)
    assert says in message and "CACHES['default']" in message and len(hint) > len("HINT: ")
    with override_settings(CACHES=caches_setting):  # a server that never ran check: the first use says it
        with pytest.raises(CFKVConfigurationError, match=says.replace("(", "\\(")):
            caches["default"].get("k")


# Middleware order

def test_bearer_middleware_before_session_middleware_is_an_error_naming_the_order():
    output = check_output(SESSION_ENGINE="django_cfkv.sessions", MIDDLEWARE=[BEARER, SESSION, AUTH])
    _, hint = reported(output, "django_cfkv.E401")
    assert hint.index(BEARER) < hint.index("right after") < hint.index(SESSION)
    assert "E401" not in check_output(SESSION_ENGINE="django_cfkv.sessions", MIDDLEWARE=[SESSION, BEARER, AUTH])


OUR_SESSION = "django_cfkv.sessions.middleware.SessionMiddleware"
BEARER_ELSEWHERE = "django_cfkv.sessions.bearer.BearerSessionMiddleware"


@pytest.mark.parametrize(("session", "bearer"), [(OUR_SESSION, BEARER), (SESSION, BEARER_ELSEWHERE),
                                                 (OUR_SESSION, BEARER_ELSEWHERE)])
def test_the_order_is_checked_by_class_whatever_path_or_subclass_names_it(session, bearer):
    """django-cfkv's async-capable SessionMiddleware and the bearer middleware's other import path are the
    same middleware to the order check."""
    _, hint = reported(check_output(SESSION_ENGINE="django_cfkv.sessions", MIDDLEWARE=[bearer, session, AUTH]),
                       "django_cfkv.E401")
    assert hint.index(bearer) < hint.index("right after") < hint.index(session)
    assert "E401" not in check_output(SESSION_ENGINE="django_cfkv.sessions", MIDDLEWARE=[session, bearer, AUTH])


def test_a_sites_own_rate_limit_middleware_is_checked_as_the_one_it_extends():
    rules = {"RULES": [{"path": r"^/api/", "rate": "100/m", "key": "user"}]}
    own = "tests.test_checks.SiteRateLimitMiddleware"
    _, hint = reported(check_output(MIDDLEWARE=[SESSION, own, AUTH], CFKV_RATELIMIT=rules), "django_cfkv.E402")
    assert hint.index(own) < hint.index("after") < hint.index(AUTH)
    assert "402" not in check_output(MIDDLEWARE=[SESSION, AUTH, own], CFKV_RATELIMIT=rules)


class SiteRateLimitMiddleware(RateLimitMiddleware):
    """A site's subclass, as the example project has."""


@pytest.mark.parametrize("key, check_id", [("user", "django_cfkv.E402"), ("user_or_ip", "django_cfkv.W402")])
def test_rate_limiting_before_authentication_is_reported_when_a_rule_keys_on_the_user(key, check_id):
    rules = {"RULES": [{"path": r"^/api/", "rate": "100/m", "key": key}]}
    output = check_output(MIDDLEWARE=[SESSION, LIMITER, AUTH], CFKV_RATELIMIT=rules)
    _, hint = reported(output, check_id)
    assert hint.index(LIMITER) < hint.index("after") < hint.index(AUTH)
    assert "402" not in check_output(MIDDLEWARE=[SESSION, AUTH, LIMITER], CFKV_RATELIMIT=rules)
    message, _ = reported(check_output(MIDDLEWARE=[SESSION, LIMITER], CFKV_RATELIMIT=rules), check_id)
    assert "runs without AuthenticationMiddleware" in message
    by_ip = {"RULES": [{"path": r"^/api/", "rate": "100/m", "key": "ip"}]}
    assert "402" not in check_output(MIDDLEWARE=[SESSION, LIMITER, AUTH], CFKV_RATELIMIT=by_ip)


# CFKV aliases

def test_missing_credentials_of_another_alias_do_not_point_at_the_default_alias_variable(monkeypatch):
    monkeypatch.delenv("CFKV_NAMESPACE_ID", raising=False)
    cfkv = {"default": {"BACKEND": "local", "PATH": os.devnull + ".x"},
            "sessions": {"ACCOUNT_ID": "a", "API_TOKEN": "t"}}
    _, hint = reported(check_output(CFKV=cfkv), "django_cfkv.E002")
    assert "NAMESPACE_ID" in hint and "CFKV_NAMESPACE_ID" not in hint
    with override_settings(CFKV=cfkv):
        with pytest.raises(CFKVConfigurationError) as caught:
            get_kv("sessions")
    assert "NAMESPACE_ID" in str(caught.value) and "CFKV_NAMESPACE_ID" not in str(caught.value)


@pytest.mark.parametrize("name, value, check_id", [
    ("TIMEOUT", "5", "django_cfkv.E006"),
    ("TIMEOUT", (5,), "django_cfkv.E006"),
    ("MAX_RETRIES", "3", "django_cfkv.E007"),
    ("DEADLINE", "30", "django_cfkv.E009"),
])
def test_a_number_given_as_text_never_reaches_a_request(cfkv_emulator, name, value, check_id):
    alias = {**cfkv_emulator.alias_settings(), name: value}
    reported(check_output(CFKV={"default": alias}), check_id)
    with override_settings(CFKV={"default": alias}):  # a server that never ran check
        with pytest.raises(CFKVConfigurationError) as caught:
            get_kv().get("k")
    assert caught.value.id == check_id and repr(value) in str(caught.value)


def test_a_relative_local_path_is_taken_from_base_dir_not_the_current_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfkv = {"default": {"BACKEND": "local", "PATH": "kv.sqlite3"}}
    with override_settings(CFKV=cfkv, BASE_DIR=tmp_path):
        get_kv().put("k", b"v")
        assert "W002" not in check_output()
    assert (tmp_path / "kv.sqlite3").exists() and not (elsewhere / "kv.sqlite3").exists()


def test_a_relative_local_path_without_base_dir_is_a_warning():
    _, hint = reported(check_output(CFKV={"default": {"BACKEND": "local", "PATH": "kv.sqlite3"}}),
                       "django_cfkv.W002")
    assert "BASE_DIR" in hint


# clearsessions

@pytest.mark.parametrize("apps", [
    ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions", "django_cfkv"],  # as the docs
    ["django_cfkv", "django.contrib.contenttypes", "django.contrib.auth"],
])
def test_clearsessions_with_kv_down_is_a_sentence_not_a_traceback(apps):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = {"ACCOUNT_ID": "a", "NAMESPACE_ID": "n", "API_TOKEN": "t", "MAX_RETRIES": 0, "TIMEOUT": 0.5,
            "BASE_URL": f"http://127.0.0.1:{port}/client/v4"}
    with override_settings(INSTALLED_APPS=apps, CFKV={"default": down}, SESSION_ENGINE="django_cfkv.sessions"):
        with pytest.raises(CommandError, match=r"^Expired sessions were not cleared: Workers KV failed \(") as caught:
            call_command("clearsessions")
    assert "run clearsessions again" in str(caught.value) and "'t'" not in str(caught.value)
