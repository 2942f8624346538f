"""The CFKV_RATELIMIT setting (django_cfkv.ratelimit.options) and its system checks: every mistake is reported
with its check id, and the limiter runs on what is left."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.checks import check_ratelimit_setting

from .helpers import LOGIN_RULE


def test_compile_settings_keeps_good_rules_and_reports_bad_ones():
    options, rules, problems = rl.compile_settings({
        "RULES": [{"rate": "5/m", "group": "good"}, {"rate": "bad"}],
        "TRUSTED_PROXIES": ["cloudflare"], "PROXY_HEADER": "CF-Connecting-IP", "IPV6_PREFIX": 56,
    })
    assert [r.name for r in rules] == ["good"]
    assert [p.id for p in problems] == ["django_cfkv.E104"]
    assert options["IPV6_PREFIX"] == 56 and len(options["TRUSTED_PROXIES"]) == 22


@pytest.mark.parametrize("raw, check_id", [
    ([], "django_cfkv.E101"),
    ({"FAIL_OPNE": True}, "django_cfkv.E101"),
    ({"FAIL_OPEN": "yes"}, "django_cfkv.E101"),
    ({"RULES": {"rate": "5/m"}}, "django_cfkv.E102"),
    ({"TRUSTED_PROXIES": ["999.0.0.0/8"]}, "django_cfkv.E108"),
    ({"TRUSTED_PROXIES": [True]}, "django_cfkv.E108"),
    ({"TRUSTED_PROXIES": [167772160]}, "django_cfkv.E108"),
    ({"PROXY_HEADER": "X-Forwarded-For"}, "django_cfkv.E109"),
    ({"PROXY_COUNT": -1}, "django_cfkv.E109"),
    ({"IPV6_PREFIX": 129}, "django_cfkv.E110"),
    ({"IPV4_PREFIX": 0}, "django_cfkv.E110"),
    ({"VIEW": "tests.nowhere.view"}, "django_cfkv.E113"),
    ({"SYNC_INTERVAL": 0.5}, "django_cfkv.E114"),
    ({"LIST_BUDGET": -1}, "django_cfkv.E116"),
    ({"LIST_BUDGET": "2/s"}, "django_cfkv.E116"),
    ({"LIST_BUDGET": True}, "django_cfkv.E116"),
])
def test_bad_options(raw, check_id):
    _, _, problems = rl.compile_settings(raw)
    assert check_id in [p.id for p in problems]


def test_good_options_have_no_problems():
    _, _, problems = rl.compile_settings({
        "ALIAS": "default", "FAIL_OPEN": False, "PROXY_HEADER": "X-Forwarded-For", "PROXY_COUNT": 1,
        "RULES": [{"path": r"^/login/$", "methods": ["POST"], "rate": "5/m", "key": "ip"}],
        "VIEW": "tests.ratelimit.urls.custom_limited", "LIST_BUDGET": 0.25,
    })
    assert problems == []


# Checks


def check_ids(**setting):
    with override_settings(**setting):
        return [e.id for e in check_ratelimit_setting()]


def test_checks():
    assert check_ids(CFKV_RATELIMIT={"RULES": [LOGIN_RULE]}) == []
    assert check_ids(CFKV_RATELIMIT={"RULES": [{"rate": "5/minute"}]}) == ["django_cfkv.E104"]
    assert check_ids(CFKV_RATELIMIT={"RULES": [{"rate": "5/m", "path": "["}]}) == ["django_cfkv.E103"]
    assert check_ids(CFKV_RATELIMIT={"RULES": [{"rate": "5/m", "key": "cookie:x"}]}) == ["django_cfkv.E105"]
    assert check_ids(CFKV_RATELIMIT={"RULES": [{"rate": "5/m", "key": "post:username"}]}) == []
    assert check_ids(CFKV_RATELIMIT={"RULES": [{"rate": "5/m", "key": "get:q"}]}) == []
    assert check_ids(CFKV_RATELIMIT={"ALIAS": "missing"}) == ["django_cfkv.E111"]
    assert check_ids(CFKV_RATELIMIT={"CACHE": "missing"}) == ["django_cfkv.E112"]
    assert check_ids(CFKV_RATELIMIT={"CACHE": "default"}) == ["django_cfkv.W101"]  # LocMemCache
    kv_cache = {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default"}
    assert check_ids(CFKV_RATELIMIT={"CACHE": "kv"}, CACHES={"default": kv_cache, "kv": kv_cache}) == [
        "django_cfkv.E115"]
    assert check_ids(CFKV_RATELIMIT="5/m") == ["django_cfkv.E101"]
    # Not configured: projects that do not use the limiter need no "default" alias.
    assert check_ids(CFKV_RATELIMIT={}, CFKV={"sessions": {"BACKEND": "local"}}) == []
    assert check_ids(CFKV_RATELIMIT={"RULES": [LOGIN_RULE]}, CFKV={"sessions": {"BACKEND": "local"}}) == [
        "django_cfkv.E111"]


@pytest.mark.parametrize("backend, check_id", [
    ("django.core.cache.backends.dummy.DummyCache", "django_cfkv.E115"),  # add() always succeeds: never limits
    ("django.core.cache.backends.filebased.FileBasedCache", "django_cfkv.E115"),  # incr() reads, then writes
    ("django.core.cache.backends.db.DatabaseCache", "django_cfkv.E115"),
    ("django_cfkv.cache.CloudflareKVCache", "django_cfkv.E115"),
    ("django.core.cache.backends.locmem.LocMemCache", "django_cfkv.W101"),  # one process, culled at MAX_ENTRIES
    ("django.core.cache.backends.redis.RedisCache", None),
    ("django.core.cache.backends.memcached.PyMemcacheCache", None),
])
def test_strict_mode_refuses_caches_that_lose_counts(backend, check_id):
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "limits": {"BACKEND": backend, "LOCATION": "default"}}
    with override_settings(CACHES=caches, CFKV_RATELIMIT={"CACHE": "limits"}):
        problems = check_ratelimit_setting()
    assert [p.id for p in problems] == ([check_id] if check_id else [])
    assert all("limits" in p.msg and p.hint for p in problems)


def test_the_removed_param_key_is_a_check_error_naming_its_replacements():
    with override_settings(CFKV_RATELIMIT={"RULES": [{"rate": "5/m", "key": "param:username"}]}):
        [error] = check_ratelimit_setting()
    assert error.id == "django_cfkv.E105" and "'param:username' no longer exists" in error.msg
    assert '"post:username"' in error.hint and '"get:username"' in error.hint
    with pytest.raises(rl.ConfigProblem, match="no longer exists"):  # the decorator, at import
        rl.ratelimit(rate="5/m", key="param:username")(lambda request: None)


def test_manage_py_check_reports_bad_rules():
    with override_settings(CFKV_RATELIMIT={"RULES": [{"rate": "lots"}]}):
        with pytest.raises(SystemCheckError, match="django_cfkv.E104"):
            call_command("check")


# django-ratelimit's RATELIMIT_* settings


def test_django_ratelimit_settings_are_honoured_and_cfkv_ratelimit_wins():
    peer = {"RATELIMIT_ENABLE": False, "RATELIMIT_FAIL_OPEN": False, "RATELIMIT_IPV4_MASK": 24,
            "RATELIMIT_IPV6_MASK": 48, "RATELIMIT_VIEW": "tests.ratelimit.urls.decorated"}
    with override_settings(**peer):
        options = rl.compile_settings({})[0]
        assert (options["ENABLED"], options["FAIL_OPEN"], options["IPV4_PREFIX"], options["IPV6_PREFIX"],
                options["VIEW"]) == (False, False, 24, 48, "tests.ratelimit.urls.decorated")
        ours = rl.compile_settings({"ENABLED": True, "FAIL_OPEN": True, "IPV4_PREFIX": 32})[0]
        assert (ours["ENABLED"], ours["FAIL_OPEN"], ours["IPV4_PREFIX"], ours["IPV6_PREFIX"]) == (True, True, 32, 48)


def test_use_cache_naming_a_kv_cache_counts_on_its_namespace_with_shards_never_by_incr():
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "kv": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "limits"},
              "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x"}}
    with override_settings(CACHES=caches, RATELIMIT_USE_CACHE="kv"):
        options = rl.compile_settings({})[0]
        assert (options["ALIAS"], options["CACHE"]) == ("limits", None)
    with override_settings(CACHES=caches, RATELIMIT_USE_CACHE="redis"):
        assert rl.compile_settings({})[0]["CACHE"] == "redis"
        assert rl.compile_settings({"CACHE": None})[0]["CACHE"] is None  # CFKV_RATELIMIT's own choice wins


def test_django_ratelimit_setting_mistakes_are_check_errors_naming_that_setting():
    with override_settings(RATELIMIT_USE_CACHE="missing"):
        errors = check_ratelimit_setting()
    assert [(e.id, e.msg.split(" ")[0]) for e in errors] == [("django_cfkv.E112", "RATELIMIT_USE_CACHE")]
    for name, value in (("RATELIMIT_IP_META_KEY", "no.such.function"), ("RATELIMIT_EXCEPTION_CLASS", "os.path"),
                        ("RATELIMIT_EXCEPTION_CLASS", 5), ("RATELIMIT_IP_META_KEY", 5)):
        with override_settings(**{name: value}):
            errors = check_ratelimit_setting()
        assert [(e.id, e.msg.split(" ")[0]) for e in errors] == [("django_cfkv.E117", name)], (name, value)


def test_changing_a_django_ratelimit_setting_rebuilds_the_limiter(tmp_path):
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}):
        assert rl.get_limiter().enabled
        with override_settings(RATELIMIT_ENABLE=False):
            assert not rl.get_limiter().enabled
        assert rl.get_limiter().enabled
