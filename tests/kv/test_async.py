"""What the async twins promise beyond the blocking interface (which the contract and fault suites check
through them): awaited calls run at once on the event loop with no thread, over one pooled connection set
per KV object and event loop, closed when the loop ends; without aiohttp they run in worker threads; the
embedded store's SQLite calls run in the process's long-lived worker threads; any KV object can be awaited.
"""

import asyncio
import gc
import os
import sys
import threading
import time
import warnings
import weakref

import pytest
from django.test import override_settings

from django_cfkv import aget_kv, conf, get_kv, threads
from django_cfkv.client import KVClient
from django_cfkv.exceptions import KVTimeout
from django_cfkv.local import LocalKV
from django_cfkv.transport import sync as transport_sync

try:
    from django_cfkv.transport import aio as transport_aio
except ImportError:  # without the async extra (the tests that use it are skipped there)
    transport_aio = None
from tests.support.faults import ACCOUNT, NS, TOKEN
from tests.support.hostile import HostileServer, drip, envelope, reply

# The native path needs the async extra. One tox environment runs without it, and says so: there these
# tests are skipped, and every other async test of the suite runs through worker threads instead.
# Anywhere else a missing aiohttp fails the run (test_the_async_extra_is_installed_where_expected).
WITHOUT_EXTRA = os.environ.get("CFKV_WITHOUT_ASYNC_EXTRA") == "1"
native = pytest.mark.skipif(WITHOUT_EXTRA, reason="CFKV_WITHOUT_ASYNC_EXTRA=1: this run is without aiohttp")


def test_the_async_extra_is_installed_where_expected():
    assert transport_sync.native_async() is not WITHOUT_EXTRA, (
        "aiohttp (the async extra) is " + ("installed" if WITHOUT_EXTRA else "missing") + ": install "
        "django-cfkv[async] (make venv does), or set CFKV_WITHOUT_ASYNC_EXTRA=1 where it runs without it")


def _value_server(barrier=None):
    """A server that answers every value read with b"v" (after ``barrier``: that many reads in flight at once)."""
    def answer(conn, request):
        if barrier is not None:
            barrier.wait()
        if "/values/" in request.path:
            reply(conn, body=b"v")
        else:
            reply(conn, body=envelope())
    return HostileServer(answer)


def _client(server, **kwargs):
    return KVClient(ACCOUNT, NS, TOKEN, base_url=server.base_url, **kwargs)


@pytest.mark.parametrize("how", [pytest.param("native", marks=native), "threads"])
def test_awaited_reads_run_at_once(monkeypatch, how):
    """Three reads gathered are three requests in flight together (the server answers none until all
    arrived): natively with no thread, or without the async extra in the process's worker threads."""
    in_threads = []
    run = threads.run

    async def counted(function, *args, **kwargs):
        in_threads.append(function)
        return await run(function, *args, **kwargs)

    monkeypatch.setattr(threads, "run", counted)
    if how == "threads":
        monkeypatch.setattr(transport_sync, "native_async", lambda: False)
    with _value_server(threading.Barrier(3, timeout=5)) as server:
        client = _client(server, max_retries=0)

        async def view():
            return await asyncio.gather(client.aget("a"), client.aget("b"), client.aget("c"))

        assert asyncio.run(view()) == [b"v", b"v", b"v"]
        client.close()
    assert server.accepted == 3 and len(in_threads) == (3 if how == "threads" else 0)


@pytest.mark.parametrize("how", [pytest.param("native", marks=native), "threads"])
@pytest.mark.parametrize("call", ["aget_many", "aput_many", "adelete_many"])
def test_a_callers_generator_is_read_on_the_callers_thread(monkeypatch, how, call):
    """A generator may hold what belongs to its thread (an ORM iterator's connection): it is read where it was
    awaited, never in the worker thread a call runs in without the async extra."""
    if how == "threads":
        monkeypatch.setattr(transport_sync, "native_async", lambda: False)
    read_on = []

    def keys():
        read_on.append(threading.get_ident())
        yield "k"

    argument = ({"key": key, "value": "v"} for key in keys()) if call == "aput_many" else keys()
    with _value_server() as server:
        client = _client(server, max_retries=0)
        try:
            asyncio.run(getattr(client, call)(argument))
        except Exception:  # noqa: BLE001  the server's answers do not matter here, only where the keys were read
            pass
        client.close()
    assert read_on == [threading.get_ident()]


@native
def test_one_pooled_connection_set_per_loop_closed_when_the_loop_ends():
    with _value_server() as server:
        client = _client(server)

        async def calls():
            for i in range(20):
                assert await client.aget(f"k{i}") == b"v"
            await asyncio.gather(*(client.aget("k") for _ in range(4)))

        asyncio.run(calls())
        first_loop = server.accepted
        assert 1 <= first_loop <= 4  # reused: 20 calls one after another, then 4 at once
        _wait_for(lambda: server.hung_up == first_loop)  # the loop ended: its connections were closed
        asyncio.run(calls())  # a new loop: a new session
        assert server.accepted > first_loop
        _wait_for(lambda: server.hung_up == server.accepted)
        client.close()


@native
def test_an_ended_loop_is_let_go():
    """Code that calls from sync code runs a new event loop each time (asyncio.run, asgiref's
    async_to_sync without a running loop): the loops that ended, and their sessions, are not kept."""
    with _value_server() as server:
        client = _client(server)
        ended = []

        async def call():
            assert await client.aget("k") == b"v"
            ended.append(weakref.ref(asyncio.get_running_loop()))

        for _ in range(10):
            asyncio.run(call())
        gc.collect()
        assert sum(loop() is not None for loop in ended) <= 1  # the last one, until another loop calls
        client.close()


@native
def test_a_loop_that_runs_on_after_shutting_its_async_generators_down_gets_a_new_pool():
    """That shutdown closed the loop's pool: the next call on the loop must not be sent with its closed session."""
    with _value_server() as server:
        client = _client(server)
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(client.aget("k")) == b"v"
            loop.run_until_complete(loop.shutdown_asyncgens())
            assert loop.run_until_complete(client.aget("k")) == b"v"
            assert server.accepted == 2  # a new session, with its own connection
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        client.close()


@native
def test_a_client_dropped_without_closing_leaves_no_resource_warning():
    """The loop's end closes every session made in it, so nothing is left for the garbage collector."""
    with _value_server() as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        async def use_and_drop():
            client = _client(server)
            assert await client.aget("k") == b"v"

        asyncio.run(use_and_drop())
        asyncio.run(use_and_drop())
        gc.collect()
        _wait_for(lambda: server.hung_up == server.accepted == 2)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


@native
def test_close_from_another_thread_closes_each_loops_connections_on_that_loop(test_loop):
    """A settings change closes clients from whatever thread it runs in: the loop's session is closed on
    the loop, when it next makes one, and the client goes on working."""
    with _value_server() as server:
        client = _client(server)
        assert test_loop.run(client.aget("k")) == b"v"
        closer = threading.Thread(target=client.close)
        closer.start()
        closer.join()
        assert test_loop.run(client.aget("k")) == b"v"
        _wait_for(lambda: server.hung_up == 1)
        assert server.accepted == 2
        test_loop.run(client.aclose())
        _wait_for(lambda: server.hung_up == 2)


@native
def test_close_from_another_thread_during_a_loops_lookup_is_not_undone(test_loop):
    """close() may run while a loop is looking its session up: after it, the loop's next call makes a new
    session rather than keep using the one close() forgot."""
    with _value_server() as server:
        client = _client(server)
        assert test_loop.run(client.aget("k")) == b"v"
        sessions, closers = client.transport._loops, []

        class CloseDuringLookup(dict):
            def get(self, loop, default=None):
                found = super().get(loop, default)
                closers.append(threading.Thread(target=client.close))  # a settings change, in another thread
                closers[-1].start()
                closers[-1].join(0.2)  # it runs now, unless the lookup holds it off
                return found

        sessions._sessions = CloseDuringLookup(sessions._sessions)
        sessions._last = (None, None)  # a call on another loop came between: this loop looks its session up
        assert test_loop.run(client.aget("k")) == b"v"
        for closer in closers:
            closer.join()
        assert test_loop.run(client.aget("k")) == b"v"
        assert server.accepted == 2  # the call after close() made a new session
        test_loop.run(client.aclose())


@native
def test_close_while_a_loop_makes_its_session_leaves_that_call_working(test_loop, monkeypatch):
    """close() may run just after a loop stored its new session: that call still has an open session, and
    the loop closes the forgotten one when it makes the next."""
    with _value_server() as server:
        client = _client(server)
        loop_end = transport_aio._loop_end
        closed = []

        def closed_meanwhile(loop):
            if not closed:
                closed.append(client.close())  # a settings change, in another thread, at this moment
            return loop_end(loop)

        monkeypatch.setattr(transport_aio, "_loop_end", closed_meanwhile)
        assert test_loop.run(client.aget("k")) == b"v"
        assert test_loop.run(client.aget("k")) == b"v"
        _wait_for(lambda: server.hung_up == 1)  # the first session, closed when the second was made
        assert server.accepted == 2
        test_loop.run(client.aclose())


# An attempt's window on the event loop: one timer per loop cuts every attempt in flight at its end
# (transport/aio_deadline.py); hostile.py's tests check the cut itself, on both clients.

def _dripping_or_value(conn, request):
    """A read of "slow" drips its body, a byte every 0.1 s (2.4 s in all); every other read answers at once."""
    if request.path.endswith("/slow"):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n")
        drip(conn, b"x" * 24, interval=0.1)
        return False
    reply(conn, body=b"v")


@native
def test_a_cut_attempt_leaves_its_task_as_it_was_and_others_on_the_loop_run_on():
    """TIMEOUT=(0.3, 0.3): the dripped read is a KVTimeout at about 0.6 s while reads beside it answer; its
    task then carries no cancel (a later await is not cancelled, asyncio.timeout still works in it)."""
    with HostileServer(_dripping_or_value) as server:
        client = _client(server, timeout=(0.3, 0.3), max_retries=0)

        async def slow():
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(KVTimeout):
                await client.aget("slow")
            elapsed = loop.time() - started
            await asyncio.sleep(0.05)  # not cancelled
            if hasattr(asyncio, "timeout"):  # Python 3.11+: the task's cancel count is back where it was
                assert asyncio.current_task().cancelling() == 0
                async with asyncio.timeout(1):
                    await asyncio.sleep(0)
            return elapsed

        async def both():
            slow_read = asyncio.ensure_future(slow())
            quick = [await client.aget("k") for _ in range(20)]
            elapsed = await slow_read
            await client.aclose()
            return quick, elapsed

        quick, elapsed = asyncio.run(both())
    assert quick == [b"v"] * 20
    assert 0.5 < elapsed < 1.5, elapsed  # the window (0.6 s), give or take one look of the timer


@native
def test_every_awaited_attempt_has_its_clients_own_timers(monkeypatch):
    """As the blocking client's test_every_call_has_a_timeout: aiohttp gets the connect and read timers that can
    end within the window, and no total timer (the window is kept by the loop's one timer). The timers are kept
    per pair, so two clients with different TIMEOUTs in one process each get their own."""
    import aiohttp

    seen = []
    original = aiohttp.ClientSession.request

    def spy(self, method, url, **kwargs):
        seen.append(kwargs["timeout"])
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "request", spy)

    async def reads(server):
        clients = [_client(server), _client(server, timeout=(1.0, 2.0)), _client(server)]
        for client in clients:
            assert await client.aget("k") == b"v"
            await client.aclose()

    with _value_server() as server:
        asyncio.run(reads(server))
    first, short, again = seen
    # Default (5, 30) within a 30 s deadline: the read timer could not end before the window, so it is left out.
    assert (first.total, first.sock_connect, first.sock_read) == (None, 5.0, None)
    assert (short.total, short.sock_connect, short.sock_read) == (None, 1.0, 2.0)  # a 3 s window holds both
    assert again == first


@native
def test_the_callers_cancel_during_an_attempt_is_a_cancel_not_a_timeout():
    """A caller's own timeout (wait_for) ends the call as a cancel: the window's timer does not take it for
    its own and make it a KVTimeout, and the client goes on working."""
    with HostileServer(_dripping_or_value) as server:
        client = _client(server, timeout=(0.3, 0.3), max_retries=0)

        async def run():
            with pytest.raises(asyncio.TimeoutError) as raised:
                await asyncio.wait_for(client.aget("slow"), 0.1)
            value = await client.aget("k")
            await client.aclose()
            return raised.value, value

        error, value = asyncio.run(run())
    assert not isinstance(error, KVTimeout) and value == b"v"


@native
@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10's tasks do not count cancels (aio_deadline.py)")
def test_a_cancel_that_comes_with_the_windows_end_still_cancels(monkeypatch):
    """The window's end and a cancel from elsewhere in the same moment: the cancel is not swallowed."""
    from django_cfkv.transport import aio_deadline

    look = aio_deadline.Deadlines._look

    def look_and_cancel(self):
        cut_before = dict(self._cut)
        look(self)
        for task in set(self._cut) - set(cut_before):
            task.cancel()  # the caller's own cancel, asked in the same loop iteration

    monkeypatch.setattr(aio_deadline.Deadlines, "_look", look_and_cancel)
    _cancelled_slow_read()


@native
@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10's tasks do not count cancels (aio_deadline.py)")
def test_a_cancel_asked_just_before_the_windows_end_still_cancels(monkeypatch):
    """The other order: a caller's cancel (asyncio.timeout, a TaskGroup, a server's shutdown) asked in the loop
    iteration where the window ends, before the timer looks, is not taken for the window's own."""
    from django_cfkv.transport import aio_deadline

    look = aio_deadline.Deadlines._look

    def cancel_then_look(self):
        for task, (ends, _) in list(self._ends.items()):
            if ends <= self._loop.time():
                task.cancel()  # the caller's own cancel, asked first
        look(self)

    monkeypatch.setattr(aio_deadline.Deadlines, "_look", cancel_then_look)
    assert _cancelled_slow_read() == 1  # the caller's one cancel, not taken back


def _cancelled_slow_read():
    """Read "slow" in a task that must end cancelled; return the task's count of cancels asked."""
    with HostileServer(_dripping_or_value) as server:
        client = _client(server, timeout=(0.3, 0.3), max_retries=0)

        async def run():
            task = asyncio.ensure_future(client.aget("slow"))
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.aclose()
            return task.cancelling()

        return asyncio.run(run())


@native
def test_a_task_whose_cancel_fails_does_not_stop_the_windows_of_the_others():
    """A task of a kind whose cancel() raises (an instrumented task factory): the loop reports the error, and
    the attempts after it are still cut at their windows' end."""
    failed_once = []

    class Stubborn(asyncio.Task):
        def cancel(self, *args, **kwargs):
            if not failed_once:
                failed_once.append(self)
                raise RuntimeError("this task cannot be cancelled")
            return super().cancel(*args, **kwargs)

    with HostileServer(_dripping_or_value) as server:
        client = _client(server, timeout=(0.3, 0.3), max_retries=0)

        async def run():
            loop = asyncio.get_running_loop()
            reported = []
            loop.set_exception_handler(lambda loop, context: reported.append(context.get("exception")))
            loop.set_task_factory(lambda loop, coro, **kwargs: Stubborn(coro, loop=loop, **kwargs))
            stubborn = asyncio.ensure_future(client.aget("slow"))  # its cut fails: it drips on to its end
            await asyncio.sleep(0.1)
            started = loop.time()
            with pytest.raises(KVTimeout):
                await asyncio.ensure_future(client.aget("slow"))
            elapsed = loop.time() - started
            stubborn.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stubborn
            await client.aclose()
            return reported, elapsed

        reported, elapsed = asyncio.run(run())
    assert failed_once and any(isinstance(e, RuntimeError) for e in reported), reported
    assert elapsed < 1.5, elapsed  # its window, 0.6 s, not the 2.4 s drip


@native
def test_an_awaited_call_outside_a_task_is_a_clear_error():
    """Driven by hand from a loop callback, with no task to cancel at the window's end (aiohttp's own timeouts
    need one too): a RuntimeError that says so, at once."""
    with _value_server() as server:
        client = _client(server, max_retries=0)

        async def run():
            await client.aget("k")  # the loop's pool exists
            coro, outcome = client.aget("k"), []
            asyncio.get_running_loop().call_soon(lambda: outcome.append(_first_step(coro)))
            await asyncio.sleep(0.05)
            await client.aclose()
            return outcome

        [error] = asyncio.run(run())
    assert isinstance(error, RuntimeError) and "asyncio task" in str(error)


def _first_step(coro):
    try:
        coro.send(None)
    except BaseException as exc:  # noqa: BLE001 - returned for the test to judge
        return exc
    coro.close()
    return None


class _Recording(LocalKV):
    """LocalKV that notes the thread each blocking read runs in."""

    threads: list = []

    def get(self, key):
        self.threads.append(threading.current_thread())
        return super().get(key)


def test_local_kv_runs_sqlite_in_the_long_lived_worker_threads(tmp_path):
    """Every awaited store call runs in one of the process's worker threads, which outlive event loops (so
    their SQLite connections do), never on the loop; a subclass's own get() is what aget() runs."""
    store = _Recording(tmp_path / "kv.sqlite3")
    store.put("k", b"v")
    _Recording.threads = []
    loop_threads = []

    async def read():
        loop_threads.append(threading.current_thread())
        return await store.aget("k")

    assert asyncio.run(read()) == b"v" and asyncio.run(read()) == b"v"
    for thread in _Recording.threads:
        assert thread.name.startswith("django-cfkv") and thread not in loop_threads
        assert thread.is_alive()  # after its loop ended (a loop's own executor ends with it): its connection lives on


class _NoTwins:
    """A KV class of a project's own, with the blocking interface only."""

    def __init__(self, path):
        self.store = LocalKV(path)
        self.label = "own"

    def get(self, key):
        return self.store.get(key)

    def put(self, key, value, **kwargs):
        self.store.put(key, value, **kwargs)

    def list_keys(self, prefix=None, limit=1000, cursor=None):
        return self.store.list_keys(prefix, limit, cursor)

    def iter_keys(self, prefix=None):
        return self.store.iter_keys(prefix)


def test_a_backend_class_without_twins_is_awaited_through_threads(tmp_path):
    path = str(tmp_path / "kv.sqlite3")
    with override_settings(CFKV={"default": {"BACKEND": f"{__name__}._NoTwins", "OPTIONS": {"path": path}}}):
        kv = get_kv()

        async def use():
            await kv.aput("k", b"v")
            return await kv.aget("k"), [info.name async for info in kv.aiter_keys()]

        assert asyncio.run(use()) == (b"v", ["k"])
        assert kv.label == "own" and [info.name for info in kv.iter_keys()] == ["k"]  # its own attributes


def test_aget_kv_builds_in_a_worker_thread_and_shares_get_kvs_object(tmp_path, monkeypatch):
    """A first aget_kv() builds the object off the event loop (a LocalKV opens its SQLite file), once."""
    built_in = []
    build = conf.build_kv
    monkeypatch.setattr(conf, "build_kv", lambda alias: built_in.append(threading.current_thread()) or build(alias))
    path = str(tmp_path / "kv.sqlite3")
    with override_settings(CFKV={"default": {"BACKEND": "local", "OPTIONS": {"path": path}}}):
        async def view():
            return threading.current_thread(), await aget_kv(), await aget_kv("default")

        loop_thread, kv, again = asyncio.run(view())
        assert kv is again is get_kv() and isinstance(kv, LocalKV)
    assert len(built_in) == 1 and built_in[0] is not loop_thread and built_in[0].name.startswith("django-cfkv")


def _wait_for(condition, timeout=5.0):
    """Wait until the server's threads have seen what the client did (they run apart from the test)."""
    import time

    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, "the server never saw it"
        time.sleep(0.01)


# Letting a loop's session go: never under the calls still using it, never keeping an ended loop


def _slow_value(conn, request):
    time.sleep(0.4)
    reply(conn, body=b"v")


@native
@pytest.mark.parametrize("how", ["aclose", "close_in_another_thread"])
def test_closing_the_pool_lets_the_calls_in_flight_finish(how):
    """aiohttp aborts a closed session's connections and cancels the calls queued for one: the pool is closed
    once the calls using it end, as the blocking client's calls in flight survive close()."""
    with HostileServer(_slow_value) as server:
        server._sock.listen(128)
        client = _client(server, max_retries=0)

        async def run():
            calls = [asyncio.ensure_future(client.aget(f"k{i}")) for i in range(40)]  # 32 sent, 8 queued
            await asyncio.sleep(0.1)
            if how == "aclose":
                await client.aclose()
            else:
                await asyncio.to_thread(client.close)  # a settings change
                assert await client.aget("other") == b"v"  # the loop's next call makes the new session
            return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(run())
        client.close()
        _wait_for(lambda: server.hung_up == server.accepted)  # and each pool was closed, with its loop
    assert [r if isinstance(r, bytes) else type(r).__name__ for r in results] == [b"v"] * 40


@native
def test_a_loop_closed_without_shutting_its_async_generators_down_is_let_go():
    """A hand-run loop (run_until_complete, then close()) never runs the close of its async generators."""
    with _value_server() as server:
        client = _client(server)
        loops = []
        for _ in range(3):
            loop = asyncio.new_event_loop()
            assert loop.run_until_complete(client.aget("k")) == b"v"
            loop.close()
            loops.append(weakref.ref(loop))
            del loop
        client.close()
        del client
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # the loop's end never closed them: the collector does
            gc.collect()
        _wait_for(lambda: server.hung_up == server.accepted == 3)
    assert sum(ref() is not None for ref in loops) == 0


@native
def test_close_after_a_loop_ended_does_not_keep_the_loop():
    with _value_server() as server:
        client = _client(server)
        loops = []

        async def call():
            loops.append(weakref.ref(asyncio.get_running_loop()))
            return await client.aget("k")

        for _ in range(5):
            assert asyncio.run(call()) == b"v"
            client.close()  # a settings change between two asyncio.run()
        client = None  # dropped
        gc.collect()
    assert sum(ref() is not None for ref in loops) == 0


async def _a_call_making_its_pool(client):
    """Return a call (its task) caught making its loop's new pool: a settings change let the old one go, and
    the call is closing it."""
    assert await client.aget("k") == b"v"
    await asyncio.to_thread(client.close)  # a settings change lets the pool go
    call = asyncio.ensure_future(client.aget("k"))
    await asyncio.sleep(0)  # the call is in its pool's making, closing the one let go
    return call


@native
def test_a_call_cancelled_while_its_pool_is_made_leaves_no_connection_after_its_loop():
    with _value_server() as server:
        client = _client(server, max_retries=0)

        async def run():
            call = await _a_call_making_its_pool(client)
            call.cancel()  # the client of the request went away
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await client.aget("k") == b"v"

        asyncio.run(run())
        _wait_for(lambda: server.hung_up == server.accepted == 2)  # asyncio.run() ended: none of its left open
        client.close()


@native
def test_aclose_while_a_call_makes_its_pool_lets_that_call_use_it():
    with _value_server() as server:
        client = _client(server, max_retries=0)

        async def run():
            call = await _a_call_making_its_pool(client)
            await client.aclose()
            return await asyncio.gather(call, return_exceptions=True)

        assert asyncio.run(run()) == [b"v"]
        _wait_for(lambda: server.hung_up == server.accepted)
        client.close()
