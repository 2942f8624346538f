"""The @ratelimit decorator (django_cfkv.ratelimit.decorator), alone and behind RateLimitMiddleware, on sync and
async views."""

import pytest
from asgiref.sync import async_to_sync
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

from django_cfkv import ratelimit as rl
from django_cfkv.exceptions import Ratelimited

pytestmark = pytest.mark.usefixtures("site")


def statuses(client, n, path, method="get"):
    return [getattr(client, method)(path).status_code for _ in range(n)]


def test_decorator_without_middleware_is_a_403():
    with override_settings(MIDDLEWARE=[]):
        assert statuses(Client(), 3, "/decorated/") == [200, 200, 403]


def test_decorator_with_middleware_is_a_429_with_headers():
    client = Client()
    ok = client.get("/decorated/")
    assert ok["RateLimit-Policy"] == '"tests.ratelimit.urls.decorated";q=2;w=3600'
    client.get("/decorated/")
    response = client.get("/decorated/")
    assert response.status_code == 429 and response["Retry-After"] and ";r=0;" in response["RateLimit"]


def test_decorator_method_filter_and_block_false():
    client = Client()
    assert statuses(client, 3, "/decorated-post/") == [200] * 3
    assert statuses(client, 3, "/decorated-post/", method="post") == [200, 200, 429]
    assert [client.get("/soft/").content for _ in range(2)] == [b"fine", b"limited"]


def test_decorator_method_constants_are_attributes_of_the_decorator():
    assert rl.ratelimit.ALL is None and set(rl.ratelimit.UNSAFE) == {"DELETE", "PATCH", "POST", "PUT"}
    view = rl.ratelimit("1/h", method=rl.ratelimit.UNSAFE, group="unsafe-only")(lambda request: HttpResponse())
    factory = RequestFactory()
    assert [view(factory.get("/")).status_code for _ in range(2)] == [200, 200]
    view(factory.post("/"))
    with pytest.raises(Ratelimited):
        view(factory.delete("/"))


def test_decorator_on_an_async_view():
    async def run():
        client = AsyncClient()
        return [await client.get("/decorated-async/") for _ in range(3)]

    responses = async_to_sync(run)()
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0]["RateLimit-Policy"] == '"tests.ratelimit.urls.decorated_async";q=2;w=3600'


def test_a_view_under_two_limits_is_limited_once_either_is_over():
    client = Client()
    assert [client.get("/stacked/").content for _ in range(2)] == [b"fine", b"limited"]


def test_a_disabled_limiter_never_limits_a_decorated_view():
    with override_settings(CFKV_RATELIMIT={"ENABLED": False}):
        assert statuses(Client(), 3, "/decorated/") == [200] * 3
        assert "RateLimit" not in Client().get("/decorated/")


def test_decorator_arguments_are_checked_at_import():
    with pytest.raises(rl.ConfigProblem, match="Invalid rate"):
        rl.ratelimit("5 per minute")(lambda request: None)
    with pytest.raises(rl.ConfigProblem, match="key"):
        rl.ratelimit("5/m", key="cookie")(lambda request: None)
