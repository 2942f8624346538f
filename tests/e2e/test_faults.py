"""The example site while Workers KV fails: pages still render, the API answers 503 with
Retry-After, nothing the site acknowledged is lost, and no request is a 500.

The site runs with a short KV timeout and no retries, so each failure is
seen at once and the tests take seconds. Faults come from the emulator: its
own random ones (``cfkv_emulator.faults``), or ``kv_answers`` below, which
answers only the calls a test names (the metadata read, the DELETE...).
"""

import contextlib
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .sites import (
    DEMO_CREDENTIALS,
    DEMO_USER,
    Browser,
    csrf_token,
    element_text,
    post_login,
    serve_on_emulator,
    stop_site,
)

pytestmark = pytest.mark.slow

FAIL_FAST = {"EXAMPLE_KV_TIMEOUT": "3", "EXAMPLE_KV_MAX_RETRIES": "0"}
OUTAGE = json.dumps({"success": False, "errors": [{"code": 10001, "message": "service temporarily unavailable"}],
                     "messages": [], "result": None}).encode()


@contextlib.contextmanager
def intercepted(emulator, intercept):
    """Let ``intercept(environ)`` see each KV call first: it returns a reply (status, headers, body) or None."""
    app = emulator.app
    own = vars(app).get("handle")  # set when intercepts nest
    handle = app.handle

    def answer(environ):
        reply = intercept(environ) if "/storage/kv/" in environ["PATH_INFO"] else None
        return handle(environ) if reply is None else reply

    app.handle = answer
    try:
        yield
    finally:
        if own is None:
            del app.handle
        else:
            app.handle = own


def kv_answers(emulator, status=503, body=OUTAGE, *, method=None, path_part=""):
    """Answer the KV calls with ``method`` whose path holds ``path_part`` with ``status`` and ``body``."""
    def intercept(environ):
        if path_part in environ["PATH_INFO"] and method in (None, environ["REQUEST_METHOD"]):
            return status, {"Content-Type": "application/json"}, body
        return None
    return intercepted(emulator, intercept)


def kv_refuses_deletes(emulator):
    """Answer every delete, of one key or in bulk (a session with its index entry), with an outage."""
    def intercept(environ):
        deleting = environ["REQUEST_METHOD"] == "DELETE" or environ["PATH_INFO"].endswith("/bulk/delete")
        return (503, {"Content-Type": "application/json"}, OUTAGE) if deleting else None
    return intercepted(emulator, intercept)


def get(http, site, path):
    return http.get(site.url(path), timeout=10)


def assert_unavailable(response):
    """Assert ``response`` is the example's 503 for KV being unreachable: Retry-After, and it says so."""
    assert response.status_code == 503, (response.status_code, response.text[:3000])
    assert int(response.headers["Retry-After"]) >= 1
    if response.headers["Content-Type"] == "application/json":
        assert response.json()["error"] == "temporarily_unavailable"
    else:
        assert element_text(response.text, "kv-unavailable"), response.text


def says(page, element_id):
    """Return the text of the element with ``element_id`` on ``page``, its white space collapsed ("" if none)."""
    return " ".join((element_text(page.text, element_id) or "").split())


def signed_in_as(page):
    return element_text(page.text, "username")


@pytest.fixture(scope="module")
def site(cfkv_emulator, example_db, tmp_path_factory):
    site = serve_on_emulator(cfkv_emulator, example_db, tmp_path_factory.mktemp("example-faults"), **FAIL_FAST)
    yield site
    stop_site(site)
    assert "Internal Server Error" not in site.log(), site.log()


@pytest.fixture(scope="module")
def staff(site):
    """A browser signed in as the demo user (a staff member)."""
    http = Browser()
    assert signed_in_as(post_login(http, site, *DEMO_USER)) == DEMO_USER[0]
    return http


# Pages


def test_home_page_counts_the_visit_when_its_metadata_read_fails(site, cfkv_emulator):
    http = Browser()
    assert element_text(get(http, site, "/").text, "visits") == "1"
    with kv_answers(cfkv_emulator, method="GET", path_part="/metadata/"):
        page = get(http, site, "/")
    assert page.status_code == 200, page.text
    assert element_text(page.text, "visits") == "2"
    assert element_text(page.text, "kv-metadata-unavailable")
    assert element_text(get(http, site, "/").text, "visits") == "3"


@pytest.mark.parametrize("metadata", [["a", "list"], "text", 7, None, {"expires": "soon"}, {"expires": True},
                                      {"expires": 1e300}, {"expires": float("nan")}, {"expires": -1e20}])
def test_home_page_renders_whatever_metadata_kv_returns(site, cfkv_emulator, metadata):
    http = Browser()
    get(http, site, "/")
    body = json.dumps({"success": True, "errors": [], "messages": [], "result": metadata}).encode()
    with kv_answers(cfkv_emulator, 200, body, method="GET", path_part="/metadata/"):
        page = get(http, site, "/")
    assert page.status_code == 200, page.text
    assert element_text(page.text, "visits") == "2"


def test_home_page_renders_when_kv_is_down_and_loses_no_counted_visit(site, cfkv_emulator):
    http = Browser()
    get(http, site, "/")
    assert element_text(get(http, site, "/").text, "visits") == "2"
    with cfkv_emulator.faults(rate_503=1.0):
        for _ in range(2):
            page = get(http, site, "/")
            assert page.status_code == 200, page.text
            assert element_text(page.text, "visits") is None  # nothing to show: the session is unread
            assert "not counted" in says(page, "kv-unavailable")
    assert element_text(get(http, site, "/").text, "visits") == "3"


def test_home_page_says_a_visit_was_not_counted_when_the_write_fails(site, cfkv_emulator):
    http = Browser()
    get(http, site, "/")
    with kv_answers(cfkv_emulator, method="PUT"):
        page = get(http, site, "/")
    assert page.status_code == 200, page.text
    assert "not counted" in says(page, "kv-unavailable")
    assert element_text(get(http, site, "/").text, "visits") == "2"


def test_new_visitor_gets_a_page_when_kv_is_down(site, cfkv_emulator):
    http = Browser()
    with cfkv_emulator.faults(rate_503=1.0):
        page = get(http, site, "/")
    assert page.status_code == 200, page.text
    assert "not counted" in says(page, "kv-unavailable")
    assert "sessionid" not in http.cookies  # no cookie for a session that was never stored
    assert element_text(get(http, site, "/").text, "visits") == "1"


def test_cached_page_is_computed_when_the_cache_cannot_be_reached(site, cfkv_emulator):
    http = Browser()
    with cfkv_emulator.faults(rate_503=1.0):
        first = get(http, site, "/slow/")
        assert first.status_code == 200, first.text
        assert first.headers["X-Cache"] == "miss"
        forget = http.post(site.url("/slow/"), data={"csrfmiddlewaretoken": csrf_token(first.text)}, timeout=10)
        assert forget.status_code == 200, forget.text
        assert forget.headers["X-Cache"] == "miss"  # nothing was stored
    assert get(http, site, "/slow/").headers["X-Cache"] == "miss"
    assert get(http, site, "/slow/").headers["X-Cache"] == "hit"


def test_login_when_kv_cannot_store_the_session(site, cfkv_emulator):
    http = Browser()
    with kv_answers(cfkv_emulator, method="PUT"):
        refused = post_login(http, site, *DEMO_USER)
    assert_unavailable(refused)
    assert "not signed in" in says(refused, "kv-unavailable")
    assert signed_in_as(get(http, site, "/")) is None
    assert signed_in_as(post_login(http, site, *DEMO_USER)) == DEMO_USER[0]


def test_logout_when_kv_cannot_delete_the_session(site, cfkv_emulator):
    http = Browser()
    assert signed_in_as(post_login(http, site, *DEMO_USER)) == DEMO_USER[0]
    home = get(http, site, "/")
    with kv_refuses_deletes(cfkv_emulator):
        refused = http.post(site.url("/logout/"), data={"csrfmiddlewaretoken": csrf_token(home.text)}, timeout=10)
    assert_unavailable(refused)
    assert "still signed in" in says(refused, "kv-unavailable")
    assert says(refused, "logout") == f"Log out {DEMO_USER[0]}"
    cookie = http.cookies["sessionid"]

    assert signed_in_as(get(http, site, "/")) == DEMO_USER[0]  # as the page said
    logged_out = http.post(site.url("/logout/"), data={"csrfmiddlewaretoken": csrf_token(home.text)}, timeout=10)
    assert logged_out.status_code == 200 and signed_in_as(logged_out) is None
    replayed = requests.get(site.url("/"), cookies={"sessionid": cookie}, timeout=10)
    assert signed_in_as(replayed) is None


def test_namespace_page_when_kv_cannot_list(site, staff, cfkv_emulator):
    with kv_answers(cfkv_emulator, method="GET", path_part="/keys"):
        page = get(staff, site, "/namespace/")
    assert page.status_code == 200, page.text
    assert element_text(page.text, "kv-unavailable")
    assert get(staff, site, "/namespace/").status_code == 200


def test_sessions_page_when_kv_cannot_list(site, staff, cfkv_emulator):
    with kv_answers(cfkv_emulator, method="GET", path_part="/keys"):
        page = get(staff, site, "/account/sessions/")
    assert_unavailable(page)
    assert "cannot be listed" in says(page, "kv-unavailable")
    assert get(staff, site, "/account/sessions/").status_code == 200


# The JSON API


def test_token_endpoint_when_kv_cannot_store_the_session(site, cfkv_emulator):
    with kv_answers(cfkv_emulator, method="PUT"):
        refused = requests.post(site.url("/api/token"), json=DEMO_CREDENTIALS, timeout=10)
    assert_unavailable(refused)


def test_revoking_a_token_when_kv_cannot_delete_it(site, cfkv_emulator):
    token = requests.post(site.url("/api/token"), json=DEMO_CREDENTIALS, timeout=10).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    with kv_refuses_deletes(cfkv_emulator):
        refused = requests.delete(site.url("/api/token"), headers=auth, timeout=10)
    assert_unavailable(refused)
    assert requests.get(site.url("/api/me"), headers=auth, timeout=10).status_code == 200  # not revoked
    assert requests.delete(site.url("/api/token"), headers=auth, timeout=10).status_code == 204
    assert requests.get(site.url("/api/me"), headers=auth, timeout=10).status_code == 401


def test_me_when_kv_cannot_read_the_session(site, staff, cfkv_emulator):
    token = requests.post(site.url("/api/token"), json=DEMO_CREDENTIALS, timeout=10).json()["token"]
    with cfkv_emulator.faults(rate_503=1.0):
        by_cookie = get(staff, site, "/api/me")
        by_token = requests.get(site.url("/api/me"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert_unavailable(by_cookie)  # not a 401: the session may well be signed in
    assert_unavailable(by_token)
    assert get(staff, site, "/api/me").json()["username"] == DEMO_USER[0]


# Everything at once, under heavy random faults

# Half the calls fail, some with 429. A refused call changed nothing (the
# emulator refuses before it acts), so the walk can hold the site to what each
# answer said, done or not done. Retry-After 0 keeps one 429 from holding back
# every later call of the site's process, so both sides of each page are seen.
HEAVY_FAULTS = {"rate_503": 0.5, "rate_429": 0.05, "retry_after": 0}
ROUNDS = 20


class Walk:
    """Clients walking the site under faults, remembering what each answer said was done.

    Every response is checked as it arrives: never a 5xx but the example's 503
    with Retry-After. ``check_nothing_lost()`` then looks, with the faults off,
    at every visit counted, sign-in, sign-out, token issued and token revoked,
    and at every one that the answer said was not done.
    """

    def __init__(self, site):
        self.site = site
        self.statuses = {}  # (method, path) -> {status: count}
        self.counted = {}  # browser -> the last visit count a page acknowledged
        self.signed_in, self.signed_out = [], []  # session cookies, by what the last answer said
        self.tokens, self.revoked = set(), []

    def send(self, http, method, path, expected, **kwargs):
        response = http.request(method, self.site.url(path), timeout=10, allow_redirects=False, **kwargs)
        seen = self.statuses.setdefault((method, path), {})
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        if response.status_code == 503:
            assert_unavailable(response)
        else:
            assert response.status_code in expected, (method, path, response.status_code, response.text[:3000])
        return response

    def visit_home(self, http):
        page = self.send(http, "GET", "/", {200})
        visits = element_text(page.text, "visits")
        if visits is None:
            assert "not counted" in says(page, "kv-unavailable")
        else:  # counted: a count never goes back, so no counted visit was lost
            assert int(visits) > self.counted.get(http, 0), (visits, self.counted.get(http))
            self.counted[http] = int(visits)

    def browse_as_staff(self, http, round_number):
        # Twice: a signed-in visit is counted only if its load and its writes all get through (at one in two
        # each); with one visit a round, 1 walk in 12 here saw none counted and could not show that side.
        self.visit_home(http)
        self.visit_home(http)
        slow = self.send(http, "GET", "/slow/", {200})
        if round_number % 5 == 0:
            self.send(http, "POST", "/slow/", {302}, data={"csrfmiddlewaretoken": csrf_token(slow.text)})
        # Unread, the session looks signed out ("empty" on load errors): the page asks to log in.
        self.send(http, "GET", "/namespace/", {200, 302})
        self.send(http, "GET", "/namespace/?prefix=cache:", {200, 302})
        self.send(http, "GET", "/account/sessions/", {200, 302})
        self.send(http, "GET", "/api/", {200})
        self.send(http, "GET", "/api/me", {200})
        self.send(http, "GET", "/api/ping", {200, 429})

    def log_in_and_out(self):
        http = Browser()
        form = self.send(http, "GET", "/login/", {200})
        login = self.send(http, "POST", "/login/", {302, 429},  # 5 a minute per address
                          data={**DEMO_CREDENTIALS, "csrfmiddlewaretoken": csrf_token(form.text)})
        if login.status_code != 302:
            return
        cookie = http.cookies["sessionid"]
        self.visit_home(http)
        form = self.send(http, "GET", "/login/", {200})  # the CSRF token changed at login
        logout = self.send(http, "POST", "/logout/", {302}, data={"csrfmiddlewaretoken": csrf_token(form.text)})
        if logout.status_code == 302:
            self.signed_out.append(cookie)
            self.counted.pop(http, None)  # its visits ended with the session
        else:
            self.signed_in.append(cookie)

    def use_the_api(self):
        issued = self.send(requests, "POST", "/api/token", {201, 429}, json=DEMO_CREDENTIALS)
        if issued.status_code == 201:
            self.tokens.add(issued.json()["token"])
        for token in sorted(self.tokens):
            auth = {"Authorization": f"Bearer {token}"}
            me = self.send(requests, "GET", "/api/me", {200}, headers=auth)  # never a 401: it is not revoked
            assert me.status_code == 503 or me.json()["username"] == DEMO_USER[0]
            self.send(requests, "GET", "/api/ping", {200, 429}, headers=auth)
            if self.send(requests, "DELETE", "/api/token", {204}, headers=auth).status_code == 204:
                self.tokens.remove(token)
                self.revoked.append(token)
        self.send(requests, "GET", "/api/me", {401})

    def check_nothing_lost(self):
        for http, counted in self.counted.items():
            page = self.send(http, "GET", "/", {200})
            assert element_text(page.text, "visits") == str(counted + 1), page.text
        for cookie in self.signed_in:
            assert signed_in_as(requests.get(self.site.url("/"), cookies={"sessionid": cookie}, timeout=10))
        for cookie in self.signed_out:
            assert not signed_in_as(requests.get(self.site.url("/"), cookies={"sessionid": cookie}, timeout=10))
        for token in self.tokens:
            self.send(requests, "GET", "/api/me", {200}, headers={"Authorization": f"Bearer {token}"})
        for token in self.revoked:
            self.send(requests, "GET", "/api/me", {401}, headers={"Authorization": f"Bearer {token}"})


def test_every_page_and_endpoint_under_heavy_faults(cfkv_emulator, example_db, tmp_path):
    site = serve_on_emulator(cfkv_emulator, example_db, tmp_path / "site", EXAMPLE_SLOW_SECONDS="0.01",
                             **FAIL_FAST)
    walk = Walk(site)
    visitor, staff = Browser(), Browser()
    try:
        assert signed_in_as(post_login(staff, site, *DEMO_USER)) == DEMO_USER[0]
        with cfkv_emulator.faults(**HEAVY_FAULTS):
            for round_number in range(ROUNDS):
                walk.visit_home(visitor)
                walk.browse_as_staff(staff, round_number)
                walk.log_in_and_out()
                walk.use_the_api()
        walk.check_nothing_lost()
    finally:
        stop_site(site)
    assert "Internal Server Error" not in site.log(), site.log()
    # Heavy enough to show both sides: pages that said KV did not answer, and visits counted.
    assert walk.statuses["GET", "/api/me"][503] > 0, walk.statuses
    assert walk.counted.get(visitor) and walk.counted.get(staff), walk.statuses


# A soak: light faults and slow answers, several clients at once

# Set CFKV_SOAK_SECONDS=600 to run it for ten minutes.
SOAK_SECONDS = float(os.environ.get("CFKV_SOAK_SECONDS", "3"))
SOAK_TIMEOUT = 1.0  # the site's KV timeout, in seconds
# Slow answers stay within the timeout. Only reads outlast it (slow_reads): a
# write that times out may still be done later, over newer writes, and no
# store without compare-and-set can keep an update acknowledged after it.
LIGHT_FAULTS = {"rate_503": 0.05, "rate_429": 0.02, "retry_after": 0, "slow_rate": 0.05, "slow_ms": 200}


def slow_reads(emulator, share, seconds):
    """Answer a ``share`` of KV reads ``seconds`` late."""
    def intercept(environ):
        if environ["REQUEST_METHOD"] == "GET" and random.random() < share:
            time.sleep(seconds)
        return None
    return intercepted(emulator, intercept)


SOAK_PAGES = {"/": {200}, "/slow/": {200}, "/api/": {200}, "/api/ping": {200, 429}}
STAFF_PAGES = {**SOAK_PAGES, "/namespace/": {200, 302}, "/api/me": {200}}  # 302: a session unread looks signed out


def open_files(pid):
    """Return how many file descriptors process ``pid`` holds (None where /proc is missing)."""
    fds = Path(f"/proc/{pid}/fd")
    return len(list(fds.iterdir())) if fds.is_dir() else None


def soak(site, http, pages, deadline):
    """Walk ``pages`` until ``deadline``; return the last visit count a page acknowledged."""
    counted = 0
    while time.monotonic() < deadline:
        for path, expected in pages.items():
            response = http.get(site.url(path), timeout=10, allow_redirects=False)
            if response.status_code == 503:
                assert_unavailable(response)
                continue
            assert response.status_code in expected, (path, response.status_code, response.text[:3000])
            visits = element_text(response.text, "visits") if path == "/" else None
            if visits is not None:
                assert int(visits) > counted, (visits, counted)
                counted = int(visits)
    return counted


def test_soak_with_light_faults_and_slow_answers(cfkv_emulator, example_db, tmp_path):
    site = serve_on_emulator(cfkv_emulator, example_db, tmp_path / "site", EXAMPLE_SLOW_SECONDS="0.01",
                             EXAMPLE_KV_TIMEOUT=str(SOAK_TIMEOUT), EXAMPLE_KV_MAX_RETRIES="1")
    staff = Browser()
    browsers = {Browser(): SOAK_PAGES, Browser(): SOAK_PAGES, Browser(): SOAK_PAGES, staff: STAFF_PAGES}
    try:
        assert signed_in_as(post_login(staff, site, *DEMO_USER)) == DEMO_USER[0]
        with cfkv_emulator.faults(**LIGHT_FAULTS), slow_reads(cfkv_emulator, 0.02, SOAK_TIMEOUT + 0.2), \
                ThreadPoolExecutor(len(browsers)) as pool:
            warm = time.monotonic() + 1
            list(pool.map(lambda http: soak(site, http, browsers[http], warm), browsers))
            files_warm = open_files(site.process.pid)
            deadline = time.monotonic() + SOAK_SECONDS
            counted = dict(zip(browsers, pool.map(lambda http: soak(site, http, browsers[http], deadline), browsers),
                               strict=True))
        for http, last in counted.items():
            assert int(element_text(http.get(site.url("/"), timeout=10).text, "visits")) > last
        files_end = open_files(site.process.pid)
    finally:
        stop_site(site)
    assert "Internal Server Error" not in site.log(), site.log()
    assert min(counted.values()) > 0
    if files_warm is not None:
        assert files_end <= files_warm + 8, (files_warm, files_end)
