"""The example site under ASGI (uvicorn, as ``make run-asgi`` serves it): the async page, sign-in, the cache
and a 429, on the emulator."""

import os
import re
import sys

import pytest
import requests

from .sites import DEMO_USER, Browser, Site, element_text, emulator_env, post_login, stop_site

WITHOUT_EXTRA = os.environ.get("CFKV_WITHOUT_ASYNC_EXTRA") == "1"

pytestmark = pytest.mark.slow


class AsgiSite(Site):
    """The example site served by uvicorn (``demo_site.asgi``) on a free loopback port."""

    def command(self):
        return [sys.executable, "-m", "uvicorn", "--app-dir", "example_project", "--host", "127.0.0.1",
                "--port", str(self.port), "--lifespan", "off", "demo_site.asgi:application"]


@pytest.fixture(scope="module")
def asgi_site(cfkv_emulator, example_db, tmp_path_factory):
    namespace_id = cfkv_emulator.new_namespace_id()
    site = AsgiSite(tmp_path_factory.mktemp("example-asgi"), template_db=example_db,
                    **emulator_env(cfkv_emulator, namespace_id))
    site.kv = cfkv_emulator.client(namespace_id)
    site.start()
    yield site
    stop_site(site)


def reads(html):
    """Return the async page's reads: (label, answer, how), row by row."""
    body = re.search(r'<table class="stack" id="reads">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        rows.append((cells[0], cells[3], cells[4]))
    return rows


def test_async_page_gathers_the_session_value_and_two_cache_reads(asgi_site):
    browser = Browser()
    assert element_text(browser.get(asgi_site.url("/"), timeout=10).text, "visits") == "1"
    first = browser.get(asgi_site.url("/async/"), timeout=10)
    assert first.status_code == 200, asgi_site.log()[-3000:]
    assert element_text(first.text, "server").startswith("ASGI: the view ran on the server's event loop")
    labels = ['request.session.aget(&quot;visits&quot;)', 'cache.aget(&quot;async-demo:header&quot;)',
              'cache.aget(&quot;async-demo:sidebar&quot;)']
    assert [label for label, _, _ in reads(first.text)] == labels
    session_read, *cache_reads = reads(first.text)
    assert session_read[1] == "1 visit"
    assert [answer for _, answer, _ in cache_reads] == ["miss", "miss"]
    # With the async extra (installed by make venv) the cache's reads hold no thread; the environment that runs
    # without it says so (tox.ini), and there they run in a worker thread.
    expected = ("the blocking call in a worker thread (the async extra is not installed)" if WITHOUT_EXTRA
                else "awaited on the event loop, no thread (aiohttp)")
    assert all(how == expected for _, _, how in cache_reads)
    assert element_text(first.text, "api-calls").startswith("3 ")  # one GET each: the session and the two entries
    assert "stored now with one cache.aset_many()" in element_text(first.text, "stored")
    stored = {key.name for key in asgi_site.kv.list_keys().keys}
    assert sum("async-demo:header" in name for name in stored) == 1
    assert sum("async-demo:sidebar" in name for name in stored) == 1

    again = browser.get(asgi_site.url("/async/"), timeout=10)
    assert [answer.split(",")[0] for _, answer, _ in reads(again.text)[1:]] == ["hit", "hit"]
    assert element_text(again.text, "stored") is None
    # The page only reads the count: the home page's next view is the second.
    assert element_text(browser.get(asgi_site.url("/"), timeout=10).text, "visits") == "2"


def test_home_page_links_to_the_async_page(asgi_site):
    home = requests.get(asgi_site.url("/"), timeout=10).text
    assert 'href="/async/" id="async-page-link"' in home
    assert 'href="/async/" id="async-link"' in home  # and the header's navigation
    assert requests.get(asgi_site.url("/static/demo/site.css"), timeout=10).status_code == 200


def test_sign_in_under_asgi_and_the_async_page_sees_the_user(asgi_site):
    browser = Browser()
    signed_in = post_login(browser, asgi_site, *DEMO_USER)
    assert signed_in.status_code == 200 and element_text(signed_in.text, "username") == DEMO_USER[0]
    page = browser.get(asgi_site.url("/async/"), timeout=10)
    assert page.status_code == 200, asgi_site.log()[-3000:]
    assert f"Log out {DEMO_USER[0]}" in page.text  # the user, read with request.auser() from the gathered session
    assert reads(page.text)[0][1] == "1 visit"  # the visit the home page counted after sign-in


def test_cache_under_asgi(asgi_site):
    browser = Browser()
    first = browser.get(asgi_site.url("/slow/"), timeout=10)
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
    assert browser.get(asgi_site.url("/slow/"), timeout=10).headers["X-Cache"] == "hit"


def test_429_under_asgi(asgi_site):
    for _ in range(22):  # 10 a minute: enough even when a window ends midway
        response = requests.get(asgi_site.url("/api/ping"), timeout=10)
        if response.status_code == 429:
            break
    assert response.status_code == 429
    assert response.json()["limits"] == [{"policy": "ping", "limit": 10, "period": 60}]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["RateLimit"] == f'"ping";r=0;t={response.headers["Retry-After"]}'
