"""Two-way session sharing with a Worker under Miniflare, in both key layouts.

Django reaches KV through the Worker gateway (BACKEND "cloudflare", BASE_URL =
the gateway); tests/workers/session-store.mjs, the seed's session store, is
bound to the same namespace as SESSIONS and derives each session's KV key with
the lines the docs show (docs/reference/stored-formats.md).
"""

import json
import re
import time
import uuid
from pathlib import Path

import pytest
import requests
from django.test import Client

from django_cfkv import get_kv
from django_cfkv.sessions import SessionStore, issue_token, revoke_token
from tests.gateway.server import GatewayServer

TESTS = Path(__file__).resolve().parent.parent
WORKER = TESTS / "workers" / "session-store.mjs"
STORED_FORMATS = TESTS.parent / "docs" / "reference" / "stored-formats.md"
WORKERS_HOWTO = TESTS.parent / "docs" / "howto" / "workers-sessions.md"

pytestmark = [pytest.mark.urls("tests.sessions.urls"), pytest.mark.django_db]


@pytest.fixture(scope="module", params=["hashed", "plain"])
def gateway(request):
    with GatewayServer(extra_worker=WORKER, extra_binding="SESSIONS",
                       extra_vars={"SESSION_KEY_LAYOUT": request.param}) as server:
        server.layout = request.param
        yield server


@pytest.fixture(autouse=True)
def shared_namespace(settings, gateway):
    settings.CFKV = {"default": gateway.settings()}
    settings.SESSION_CFKV_FORMAT = "json"
    settings.SESSION_CFKV_KEY_LAYOUT = gateway.layout
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django_cfkv.bearer.BearerSessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]


def bearer(session_id):
    return {"Authorization": f"Bearer {session_id}"}


def worker_get(gateway, session_id):
    """The Worker's view of a session: its id goes in a header, never in the URL (urllib3 logs URLs)."""
    response = requests.get(f"{gateway.extra_url}/session", headers=bearer(session_id), timeout=10)
    response.raise_for_status()
    return response.json()


def test_django_authenticates_a_session_the_worker_created(gateway, user):
    response = requests.post(f"{gateway.extra_url}/sessions",
                             json={"userId": user.pk, "email": user.email}, timeout=10)
    session_id = response.json()["id"]
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {session_id}"}
    assert client.get("/whoami/", **auth).json() == {"user": user.pk, "n": None, "bearer": True}
    assert client.get("/bump/", **auth).json() == {"n": 1}
    # The Worker still reads its session, Django's data beside its fields.
    seen = worker_get(gateway, session_id)
    assert seen["userId"] == str(user.pk) and seen["email"] == user.email
    assert seen["data"]["n"] == 1


def test_worker_reads_a_token_django_issued_and_null_once_revoked(gateway, user):
    token = issue_token(None, user)
    seen = worker_get(gateway, token)
    assert seen["userId"] == str(user.pk)
    assert seen["expiresAt"] > time.time() * 1000
    revoke_token(token)
    assert worker_get(gateway, token) is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_worker_logout_ends_the_session_for_django(gateway, user):
    token = issue_token(None, user)
    requests.delete(f"{gateway.extra_url}/session", headers=bearer(token), timeout=10).raise_for_status()
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_worker_reads_a_cookie_session_django_made(gateway, user):
    browser = Client()
    browser.get(f"/login/{user.pk}/")
    browser.get("/bump/")
    seen = worker_get(gateway, browser.cookies["sessionid"].value)
    assert seen["userId"] == str(user.pk) and seen["data"]["n"] == 1


def test_key_names_hold_no_session_id_in_the_hashed_layout(gateway, user):
    made = requests.post(f"{gateway.extra_url}/sessions", json={"userId": str(user.pk)}, timeout=10).json()["id"]
    token = issue_token(None, user)
    names = [info.name for info in get_kv().iter_keys()]
    for session_id in (made, token):
        assert SessionStore.kv_key(session_id) in names
        assert any(session_id in name for name in names) == (gateway.layout == "plain")


def test_the_worker_derives_keys_with_the_lines_the_docs_show():
    documented = re.search(r"^async function sessionKey\(.*?^\}$", STORED_FORMATS.read_text(), re.M | re.S)
    assert documented, "docs/reference/stored-formats.md shows sessionKey()"
    javascript = documented.group(0).replace("(id: string): Promise<string>", "(id)")
    assert javascript.count("\n") == 4 and javascript in WORKER.read_text()


def _untyped(typescript):
    """JavaScript from the docs' TypeScript: parameter types dropped (``(env: Env, id: string)`` -> ``(env, id)``)."""
    def names(match):
        params, depth, name, typed = [], 0, "", False
        for char in match.group(1) + ",":
            depth += (char in "{<(") - (char in "}>)")
            if depth == 0 and char == ",":
                params.append(name.strip())
                name, typed = "", False
            elif depth == 0 and char == ":":
                typed = True
            elif not typed:
                name += char
        return "(" + ", ".join(p for p in params if p) + ") {"
    return re.sub(r"\((.*)\) \{$", names, typescript, flags=re.M)


def test_the_worker_creates_and_refreshes_sessions_with_the_code_the_docs_show():
    page = WORKERS_HOWTO.read_text()
    shown = _untyped(re.search(r"```ts\n(.*?)```", page, re.S).group(1))
    source = WORKER.read_text()
    # The harness runs both key layouts (keyOf) and gives a session a client record as Django does.
    ran = re.sub(r"await keyOf\(env, id\)", "await sessionKey(id)", source)
    ran = "".join(line for line in ran.splitlines(keepends=True) if "// harness" not in line)
    assert "const SESSION_TTL = 7 * 24 * 3600; // seconds, = SESSION_COOKIE_AGE" in shown
    functions = re.findall(r"^export async function \w+\(.*?^\}$", shown, re.M | re.S)
    assert [re.match(r"export async function (\w+)", f).group(1) for f in functions] == ["createSession", "refresh"]
    for block in [*functions, "const SESSION_TTL = 7 * 24 * 3600; // seconds, = SESSION_COOKIE_AGE"]:
        assert block in ran, block


def put_session(session_id, **times):
    """Store a session for ``session_id`` with these epoch-ms times, as a Worker or Django would."""
    now = int(time.time() * 1000)
    value = {"userId": None, "createdAt": now, "expiresAt": now + 3_600_000, **times}
    get_kv().put(SessionStore.kv_key(session_id), json.dumps(value), expiration_ttl=3600)


def test_worker_sees_the_absolute_lifetime_of_a_token_django_issued(gateway, user):
    token = issue_token(None, user, max_age=600)
    seen = worker_get(gateway, token)
    assert seen["expiresAt"] <= seen["absoluteExpiresAt"] <= (time.time() + 601) * 1000
    now = int(time.time() * 1000)
    put_session(token, absoluteExpiresAt=now - 1000)  # past its end, though expiresAt is not
    assert worker_get(gateway, token) is None
    assert Client().get("/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_worker_refresh_slides_only_up_to_the_absolute_lifetime(gateway):
    session_id, now = str(uuid.uuid4()), int(time.time() * 1000)
    put_session(session_id, expiresAt=now + 120_000, absoluteExpiresAt=now + 1_800_000)
    seen = worker_get(gateway, session_id)  # the Worker's refresh() would slide it by a week
    assert seen["expiresAt"] == seen["absoluteExpiresAt"] == now + 1_800_000
