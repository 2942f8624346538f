"""bench_asgi's site: one page, a session load and two cache reads awaited together, written three ways.

``/native/`` awaits ``SessionStore.aload()`` and ``cache.aget()`` as an async
view should; ``/wrapped/`` awaits the blocking ``load()`` and ``get()`` each
wrapped in ``sync_to_async`` (Django's default for a backend without async
methods of its own); ``/no-kv/`` is the same view without KV. Each answers
what it read, so the bench can check every path read the same thing.
"""

import asyncio
import os

from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.asgi_settings")
application = get_asgi_application()

from django.contrib.sessions.backends.base import SessionBase  # noqa: E402  (after settings are loaded)
from django.core.cache import cache, caches  # noqa: E402
from django.core.cache.backends.base import BaseCache  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from django_cfkv.sessions import SessionStore  # noqa: E402
from django_cfkv.transport import native_async  # noqa: E402

KEYS = ("bench:header", "bench:sidebar")


def _answer(session, header, sidebar):
    return JsonResponse({"visits": session.get("visits"), "header": header, "sidebar": sidebar})


async def native(request):
    """Await the session load and the two cache reads together, through their async methods."""
    store = SessionStore(request.COOKIES.get("sessionid"))
    session, header, sidebar = await asyncio.gather(store.aload(), cache.aget(KEYS[0]), cache.aget(KEYS[1]))
    return _answer(session, header, sidebar)


async def wrapped(request):
    """The same, with the blocking calls wrapped in ``sync_to_async`` as Django's defaults wrap them."""
    store = SessionStore(request.COOKIES.get("sessionid"))
    session, header, sidebar = await asyncio.gather(
        sync_to_async(store.load)(), sync_to_async(cache.get)(KEYS[0]), sync_to_async(cache.get)(KEYS[1]))
    return _answer(session, header, sidebar)


async def no_kv(request):
    """The same answer with no KV call: what Django and the server cost."""
    return _answer({"visits": 1}, "header", "sidebar")


def _prepare():
    store = SessionStore()
    store["visits"] = 1
    store.create()
    cache.set_many({KEYS[0]: "header", KEYS[1]: "sidebar"}, None)
    return store.session_key


async def prepare(request):
    """Store the session and the two cache entries the pages read; answer the session key."""
    return JsonResponse({"session": await sync_to_async(_prepare)()})


async def paths(request):
    """Say which of the page's reads await natively, and which run a blocking call in a thread."""
    kv = "event loop" if native_async() else "thread (no async extra)"
    return JsonResponse({
        "session aload": "thread (Django's default)" if type(SessionStore(None)).aload is SessionBase.aload else kv,
        "cache aget": "thread (Django's default)" if type(caches["default"]).aget is BaseCache.aget else kv,
    })


urlpatterns = [
    path("native/", native),
    path("wrapped/", wrapped),
    path("no-kv/", no_kv),
    path("prepare/", prepare),
    path("paths/", paths),
]
