"""Any answer of the wrong shape is a KVAPIError: never AttributeError, TypeError or KeyError.

The cache's IGNORE_EXCEPTIONS and the session engines' fail-open paths catch
KVError; an answer that raised anything else from inside the client would
escape them as a 500. Envelope shapes are fuzzed (hypothesis) for every call, on the
blocking client and the async one (one loopback server answers both: tests.support.scripted).
"""

import json
import re

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_cfkv.exceptions import KVAPIError, KVError
from tests.support.faults import ACCOUNT, BASE, NS, TOKEN

ANY = re.compile(re.escape(BASE.rsplit("/", 1)[0]) + r".*")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _envelope(result, **extra):
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


key_items = st.one_of(
    json_values,
    st.fixed_dictionaries({"name": json_values}, optional={"expiration": json_values, "metadata": json_values}),
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=5)},
                          optional={"expiration": json_values, "metadata": json_values}),
)

bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"success": json_values}, optional={"errors": json_values, "result": json_values}),
    json_values.map(_envelope),
    # Shapes one field away from what each call expects.
    st.dictionaries(st.sampled_from(["k", "values"]), json_values, max_size=2).map(lambda r: _envelope(r)),
    json_values.map(lambda v: _envelope({"values": v})),
    st.dictionaries(st.just("k"), json_values).map(lambda v: _envelope({"values": v})),
    st.tuples(st.lists(key_items, max_size=3), json_values).map(
        lambda t: _envelope(t[0], result_info=t[1])),
    st.tuples(st.lists(key_items, max_size=3), json_values).map(
        lambda t: _envelope(t[0], result_info={"count": 1, "cursor": t[1]})),
    st.fixed_dictionaries({"successful_key_count": json_values, "unsuccessful_keys": json_values}).map(_envelope),
    st.tuples(st.lists(json_values, max_size=2), json_values).map(
        lambda t: _envelope(t[0], result_info={"total_count": t[1]})),
    st.fixed_dictionaries({"id": json_values}).map(_envelope),
)

answers = st.tuples(
    st.sampled_from([200, 200, 200, 400, 404, 429, 500]),
    st.one_of(bodies.map(lambda b: json.dumps(b).encode()), st.binary(max_size=20)),
    st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["1e400", "nan", "-5", "1900000000.5", "true"])),
)

OPS = {
    "get": lambda c: c.get("k"),
    "get_with_metadata": lambda c: c.get_with_metadata("k"),
    "get_metadata": lambda c: c.get_metadata("k"),
    "get_many": lambda c: c.get_many(["k", "j"]),
    "list_keys": lambda c: c.list_keys(),
    "iter_keys": lambda c: list(c.iter_keys()),
    "put": lambda c: c.put("k", b"v"),
    "put_metadata": lambda c: c.put("k", b"v", metadata={"m": 1}),
    "delete": lambda c: c.delete("k"),
    "put_many": lambda c: c.put_many([{"key": "k", "value": "v"}]),
    "delete_many": lambda c: c.delete_many(["k"]),
    "list_namespaces": lambda c: c.list_namespaces(),
    "create_namespace": lambda c: c.create_namespace("t"),
}


# 60 answers for each client: the answers are read by one parser, which sees 120 in all.
@pytest.mark.parametrize("op", OPS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=answers)
def test_any_answer_is_a_result_or_a_kverror(loose_scripted, scripted_client, op, answer):
    status, body, expiration = answer
    headers = {} if expiration is None else {"expiration": expiration}
    loose_scripted.reset()
    loose_scripted.every(status, body=body, headers=headers)
    try:
        OPS[op](scripted_client)
    except KVError:
        pass


MALFORMED_200 = {
    "get_many": [_envelope([1, 2]), _envelope({"values": [1]}), _envelope(None), _envelope("x")],
    "list_keys": [_envelope({"name": "k"}), _envelope([1]), _envelope([{"name": 5}]), _envelope([{"nom": "k"}]),
                  _envelope([{"name": "k", "expiration": "soon"}]), _envelope([], result_info=[]),
                  _envelope([{"name": "k", "expiration": 10**400}]),  # no float holds it: OverflowError
                  _envelope([], result_info={"cursor": 5})],
    "put_many": [_envelope([]), _envelope({"unsuccessful_keys": "k"}), _envelope({"unsuccessful_keys": [1]})],
    "list_namespaces": [_envelope({"id": "x"}), _envelope(["x"]), _envelope([{"id": "a"}], result_info={
        "total_count": "many"})],
    "create_namespace": [_envelope(None), _envelope([]), _envelope({"title": "t"})],
}


@pytest.mark.parametrize("op, body", [(op, b) for op, shapes in MALFORMED_200.items() for b in shapes])
def test_malformed_200_is_a_kvapierror_naming_the_problem(loose_scripted, scripted_client, op, body):
    loose_scripted.every(200, json=body)
    with pytest.raises(KVAPIError, match="malformed|failed"):
        OPS[op](scripted_client)


@pytest.mark.parametrize("status", [200, 500])
def test_json_nested_past_the_recursion_limit_is_a_kvapierror(loose_scripted, scripted_client, status):
    """200 KB of brackets is far inside the answer cap, and json.loads raises RecursionError on it."""
    loose_scripted.every(status, body=b"[" * 100_000)
    with pytest.raises(KVAPIError):
        scripted_client.put("k", b"v")


@pytest.mark.parametrize(("header", "kept"), [('"default";r=' + "9" * 5_000 + ";t=30", None),
                                              ('"default";r=50;t=' + "9" * 5_000, (50, None))])
def test_a_ratelimit_header_number_too_long_for_int_is_ignored(loose_scripted, scripted_client, header, kept):
    """Python refuses int() of more than 4,300 digits; the budget header is read on every answer."""
    loose_scripted.every(200, json=_envelope(None), headers={"Ratelimit": header})
    scripted_client.put("k", b"v")
    budget = scripted_client.transport.budget
    assert (budget if budget is None else budget[:2]) == kept  # no number that long is taken as the budget


def test_a_malformed_expiration_header_is_a_kvapierror(scripted, scripted_client):
    scripted.get("/values/k", body=b"v", headers={"expiration": "later"})
    with pytest.raises(KVAPIError, match="malformed expiration"):
        scripted_client.get_with_metadata("k")


def test_a_bulk_read_cannot_add_keys_that_were_not_asked(scripted, scripted_client):
    scripted.post("/bulk/get", json=_envelope({"values": {"k": "v", "other": "injected"}}))
    assert scripted_client.get_many(["k"]) == {"k": b"v"}


@pytest.mark.parametrize("body", [b"<html>captive portal</html>", b'{"result": []}', b"[1, 2]"])
def test_the_cache_under_ignore_exceptions_degrades_on_an_answer_no_kv_gives(body):
    """A broken proxy in BASE_URL's place is a failing upstream, as a 5xx is: ignored, not a 500."""
    from django.core.cache import caches
    from django.test import override_settings

    alias = {"default": {"ACCOUNT_ID": ACCOUNT, "NAMESPACE_ID": NS, "API_TOKEN": TOKEN, "MAX_RETRIES": 0}}
    cache = {"default": {"BACKEND": "django_cfkv.cache.CloudflareKVCache", "LOCATION": "default",
                         "OPTIONS": {"IGNORE_EXCEPTIONS": True}}}
    with override_settings(CFKV=alias, CACHES=cache), responses.RequestsMock(
            assert_all_requests_are_fired=False) as api:
        for method in ("GET", "PUT", "POST", "DELETE"):
            api.add(method, ANY, status=200, body=body, content_type="text/html")
        c = caches["default"]
        c.set("k", 1)
        assert c.get_many(["k", "j"]) == {}
        assert c.keys("*") == []
        assert c.delete("k") is False
