"""override_cfkv(): every CFKV alias on a fresh emulator namespace, for one test, class or block.

Entering and leaving an override changes the ``CFKV`` setting, so Django sends ``setting_changed``:
``django_cfkv.conf`` then drops pooled clients and runs what every module keeping state about a
namespace (a near cache, limiter memory) registered with ``conf.on_reset()``, so that nothing one test
writes is seen by the next. Django's cache handler is rebuilt as well (``CACHES`` is re-applied).

While an override is active the rate limiter counts per request (see :func:`_count_per_request`), and
the loopback guard (:mod:`.guards`) stops any KV call bound for another host.
"""

import sys
import unittest
from collections.abc import Iterable
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any, TypeVar

from django.test.utils import TestContextDecorator, override_settings

from .. import conf
from ..types import KV
from .emulator import RunningEmulator, get_emulator
from .guards import Watch, unseen_error

_Case = TypeVar("_Case", bound=type[unittest.TestCase])
_KEPT = ("TIMEOUT", "MAX_RETRIES", "DEADLINE")  # the user's retry policy holds in tests too


def _identity(alias: str) -> tuple[Any, ...] | None:
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


def _count_per_request(enabled: bool) -> None:
    """Make the rate limiter write each request's counts before its response (see ShardedCounter).

    Otherwise its write lands from a background thread ~0.1 s later, in
    whichever test (or assert_kv_calls block) is running then, and closing it
    at the end of a test waits for KV's one write per second per key.
    """
    from .. import ratelimit

    ratelimit.count_per_request(enabled)


class Activation:
    """One active override: the namespaces it made, the settings it replaced, the calls it stopped.

    ``parent``: the class-wide activation a test's copies its namespaces from.
    """

    def __init__(self, emulator: RunningEmulator, parent: "Activation | None" = None,
                 test_code: Iterable[CodeType | None] = ()) -> None:
        self.emulator = emulator
        self.parent = parent
        self.watch = Watch(test_code)
        self.namespaces: dict[str, str] = {}  # alias -> namespace id on the emulator
        self.kv: KV | None = None

    def _namespace_settings(self) -> dict[str, dict[str, Any]]:
        """Return the CFKV setting of this activation, filling ``self.namespaces``."""
        made: dict[Any, str] = {}  # identity (or parent namespace) -> new namespace id
        aliases = {}
        for alias, raw in conf.get_config().items():
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
            aliases[alias] = self.emulator.alias_settings(namespace, **{k: raw[k] for k in _KEPT if k in raw})
            self.namespaces[alias] = namespace
        return aliases

    def start(self) -> None:
        aliases = self._namespace_settings()
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
        self.watch.start()
        _count_per_request(True)

    def stop(self, *, check: bool = True) -> None:
        __tracebackhide__ = True  # pytest: show the user's test, not this helper
        if self.watch.stop():
            _count_per_request(False)
        self._settings.disable()
        self.emulator.app.faults.update(self._faults)
        unseen = self.watch.unseen()
        if check and unseen:
            raise unseen_error(unseen)


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

    def __init__(self, *, emulator: RunningEmulator | None = None) -> None:
        super().__init__()
        self.emulator = emulator
        self._active: list[Activation] = []

    def _activate(self, parent: Activation | None = None, test_code: Iterable[CodeType | None] = ()
                  ) -> Activation:
        activation = Activation(self.emulator or get_emulator(), parent, test_code)
        activation.start()
        return activation

    def enable(self, test_code: Iterable[CodeType | None] = ()) -> KV | None:
        activation = self._activate(test_code=test_code)
        self._active.append(activation)
        return activation.kv

    def disable(self, *, check: bool = True) -> None:
        __tracebackhide__ = True
        self._active.pop().stop(check=check)

    def __enter__(self) -> KV | None:  # type: ignore[override]  # (the stubs type isolate_apps' answer)
        # The code around the with block is the "test": errors it saw were reported.
        return self.enable(test_code=[sys._getframe(1).f_code])

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        __tracebackhide__ = True
        # With an exception already on its way, a report of stopped calls would only hide it.
        self.disable(check=exc_type is None)

    def decorate_class(self, cls: _Case) -> _Case:
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            raise TypeError("override_cfkv() decorates unittest.TestCase subclasses and functions.")
        own_setup_class = cls.__dict__.get("setUpClass")
        own_setup = cls.__dict__.get("setUp")
        override = self
        test_class: type[unittest.TestCase] = cls

        def setUpClass(klass: type[unittest.TestCase]) -> None:
            activation = override._activate(test_code=[setUpClass.__code__])
            klass.addClassCleanup(activation.stop)
            holder: Any = klass  # the class carries its activation (each test's parent) and client
            holder._cfkv_activation, holder.cfkv = activation, activation.kv
            if own_setup_class is not None:
                own_setup_class.__func__(klass)
            else:
                super(test_class, klass).setUpClass()  # type: ignore[misc]  # (the decorated class, not TestCase)

        def setUp(test: unittest.TestCase) -> None:
            method = getattr(type(test), test._testMethodName, None)
            activation = override._activate(parent=getattr(type(test), "_cfkv_activation", None),
                                            test_code=[setUp.__code__, getattr(method, "__code__", None)])
            test.addCleanup(activation.stop)
            holder: Any = test
            holder.cfkv = activation.kv
            if own_setup is not None:
                own_setup(test)
            else:
                super(test_class, test).setUp()  # type: ignore[misc]

        cls.setUpClass = classmethod(setUpClass)  # type: ignore[assignment]
        cls.setUp = setUp  # type: ignore[assignment]
        return cls
