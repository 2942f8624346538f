"""Blocking KV calls from async code: the worker threads they run in, and the async twins that use them.

Some KV calls block: the embedded store's SQLite calls (C calls that hold the thread), and the REST
client's when the ``async`` extra (aiohttp) is not installed. From async code they run here, never
on the event loop, so other requests go on while one waits.

One pool for the process, whose threads live as long as it does, rather than each event loop's
default executor (``asyncio.to_thread``): SQLite connections are per thread (see
:mod:`django_cfkv.local.database`), so a long-lived thread keeps its open connection across
event loops and requests, where a loop's executor would open new ones for every
``asyncio.run()`` (every ``async_to_sync`` call) and leave them to the garbage collector. In WAL
mode SQLite lets the threads read at once and queues their writes on the file's lock, each
within ``BUSY_TIMEOUT``. A child process after a fork builds its own pool.

:class:`AsyncTwins` gives a class with the blocking KV interface its async twins this way
(LocalKV has them from it); :class:`InThreads` gives them to a KV object of a class that has none.
"""

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .types import KeyPage, Paging, SyncKV, ValueWithMetadata

MAX_WORKERS = 32  # blocking KV calls awaited at once; more wait for a thread
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pid: int | None = None


def executor() -> ThreadPoolExecutor:
    """Return this process's pool of worker threads, made on first use (and again after a fork)."""
    global _pool, _pid
    if _pool is None or _pid != os.getpid():
        with _lock:
            if _pool is None or _pid != os.getpid():
                _pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="django-cfkv")
                _pid = os.getpid()
    return _pool


async def run(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Await ``function(*args, **kwargs)`` run in a worker thread, with the caller's context variables."""
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor(), call)


class AsyncTwins(Paging):
    """The KV interface's async twins, each awaiting its blocking namesake run in a worker thread.

    They call the object's own methods, so a subclass that overrides ``get`` is
    awaited through ``aget`` too. ``aiter_keys`` follows ``alist_keys`` page by page.
    """

    async def aget(self: SyncKV, key: str) -> bytes | None:
        return await run(self.get, key)

    async def aget_with_metadata(self: SyncKV, key: str) -> ValueWithMetadata | None:
        return await run(self.get_with_metadata, key)

    async def aget_metadata(self: SyncKV, key: str) -> Any:
        return await run(self.get_metadata, key)

    async def aget_many(self: SyncKV, keys: Iterable[str]) -> dict[str, bytes]:
        return await run(self.get_many, list(keys))  # read here: a generator is not the thread's to consume

    async def aput(self: SyncKV, key: str, value: bytes | str, *, expiration: float | None = None,
                   expiration_ttl: float | None = None, metadata: Any = None) -> None:
        await run(self.put, key, value, expiration=expiration, expiration_ttl=expiration_ttl, metadata=metadata)

    async def aput_many(self: SyncKV, items: Iterable[Mapping[str, Any]]) -> None:
        await run(self.put_many, list(items))

    async def adelete(self: SyncKV, key: str) -> None:
        await run(self.delete, key)

    async def adelete_many(self: SyncKV, keys: Iterable[str]) -> None:
        await run(self.delete_many, list(keys))

    async def alist_keys(self: SyncKV, prefix: str | None = None, limit: int = 1000,
                         cursor: str | None = None) -> KeyPage:
        return await run(self.list_keys, prefix, limit, cursor)


class InThreads(AsyncTwins):
    """A KV object whose class has no async twins, given them: every other attribute is the object's own.

    ``get_kv()`` wraps a ``BACKEND`` class this way when it has no ``aget``, so the cache,
    sessions and rate limiter can await any KV object.
    """

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    def __repr__(self) -> str:
        return f"InThreads({self.kv!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    def iter_keys(self, prefix: str | None = None) -> Any:
        return self.kv.iter_keys(prefix)  # the object's own, not Paging's
