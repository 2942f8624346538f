"""The entries of one cache in its namespace: read (through the near cache when there is one),
decoded (refusing what this cache may not read, logged), written with their metadata, deleted.

Reads check each entry's exact expiry; KV's own TTL (at least 60 s) only cleans up.
"""

import asyncio
import logging
import threading
import weakref
from collections.abc import Hashable
from typing import Any

from .. import clock, metadata
from ..conf import aget_kv, get_kv
from ..exceptions import KVAPIError, KVError, KVValueError
from ..nearcache import NearCache, NearKV, near_cache
from .codec import Entry, EntryCodec, SignatureError, parse_fields
from .keys import fingerprint
from .plans import Call, KVSource, Plan, arun, run

logger = logging.getLogger("django_cfkv.cache")
#: Entries refused for their signature: someone without SECRET_KEY wrote (or moved) them.
security_logger = logging.getLogger("django.security.SuspiciousCacheEntry")

# Read-modify-write operations (add, touch, incr) take their key's lock, so threads of one
# process never interleave them. Other processes are not covered: KV has no compare-and-set.
# Their async twins take an asyncio lock of their key instead, one set per event loop: coroutines of
# one loop never interleave them; other loops and threads are as other processes. (A thread's lock
# held across an await was tried and left: threads' waits starve a coroutine that may only poll it, a
# loop closed or stopped with its coroutine holding the key holds it from every thread, and a blocking
# call in the loop's own thread would deadlock.)
_key_locks = [threading.Lock() for _ in range(64)]
_akey_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[asyncio.Lock]]" = weakref.WeakKeyDictionary()


def bulk_refused(exc: KVError) -> bool:
    """Return True if ``exc`` is KV refusing a bulk read because a value in it is binary (not this cache's)."""
    return isinstance(exc, KVValueError) or (isinstance(exc, KVAPIError) and exc.status == 400)


def key_lock(kv_key: str) -> threading.Lock:
    """Return the lock this process's read-modify-writes of ``kv_key`` take."""
    return _key_locks[hash(kv_key) % len(_key_locks)]


def akey_lock(kv_key: str) -> asyncio.Lock:
    """Return the lock the running event loop's read-modify-writes of ``kv_key`` take."""
    loop = asyncio.get_running_loop()
    locks = _akey_locks.get(loop)
    if locks is None:
        locks = _akey_locks.setdefault(loop, [asyncio.Lock() for _ in range(len(_key_locks))])
    return locks[hash(kv_key) % len(locks)]


class Entries(KVSource):
    """The entries of one cache: its CFKV alias, codec and near cache (``space`` names its key space)."""

    def __init__(self, alias: str, codec: EntryCodec, key_prefix: str, space: Hashable,
                 near_bounds: tuple[float, int, int]) -> None:
        self.alias, self.codec, self.key_prefix = alias, codec, key_prefix
        self.space, self.near_bounds = space, near_bounds

    @property
    def kv(self) -> Any:
        """The KV object to use: the alias's process-wide one (built and pooled once, in conf),
        behind the process-wide near cache when there is one."""
        kv, near = get_kv(self.alias), self.near()
        return kv if near is None else NearKV(kv, near)

    async def akv(self) -> Any:
        """As :attr:`kv`, from async code (a first use builds the KV object in a worker thread)."""
        kv, near = await aget_kv(self.alias), self.near()
        return kv if near is None else NearKV(kv, near)

    def kv_for(self, fresh: bool) -> Any:
        """KV itself when ``fresh`` (read-modify-writes read KV), else :attr:`kv`."""
        return get_kv(self.alias) if fresh else self.kv

    async def akv_for(self, fresh: bool) -> Any:
        """As :meth:`kv_for`, from async code."""
        return await aget_kv(self.alias) if fresh else await self.akv()

    def near(self) -> NearCache | None:
        """Return the near cache this cache's key space shares in this process, or None (off)."""
        return near_cache(self.space, *self.near_bounds)

    def item(self, kv_key: str, text: str, expires: float | None) -> dict[str, Any]:
        """Return the put_many item that stores the entry text ``text`` under ``kv_key``."""
        item: dict[str, Any] = {"key": kv_key, "value": text,
                                "metadata": metadata.build(metadata.CACHE, expires=expires)}
        if expires is not None:
            item["expiration_ttl"] = metadata.kv_ttl(expires, clock.now())
        return item

    def storing(self, kv_key: str, value: Any, expires: float | None, delta: float | None, key: Any) -> Plan[None]:
        """Write ``value`` under ``kv_key``, or delete the key if ``expires`` is already past. One call."""
        if expires is not None and expires <= clock.now():
            yield Call("delete", (kv_key,))
            return
        yield from self.putting(kv_key, self.codec.dumps(value, expires, delta, kv_key=kv_key, key=key), expires)

    def store(self, kv_key: str, value: Any, expires: float | None, delta: float | None, key: Any) -> None:
        """Follow :meth:`storing` blocking."""
        run(self.storing(kv_key, value, expires, delta, key), self)

    async def astore(self, kv_key: str, value: Any, expires: float | None, delta: float | None, key: Any) -> None:
        """The async twin of :meth:`store`."""
        await arun(self.storing(kv_key, value, expires, delta, key), self)

    def putting(self, kv_key: str, text: str, expires: float | None) -> Plan[None]:
        """Write the entry text ``text`` under ``kv_key``. One call."""
        yield Call("put", (), self.item(kv_key, text, expires))

    def reading(self, kv_key: str, fresh: bool = False) -> Plan[tuple[bytes, Entry] | tuple[None, None]]:
        """The plan of :meth:`read_raw`."""
        return self._live_raw(kv_key, (yield Call("get", (kv_key,), fresh=fresh)))

    def read_raw(self, kv_key: str, fresh: bool = False) -> tuple[bytes, Entry] | tuple[None, None]:
        """Return (entry text, Entry) when the key holds a live entry, else (None, None). One call.

        ``fresh`` skips the near cache: read-modify-write operations read KV.
        """
        # Not through :meth:`reading`: a read served by the near cache costs microseconds, a plan's loop as many.
        return self._live_raw(kv_key, self.kv_for(fresh).get(kv_key))

    def _live_raw(self, kv_key: str, raw: bytes | None) -> tuple[bytes, Entry] | tuple[None, None]:
        entry = None if raw is None else self.decode(kv_key, raw)
        return (raw, entry) if raw is not None and entry is not None and entry.is_live(clock.now()) else (None, None)

    def read(self, kv_key: str, fresh: bool = False) -> Entry | None:
        """Return the live Entry under ``kv_key``, or None. One call."""
        return self.read_raw(kv_key, fresh)[1]

    async def aread(self, kv_key: str, fresh: bool = False) -> Entry | None:
        """The async twin of :meth:`read`."""
        return self._live_raw(kv_key, await (await self.akv_for(fresh)).aget(kv_key))[1]

    def decode(self, kv_key: str, raw: bytes) -> Entry | None:
        """Return the Entry that ``raw`` holds, or None (logged) if it is not one this cache may read.

        Logs name the key by a fingerprint only: a cache key may hold a session id.
        """
        try:
            return self.codec.loads(raw, kv_key)
        except SignatureError as exc:
            security_logger.warning(
                "Cache on CFKV alias %r (KEY_PREFIX %r) refused the entry at KV key %s, read as a miss: %s. "
                "Someone without SECRET_KEY wrote or moved it (or an older release wrote it unsigned).",
                self.alias, self.key_prefix, fingerprint(kv_key), exc)
        except ValueError as exc:
            logger.warning("Cache on CFKV alias %r ignored KV key %s: not a cache entry (%s).",
                           self.alias, fingerprint(kv_key), exc)
        return None

    def live(self, found: dict[str, bytes]) -> dict[str, Entry]:
        """Return {KV key: Entry} for the live entries among ``found`` (a bulk read's answer)."""
        now, result = clock.now(), {}
        for kv_key, raw in found.items():
            entry = self.decode(kv_key, raw)
            if entry is not None and entry.is_live(now):
                result[kv_key] = entry
        return result

    def live_metadata(self, kv_key: str, fresh: bool = False) -> bool:
        """Return True if the key holds an unexpired entry, from its metadata alone. One call."""
        return _live_metadata(self.kv_for(fresh).get_metadata(kv_key))

    async def alive_metadata(self, kv_key: str, fresh: bool = False) -> bool:
        """The async twin of :meth:`live_metadata`."""
        return _live_metadata(await (await self.akv_for(fresh)).aget_metadata(kv_key))

    def count_live(self, kv_keys: list[str]) -> int:
        """Return how many of ``kv_keys`` hold an unexpired entry, read from KV: ceil(n/100) bulk reads.

        Values are parsed for their expiry only, never decoded. If KV refuses the
        bulk read (a binary value, not written by this cache), each key's
        metadata is read instead, one call each.
        """
        kv = get_kv(self.alias)
        try:
            found = kv.get_many(kv_keys)
        except (KVAPIError, KVValueError) as exc:
            if not bulk_refused(exc):
                raise
            return sum(self.live_metadata(kv_key, fresh=True) for kv_key in kv_keys)
        now = clock.now()
        return sum(_live_text(raw, now) for raw in found.values())

    async def acount_live(self, kv_keys: list[str]) -> int:
        """The async twin of :meth:`count_live`."""
        kv = await aget_kv(self.alias)
        try:
            found = await kv.aget_many(kv_keys)
        except (KVAPIError, KVValueError) as exc:
            if not bulk_refused(exc):
                raise
            return sum([await self.alive_metadata(kv_key, fresh=True) for kv_key in kv_keys])
        now = clock.now()
        return sum(_live_text(raw, now) for raw in found.values())


def _live_metadata(meta: Any) -> bool:
    """Return True if ``meta`` (a key's metadata) says it holds an unexpired cache entry."""
    return isinstance(meta, dict) and metadata.read(meta).is_live(clock.now())


def _live_text(raw: bytes, now: float) -> bool:
    """Return True if ``raw`` is a cache entry's text whose expiry is after ``now``."""
    try:
        expires = parse_fields(raw)["expires"]
    except ValueError:
        return False
    return expires is None or (isinstance(expires, (int, float)) and expires > now)
