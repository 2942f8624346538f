"""RateLimitMiddleware and @ratelimit through Django's test client, in sync and async stacks; checks."""

import json
import logging
import socket
import threading

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.checks import check_ratelimit_setting
from django_cfkv.exceptions import Ratelimited
from django_cfkv.middleware import RateLimitMiddleware, identify

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_cfkv.middleware.RateLimitMiddleware",
]
LOGIN_RULE = {"path": r"^/login/$", "methods": ["POST"], "rate": "3/h", "key": "ip"}
CF_PEER = "173.245.48.10"


@pytest.fixture(autouse=True)
def fresh_store(tmp_path):
    """Every test counts in its own empty LocalKV, through the test URLs and middleware."""
    with override_settings(CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}},
                           ROOT_URLCONF="tests.ratelimit_urls", MIDDLEWARE=MIDDLEWARE):
        yield
        rl.reset_limiter()


def limits(**options):
    return override_settings(CFKV_RATELIMIT={"RULES": [LOGIN_RULE], **options})


def statuses(client, n, path="/login/", method="post", **extra):
    return [getattr(client, method)(path, **extra).status_code for _ in range(n)]


# Sync and async stacks


def test_sync_stack_limits_matching_requests_only():
    client = Client()
    with limits():
        assert statuses(client, 5) == [200, 200, 200, 429, 429]
        assert statuses(client, 2, method="get") == [200, 200]  # GET is not in the rule
        assert statuses(client, 2, path="/open/") == [200, 200]


def test_async_stack():
    async def run():
        client = AsyncClient()
        return [(await client.post("/login/")) for _ in range(4)]

    with limits():
        responses = async_to_sync(run)()
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[3]["Retry-After"].isdigit()


def test_middleware_adapts_to_the_stack():
    def sync_view(request):
        return HttpResponse()

    async def async_view(request):
        return HttpResponse()

    assert not iscoroutinefunction(RateLimitMiddleware(sync_view))
    assert iscoroutinefunction(RateLimitMiddleware(async_view))


# Responses and headers


def test_allowed_responses_carry_ratelimit_headers():
    client = Client()
    with limits():
        first, second = client.post("/login/"), client.post("/login/")
    policy = first["RateLimit-Policy"]
    assert policy.startswith('"r') and policy.endswith('";q=3;w=3600')
    name = policy.split(";")[0]
    assert first["RateLimit"].startswith(f"{name};r=2;t=") and second["RateLimit"].startswith(f"{name};r=1;t=")
    assert 1 <= int(first["RateLimit"].rsplit("t=", 1)[1]) <= 3600
    assert "RateLimit" not in client.get("/open/")


def test_limited_response_is_json_for_json_clients():
    client = Client()
    with limits():
        statuses(client, 3)
        response = client.post("/login/", HTTP_ACCEPT="application/json")
    assert response.status_code == 429 and response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["error"] == "rate_limited" and body["retry_after"] == int(response["Retry-After"]) > 0
    assert ";r=0;" in response["RateLimit"] and ";q=3;w=3600" in response["RateLimit-Policy"]


def test_limited_response_is_html_for_browsers():
    client = Client()
    with limits():
        statuses(client, 3)
        response = client.post("/login/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response.status_code == 429 and response["Content-Type"].startswith("text/html")
    assert b"Too many requests" in response.content
    assert response["Retry-After"].encode() in response.content


def test_view_setting_overrides_the_429():
    client = Client()
    with limits(VIEW="tests.ratelimit_urls.custom_limited"):
        statuses(client, 3)
        response = client.post("/login/")
    assert response.status_code == 429 and json.loads(response.content)["custom"] is True
    assert response["Retry-After"] and response["RateLimit"]


def test_every_matching_rule_counts_and_the_strictest_decides():
    rules = [{"path": r"^/api/", "rate": "5/h", "group": "api"},
             {"path": r"^/api/items/$", "methods": ["POST"], "rate": "2/h", "group": "items"}]
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": rules}):
        assert statuses(client, 3, path="/api/items/") == [200, 200, 429]
        response = client.get("/api/items/")
    # The GET matched "api" only, which has counted all four requests.
    assert response.status_code == 200 and response["RateLimit"].startswith('"api";r=1;')


def test_disabled():
    with limits(ENABLED=False):
        assert statuses(Client(), 5) == [200] * 5


# Client identity through requests


def test_spoofed_cf_connecting_ip_from_an_untrusted_peer_is_ignored():
    client = Client()
    with limits(TRUSTED_PROXIES=["cloudflare"], PROXY_HEADER="CF-Connecting-IP"):
        codes = [client.post("/login/", HTTP_CF_CONNECTING_IP=f"198.51.100.{i}").status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_cf_connecting_ip_from_cloudflare_separates_clients():
    client = Client(REMOTE_ADDR=CF_PEER)
    with limits(TRUSTED_PROXIES=["cloudflare"], PROXY_HEADER="CF-Connecting-IP"):
        codes = [client.post("/login/", HTTP_CF_CONNECTING_IP=f"198.51.100.{i}").status_code for i in range(5)]
        assert codes == [200] * 5
        assert statuses(client, 4, HTTP_CF_CONNECTING_IP="198.51.100.1") == [200, 200, 429, 429]


def test_junk_in_x_forwarded_for_does_not_spread_a_client_over_edge_addresses():
    with limits(TRUSTED_PROXIES=["cloudflare"], PROXY_HEADER="X-Forwarded-For"):
        codes = [Client(REMOTE_ADDR=f"162.158.{i}.1").post("/login/", HTTP_X_FORWARDED_FOR=f"x{i}, 198.51.100.7")
                 .status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_ipv6_clients_in_one_64_share_a_count():
    with limits():
        codes = [Client(REMOTE_ADDR=f"2001:db8:0:1::{i}").post("/login/").status_code for i in range(1, 5)]
        other = Client(REMOTE_ADDR="2001:db8:0:2::1").post("/login/").status_code
    assert codes == [200, 200, 200, 429] and other == 200


class FakeUser:
    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


@pytest.mark.parametrize("key, setup, expected", [
    ("ip", {}, "ip:127.0.0.1"),
    ("user", {"user": FakeUser(7)}, "user:7"),
    ("user", {}, None),
    ("user_or_ip", {}, "ip:127.0.0.1"),
    ("user_or_ip", {"user": FakeUser(7)}, "user:7"),
    ("header:X-Api-Key", {"HTTP_X_API_KEY": "k1"}, "header:x-api-key:k1"),
    ("header:X-Api-Key", {}, "header:x-api-key:"),
    ("header:X-Api-Key", {"HTTP_X_API_KEY": " K1 "}, "header:x-api-key:k1"),
    ("post:email", {"data": {"email": "a@example.com"}}, "post:email:a@example.com"),
    ("post:email", {"data": {"email": "A@Example.com "}}, "post:email:a@example.com"),
    ("post:email", {"data": {"email": ["first@example.com", "last@example.com"]}}, "post:email:last@example.com"),
    ("post:email", {"query": "email=b@example.com", "data": {"email": "a@example.com"}}, "post:email:a@example.com"),
    ("post:email", {"query": "email=b@example.com"}, "post:email:"),
    ("get:email", {"query": "email=b@example.com", "data": {"email": "a@example.com"}}, "get:email:b@example.com"),
    ("get:email", {"data": {"email": "a@example.com"}}, "get:email:"),
    ("tests.ratelimit_urls.api_key", {"HTTP_X_TEAM": "blue"}, "callable:blue"),
    ("tests.ratelimit_urls.api_key", {}, None),
])
def test_identify(key, setup, expected):
    setup = dict(setup)
    user = setup.pop("user", None)
    data = setup.pop("data", None)
    query = setup.pop("query", None)
    request = RequestFactory().post(f"/x/?{query}" if query else "/x/", data or {}, **setup)
    if user is not None:
        request.user = user
    rule = rl.compile_rule({"rate": "1/m", "key": key})
    assert identify(request, rule, rl.Limiter({})) == expected


# The decorator


def test_decorator_without_middleware_is_a_403():
    with override_settings(MIDDLEWARE=[]):
        assert statuses(Client(), 3, path="/decorated/", method="get") == [200, 200, 403]


def test_decorator_with_middleware_is_a_429_with_headers():
    client = Client()
    ok = client.get("/decorated/")
    assert ok["RateLimit-Policy"] == '"tests.ratelimit_urls.decorated";q=2;w=3600'
    client.get("/decorated/")
    response = client.get("/decorated/")
    assert response.status_code == 429 and response["Retry-After"] and ";r=0;" in response["RateLimit"]


def test_decorator_method_filter_and_block_false():
    client = Client()
    assert statuses(client, 3, path="/decorated-post/", method="get") == [200] * 3
    assert statuses(client, 3, path="/decorated-post/") == [200, 200, 429]
    assert [client.get("/soft/").content for _ in range(2)] == [b"fine", b"limited"]


def test_decorator_method_constants_are_attributes_of_the_decorator():
    assert rl.ratelimit.ALL is None and set(rl.ratelimit.UNSAFE) == {"DELETE", "PATCH", "POST", "PUT"}
    view = rl.ratelimit("1/h", method=rl.ratelimit.UNSAFE, group="unsafe-only")(lambda request: HttpResponse())
    factory = RequestFactory()
    assert [view(factory.get("/")).status_code for _ in range(2)] == [200, 200]
    view(factory.post("/"))
    with pytest.raises(Ratelimited):
        view(factory.delete("/"))


def test_decorator_on_an_async_view():
    async def run():
        client = AsyncClient()
        return [(await client.get("/decorated-async/")).status_code for _ in range(3)]

    assert async_to_sync(run)() == [200, 200, 429]


def test_decorator_arguments_are_checked_at_import():
    with pytest.raises(rl.ConfigProblem, match="Invalid rate"):
        rl.ratelimit("5 per minute")(lambda request: None)
    with pytest.raises(rl.ConfigProblem, match="key"):
        rl.ratelimit("5/m", key="cookie")(lambda request: None)


# Strict mode


def test_strict_mode_counts_exactly_with_a_cache():
    from django.core.cache import caches

    caches["default"].clear()
    with limits(CACHE="default"):
        results = []
        barrier = threading.Barrier(12)

        def hit():
            barrier.wait()
            results.append(Client().post("/login/").status_code)

        threads = [threading.Thread(target=hit) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [200] * 3 + [429] * 9


# Failure


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unreachable_alias():
    return {"BACKEND": "cloudflare", "ACCOUNT_ID": "a" * 32, "NAMESPACE_ID": "n" * 32, "API_TOKEN": "secret-token-xyz",
            "BASE_URL": f"http://127.0.0.1:{closed_port()}/client/v4", "MAX_RETRIES": 0, "TIMEOUT": 1}


def test_unreachable_kv_fails_open_and_logs(caplog):
    with override_settings(CFKV={"default": unreachable_alias()}), limits():
        with caplog.at_level(logging.ERROR, logger="django_cfkv.ratelimit"):
            codes = statuses(Client(), 5, path="/login/")
    # Allowed, but this process still enforces its own count.
    assert codes == [200, 200, 200, 429, 429]
    errors = [r for r in caplog.records if "Rate limiting could not" in r.getMessage()]
    assert len(errors) == 1 and "could not read Workers KV" in errors[0].getMessage()
    assert "secret-token-xyz" not in caplog.text


def test_unreachable_kv_fails_closed_when_asked():
    with override_settings(CFKV={"default": unreachable_alias()}), limits(FAIL_OPEN=False):
        response = Client().post("/login/")
        assert response.status_code == 429 and response["Retry-After"]
        assert Client().get("/login/").status_code == 200  # rules that do not match are untouched


def test_emulator_faults_never_become_500(cfkv_emulator):
    alias = cfkv_emulator.alias_settings(MAX_RETRIES=0)
    try:
        for faults in ({"rate_503": 1.0}, {"rate_429": 1.0, "retry_after": 1}):
            cfkv_emulator.set_faults(**faults)
            with override_settings(CFKV={"default": alias}), limits():
                assert statuses(Client(), 4) == [200, 200, 200, 429]
            cfkv_emulator.clear_faults()
    finally:
        cfkv_emulator.clear_faults()


def test_broken_key_function_or_cache_never_become_500():
    rule = {"path": r"^/login/$", "rate": "3/h", "key": "tests.ratelimit_urls.broken_key"}
    with override_settings(CFKV_RATELIMIT={"RULES": [rule]}):
        assert statuses(Client(), 2) == [200, 200]
    with override_settings(CFKV_RATELIMIT={"RULES": [rule], "FAIL_OPEN": False}):
        assert statuses(Client(), 1) == [429]
    with limits(CACHE="no-such-cache"):
        assert statuses(Client(), 2) == [200, 200]


def test_invalid_rules_are_skipped_at_request_time(caplog):
    with override_settings(CFKV_RATELIMIT={"RULES": [{"path": "(", "rate": "1/h"}, LOGIN_RULE]}):
        assert statuses(Client(), 4) == [200, 200, 200, 429]
    assert "CFKV_RATELIMIT['RULES'][0] has an invalid path regex" in caplog.text


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
        rl.ratelimit("5/m", key="param:username")(lambda request: None)


def test_manage_py_check_reports_bad_rules():
    with override_settings(CFKV_RATELIMIT={"RULES": [{"rate": "lots"}]}):
        with pytest.raises(SystemCheckError, match="django_cfkv.E104"):
            call_command("check")
