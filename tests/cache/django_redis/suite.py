"""django-redis' own tests (7.0.0: ``test_backend.py``, ``test_cache_options.py``, ``test_session.py``), loaded
from the suite fetched during set-up (tests/third_party.py), to run on CloudflareKVCache.

Adaptation, and nothing more:

* A name map. The modules import ``django_redis`` and ``redis`` names; while they load and while their tests
  run, those names are ours (:data:`NAME_MAP`): ``RedisCache`` is CloudflareKVCache, redis' ``ConnectionError``
  is KVConnectionError. django-redis' tests ask ``cache.client`` which Redis client class and serializer the
  settings chose (``isinstance(cache.client, ShardClient)``, ``cache.client._serializer``). CloudflareKVCache
  has no client object; during each test its ``client`` is a :class:`DefaultClient` that answers just that:
  the default client (never sharded, never herd) and the SERIALIZER. ``test_cache_options`` is importable
  under its own name, as its KEY_FUNCTION setting names it.
* Settings pointing at our backend (conftest.py), as django-redis' ``tests/settings/*.py`` do at Redis, and
  the fixtures its ``conftest.py`` and pytest-mock give (``cache``, ``mocker``; pytest-django's ``settings``).
* Their ``time.sleep()`` past a 1-3 s timeout advances django_cfkv's clock instead of waiting, so the suite
  runs in seconds; real-time expiry is tested by tests/cache/test_backend.py.

The tests that cannot pass on KV are listed, each with its reason, in tests/third_party_skips.txt (see
:func:`expected_failures`).
"""

import contextlib
import importlib.util
import sys
import time
import types
from pathlib import Path

from django_cfkv.cache import CloudflareKVCache
from django_cfkv.exceptions import KVConnectionError
from tests.support import peer_suites
from tests.support.peer_suites import SKIP_LIST, ExpectedFailure
from tests.third_party import django_redis_tests_dir

SUITE = "django-redis"
MODULES = ("test_backend", "test_cache_options", "test_session")

# Each test runs on every store and entry format (its OPTIONS): "<store>-<format>".
FORMATS = {
    "pickle": {},
    "json": {"SERIALIZER": "json"},
    "zlib": {"COMPRESS_MIN_BYTES": 0},  # pickle, every entry compressed
}
STORES = ("local", "emulator")
CONFIGURATIONS = [f"{store}-{fmt}" for store in STORES for fmt in FORMATS]


# The name map: django-redis' and redis' names, as they apply to CloudflareKVCache.

class PickleSerializer:
    """What ``cache.client._serializer`` is with SERIALIZER "pickle"."""


class JSONSerializer:
    """What ``cache.client._serializer`` is with SERIALIZER "json"."""


class MSGPackSerializer:
    """django-redis' msgpack serializer: no CloudflareKVCache uses it."""


class DefaultClient:
    """``cache.client`` of a CloudflareKVCache with ``options``: the default client, saying which serializer
    the cache uses."""

    def __init__(self, options: dict[str, object]) -> None:
        self._serializer = JSONSerializer() if options.get("SERIALIZER") == "json" else PickleSerializer()


class ShardClient:
    """django-redis' sharding client: no CloudflareKVCache is one."""


class HerdClient:
    """django-redis' herd client: no CloudflareKVCache is one."""


def _module(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


_herd = _module("django_redis.client.herd", HerdClient=HerdClient)
_serializers = {
    "json": _module("django_redis.serializers.json", JSONSerializer=JSONSerializer),
    "msgpack": _module("django_redis.serializers.msgpack", MSGPackSerializer=MSGPackSerializer),
    "pickle": _module("django_redis.serializers.pickle", PickleSerializer=PickleSerializer),
}
_redis_exceptions = _module("redis.exceptions", ConnectionError=KVConnectionError)

_cache = _module("django_redis.cache", RedisCache=CloudflareKVCache)
_client = _module("django_redis.client", DefaultClient=DefaultClient, ShardClient=ShardClient, herd=_herd)
_serializers_package = _module("django_redis.serializers", **_serializers)

NAME_MAP: dict[str, types.ModuleType] = {
    # A package holds its submodules as attributes too: mock.patch("django_redis.cache...") looks them up so.
    "django_redis": _module("django_redis", cache=_cache, client=_client, serializers=_serializers_package),
    "django_redis.cache": _cache,
    "django_redis.client": _client,
    "django_redis.client.herd": _herd,
    "django_redis.serializers": _serializers_package,
    **{f"django_redis.serializers.{name}": module for name, module in _serializers.items()},
    "redis": _module("redis", exceptions=_redis_exceptions, ConnectionError=KVConnectionError),
    "redis.exceptions": _redis_exceptions,
}


class VirtualTime:
    """``time`` for django-redis' test modules: ``sleep()`` moves ``offset`` on instead of waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def names_mapped() -> contextlib.AbstractContextManager[None]:
    """Make the name map's modules importable inside the block; restore what those names were after."""
    return peer_suites.names_mapped(NAME_MAP)


def load() -> dict[str, types.ModuleType]:
    """Return django-redis' test modules by name, imported through the name map (once per process)."""
    folder = django_redis_tests_dir()
    loaded = {}
    with names_mapped():
        for name in MODULES:
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module  # test_cache_options' KEY_FUNCTION names it so
                spec.loader.exec_module(module)
            loaded[name] = sys.modules[name]
    return loaded


def exported(name: str) -> dict[str, object]:
    """Return what the test module ``name`` defines and imports (its tests and fixtures among them), for a
    module of ours to hold, so that pytest collects them there."""
    return {key: value for key, value in vars(load()[name]).items() if not key.startswith("__")}


# The list of tests that cannot pass here.

def expected_failures(path: Path = SKIP_LIST) -> list[ExpectedFailure]:
    """Return the skip list's lines for django-redis' suite."""
    return peer_suites.expected_failures(SUITE, path)


def check_listed(listed: list[ExpectedFailure], modules: dict[str, types.ModuleType]) -> None:
    """Raise if a listed test is not in the suite (any more), or names a configuration that does not exist."""
    for entry in listed:
        file, *names = entry.path.split("::")
        module = modules.get(file.removesuffix(".py"))
        target: object = module
        for name in names:
            target = getattr(target, name, None)
        if module is None or not names or not callable(target):
            raise LookupError(f"{SKIP_LIST.name} lists {entry.test}, which django-redis' suite does not have: "
                              "remove the line.")
        if entry.configuration is not None and entry.configuration not in CONFIGURATIONS:
            raise LookupError(f"{SKIP_LIST.name} lists {entry.test}: no configuration {entry.configuration!r} "
                              f"(there are {', '.join(CONFIGURATIONS)}).")
