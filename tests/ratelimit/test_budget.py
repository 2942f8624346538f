"""The limiter's API calls do not grow with the number of clients, which an attacker chooses.

Counted on the KV emulator over HTTP, through RateLimitMiddleware: IPv6 /64s,
``get:``, ``post:`` and ``header:`` values are free to an attacker, and each new one
used to cost a list call (while the request waited) and a billed KV write.
"""

import math
import time

from django.test import Client, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.testing import KVCalls

RULES = [
    {"path": r"^/login/$", "rate": "5/h", "key": "ip", "group": "by-ip"},
    {"path": r"^/api/items/$", "rate": "5/h", "key": "get:email", "group": "by-email"},
    {"path": r"^/open/$", "rate": "5/h", "key": "header:X-Api-Key", "group": "by-key"},
]
IDENTITIES = 300


def send(client, n, kind):
    if kind == 0:
        return Client(REMOTE_ADDR=f"2001:db8:{n:x}::1").post("/login/").status_code
    if kind == 1:
        return client.get("/api/items/", {"email": f"user{n}@example.com"}).status_code
    return client.get("/open/", HTTP_X_API_KEY=f"key-{n}").status_code


def test_new_identities_cost_at_most_the_list_budget_and_no_writes(cfkv_emulator):
    alias = cfkv_emulator.alias_settings()
    with override_settings(CFKV={"default": alias}, ROOT_URLCONF="tests.ratelimit.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV_RATELIMIT={"RULES": RULES, "LIST_BUDGET": 2}):
        client = Client()
        calls = KVCalls()
        start = time.monotonic()
        codes = [send(client, n, n % 3) for n in range(IDENTITIES)]
        elapsed = time.monotonic() - start
        rl.reset_limiter()  # writes whatever is pending
        calls.stop()
    assert codes == [200] * IDENTITIES
    # 2 lists at once, then 2 per second, instead of one per identity; clients seen once are never written.
    assert calls["list"] <= 2 + math.ceil(2 * elapsed), (calls, elapsed)
    assert calls.counts.keys() <= {"list"}, calls


def test_repeat_identities_cost_one_bulk_write_per_second(cfkv_emulator):
    alias = cfkv_emulator.alias_settings()
    with override_settings(CFKV={"default": alias}, ROOT_URLCONF="tests.ratelimit.urls",
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV_RATELIMIT={"RULES": RULES}):
        client = Client()
        calls = KVCalls()
        start = time.monotonic()
        for n in range(60):
            assert [send(client, n, n % 3) for _ in range(2)] == [200, 200]
        elapsed = time.monotonic() - start
        rl.reset_limiter()
        calls.stop()
    assert calls["list"] <= 1 + math.ceil(elapsed), (calls, elapsed)  # the default budget: 1 per second
    assert 1 <= calls["bulk_put"] <= 2 + math.ceil(elapsed), (calls, elapsed)
    shards = list(cfkv_emulator.client(alias["NAMESPACE_ID"]).iter_keys(prefix="rl:"))
    assert len(shards) == 60 and {info.metadata["count"] for info in shards} == {2}
