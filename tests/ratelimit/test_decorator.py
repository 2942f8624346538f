"""The @ratelimit decorator (django_cfkv.ratelimit.decorator), alone and behind RateLimitMiddleware, on sync and
async views."""

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import SuspiciousOperation
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings

from django_cfkv import clock
from django_cfkv import ratelimit as rl
from django_cfkv.client import KVClient
from django_cfkv.exceptions import Ratelimited

pytestmark = pytest.mark.usefixtures("site")
MID_MINUTE = 1_700_000_010.0  # 30 s into a minute


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
    view = rl.ratelimit(rate="1/h", key="ip", method=rl.ratelimit.UNSAFE, group="unsafe-only")(
        lambda request: HttpResponse())
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


def test_an_async_view_with_no_rate_asks_no_thread(monkeypatch):
    """rate=None never limits: nothing of the project's runs, so nothing is sent to a thread."""
    def no_thread(function):
        raise AssertionError(f"sync_to_async({function!r}) for a view with rate=None")

    monkeypatch.setattr("django_cfkv.ratelimit.usage.sync_to_async", no_thread)

    @rl.ratelimit(key="ip", rate=None, group="never")
    async def view(request):
        return HttpResponse()

    request = RequestFactory().get("/")
    assert async_to_sync(view)(request).status_code == 200 and request.limited is False


def test_a_view_under_two_limits_is_limited_once_either_is_over():
    client = Client()
    assert [client.get("/stacked/").content for _ in range(2)] == [b"fine", b"limited"]


def test_a_disabled_limiter_never_limits_a_decorated_view():
    with override_settings(CFKV_RATELIMIT={"ENABLED": False}):
        assert statuses(Client(), 3, "/decorated/") == [200] * 3
        assert "RateLimit" not in Client().get("/decorated/")


def test_decorator_arguments_are_checked_at_import():
    with pytest.raises(rl.ConfigProblem, match="Invalid rate"):
        rl.ratelimit(rate="5 per minute", key="ip")(lambda request: None)
    with pytest.raises(rl.ConfigProblem, match="key"):
        rl.ratelimit(rate="5/m", key="cookie")(lambda request: None)


# django-ratelimit's signature and behaviour (its own suite: tests/ratelimit/django_ratelimit/)


def check_error(rate):
    """Return the (message, hint) manage.py check reports for a rule with this rate."""
    problem = rl.compile_settings({"RULES": [{"rate": rate}]})[2][0]
    return problem.id, problem.message, problem.hint


@pytest.mark.parametrize("arguments", [("5/minute",), ("g", "5/minute"), ("g", "ip", "5/minute")],
                         ids=["as-group", "as-key", "as-rate"])
def test_a_bad_rate_in_any_position_fails_as_the_check_reports_it(arguments):
    with pytest.raises(rl.ConfigProblem) as info:
        rl.ratelimit(*arguments)
    assert (info.value.id, info.value.message, info.value.hint) == check_error("5/minute")


@pytest.mark.parametrize("arguments", [("5/m",), ("5/m", "ip")], ids=["alone", "with-key"])
def test_a_good_rate_where_the_group_goes_is_refused_not_taken_for_a_group(arguments):
    # The rate-first order of earlier releases would otherwise name a group and limit nothing.
    with pytest.raises(rl.ConfigProblem, match="is a rate") as info:
        rl.ratelimit(*arguments)
    assert info.value.id == "django_cfkv.E104" and "rate='5/m'" in info.value.hint


def test_the_arguments_are_django_ratelimits_in_its_order():
    view = rl.ratelimit("positional-group", "ip", "1/h", "POST", False)(lambda request: request.limited)
    factory = RequestFactory()
    assert [view(factory.post("/")) for _ in range(2)] == [False, True]
    assert view(factory.get("/")) is False  # another method: not counted, request.limited still set


def test_a_value_that_is_not_a_response_is_returned_untouched_and_a_response_gets_headers():
    context = {"page": 1}
    as_is = rl.ratelimit(key="ip", rate="5/h", group="not-a-response")(lambda request: context)
    assert as_is(RequestFactory().get("/")) is context
    response = rl.ratelimit(key="ip", rate="5/h", group="a-response")(lambda request: HttpResponse())(
        RequestFactory().get("/"))
    assert response["RateLimit"] == '"a-response";r=4;t=' + response["RateLimit"].rsplit("=", 1)[1]


def test_request_limited_is_set_when_the_limit_does_not_apply():
    view = rl.ratelimit(key="ip", rate="0/m", method="POST", group="zero")(lambda request: request.limited)
    assert view(RequestFactory().get("/")) is False
    with override_settings(CFKV_RATELIMIT={"ENABLED": False}):
        assert view(RequestFactory().post("/")) is False
    with pytest.raises(Ratelimited):
        view(RequestFactory().post("/"))  # "0/m": every request is over


def test_rates_per_request_none_tuple_callable_and_dotted_path(monkeypatch):
    # The package's clock stands still mid-minute: on the real one two requests could straddle the end of a
    # one-minute window, and the count would start afresh for a reason that is not the rate.
    monkeypatch.setattr(clock, "now", lambda: MID_MINUTE)
    factory = RequestFactory()
    never = rl.ratelimit(key="ip", rate=None, group="never", block=False)(lambda request: request.limited)
    assert [never(factory.get("/")) for _ in range(3)] == [False] * 3
    pair = rl.ratelimit(key="ip", rate=(1, 60), group="pair", block=False)(lambda request: request.limited)
    assert [pair(factory.get("/")) for _ in range(2)] == [False, True]
    chosen = rl.ratelimit(key="ip", rate=lambda group, request: (2, 60) if group == "chosen" else None,
                          group="chosen", block=False)(lambda request: request.limited)
    assert [chosen(factory.get("/")) for _ in range(3)] == [False, False, True]
    dotted = rl.ratelimit(key="ip", rate="tests.ratelimit.urls.two_per_hour", group="dotted", block=False)(
        lambda request: request.limited)
    assert [dotted(factory.get("/")) for _ in range(3)] == [False, False, True]


async def async_rate(group, request):
    return "5/m"


def test_an_async_rate_is_refused_with_the_check_id_and_a_hint():
    """Rates per request are plain calls: an async one would be a coroutine where a rate goes, on every request."""
    with pytest.raises(rl.ConfigProblem, match="async function") as info:
        rl.ratelimit(key="ip", rate=async_rate, group="async-rate")(lambda request: request.limited)
    assert info.value.id == "django_cfkv.E104" and "plain def" in info.value.hint
    dotted = rl.ratelimit(key="ip", rate="tests.ratelimit.test_decorator.async_rate", group="async-dotted")(
        lambda request: request.limited)
    with pytest.raises(rl.ConfigProblem, match="async function"):
        dotted(RequestFactory().get("/"))


def test_counts_are_partitioned_by_rate_and_method_as_django_ratelimit_partitions_them():
    factory = RequestFactory()
    # Stacked rules on one view share its group: GET and POST, and two rates, still count apart.
    view = rl.ratelimit(key="ip", rate="1/h", method="GET", block=False)(
        rl.ratelimit(key="ip", rate="1/h", method="POST", block=False)(lambda request: request.limited))
    assert [view(factory.get("/")), view(factory.post("/")), view(factory.get("/"))] == [False, False, True]
    tight = rl.ratelimit(key="ip", rate="1/h", group="shared", block=False)(lambda request: request.limited)
    roomy = rl.ratelimit(key="ip", rate="5/h", group="shared", block=False)(lambda request: request.limited)
    assert [tight(factory.get("/")), roomy(factory.get("/")), roomy(factory.get("/"))] == [False, False, False]


def test_get_usage_reads_without_counting_and_is_ratelimited_counts_when_told():
    factory = RequestFactory()
    args = {"group": "usage", "key": "ip", "rate": "1/h"}
    assert rl.get_usage(factory.get("/"), **args)["count"] == 0
    assert rl.is_ratelimited(factory.get("/"), increment=True, **args) is False
    assert rl.is_ratelimited(factory.get("/"), increment=True, **args) is True
    usage = rl.get_usage(factory.get("/"), **args)
    assert (usage["count"], usage["limit"], usage["should_limit"]) == (2, 1, True)
    assert 0 < usage["time_left"] <= 3600
    assert rl.get_usage(factory.get("/"), method="POST", **args) is None  # another method: nothing applies
    with pytest.raises(rl.ConfigProblem, match="group= or fn="):
        rl.get_usage(factory.get("/"), key="ip", rate="1/h")


def test_aget_usage_and_ais_ratelimited_answer_as_their_twins_awaiting_kv(cfkv_emulator, cfkv_calls, monkeypatch):
    """Counted per request (each client's first request reads KV, whatever the clock), the awaited twins make
    the blocking ones' calls, none of them blocking."""
    factory, args = RequestFactory(), {"key": "ip", "rate": "1/h"}

    def sequence(get_usage, is_ratelimited, group):
        cfkv_calls.reset()
        return [get_usage(factory.get("/"), group, **args)["count"],
                is_ratelimited(factory.get("/"), group, **args),  # only looks
                is_ratelimited(factory.get("/"), group, increment=True, **args),
                is_ratelimited(factory.get("/"), group, increment=True, **args),
                get_usage(factory.get("/"), group, **args)["should_limit"],
                get_usage(factory.get("/"), group, method="POST", **args)], cfkv_calls.counts

    def awaited(function):
        return lambda *a, **k: async_to_sync(function)(*a, **k)

    blocking = []
    with override_settings(CFKV={"default": cfkv_emulator.alias_settings(MAX_RETRIES=0)}):
        rl.count_per_request(True)
        try:
            sync = sequence(rl.get_usage, rl.is_ratelimited, "usage-blocking")
            with monkeypatch.context() as patch:
                for name in ("list_keys", "put_many", "get", "get_many", "put"):
                    patch.setattr(KVClient, name, lambda self, *a, name=name, **k: blocking.append(name))
                native = sequence(awaited(rl.aget_usage), awaited(rl.ais_ratelimited), "usage-awaited")
        finally:
            rl.count_per_request(False)
    assert blocking == []
    assert native == sync and sync[0] == [0, False, False, True, True, None] and sync[1]["list"] == 1
    assert rl.ais_ratelimited.UNSAFE == rl.is_ratelimited.UNSAFE and rl.aget_usage.ALL is rl.get_usage.ALL


def test_exception_class_setting_replaces_ratelimited():
    view = rl.ratelimit(key="ip", rate="0/m", group="own-exception")(lambda request: None)
    with override_settings(RATELIMIT_EXCEPTION_CLASS="django.core.exceptions.SuspiciousOperation"):
        with pytest.raises(SuspiciousOperation):
            view(RequestFactory().get("/"))


def test_decorator_on_an_async_view_counts_natively_as_on_a_sync_view(cfkv_emulator, cfkv_calls, monkeypatch):
    """Both views are limited to 2/h by ip: the async one makes the same KV calls with no blocking call."""
    made = []
    alias = cfkv_emulator.alias_settings(MAX_RETRIES=0)
    with override_settings(CFKV={"default": alias}, MIDDLEWARE=["django_cfkv.middleware.RateLimitMiddleware"]):
        rl.count_per_request(True)
        try:
            cfkv_calls.reset()
            sync = statuses(Client(), 3, "/decorated/"), cfkv_calls.counts
            cfkv_calls.reset()
            with monkeypatch.context() as patch:
                for name in ("list_keys", "put_many", "get", "get_many", "put"):
                    patch.setattr(KVClient, name, lambda self, *a, name=name, **k: made.append(name))

                async def run():
                    client = AsyncClient()
                    return [(await client.get("/decorated-async/")).status_code for _ in range(3)]

                awaited = async_to_sync(run)(), cfkv_calls.counts
        finally:
            rl.count_per_request(False)
    assert made == []
    assert awaited == sync and sync[0] == [200, 200, 429]
