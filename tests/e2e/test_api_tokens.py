"""The bearer token API of the running example site: issue, use, revoke, refuse."""

import pytest
import requests

from django_cfkv.sessions import SessionStore

from .sites import DEMO_CREDENTIALS, DEMO_USER

pytestmark = pytest.mark.slow


def issue(site, username, password):
    return requests.post(site.url("/api/token"), json={"username": username, "password": password}, timeout=10)


def test_token_lifecycle(emulator_site):
    response = issue(emulator_site, *DEMO_USER)
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}

    # The token is a session in KV, written under the session convention.
    metadata = emulator_site.kv.get_metadata(SessionStore.kv_key(token))
    assert metadata is not None and metadata["kind"] == "session"

    me = requests.get(emulator_site.url("/api/me"), headers=auth, timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["username"] == DEMO_USER[0]
    assert me.json()["via"] == "bearer"
    assert "Set-Cookie" not in me.headers  # a token request never starts a cookie session

    revoked = requests.delete(emulator_site.url("/api/token"), headers=auth, timeout=10)
    assert revoked.status_code == 204
    assert emulator_site.kv.get(SessionStore.kv_key(token)) is None

    after = requests.get(emulator_site.url("/api/me"), headers=auth, timeout=10)
    assert after.status_code == 401
    assert after.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_without_a_token_is_401(emulator_site):
    response = requests.get(emulator_site.url("/api/me"), timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_from_form_data(emulator_site):
    response = requests.post(emulator_site.url("/api/token"), data=DEMO_CREDENTIALS,
                             timeout=10)
    assert response.status_code == 201, response.text
    requests.delete(emulator_site.url("/api/token"), timeout=10,
                    headers={"Authorization": f"Bearer {response.json()['token']}"})


def test_bad_requests_say_what_to_send(emulator_site):
    for body in ("{not json", "[" * 100_000):  # json.loads() raises RecursionError on the second
        malformed = requests.post(emulator_site.url("/api/token"), data=body, timeout=10,
                                  headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400
        assert "username" in malformed.json()["error"]
    unsigned = requests.delete(emulator_site.url("/api/token"), timeout=10)
    assert unsigned.status_code == 401
    wrong = issue(emulator_site, DEMO_USER[0], "wrong")
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "Wrong username or password."}


def test_wrong_passwords_are_refused_then_limited(emulator_site):
    statuses = []
    for _ in range(12):  # 5 a minute: the limit falls within this many even across a window edge
        response = issue(emulator_site, DEMO_USER[0], "wrong")
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) <= {401}, statuses
    assert response.headers["RateLimit-Policy"] == '"token";q=5;w=60'
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.json()["error"] == "rate_limited"
