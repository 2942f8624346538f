"""What a session records of the client it was signed in from: a short device name and a coarse location."""

import logging

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory

from django_cfkv.sessions import aissue_token, issue_token, user_sessions
from django_cfkv.sessions.clients import client_of, describe_device, location

CHROME_ON_ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/126.0.0.0 Mobile Safari/537.36")
EDGE_ON_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0")
SAFARI_ON_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "Version/17.5 Safari/605.1.15")
CHROME_ON_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                    "CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1")
CLOUDFLARE_EDGE, WORKER_OF_ANOTHER_ZONE = "172.70.1.2", "2a06:98c0:3600::103"


@pytest.mark.parametrize("agent, device", [
    (CHROME_ON_ANDROID, "Chrome on Android"),
    (EDGE_ON_WINDOWS, "Edge on Windows"),
    (SAFARI_ON_MAC, "Safari on macOS"),
    (CHROME_ON_IPHONE, "Chrome on iPhone"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 "
     "Safari/537.36", "Headless Chrome on Linux"),
    ("curl/8.5.0", "curl"),
    ("python-requests/2.32.3", "Python requests"),
    ("MyApp/3.1 (build 77)", "MyApp/3.1 (build 77)"),
    ("", ""),
    ("x" * 200, "x" * 63 + "…"),
])
def test_the_device_is_named_from_the_user_agent(agent, device):
    assert describe_device(agent) == device


def request(address, **headers):
    return RequestFactory().get("/", REMOTE_ADDR=address, **headers)


def test_cf_ipcountry_is_believed_only_from_cloudflares_addresses(settings):
    assert location(request(CLOUDFLARE_EDGE, HTTP_CF_IPCOUNTRY="de")) == "DE"
    assert location(request("::ffff:" + CLOUDFLARE_EDGE, HTTP_CF_IPCOUNTRY="T1")) == "T1"
    assert location(request("198.51.100.7", HTTP_CF_IPCOUNTRY="DE")) == "198.51.100.7"  # sent by the client
    assert location(request(WORKER_OF_ANOTHER_ZONE, HTTP_CF_IPCOUNTRY="DE")) == "2a06:98c0:3600::/64"
    assert location(request(CLOUDFLARE_EDGE, HTTP_CF_IPCOUNTRY="<script>")) == CLOUDFLARE_EDGE
    # A Worker of another zone calls through an edge address; Cloudflare names it in CF-Connecting-IP.
    assert location(request(CLOUDFLARE_EDGE, HTTP_CF_CONNECTING_IP=WORKER_OF_ANOTHER_ZONE,
                            HTTP_CF_IPCOUNTRY="DE")) != "DE"


def test_the_network_is_the_client_as_the_rate_limiter_groups_it(settings):
    settings.CFKV_RATELIMIT = {"TRUSTED_PROXIES": ["10.0.0.0/8"], "PROXY_HEADER": "X-Forwarded-For",
                               "IPV4_PREFIX": 24}
    assert location(request("10.1.2.3", HTTP_X_FORWARDED_FOR="203.0.113.77")) == "203.0.113.0/24"
    assert location(request("198.51.100.9", HTTP_X_FORWARDED_FOR="203.0.113.77")) == "198.51.100.0/24"  # untrusted
    assert location(request("2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"


def real_ip(request):
    """A RATELIMIT_IP_META_KEY callable, as django-ratelimit's documentation writes one."""
    return request.META["HTTP_X_REAL_IP"]


@pytest.mark.parametrize("meta_key", [real_ip, f"{__name__}.real_ip", "HTTP_X_REAL_IP"],
                         ids=["callable", "dotted-path", "meta-key"])
def test_the_network_follows_ratelimits_ip_meta_key(settings, meta_key):
    """A site moved from django-ratelimit names its client with RATELIMIT_IP_META_KEY: a session's location is
    that client, as the rate limiter counts it, never the proxy in front."""
    settings.RATELIMIT_IP_META_KEY = meta_key
    assert location(request("127.0.0.1", HTTP_X_REAL_IP="203.0.113.5")) == "203.0.113.5"


def ip_from_the_database(request):
    """A RATELIMIT_IP_META_KEY callable that queries the database (as one reading a table of proxies would)."""
    get_user_model().objects.exists()
    return request.META["HTTP_X_REAL_IP"]


@pytest.mark.django_db
def test_a_sign_in_goes_on_when_the_projects_ip_meta_key_fails(site, user, caplog):
    """The project's RATELIMIT_IP_META_KEY raising (here a KeyError: a request with no X-Real-IP, such as one
    that reached the app past its proxy) leaves the sign-in's location unknown: a cookie sign-in, a token
    issued and a token issued awaiting KV all go on, and the log names the error's kind only."""
    site.RATELIMIT_IP_META_KEY = real_ip
    caplog.set_level(logging.DEBUG, logger="django_cfkv")
    Client(raise_request_exception=True).force_login(user)
    token = issue_token(RequestFactory().get("/", REMOTE_ADDR="10.0.0.1"), user)
    async_token = async_to_sync(aissue_token)(RequestFactory().get("/", REMOTE_ADDR="10.0.0.2"), user)
    assert sorted(s.kind for s in user_sessions(user)) == ["bearer", "bearer", "cookie"]
    assert {s.location for s in user_sessions(user)} == {""}
    assert "KeyError" in caplog.text and token not in caplog.text and async_token not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_database_reading_ip_meta_key_runs_in_a_thread_for_an_awaited_token(site, user):
    """aissue_token() runs a RATELIMIT_IP_META_KEY callable in a thread, as the rate limiter does, so one that
    queries the database names the client (on the event loop Django would refuse the query)."""
    site.RATELIMIT_IP_META_KEY = ip_from_the_database
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="203.0.113.5")
    async_to_sync(aissue_token)(request, user)
    assert [s.location for s in user_sessions(user)] == ["203.0.113.5"]


def test_without_the_index_a_sign_in_reads_no_address(settings):
    """Sessions not indexed (SESSION_CFKV_USER_INDEX off): nothing shows a location, so the project's
    RATELIMIT_IP_META_KEY is not run for one."""
    called = []
    settings.RATELIMIT_IP_META_KEY = lambda request: called.append(request) or "203.0.113.5"
    settings.SESSION_CFKV_USER_INDEX = False
    assert client_of(request("10.0.0.1"), "cookie") == {"via": "cookie"} and called == []
    settings.SESSION_CFKV_USER_INDEX = True
    assert client_of(request("10.0.0.1"), "cookie")["where"] == "203.0.113.5" and len(called) == 1


def test_the_client_record(settings):
    record = client_of(request("203.0.113.9", HTTP_USER_AGENT="curl/8.5.0"), "bearer")
    assert record == {"via": "bearer", "device": "curl", "where": "203.0.113.9"}
    assert client_of(None, "bearer") == {"via": "bearer"}
