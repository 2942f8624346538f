"""Client identity at its edges (django_cfkv.ratelimit.identity), from what mutation testing found no test of
its own pinned: settings read at run time (from the environment, from JSON), TRUSTED_PROXIES written loosely,
and django-ratelimit's RATELIMIT_IP_META_KEY as a callable or without a request."""

import json

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.middleware import identify

CF_PEER = "173.245.48.10"  # inside Cloudflare's 173.245.48.0/20
ENVIRONMENT = {"TRUSTED_PROXIES": "cloudflare,10.0.0.0/8"}  # as a settings file reads os.environ


def real_ip(request):
    """A RATELIMIT_IP_META_KEY callable, as django-ratelimit's documentation writes one."""
    return request.META["HTTP_X_REAL_IP"]


def test_cloudflare_named_in_a_setting_built_at_run_time_is_cloudflares_ranges():
    """The name "cloudflare" split out of an environment variable is Cloudflare's ranges, as the literal is: a client
    behind Cloudflare counts by CF-Connecting-IP, not as the edge address it came through."""
    trusted = ENVIRONMENT["TRUSTED_PROXIES"].split(",")
    assert len(rl.parse_networks(trusted)) == len(rl.CLOUDFLARE_IPV4) + len(rl.CLOUDFLARE_IPV6) + 1
    limiter = rl.Limiter({"TRUSTED_PROXIES": trusted, "PROXY_HEADER": "CF-Connecting-IP"})
    assert limiter.client_address({"REMOTE_ADDR": CF_PEER, "HTTP_CF_CONNECTING_IP": "198.51.100.1"}) == "198.51.100.1"


def test_a_user_key_read_from_json_settings_does_not_apply_to_anonymous_requests():
    """key "user" from settings loaded as JSON behaves as the literal: an anonymous request is not counted
    (no shared "anonymous" count, and never a TypeError from calling a key that is no callable)."""
    spec = json.loads('{"rate": "1/m", "key": "user"}')
    rule = rl.compile_rule(spec)
    request = RequestFactory().post("/x/")
    request.user = AnonymousUser()
    assert identify(request, rule, rl.Limiter({})) is None


@pytest.mark.parametrize("meta_key", [real_ip, f"{__name__}.real_ip"], ids=["callable", "dotted-path"])
def test_a_callable_ip_meta_key_names_the_client(meta_key):
    """RATELIMIT_IP_META_KEY as a callable or its dotted path, given the request: its answer is the address
    the client counts by, not the proxy in front (REMOTE_ADDR)."""
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="203.0.113.5")
    with override_settings(RATELIMIT_IP_META_KEY=meta_key):
        assert rl.request_address(request, rl.Limiter({})) == "203.0.113.5"


def test_ip_meta_key_without_a_request_reads_meta_and_never_calls_a_function_with_none():
    """Without a request (a caller with request.META alone, as the limiter's client_address() allows), a META key
    is still read, and a callable is not called with None: the peer's address is the answer."""
    meta = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_REAL_IP": "203.0.113.5"}
    with override_settings(RATELIMIT_IP_META_KEY="HTTP_X_REAL_IP"):
        assert rl.Limiter({}).client_address(meta) == "203.0.113.5"
    with override_settings(RATELIMIT_IP_META_KEY=real_ip):
        assert rl.Limiter({}).client_address(meta) == "10.0.0.1"


def test_a_trusted_network_written_with_host_bits_is_its_network():
    """TRUSTED_PROXIES = ["10.1.2.3/8"] trusts 10.0.0.0/8, as ip_network(strict=False) reads it: not a
    configuration error that leaves the proxies untrusted and every client counted as the proxy."""
    assert [str(net) for net in rl.parse_networks(["10.1.2.3/8", "2001:db8::1/32"])] == ["10.0.0.0/8", "2001:db8::/32"]
    limiter = rl.Limiter({"TRUSTED_PROXIES": ["10.1.2.3/8"], "PROXY_HEADER": "X-Forwarded-For"})
    assert limiter.client_address({"REMOTE_ADDR": "10.9.9.9", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}) == "198.51.100.7"


@pytest.mark.parametrize("bad", [None, 10, {"10.0.0.0/8"}], ids=repr)
def test_trusted_proxies_that_are_not_a_list_are_a_configuration_problem(bad):
    """TRUSTED_PROXIES must be a list or tuple: None or a number is E108, logged and ignored (nothing is
    trusted), never a TypeError that stops the limiter being built and so every request it limits."""
    with pytest.raises(rl.ConfigProblem, match="must be a list") as info:
        rl.parse_networks(bad)
    assert info.value.id == "django_cfkv.E108"
    limiter = rl.Limiter({"TRUSTED_PROXIES": bad})
    assert limiter.options["TRUSTED_PROXIES"] == ()
    assert limiter.client_address({"REMOTE_ADDR": "203.0.113.7"}) == "203.0.113.7"
