"""Test helpers: run a project's tests against the KV emulator, offline.

* pytest plugin (registered through the ``pytest11`` entry point, inert until a
  test asks for a fixture): ``cfkv_emulator`` (session), ``cfkv`` and
  ``cfkv_calls`` (per test).
* Django/unittest: ``override_cfkv()`` (decorator for functions and TestCase
  classes, or a context manager) and ``assert_kv_calls(n)``.

While an override is active every ``CFKV`` alias points at a fresh namespace
on an in-process emulator listening on 127.0.0.1, and any KV call bound for
another host is stopped before it is sent (``KVNetworkBlocked``).

Per-process state: entering and leaving an override changes the ``CFKV``
setting, so Django sends ``setting_changed`` with ``setting="CFKV"``.
``django_cfkv.conf`` drops pooled clients then, and runs what every module
keeping state about a namespace (a near cache, limiter memory) registered
with ``conf.on_reset()``, so that nothing one test writes is seen by the next.
Django's cache handler is rebuilt as well (``CACHES`` is re-applied).

The rate limiter counts per request while an override is active: each
request's list and write happen before its response, independent of the
clock, so ``assert_kv_calls()`` and ``cfkv_calls`` count them in the request
that made them, and nothing waits when the override ends.

Importing this module touches no settings and starts nothing.
"""

import atexit
import contextlib
import ipaddress
import sys
import tempfile
import threading
import unittest
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from django.test.utils import TestContextDecorator, override_settings

from . import conf, transport

try:
    import pytest
except ImportError:  # the unittest helpers work without pytest
    pytest = None

ACCOUNT_ID = "0" * 32


class KVNetworkBlocked(AssertionError):
    """A KV API call inside an override was bound for a host other than loopback."""


class RunningEmulator:
    """An emulator serving on a free loopback port, in a background thread."""

    def __init__(self, path=None, *, token="cfkv-test-token"):
        from .emulator.app import EmulatorApp
        from .emulator.server import start_in_thread

        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cfkv-emulator-")
            path = Path(self._tmp.name) / "kv.sqlite3"
        self.path = str(path)
        self.token = token
        self.account_id = ACCOUNT_ID
        self.app = EmulatorApp(self.path, token=token)
        self.server = start_in_thread(self.app)
        self.base_url = self.server.base_url
        self._stopped = False

    def __repr__(self):
        return f"<RunningEmulator {self.base_url}>"

    def new_namespace_id(self):
        """Return a fresh namespace id (every id is its own empty namespace)."""
        return uuid.uuid4().hex

    def client(self, namespace_id=None, **kwargs):
        """Return a KVClient on ``namespace_id`` (a fresh one by default)."""
        from .client import KVClient

        kwargs.setdefault("base_url", self.base_url)
        return KVClient(self.account_id, namespace_id or self.new_namespace_id(), self.token, **kwargs)

    def alias_settings(self, namespace_id=None, **extra):
        """Return a CFKV alias dict pointing at this emulator."""
        return {"BACKEND": "cloudflare", "ACCOUNT_ID": self.account_id, "API_TOKEN": self.token,
                "NAMESPACE_ID": namespace_id or self.new_namespace_id(), "BASE_URL": self.base_url, **extra}

    def copy_namespace(self, source_id, target_id):
        """Copy every entry (value, metadata, exact expiry) of one namespace into another.

        Done in the emulator's SQLite file rather than through put(), which
        would refuse expiries less than 60 s away.
        """
        source = self.app.store(source_id)
        self.app.store(target_id)
        conn = source._db.connection()
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO kv (ns, key, value, expiration, metadata) "
                "SELECT ?, key, value, expiration, metadata FROM kv WHERE ns=?",
                (target_id, source_id),
            )

    def reset_quota(self):
        """Start a fresh simulated 5-minute API window (what the Ratelimit header counts).

        Each test gets its own, as each gets a fresh namespace: otherwise a
        long suite would drive the header towards 0 and the client would log
        that the budget is low.
        """
        self.app.reset_quota()

    def set_faults(self, **faults):
        """Inject faults until cleared.

        Names: rate_429 (share of calls answered 429), retry_after (its
        Retry-After, seconds), rate_503, slow_rate and slow_ms (a share of
        slow answers), latency_ms (added to every call), bulk_unsuccessful
        (share of keys a bulk write or delete reports as not done).
        """
        self.app.faults.update(faults)

    def clear_faults(self):
        """Turn every injected fault (and added latency) off."""
        self.app.faults.reset()

    @contextlib.contextmanager
    def faults(self, **faults):
        """Inject faults (as ``set_faults()``) inside a ``with`` block; restore the previous ones after."""
        saved = dict(self.app.faults.values)
        self.set_faults(**faults)
        try:
            yield self
        finally:
            self.app.faults.update(saved)

    def stop(self):
        """Stop serving and delete the emulator's data (safe to call twice)."""
        if self._stopped:
            return
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


_shared = None
_shared_lock = threading.Lock()


def get_emulator():
    """Return the process-wide emulator, starting it on first use; it stops at interpreter exit."""
    return _shared_emulator()[0]


def _shared_emulator():
    """Return (the process-wide emulator, whether this call started it)."""
    global _shared
    with _shared_lock:
        if _shared is not None and not _shared._stopped:
            return _shared, False
        _shared = RunningEmulator()
        atexit.register(_shared.stop)
        return _shared, True


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _identity(alias):
    """Return what makes an alias' namespace the namespace it is, or None when unknown.

    Aliases that share a namespace in the real settings (a cache and sessions
    under two prefixes, say) share one in the test too.
    """
    try:
        config = conf.alias_config(alias)
    except Exception:  # a broken alias gets its own namespace; checks report it
        return None
    backend = config.get("BACKEND")
    if backend == "cloudflare" and config.get("NAMESPACE_ID"):
        return (backend, config.get("BASE_URL"), config.get("ACCOUNT_ID"), config["NAMESPACE_ID"])
    if backend == "local":
        return (backend, str(Path(str(config.get("PATH"))).resolve()), config.get("NAMESPACE_ID") or "")
    return None


class _Activation:
    """One active override: the namespaces it made, the settings it replaced, the calls it stopped.

    ``test_code``: code objects of the test (and of wrappers that call it): a
    stopped call whose error passed through one of them has been reported.
    """

    def __init__(self, emulator, parent=None, test_code=()):
        self.emulator = emulator
        self.parent = parent
        self.test_code = {code for code in test_code if code is not None}
        self.namespaces = {}
        self.stopped = []  # KVNetworkBlocked errors raised while this was the innermost override

    def start(self):
        config = conf.get_config()
        made = {}  # identity (or parent namespace) -> new namespace id
        aliases = {}
        for alias, raw in config.items():
            if self.parent is not None and alias in self.parent.namespaces:
                source = self.parent.namespaces[alias]
                if source not in made:
                    made[source] = self.emulator.new_namespace_id()
                    self.emulator.copy_namespace(source, made[source])
                namespace = made[source]
            else:
                identity = _identity(alias) or ("alias", alias)
                namespace = made.setdefault(identity, self.emulator.new_namespace_id())
            raw = raw if isinstance(raw, dict) else {}
            keep = {name: raw[name] for name in ("TIMEOUT", "MAX_RETRIES", "DEADLINE") if name in raw}
            aliases[alias] = self.emulator.alias_settings(namespace, **keep)
            self.namespaces[alias] = namespace
        self._faults = dict(self.emulator.app.faults.values)
        self.emulator.reset_quota()
        # Re-applying CACHES makes Django rebuild its cache handler, so no
        # cache object built before the override outlives it.
        self._settings = override_settings(CFKV=aliases, CACHES=conf.setting("CACHES"))
        self._settings.enable()
        alias = "default" if "default" in aliases else next(iter(aliases), None)
        try:
            self.kv = conf.get_kv(alias) if alias else None
        except BaseException:
            self._settings.disable()
            raise
        with _stack_lock:
            if not _stack:
                transport.request_hooks.append(_guard)
            _stack.append(self)
        _count_per_request(True)

    def stop(self, *, check=True):
        __tracebackhide__ = True  # pytest: show the user's test, not this helper
        with _stack_lock:
            _stack.remove(self)
            last = not _stack
            if last:
                with contextlib.suppress(ValueError):
                    transport.request_hooks.remove(_guard)
        if last:
            _count_per_request(False)
        self._settings.disable()
        self.emulator.app.faults.update(self._faults)
        unseen = [exc for exc in self.stopped if not _reached(exc, self.test_code)]
        self.stopped = []  # their tracebacks hold frames
        if check and unseen:
            hosts = ", ".join(sorted({exc.host for exc in unseen}))
            raise KVNetworkBlocked(
                f"{len(unseen)} KV API call(s) to {hosts} were stopped during this test, and the code under "
                "test caught the error before it reached the test. " + _BLOCKED_HINT
            )


def _count_per_request(enabled):
    """Make the rate limiter write each request's counts before its response (see ShardedCounter).

    Otherwise its write lands from a background thread ~0.1 s later, in
    whichever test (or assert_kv_calls block) is running then, and closing it
    at the end of a test waits for KV's one write per second per key.
    """
    from . import ratelimit

    ratelimit.count_per_request(enabled)


def _reached(exc, codes):
    """Return True if ``exc`` propagated through a frame running one of ``codes``."""
    tb = exc.__traceback__
    if tb is None:  # unittest's assertRaises() strips it from what it caught
        return True
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False


_stack = []  # active overrides, innermost last
_stack_lock = threading.Lock()


def _guard(method, url):
    """Stop a KV call bound for a host other than loopback (a transport request hook while an override
    is active)."""
    __tracebackhide__ = True
    host = urlsplit(url).hostname or ""
    if _is_loopback(host):
        return
    error = KVNetworkBlocked(f"A KV API call to {host} was stopped: tests must not leave 127.0.0.1. "
                             + _BLOCKED_HINT)
    error.host = host
    with _stack_lock:
        if _stack:
            _stack[-1].stopped.append(error)
    raise error


_BLOCKED_HINT = (
    "Inside the cfkv fixture and override_cfkv() every CFKV alias points at the local emulator, so this "
    "call came from a client made another way (KVClient(...) built by hand, or kept from before the "
    "override). Get clients with django_cfkv.get_kv(alias) when they are used, or build them from "
    "settings.CFKV."
)


class override_cfkv(TestContextDecorator):
    """Point every ``CFKV`` alias at a fresh namespace on the emulator, then restore all.

    Use it as a context manager (``with override_cfkv() as kv:``, ``kv`` is
    the "default" alias' client), a function decorator, or a decorator for a
    ``unittest.TestCase`` class. On a class, one namespace per alias is made
    for the class before ``setUpClass()`` (so ``setUpTestData()`` writes to
    it), and each test gets its own copy of it: tests see the class' data and
    never each other's writes, as with database rows under Django's TestCase.
    ``cls.cfkv`` / ``self.cfkv`` are the "default" alias' client.

    ``emulator`` defaults to a process-wide one started on first use.
    Faults injected inside the override are turned off when it ends.
    """

    def __init__(self, *, emulator=None):
        super().__init__()
        self.emulator = emulator
        self._active = []

    def _activate(self, parent=None, test_code=()):
        activation = _Activation(self.emulator or get_emulator(), parent, test_code)
        activation.start()
        return activation

    def enable(self, test_code=()):
        activation = self._activate(test_code=test_code)
        self._active.append(activation)
        return activation.kv

    def disable(self, *, check=True):
        __tracebackhide__ = True
        self._active.pop().stop(check=check)

    def __enter__(self):
        # The code around the with block is the "test": errors it saw were reported.
        return self.enable(test_code=[sys._getframe(1).f_code])

    def __exit__(self, exc_type, exc_value, traceback):
        __tracebackhide__ = True
        # With an exception already on its way, a report of stopped calls would only hide it.
        self.disable(check=exc_type is None)

    def decorate_class(self, cls):
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            raise TypeError("override_cfkv() decorates unittest.TestCase subclasses and functions.")
        own_setup_class = cls.__dict__.get("setUpClass")
        own_setup = cls.__dict__.get("setUp")
        override = self

        def setUpClass(klass):
            activation = override._activate(test_code=[setUpClass.__code__])
            klass.addClassCleanup(activation.stop)
            klass._cfkv_activation, klass.cfkv = activation, activation.kv
            if own_setup_class is not None:
                own_setup_class.__func__(klass)
            else:
                super(cls, klass).setUpClass()

        def setUp(test):
            method = getattr(type(test), test._testMethodName, None)
            activation = override._activate(parent=getattr(type(test), "_cfkv_activation", None),
                                            test_code=[setUp.__code__, getattr(method, "__code__", None)])
            test.addCleanup(activation.stop)
            test.cfkv = activation.kv
            if own_setup is not None:
                own_setup(test)
            else:
                super(cls, test).setUp()

        cls.setUpClass = classmethod(setUpClass)
        cls.setUp = setUp
        return cls


class KVCalls:
    """KV API calls made in this process since creation or ``reset()``, by endpoint.

    Every HTTP attempt counts, retries included: each one costs a call of the
    account's 1,200 per 5 minutes. Endpoints: get, get_metadata, put, delete,
    list, bulk_get, bulk_put, bulk_delete, namespaces.
    """

    def __init__(self):
        self._end = None
        self.reset()

    def reset(self):
        """Count from now on."""
        self._start = transport.calls.snapshot()
        self._end = None

    def stop(self):
        """Freeze the counts."""
        self._end = transport.calls.snapshot()

    @property
    def counts(self):
        """Return ``{endpoint: calls}`` for endpoints called at least once."""
        now = self._end if self._end is not None else transport.calls.snapshot()
        counts = {name: n - self._start.get(name, 0) for name, n in sorted(now.items())}
        return {name: n for name, n in counts.items() if n > 0}

    @property
    def total(self):
        return sum(self.counts.values())

    def __getitem__(self, endpoint):
        return self.counts.get(endpoint, 0)

    def __str__(self):
        return ", ".join(f"{name}: {n}" for name, n in self.counts.items()) or "none"

    def __repr__(self):
        return f"<KVCalls total={self.total} ({self})>"


def connections_opened(kv):
    """Return how many TCP connections the client ``kv`` (a KVClient, or its transport) has opened
    since its connection pool was made: a number that stays small however many calls it makes
    shows that connections are reused. Each urllib3 pool counts the connections it makes."""
    session = getattr(kv, "transport", kv).session
    adapters = {id(adapter): adapter for adapter in session.adapters.values()}.values()
    pools = [adapter.poolmanager.pools[key] for adapter in adapters for key in adapter.poolmanager.pools.keys()]
    return sum(pool.num_connections for pool in pools)


@contextlib.contextmanager
def assert_kv_calls(num):
    """Fail unless the block makes exactly ``num`` KV API calls (retries included).

    Like ``assertNumQueries()`` for SQL. Yields a ``KVCalls`` to inspect.
    """
    calls = KVCalls()
    yield calls
    calls.stop()
    if calls.total != num:
        raise AssertionError(
            f"{calls.total} != {num} : {calls.total} KV API calls made, {num} expected. "
            f"Calls by endpoint: {calls}."
        )


if pytest is not None:

    @pytest.fixture(scope="session")
    def cfkv_emulator():
        """The KV REST emulator on a free 127.0.0.1 port for the whole test session."""
        emulator, started = _shared_emulator()
        yield emulator
        if started:  # else whoever started it (or interpreter exit) stops it
            emulator.stop()

    @pytest.fixture
    def cfkv(cfkv_emulator, request):
        """Point every CFKV alias at a fresh emulator namespace for one test; yield the "default" client."""
        override = override_cfkv(emulator=cfkv_emulator)
        __tracebackhide__ = True
        failed_before = request.session.testsfailed
        kv = override.enable(test_code=[request.function.__code__])
        try:
            yield kv
        finally:
            # Stopped calls the test saw, or that failed another fixture, are reported already.
            override.disable(check=request.session.testsfailed == failed_before)

    @pytest.fixture
    def cfkv_calls():
        """Count the KV API calls the test makes: ``cfkv_calls.total``, ``cfkv_calls["get"]``."""
        return KVCalls()
