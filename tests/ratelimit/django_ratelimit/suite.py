"""django-ratelimit's own tests (4.1.0: ``django_ratelimit/tests.py``), loaded from the suite fetched during
set-up (tests/third_party.py), to run on ``django_cfkv.ratelimit``.

Adaptation, and nothing more:

* A name map (:data:`NAME_MAP`). The module imports ``django_ratelimit`` names; while it loads and while its
  tests run, those names are ours: ``ratelimit``, ``Ratelimited``, ``is_ratelimited``, ``get_usage`` and
  ``_split_rate`` (``parse_rate``). Its ``_get_ip(request)`` is the address the limiter counts a request by.
  The module itself is ``django_ratelimit.tests``, the name its dotted-path settings use.
* Settings pointing at our backends (conftest.py), as django-ratelimit's ``test_settings.py`` points them at
  its caches.

The tests that cannot pass here are listed, each with its reason, in tests/third_party_skips.txt (the reader
of tests/cache/django_redis/suite.py, under the suite name ``django-ratelimit``).
"""

import contextlib
import importlib.util
import inspect
import types
import unittest

from django.http import HttpRequest

from django_cfkv.exceptions import Ratelimited
from django_cfkv.ratelimit import (
    ALL,
    UNSAFE,
    get_limiter,
    get_usage,
    is_ratelimited,
    parse_rate,
    ratelimit,
    request_address,
)
from tests.support import peer_suites
from tests.support.peer_suites import ExpectedFailure, expected_failures
from tests.third_party import django_ratelimit_tests_file

SUITE = "django-ratelimit"
MODULE = "django_ratelimit.tests"
LOCAL_SUFFIX = "OnLocalKV"  # the name of a test class run again on the embedded store


def _get_ip(request: HttpRequest) -> str:
    """django-ratelimit's ``_get_ip``: the address a request counts by (its network, under the masks)."""
    return request_address(request, get_limiter())


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


_core = _module("django_ratelimit.core", get_usage=get_usage, is_ratelimited=is_ratelimited,
                _split_rate=parse_rate, _get_ip=_get_ip)
_decorators = _module("django_ratelimit.decorators", ratelimit=ratelimit)
_exceptions = _module("django_ratelimit.exceptions", Ratelimited=Ratelimited)

NAME_MAP: dict[str, types.ModuleType] = {
    "django_ratelimit": _module("django_ratelimit", ALL=ALL, UNSAFE=UNSAFE, core=_core, decorators=_decorators,
                                exceptions=_exceptions),
    "django_ratelimit.core": _core,
    "django_ratelimit.decorators": _decorators,
    "django_ratelimit.exceptions": _exceptions,
}


def names_mapped() -> contextlib.AbstractContextManager[None]:
    """Make the name map's modules (and, once loaded, the test module) importable inside the block."""
    return peer_suites.names_mapped(NAME_MAP)


def load() -> types.ModuleType:
    """Return django-ratelimit's test module, imported through the name map (once per process)."""
    if MODULE not in NAME_MAP:
        with names_mapped():
            spec = importlib.util.spec_from_file_location(MODULE, django_ratelimit_tests_file())
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        NAME_MAP[MODULE] = module  # its settings name its functions by dotted path: importable while tests run
        NAME_MAP["django_ratelimit"].tests = module  # type: ignore[attr-defined]
    return NAME_MAP[MODULE]


def suite_classes() -> dict[str, type[unittest.TestCase]]:
    """Return the module's test classes by name, for a module of ours to hold, so that pytest collects them."""
    module = load()
    return {name: cls for name, cls in vars(module).items()
            if inspect.isclass(cls) and issubclass(cls, unittest.TestCase) and cls.__module__ == MODULE}


def listed() -> list[ExpectedFailure]:
    """Return the skip list's lines for this suite, after checking each names a test the suite has."""
    found = expected_failures(SUITE)
    classes = suite_classes()
    for entry in found:
        file, _, name = entry.path.partition("::")
        cls_name, _, method = name.partition("::")
        if file != "tests.py" or not callable(getattr(classes.get(cls_name), method, None)):
            raise LookupError(f"third_party_skips.txt lists {entry.test}, which django-ratelimit's suite does not "
                              "have: remove the line.")
    return found
