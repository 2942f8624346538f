"""Run a test written for the blocking KV interface through the async twins: ``Awaited(kv)`` is called
as the blocking interface, and each call awaits its twin (``get`` awaits ``aget``, ``iter_keys``
collects ``aiter_keys``) on one event loop, the test's, ended at teardown as asyncio.run() ends one.

    @pytest.fixture(params=MODES)
    def client(request, as_mode):
        return as_mode(KVClient(...))        # KVClient itself, or Awaited(KVClient(...))

So the same test checks the blocking and the async client (parametrize, don't copy).
"""

import asyncio
import functools

import pytest

MODES = ["blocking", "async"]
# The blocking methods whose twin is a coroutine named with an "a" in front.
AWAITED = {"get", "get_with_metadata", "get_metadata", "get_many", "put", "put_many", "delete", "delete_many",
           "list_keys", "list_namespaces", "create_namespace", "close"}


class Awaited:
    """The blocking KV interface of ``kv``, each call awaiting its async twin on ``loop``."""

    def __init__(self, kv, loop):
        self.kv, self.loop = kv, loop

    def __repr__(self):
        return f"Awaited({self.kv!r})"

    def __getattr__(self, name):
        if name not in AWAITED:
            return getattr(self.kv, name)  # transport, base_url...
        twin = getattr(self.kv, "a" + name)

        @functools.wraps(twin)
        def call(*args, **kwargs):
            return self.loop.run_until_complete(twin(*args, **kwargs))
        return call

    def iter_keys(self, prefix=None):
        async def collect():
            return [info async for info in self.kv.aiter_keys(prefix)]
        return iter(self.loop.run_until_complete(collect()))


class Loop:
    """One event loop for a test, ended as asyncio.run() ends its loop (async generators shut down first)."""

    def __init__(self):
        self.loop = None

    def get(self):
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def run(self, coroutine):
        return self.get().run_until_complete(coroutine)

    def end(self):
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self.loop = None


@pytest.fixture
def test_loop():
    """The test's event loop (made on first use), ended after the test."""
    loop = Loop()
    yield loop
    loop.end()


@pytest.fixture
def awaited(test_loop):
    """Wrap a KV object so that its blocking interface awaits the async twins on the test's loop."""
    return lambda kv: Awaited(kv, test_loop.get())


@pytest.fixture(params=MODES)
def as_mode(request, awaited):
    """Parametrize a test over the blocking client and the async one: as_mode(kv) is kv, or Awaited(kv)."""
    return awaited if request.param == "async" else (lambda kv: kv)
