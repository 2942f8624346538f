"""The async page: one ``async def`` view that awaits a session value and two cache reads together.

Under an ASGI server (``make run-asgi``) the view runs on the event loop. The
three reads are independent, so it starts them at once with
``asyncio.gather`` and waits about as long as the slowest of them, not their
sum. The page shows when each read started and ended, and how each was
awaited: on the event loop, or as a blocking call in a worker thread.
"""

import asyncio
import time

from django.contrib.sessions.backends.base import SessionBase
from django.core.cache import cache, caches
from django.core.cache.backends.base import BaseCache
from django.core.handlers.asgi import ASGIRequest
from django.shortcuts import render

from django_cfkv import conf
from django_cfkv.transport import calls, native_async

# Two entries a page might assemble from: independent of each other and of the session.
CACHED = ("async-demo:header", "async-demo:sidebar")


async def page(request):
    """Await the session's visit count and two cache entries together; show each read's timing."""
    before = calls.total
    started = time.perf_counter()
    session, cache_how = _session_how(request.session), _cache_how()
    reads = await asyncio.gather(
        _timed(started, "request.session.aget(\"visits\")", session, request.session.aget("visits", 0)),
        *(_timed(started, f"cache.aget(\"{key}\")", cache_how, cache.aget(key)) for key in CACHED),
    )
    waited_ms = (time.perf_counter() - started) * 1000
    api_calls = calls.total - before
    # After the gather: the user is read from the session the gather has just loaded (no KV call).
    user = await request.auser()
    missing = {key: {"stored_at": time.time()} for read, key in zip(reads[1:], CACHED, strict=True)
               if read["value"] is None}
    if missing:
        await cache.aset_many(missing)  # one bulk write: the next view reads them back
    return render(request, "demo/async.html", {
        "user": user,  # resolved above: the template must not load it again, synchronously, on the event loop
        "asgi": isinstance(request, ASGIRequest),
        "reads": reads,
        "waited_ms": waited_ms,
        "sum_ms": sum(read["ms"] for read in reads),
        "slowest_ms": max(read["ms"] for read in reads),
        "api_calls": api_calls,
        "stored": sorted(missing),
    })


async def _timed(started, label, how, awaitable):
    """Await ``awaitable``; return its value with when it started and how long it took (ms)."""
    began = time.perf_counter()
    value = await awaitable
    ended = time.perf_counter()
    return {"label": label, "how": how, "value": value,
            "start_ms": (began - started) * 1000, "ms": (ended - began) * 1000}


def _session_how(session):
    """Say how ``session.aload()`` is awaited: by this store natively, or by Django's default in a thread."""
    if type(session).aload is SessionBase.aload:
        return {"native": False, "text": "Django's default aload(): the blocking load() in a worker thread"}
    return _kv_how()


def _cache_how():
    if type(caches["default"]).aget is BaseCache.aget:
        return {"native": False, "text": "Django's default aget(): the blocking get() in a worker thread"}
    return _kv_how()


def _kv_how(alias="default"):
    """Say how a KV call is awaited on this alias: on the event loop, or in one of django-cfkv's threads."""
    if conf.alias_config(alias)["BACKEND"] == "local":
        return {"native": False, "text": "LocalKV: its SQLite call in a worker thread (nothing to await)"}
    if native_async():
        return {"native": True, "text": "awaited on the event loop, no thread (aiohttp)"}
    return {"native": False, "text": "the blocking call in a worker thread (the async extra is not installed)"}
