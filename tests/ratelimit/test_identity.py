"""Client identity (django_cfkv.ratelimit.identity): who a request counts as. Addresses and trusted proxies,
IPv6 networks, the keyed hash in KV keys, and the identity of each kind of key, alone and through requests."""

import hashlib

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.middleware import identify

from .helpers import limits, statuses

# Addresses and proxies


CF_PEER = "173.245.48.10"  # inside Cloudflare's 173.245.48.0/20
TRUSTED = rl.parse_networks(["cloudflare", "10.0.0.0/8"])


def test_remote_addr_by_default_and_headers_ignored_without_trust():
    assert rl.client_ip("203.0.113.7") == "203.0.113.7"
    assert rl.client_ip("203.0.113.7", "198.51.100.1") == "203.0.113.7"


def test_spoofed_header_from_untrusted_peer_never_changes_the_client():
    assert rl.client_ip("203.0.113.7", "198.51.100.1", trusted=TRUSTED) == "203.0.113.7"
    assert rl.client_ip("203.0.113.7", "1.1.1.1, 10.0.0.2", trusted=TRUSTED) == "203.0.113.7"


def test_cf_connecting_ip_from_cloudflare_is_the_client():
    assert rl.client_ip(CF_PEER, "198.51.100.1", trusted=TRUSTED) == "198.51.100.1"
    assert rl.client_ip("2606:4700::1", "2001:db8::5", trusted=TRUSTED) == "2001:db8::5"


def test_x_forwarded_for_takes_the_rightmost_untrusted_address():
    # The client may prepend anything; only what trusted proxies appended counts.
    chain = "6.6.6.6, 198.51.100.1, 10.1.2.3"
    assert rl.client_ip("10.0.0.1", chain, trusted=TRUSTED) == "198.51.100.1"
    assert rl.client_ip("10.0.0.1", "10.9.9.9, 10.1.2.3", trusted=TRUSTED) == "10.9.9.9"


def test_hop_count():
    assert rl.client_ip("10.0.0.1", "6.6.6.6, 198.51.100.1", hops=1) == "198.51.100.1"
    assert rl.client_ip("10.0.0.1", "6.6.6.6, 198.51.100.1, 10.0.0.9", hops=2) == "198.51.100.1"
    # A chain shorter than the configured hops did not come through the proxies.
    assert rl.client_ip("10.0.0.1", "198.51.100.1", hops=2) == "10.0.0.1"


def test_junk_left_of_the_proxies_entries_never_moves_the_count_to_the_edge():
    # Behind Cloudflare the peer is one of many edge addresses: counting junk headers under the
    # peer would spread one client over many counts. The walk from the right stops at the junk.
    edge = "162.158.1.1"
    assert rl.client_ip(edge, "x, 198.51.100.7", trusted=TRUSTED) == "198.51.100.7"
    assert rl.client_ip("162.158.9.9", "junk, 6.6.6.6, 198.51.100.7", trusted=TRUSTED) == "198.51.100.7"
    # Only trusted hops left of the junk: the last address the walk passed.
    assert rl.client_ip("10.0.0.1", "x, 10.9.9.9, 10.1.2.3", trusted=TRUSTED) == "10.9.9.9"
    assert rl.client_ip("10.0.0.1", "x, 198.51.100.7", hops=1) == "198.51.100.7"
    assert rl.client_ip("10.0.0.1", "x, 198.51.100.7, 10.0.0.9", hops=2) == "198.51.100.7"
    assert rl.client_ip("10.0.0.1", "198.51.100.7, x", hops=2) == rl.UNPARSABLE


@pytest.mark.parametrize("header", ["not-an-ip", "1.2.3.4, garbage", " , "])
def test_trusted_header_without_an_address_is_one_client_not_the_peer(header):
    assert rl.client_ip(CF_PEER, header, trusted=TRUSTED) == rl.UNPARSABLE
    assert rl.client_ip("162.158.1.1", header, trusted=TRUSTED) == rl.UNPARSABLE
    assert rl.client_ip("10.0.0.1", header, hops=1) == rl.UNPARSABLE


@pytest.mark.parametrize("header", [None, "", "  "])
def test_no_header_is_the_peer(header):
    assert rl.client_ip(CF_PEER, header, trusted=TRUSTED) == CF_PEER
    assert rl.client_ip("10.0.0.1", header, hops=1) == "10.0.0.1"


def test_unparsable_remote_addr_is_kept_as_text():
    assert rl.client_ip(None) == "unknown"
    assert rl.client_ip("unix-socket") == "unix-socket"


def test_cloudflare_ranges_are_valid_and_complete():
    networks = rl.parse_networks(["cloudflare"])
    assert len(networks) == len(rl.CLOUDFLARE_IPV4) + len(rl.CLOUDFLARE_IPV6) == 22
    assert {n.version for n in networks} == {4, 6}


@pytest.mark.parametrize("bad", ["10.0.0.0/8", ["10.0.0.0/33"], ["nope"], [None]])
def test_bad_trusted_proxies(bad):
    with pytest.raises(rl.ConfigProblem) as info:
        rl.parse_networks(bad)
    assert info.value.id == "django_cfkv.E108"


def test_ipv6_grouped_by_64_and_configurable():
    assert rl.group_ip("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert rl.group_ip("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert rl.group_ip("2001:db8:1:3::1") != rl.group_ip("2001:db8:1:2::1")
    assert rl.group_ip("2001:db8:1:2:aaaa::1", ipv6_prefix=48) == "2001:db8:1::/48"
    assert rl.group_ip("2001:db8::1", ipv6_prefix=128) == "2001:db8::1"
    assert rl.group_ip("203.0.113.7") == "203.0.113.7"
    assert rl.group_ip("203.0.113.7", ipv4_prefix=24) == "203.0.113.0/24"
    # An IPv4-mapped IPv6 address is the IPv4 client.
    assert rl.group_ip("::ffff:203.0.113.7") == "203.0.113.7"


def test_proxy_header_names():
    assert rl.meta_name("CF-Connecting-IP") == rl.meta_name("HTTP_CF_CONNECTING_IP") == "HTTP_CF_CONNECTING_IP"
    limiter = rl.Limiter({"TRUSTED_PROXIES": ["cloudflare"], "PROXY_HEADER": "x-forwarded-for"})
    meta = {"REMOTE_ADDR": CF_PEER, "HTTP_X_FORWARDED_FOR": "6.6.6.6, 2001:db8:0:7::1"}
    assert limiter.client_address(meta) == "2001:db8:0:7::/64"


@pytest.mark.parametrize("options, meta, expected", [
    ({"PROXY_COUNT": 1, "PROXY_HEADER": "X-Forwarded-For"},
     {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),
    ({"PROXY_COUNT": 2, "PROXY_HEADER": "X-Forwarded-For"},
     {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.7, 10.0.0.9"}, "198.51.100.7"),
    ({"IPV4_PREFIX": 24}, {"REMOTE_ADDR": "198.51.100.7"}, "198.51.100.0/24"),
    ({"IPV6_PREFIX": 48}, {"REMOTE_ADDR": "2001:db8:1:2::7"}, "2001:db8:1::/48"),
])
def test_client_address_follows_the_proxy_and_prefix_options(options, meta, expected):
    assert rl.Limiter(options).client_address(meta) == expected


def test_client_hash_is_stable_short_and_hides_the_identity():
    h = rl.client_hash("ip:203.0.113.7")
    assert h == rl.client_hash("ip:203.0.113.7") and len(h) == 16
    assert set(h) <= set("0123456789abcdef") and h != rl.client_hash("ip:203.0.113.8")


def test_client_hash_is_keyed_with_the_secret_key(settings):
    identity = "user:7"  # small ids and IPv4 addresses are few enough to try them all
    unkeyed = hashlib.sha256(identity.encode()).hexdigest()[:16]
    settings.SECRET_KEY = "one-secret"
    first = rl.client_hash(identity)
    assert first != unkeyed and first == rl.client_hash(identity)
    settings.SECRET_KEY = "another-secret"
    assert rl.client_hash(identity) not in (first, unkeyed)  # a new SECRET_KEY starts fresh counts


# Through requests


@pytest.mark.usefixtures("site")
def test_cf_connecting_ip_from_cloudflare_separates_clients():
    client = Client(REMOTE_ADDR=CF_PEER)
    with limits(TRUSTED_PROXIES=["cloudflare"], PROXY_HEADER="CF-Connecting-IP"):
        codes = [client.post("/login/", HTTP_CF_CONNECTING_IP=f"198.51.100.{i}").status_code for i in range(5)]
        assert codes == [200] * 5
        assert statuses(client, 4, HTTP_CF_CONNECTING_IP="198.51.100.1") == [200, 200, 429, 429]


@pytest.mark.usefixtures("site")
def test_junk_in_x_forwarded_for_does_not_spread_a_client_over_edge_addresses():
    with limits(TRUSTED_PROXIES=["cloudflare"], PROXY_HEADER="X-Forwarded-For"):
        codes = [Client(REMOTE_ADDR=f"162.158.{i}.1").post("/login/", HTTP_X_FORWARDED_FOR=f"x{i}, 198.51.100.7")
                 .status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.usefixtures("site")
def test_ipv6_clients_in_one_64_share_a_count():
    with limits():
        codes = [Client(REMOTE_ADDR=f"2001:db8:0:1::{i}").post("/login/").status_code for i in range(1, 5)]
        other = Client(REMOTE_ADDR="2001:db8:0:2::1").post("/login/").status_code
    assert codes == [200, 200, 200, 429] and other == 200


class FakeUser:
    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


@pytest.mark.parametrize("key, setup, expected", [
    ("ip", {}, "ip:127.0.0.1"),
    ("user", {"user": FakeUser(7)}, "user:7"),
    ("user", {}, None),
    ("user", {"user": AnonymousUser()}, None),  # the rule does not apply: not one shared "anonymous" count
    ("user_or_ip", {"user": AnonymousUser()}, "ip:127.0.0.1"),
    ("user_or_ip", {}, "ip:127.0.0.1"),
    ("user_or_ip", {"user": FakeUser(7)}, "user:7"),
    ("header:X-Api-Key", {"HTTP_X_API_KEY": "k1"}, "header:x-api-key:k1"),
    ("header:X-Api-Key", {}, "header:x-api-key:"),
    ("header:X-Api-Key", {"HTTP_X_API_KEY": " K1 "}, "header:x-api-key:k1"),
    ("post:email", {"data": {"email": "a@example.com"}}, "post:email:a@example.com"),
    ("post:email", {"data": {"email": "A@Example.com "}}, "post:email:a@example.com"),
    ("post:email", {"data": {"email": ["first@example.com", "last@example.com"]}}, "post:email:last@example.com"),
    ("post:email", {"query": "email=b@example.com", "data": {"email": "a@example.com"}}, "post:email:a@example.com"),
    ("post:email", {"query": "email=b@example.com"}, "post:email:"),
    ("get:email", {"query": "email=b@example.com", "data": {"email": "a@example.com"}}, "get:email:b@example.com"),
    ("get:email", {"data": {"email": "a@example.com"}}, "get:email:"),
    ("tests.ratelimit.urls.api_key", {"HTTP_X_TEAM": "blue"}, "callable:blue"),
    ("tests.ratelimit.urls.api_key", {}, None),
])
def test_identify(key, setup, expected):
    setup = dict(setup)
    user = setup.pop("user", None)
    data = setup.pop("data", None)
    query = setup.pop("query", None)
    request = RequestFactory().post(f"/x/?{query}" if query else "/x/", data or {}, **setup)
    if user is not None:
        request.user = user
    rule = rl.compile_rule({"rate": "1/m", "key": key})
    assert identify(request, rule, rl.Limiter({})) == expected


# No address to count by, and django-ratelimit's RATELIMIT_IP_META_KEY


@pytest.mark.parametrize("meta", [{"REMOTE_ADDR": ""}, {}], ids=["empty", "missing"])
def test_no_client_address_is_a_configuration_error_with_the_proxy_hint(meta):
    request = RequestFactory().get("/")
    request.META.pop("REMOTE_ADDR")
    request.META.update(meta)
    limiter = rl.Limiter({})
    with pytest.raises(ImproperlyConfigured) as info:
        rl.request_address(request, limiter)
    assert info.value.id == "django_cfkv.E118" and "PROXY_COUNT" in info.value.hint


def test_behind_a_unix_socket_proxy_the_proxy_count_finds_the_client():
    request = RequestFactory().get("/", REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="198.51.100.7")
    limiter = rl.Limiter({"PROXY_COUNT": 1, "PROXY_HEADER": "X-Forwarded-For"})
    assert rl.request_address(request, limiter) == "198.51.100.7"


def test_the_middleware_and_the_decorator_raise_rather_than_count_everyone_as_one(tmp_path):
    rules = {"RULES": [{"path": r"^/login/$", "rate": "3/m", "key": "ip"}]}
    with override_settings(ROOT_URLCONF="tests.ratelimit.urls", CFKV_RATELIMIT=rules,
                           MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"],
                           CFKV={"default": {"BACKEND": "local", "PATH": str(tmp_path / "kv.sqlite3")}}):
        try:
            for path in ("/login/", "/decorated/"):
                with pytest.raises(ImproperlyConfigured, match="REMOTE_ADDR"):
                    Client().get(path, REMOTE_ADDR="")
        finally:
            rl.reset_limiter()


def test_ip_meta_key_is_read_unless_a_cfkv_proxy_option_is_set():
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="203.0.113.5")
    with override_settings(RATELIMIT_IP_META_KEY="HTTP_X_REAL_IP"):
        assert rl.request_address(request, rl.Limiter({})) == "203.0.113.5"
        assert rl.request_address(request, rl.Limiter({"TRUSTED_PROXIES": ["192.0.2.0/24"]})) == "10.0.0.1"
    with override_settings(RATELIMIT_IP_META_KEY="HTTP_X_MISSING"):
        with pytest.raises(ImproperlyConfigured, match="HTTP_X_MISSING"):
            rl.request_address(request, rl.Limiter({}))
