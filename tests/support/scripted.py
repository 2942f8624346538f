"""Cloudflare's API played by a loopback server from answers a test registers, as `responses` fakes it for
requests alone: here the blocking and the async client (aiohttp) meet the same real server.

    api.get("/values/k", status=429, headers={"Retry-After": "2"}, json=TOO_MANY)   # the first GET of it
    api.get("/values/k", body=b"v")                                                    # every later one
    api.every(status=200, body=b"<html>")                 # any call no registration of its own answers

A path is matched after the namespace's URL (or the account's, for namespace calls), without its
query. Answers registered for one method and path are given in turn, the last one again and again.
``calls`` lists the requests (tests.support.hostile.Request) in order. With ``strict`` every answer
registered must have been given by the end of the test.
"""

import json
from collections import defaultdict

import pytest

from django_cfkv.client import KVClient
from tests.support.faults import ACCOUNT, MAX_RETRIES, NS, TOKEN
from tests.support.hostile import HostileServer, reply

ACCOUNT_PATH = f"/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces"
NAMESPACE_PATH = f"{ACCOUNT_PATH}/{NS}"


class ScriptedAPI:
    def __init__(self, strict=True):
        self.strict = strict
        self._answers = defaultdict(list)  # (method, path) -> [answer, ...], each [status, body, headers, given]
        self._server = HostileServer(self._answer)
        self.base_url = self._server.base_url

    def __enter__(self):
        self._server.__enter__()
        return self

    def __exit__(self, *exc):
        self._server.__exit__(*exc)

    @property
    def calls(self):
        return self._server.requests

    def add(self, method, path, status=200, *, json=None, body=b"", headers=None):
        if json is not None:
            body, headers = _json(json), {"Content-Type": "application/json", **(headers or {})}
        self._answers[(method, path)].append([status, body.encode() if isinstance(body, str) else body,
                                              headers or {}, 0])

    def get(self, path, status=200, **kwargs):
        self.add("GET", path, status, **kwargs)

    def put(self, path, status=200, **kwargs):
        self.add("PUT", path, status, **kwargs)

    def post(self, path, status=200, **kwargs):
        self.add("POST", path, status, **kwargs)

    def delete(self, path, status=200, **kwargs):
        self.add("DELETE", path, status, **kwargs)

    def every(self, status=200, **kwargs):
        """Answer every call that no registration of its own answers."""
        self.add(None, None, status, **kwargs)

    def reset(self):
        self._answers.clear()
        self.calls.clear()

    def unfired(self):
        return [key for key, answers in self._answers.items() for answer in answers if not answer[3]]

    def _answer(self, conn, request):
        path = request.path.split("?")[0]
        path = path[len(NAMESPACE_PATH):] if path.startswith(NAMESPACE_PATH + "/") else path[len(ACCOUNT_PATH):]
        answers = self._answers.get((request.method, path)) or self._answers.get((None, None))
        if not answers:
            reply(conn, 599, b"no answer registered for " + f"{request.method} {path}".encode())
            return
        answer = next((a for a in answers if not a[3]), answers[-1])
        answer[3] += 1
        status, body, headers, _ = answer
        reply(conn, status, body, headers)


def _json(data):
    return json.dumps(data).encode()


@pytest.fixture
def scripted():
    """Cloudflare's API on a loopback server, answering as the test registers (see the module docstring)."""
    with ScriptedAPI() as api:
        yield api
        assert not api.unfired(), f"answers registered and never asked for: {api.unfired()}"


@pytest.fixture
def loose_scripted():
    """As ``scripted``, for matrices that register answers some tests do not ask for."""
    with ScriptedAPI(strict=False) as api:
        yield api


@pytest.fixture
def scripted_client(request, as_mode, slept, monkeypatch):
    """A KVClient on the ``scripted`` (or ``loose_scripted``) server that retries MAX_RETRIES times, its
    waits recorded (``slept``) and its backoff's jitter fixed at none: blocking, or awaited (``as_mode``)."""
    api = request.getfixturevalue("loose_scripted" if "loose_scripted" in request.fixturenames else "scripted")
    client = KVClient(ACCOUNT, NS, TOKEN, base_url=api.base_url, max_retries=MAX_RETRIES)
    monkeypatch.setattr(client.transport.policy, "jitter", lambda span: 0.0)
    yield as_mode(client)
    client.close()
