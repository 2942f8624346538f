"""What a client sees (django_cfkv.ratelimit.response): RateLimit headers on every counted response, and the
429 over the limit (JSON, HTML, or the VIEW setting's), through the test site."""

import json

import pytest
from django.test import Client, override_settings

from django_cfkv import clock

from .helpers import limits, statuses

pytestmark = pytest.mark.usefixtures("site")


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
    with limits(VIEW="tests.ratelimit.urls.custom_limited"):
        statuses(client, 3)
        response = client.post("/login/")
    assert response.status_code == 429 and json.loads(response.content)["custom"] is True
    assert response["Retry-After"] and response["RateLimit"]


def test_the_view_settings_own_retry_after_is_kept():
    client = Client()
    with limits(VIEW="tests.ratelimit.urls.custom_limited_with_its_own_wait"):
        statuses(client, 3)
        response = client.post("/login/")
    assert response.status_code == 429 and response["Retry-After"] == "120"


@pytest.mark.parametrize("path, retry_after", [
    ("/api/items/", 55),  # only the minute's policy is over: its wait, not the roomy hour's
    ("/open/", 3595),  # both are over: the longer wait, after which both admit again
])
def test_retry_after_is_the_longest_wait_of_the_policies_over_their_limit(monkeypatch, path, retry_after):
    start = clock.now() // 3600 * 3600
    monkeypatch.setattr(clock, "now", lambda: start + 5)
    rules = [{"path": r"^/(api|open)/", "rate": "1/m", "group": "minute"},
             {"path": r"^/api/items/$", "rate": "100/h", "group": "roomy"},
             {"path": r"^/open/$", "rate": "1/h", "group": "hour"}]
    client = Client()
    with override_settings(CFKV_RATELIMIT={"RULES": rules}):
        assert client.get(path).status_code == 200
        response = client.get(path)
    assert response.status_code == 429 and response["Retry-After"] == str(retry_after)


def test_a_decorated_view_under_a_rule_lists_both_policies():
    with override_settings(CFKV_RATELIMIT={"RULES": [{"path": r"^/decorated/$", "rate": "5/h", "group": "site"}]}):
        response = Client().get("/decorated/")
    assert response["RateLimit-Policy"] == '"tests.ratelimit.urls.decorated";q=2;w=3600, "site";q=5;w=3600'
    assert response["RateLimit"].startswith('"tests.ratelimit.urls.decorated";r=1;t=')
    assert ', "site";r=4;t=' in response["RateLimit"]
