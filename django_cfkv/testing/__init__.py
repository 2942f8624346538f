"""Test helpers: run a project's tests against the KV emulator, offline.

* pytest plugin (:mod:`.plugin`, registered through the ``pytest11`` entry point, inert until a
  test asks for a fixture): ``cfkv_emulator`` (session), ``cfkv`` and ``cfkv_calls`` (per test).
* Django/unittest: ``override_cfkv()`` (decorator for functions and TestCase classes, or a context
  manager; :mod:`.override`) and ``assert_kv_calls(n)`` (:mod:`.calls`).

While an override is active every ``CFKV`` alias points at a fresh namespace on an in-process
emulator listening on 127.0.0.1 (:mod:`.emulator`), and any KV call bound for another host is
stopped before it is sent (``KVNetworkBlocked``; :mod:`.guards`).

The rate limiter counts per request while an override is active: each request's list and write
happen before its response, independent of the clock, so ``assert_kv_calls()`` and ``cfkv_calls``
count them in the request that made them, and nothing waits when the override ends.

Importing this package touches no settings and starts nothing.
"""

from .calls import KVCalls, assert_kv_calls, connections_opened
from .emulator import ACCOUNT_ID, RunningEmulator, get_emulator
from .guards import KVNetworkBlocked
from .override import override_cfkv

__all__ = [
    "ACCOUNT_ID", "KVCalls", "KVNetworkBlocked", "RunningEmulator", "assert_kv_calls", "connections_opened",
    "get_emulator", "override_cfkv",
]

try:  # the pytest fixtures stay importable from here, as they were before the plugin had its own module
    from .plugin import cfkv, cfkv_calls, cfkv_emulator  # noqa: F401
except ImportError:  # no pytest: the unittest helpers work without it
    pass
