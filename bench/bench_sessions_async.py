"""An async view's session and two KV reads, awaited together, against an emulator adding 50 ms to every call.

Cases, interleaved in one event loop, each against the same stored session and keys:
gathered (``asyncio.gather`` of the session's ``aload`` and two ``aget``; target <= 1.2 round
trips), the same three awaited one after another (3 round trips), and the session loaded as
Django's default async methods do, in a thread (``sync_to_async(load)``) before the two reads.
The figure is the wall time over one ``aget`` (one round trip).
"""

import asyncio
import importlib.util
import uuid

from asgiref.sync import sync_to_async
from django.test import override_settings

from django_cfkv import conf
from django_cfkv.sessions import SessionStore

from .common import ACCOUNT, TOKEN, ainterleaved, emulator, row

LATENCY_MS = 50


def run(smoke=False):
    if importlib.util.find_spec("aiohttp") is None:
        return [row("sessions_async", "session load and two reads", 0, "",
                    note="aiohttp (the async extra) not installed: not measured")]
    with emulator("--latency-ms", str(LATENCY_MS)) as base_url:
        alias = {"BACKEND": "cloudflare", "ACCOUNT_ID": ACCOUNT, "NAMESPACE_ID": uuid.uuid4().hex,
                 "API_TOKEN": TOKEN, "BASE_URL": base_url}
        with override_settings(CFKV={"default": alias}, SESSION_ENGINE="django_cfkv.sessions"):
            try:
                return asyncio.run(_run(2 if smoke else 10))
            finally:
                conf.reset()


async def _run(n):
    kv = await conf.aget_kv()
    await kv.aput_many([{"key": k, "value": "v"} for k in ("page:a", "page:b")])
    session = SessionStore()
    session["cart"] = [1, 2, 3]
    await session.asave()
    key = session.session_key

    async def one():
        await kv.aget("page:a")

    async def gathered():
        await asyncio.gather(SessionStore(key).aload_now(), kv.aget("page:a"), kv.aget("page:b"))

    async def sequential():
        await SessionStore(key).aload_now()
        await kv.aget("page:a")
        await kv.aget("page:b")

    async def load_in_thread():
        await sync_to_async(SessionStore(key).load_now)()
        await asyncio.gather(kv.aget("page:a"), kv.aget("page:b"))

    cases = {"one": one, "gathered": gathered, "sequential": sequential, "thread": load_in_thread}
    for fn in cases.values():  # warm up: connections for three at once, the thread
        await fn()
    t = await ainterleaved({name: (lambda i, fn=fn: fn()) for name, fn in cases.items()}, n, 3)
    await kv.aclose()
    base = t["one"][0] * 1e3
    rows = []
    for name, label, target in (("gathered", "gathered (native)", 1.2),
                                ("sequential", "one after another", None),
                                ("thread", "load in a thread (Django's default), then the reads gathered", None)):
        value = t[name][0] * 1e3
        rows.append(row("sessions_async", f"session aload + 2 aget, {label}, at {LATENCY_MS} ms/call", value, "ms",
                        baseline="one aget", baseline_value=base,
                        target=f"<= {target} round trips" if target else None,
                        ok=value <= base * target if target else None,
                        note=f"{value / base:.2f} round trips"))
    return rows
