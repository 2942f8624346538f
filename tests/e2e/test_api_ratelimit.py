"""Rate limits of the running example site: the JSON endpoint and the login form, with their 429s."""

import pytest
import requests

from .sites import DEMO_CREDENTIALS, DEMO_USER, post_login

pytestmark = pytest.mark.slow


def hit_until_limited(call, tries):
    """Call until a 429; return every response. ``tries`` covers a fixed window ending midway."""
    responses = []
    for _ in range(tries):
        responses.append(call())
        if responses[-1].status_code == 429:
            break
    return responses


def test_json_endpoint_429_with_headers(emulator_site):
    responses = hit_until_limited(lambda: requests.get(emulator_site.url("/api/ping"), timeout=10), 22)
    first, limited = responses[0], responses[-1]
    assert first.status_code == 200 and first.json()["pong"] is True
    assert first.headers["RateLimit-Policy"] == '"ping";q=10;w=60'
    assert first.headers["RateLimit"].startswith('"ping";r=')

    assert limited.status_code == 429, [r.status_code for r in responses]
    assert limited.headers["Content-Type"] == "application/json"
    body = limited.json()
    assert body["error"] == "rate_limited"
    assert body["limits"] == [{"policy": "ping", "limit": 10, "period": 60}]
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert limited.headers["RateLimit"] == f'"ping";r=0;t={retry_after}'


def test_json_endpoint_counts_a_signed_in_user_apart_from_the_address(emulator_site):
    # Exhaust the address' allowance (again, should the window have turned).
    limited = hit_until_limited(lambda: requests.get(emulator_site.url("/api/ping"), timeout=10), 22)[-1]
    assert limited.status_code == 429
    token = requests.post(emulator_site.url("/api/token"), timeout=10,
                          json=DEMO_CREDENTIALS).json()["token"]
    as_user = requests.get(emulator_site.url("/api/ping"), headers={"Authorization": f"Bearer {token}"},
                           timeout=10)
    assert as_user.status_code == 200, as_user.text
    assert as_user.json()["user"] == DEMO_USER[0]


def test_login_form_429_page_with_headers(emulator_site):
    session = requests.Session()
    responses = hit_until_limited(lambda: post_login(session, emulator_site, DEMO_USER[0], "wrong"), 12)
    assert responses[0].status_code == 200 and "Wrong username or password" in responses[0].text
    limited = responses[-1]
    assert limited.status_code == 429, [r.status_code for r in responses]
    assert "Too many requests" in limited.text
    assert limited.headers["RateLimit-Policy"] == '"login";q=5;w=60'
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The limit is on POST only: the form itself still opens.
    assert session.get(emulator_site.url("/login/"), timeout=10).status_code == 200
