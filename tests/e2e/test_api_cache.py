"""The deliberately slow page of the running example site, cached in the KV cache."""

import pytest
import requests

from .sites import csrf_token, element_text

pytestmark = pytest.mark.slow


def test_slow_page_miss_then_hit_then_invalidated(emulator_site):
    session = requests.Session()
    first = session.get(emulator_site.url("/slow/"), timeout=30)
    assert first.headers["X-Cache"] == "miss"
    assert element_text(first.text, "cache-status") == "miss"

    # The result is in KV, under the metadata convention.
    keys = [info for info in emulator_site.kv.iter_keys(prefix="cache:") if "slow_report" in info.name]
    assert len(keys) == 1 and keys[0].metadata["kind"] == "cache"

    second = session.get(emulator_site.url("/slow/"), timeout=30)
    assert second.headers["X-Cache"] == "hit"
    assert element_text(second.text, "cache-status") == "hit"
    assert element_text(second.text, "saved").endswith(" ms")

    forget = session.post(emulator_site.url("/slow/"), data={"csrfmiddlewaretoken": csrf_token(second.text)},
                          timeout=30)
    assert forget.status_code == 200  # after the redirect, computed afresh
    assert forget.headers["X-Cache"] == "miss"
    assert session.get(emulator_site.url("/slow/"), timeout=30).headers["X-Cache"] == "hit"
