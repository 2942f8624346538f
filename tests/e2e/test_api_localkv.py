"""The example site as `make run` starts it: no Cloudflare settings, so the embedded LocalKV."""

import json

import pytest
import requests

from django_cfkv.local import LocalKV

from .sites import DEMO_USER, Site, element_text, manage, post_login

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_site(example_db, tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("example-local"), template_db=example_db)
    site.kv = LocalKV(site.data_dir / "cfkv.sqlite3")
    site.start()
    yield site
    site.stop()


def test_sessions_live_in_the_local_file_and_survive_a_restart(local_site):
    browser = requests.Session()
    assert element_text(browser.get(local_site.url("/"), timeout=10).text, "visits") == "1"
    page = browser.get(local_site.url("/"), timeout=10).text
    assert element_text(page, "visits") == "2"
    assert element_text(page, "store").startswith("LocalKV")
    kv_key = element_text(page, "kv-key")
    assert local_site.kv.get_metadata(kv_key)["kind"] == "session"

    local_site.restart()
    page = browser.get(local_site.url("/"), timeout=10).text
    assert element_text(page, "visits") == "3"
    assert element_text(page, "kv-key") == kv_key


def test_namespace_page_is_staff_only_and_agrees_with_the_command(local_site):
    browser = requests.Session()
    anonymous = browser.get(local_site.url("/namespace/"), timeout=10, allow_redirects=False)
    assert anonymous.status_code == 302 and "/login/" in anonymous.headers["Location"]

    post_login(browser, local_site, *DEMO_USER)
    browser.get(local_site.url("/slow/"), timeout=30)  # puts a cache entry in the namespace
    page = browser.get(local_site.url("/namespace/"), timeout=10).text
    assert element_text(page, "api-calls") == "0"  # LocalKV makes no API calls

    stats = json.loads(manage(local_site.env, "cfkv", "stats", "--json"))
    for kind in ("sessions", "cache"):
        assert int(element_text(page, f"count-{kind}")) == stats["kinds"][kind]["count"] >= 1
    listed = json.loads(manage(local_site.env, "cfkv", "ls", "--json", "--prefix", "session:"))
    names = [item["key"] for item in listed["keys"]]
    on_page = browser.get(local_site.url("/namespace/?prefix=session:"), timeout=10).text
    on_page = on_page.replace("<wbr>", "")  # where long keys may wrap
    assert names and all(name in on_page for name in names)
