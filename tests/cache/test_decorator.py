"""``@cached``: results cached (None too) and invalidated, sync and async with stampede protection,
and keys that are stable across processes and never shared by different arguments."""

import asyncio
import datetime
import decimal
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_cfkv.cache import cached, stampede_events


def test_cached_caches_results_including_none_and_invalidates(kvcache):
    runs = []

    @cached(60, alias="kv")
    def lookup(user_id, *, active=True):
        runs.append(user_id)
        return None if user_id == 0 else {"id": user_id, "active": active}

    assert lookup(1) == {"id": 1, "active": True} and lookup(1) == {"id": 1, "active": True}
    assert lookup(0) is None and lookup(0) is None
    assert runs == [1, 0]
    qualname = "test_cached_caches_results_including_none_and_invalidates.<locals>.lookup"
    assert lookup.cache_key(1) == f"cached:tests.cache.test_decorator.{qualname}:[[1],{{}}]"
    assert lookup.invalidate(1) is True and lookup.invalidate(1) is False
    lookup(1)
    assert runs == [1, 0, 1]


def test_cached_keys_are_stable_and_hashed_when_long():
    @cached(60)
    def f(*args, **kwargs):
        return None

    long_key = f.cache_key("x" * 500, flag=True)
    assert long_key.startswith("cached:tests.cache.test_decorator.") and len(long_key) < 200
    assert long_key == f.cache_key("x" * 500, flag=True)
    assert f.cache_key(a=1, b=2) == f.cache_key(b=2, a=1)
    with pytest.raises(TypeError, match="cannot build a stable key"):
        f.cache_key(object())

    @cached(60, key=lambda user_id: f"profile:{user_id}")
    def profile(user_id):
        return user_id

    assert profile.cache_key(7) == "profile:7"


def test_cached_async_functions(kvcache):
    runs = []

    @cached(60, alias="kv", key="report")
    async def report(day):
        runs.append(day)
        await asyncio.sleep(0.05)
        return f"report {day}"

    async def scenario():
        first = await asyncio.gather(*(report("mon") for _ in range(5)))
        assert first == ["report mon"] * 5
        assert await report("mon") == "report mon"
        assert await report.ainvalidate("mon") is True
        assert await report("mon") == "report mon"

    asyncio.run(scenario())
    assert runs == ["mon", "mon"]  # five concurrent callers, one computation


async def _others_waiting(count, timeout=10):
    """Return once ``count`` callers wait for a computation (a step of the scenario, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while stampede_events.snapshot().get("waited", 0) < count:
        assert asyncio.get_running_loop().time() < deadline, "the scenario never reached its next step"
        await asyncio.sleep(0.005)


def test_async_waiters_hold_no_executor_thread(kvcache, settings):
    """The computation may need the loop's default executor (to_thread, getaddrinfo) while others wait."""
    settings.CACHES = {**settings.CACHES, "w": {**settings.CACHES["kv"], "OPTIONS": {"STAMPEDE_WAIT": 2}}}
    runs = []

    @cached(60, alias="w", key="threaded")
    async def compute():
        runs.append(1)
        await _others_waiting(3)
        return await asyncio.to_thread(lambda: "done")

    async def scenario():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        return await asyncio.gather(*(compute() for _ in range(4)))

    stampede_events.reset()
    assert asyncio.run(scenario()) == ["done"] * 4
    assert runs == [1]  # no waiter gave up and computed again
    assert stampede_events.snapshot() == {"computed": 1, "waited": 3}


def test_async_failed_computation_releases_the_waiters(kvcache, settings):
    settings.CACHES = {**settings.CACHES, "slow": {**settings.CACHES["kv"], "OPTIONS": {"STAMPEDE_WAIT": 60}}}
    calls = []

    @cached(60, alias="slow", key="fragile")
    async def compute():
        calls.append(1)
        if len(calls) == 1:
            await _others_waiting(3)  # the three others wait for this computation, which fails
            raise RuntimeError("backend down")
        return "second try"

    async def scenario():  # bounded well below STAMPEDE_WAIT: waiters must not sit out the wait
        return await asyncio.wait_for(asyncio.gather(*(compute() for _ in range(4)), return_exceptions=True), 10)

    stampede_events.reset()
    results = asyncio.run(scenario())
    # The leader is whichever read finished first (reads are awaited together, not one after another).
    assert [type(r) for r in results].count(RuntimeError) == 1
    assert [r for r in results if not isinstance(r, RuntimeError)] == ["second try"] * 3
    assert len(calls) == 4  # each waiter, released with nothing, computed once itself
    assert stampede_events.snapshot() == {"computed": 4, "waited": 3}


def test_cached_keys_tell_argument_types_apart():
    import datetime

    from django.contrib.auth.models import User

    @cached(60)
    def f(*args, **kwargs):
        return None

    def distinct(*values):
        return len({f.cache_key(v) for v in values}) == len(values)

    assert distinct({1, 2}, [1, 2])
    assert f.cache_key({2, 1}) == f.cache_key(frozenset([1, 2]))  # equal sets, one key
    assert distinct(datetime.date(2024, 1, 1), "2024-01-01", datetime.datetime(2024, 1, 1))
    assert distinct(User(pk=1), "auth.User:1", User(pk=2))
    assert f.cache_key(User(pk=1)) == f.cache_key(User(pk=1, username="renamed"))
    with pytest.raises(TypeError, match="unsaved auth.User instance .*pk is None"):
        f.cache_key(User())


# @cached arguments

@cached(60)
def _function(*args, **kwargs):
    return None


def key_of(value):
    return _function.cache_key(value)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4),
    st.dates(), st.datetimes(), st.decimals(allow_nan=False, places=2), st.uuids(),
)
_hashables = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(tuple), st.frozensets(inner, max_size=3)), max_leaves=6)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.lists(inner, max_size=3).map(tuple),
    st.sets(_hashables, max_size=3),
    st.frozensets(_hashables, max_size=3),
    st.dictionaries(st.text(max_size=3), inner, max_size=3),
    st.dictionaries(st.sampled_from(["~set", "~tuple", "~dict", "~x.Y", "1", "a"]), inner, max_size=2),
    st.dictionaries(_hashables, inner, max_size=3),
), max_leaves=12)


def _lookalike(value, draw):
    """Return a value an encoding that is not injective would often confuse with ``value``."""
    swap = draw(st.integers(0, 3)) == 0
    kind = type(value)
    if swap:
        if kind is bool or value is None:
            return str(value).lower() if value is not None else "null"
        if kind is int:
            return draw(st.sampled_from([str(value), float(value), value == 1]))
        if kind in (float, decimal.Decimal, uuid.UUID):
            return str(value)
        if kind is str:
            return draw(st.sampled_from([[value], {"~x.Y": value}, (value,)]))
        if isinstance(value, (datetime.date, datetime.time)):
            return draw(st.sampled_from([value.isoformat(), {f"~datetime.{kind.__qualname__}": value.isoformat()}]))
        if kind in (list, tuple):
            return draw(st.sampled_from([tuple(value) if kind is list else list(value),
                                         {"~tuple": list(value)}]))
        if kind in (set, frozenset):
            return draw(st.sampled_from([sorted(value, key=repr), {"~set": sorted(value, key=repr)}]))
        if kind is dict:
            return draw(st.sampled_from([{str(k): v for k, v in value.items()},
                                         {"~dict": [[k, v] for k, v in value.items()]}]))
    if kind is list:
        return [_lookalike(item, draw) for item in value]
    if kind is tuple:
        return tuple(_lookalike(item, draw) for item in value)
    if kind is dict:
        return {k: _lookalike(v, draw) for k, v in value.items()}
    return value


REGRESSIONS = [({"~set": [1, 2]}, {1, 2}), ({"1": "x"}, {1: "x"}), ((1, 2), [1, 2]),
               ({"~tuple": [1]}, (1,)), ({"~dict": [[1, "x"]]}, {1: "x"})]


@given(data=st.data(), value=_values)
@hypothesis_settings(max_examples=400, deadline=None)
def test_cached_keys_of_lookalike_arguments_differ(data, value):
    other = _lookalike(value, data.draw)
    if key_of(value) == key_of(other):
        assert value == other, f"{value!r} and {other!r} share the key {key_of(value)!r}"


@given(values=st.lists(_values, min_size=2, max_size=8))
@hypothesis_settings(max_examples=300, deadline=None)
@example(values=[a for pair in REGRESSIONS for a in pair])
def test_distinct_arguments_give_distinct_keys(values):
    seen = {}
    for value in values:
        earlier = seen.setdefault(key_of(value), value)
        assert earlier == value, f"{earlier!r} and {value!r} share the key {key_of(value)!r}"


@given(value=_values)
@hypothesis_settings(max_examples=200, deadline=None)
def test_equal_arguments_share_a_key(value):
    # A fresh copy (sets and dicts rebuilt in another order) is the same argument: one key.
    def rebuild(v):
        if type(v) in (set, frozenset):
            return type(v)(sorted((rebuild(x) for x in v), key=repr, reverse=True))
        if type(v) is dict:
            return {k: rebuild(x) for k, x in reversed(list(v.items()))}
        if type(v) in (list, tuple):
            return type(v)(rebuild(x) for x in v)
        return v

    assert key_of(rebuild(value)) == key_of(value)
