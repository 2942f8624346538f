"""What this process remembers about sessions: those it deleted in the last minute, and the near cache."""

import contextlib
import threading

from .. import clock, conf, nearcache


class Recent:
    """Strings this process noted in the last minute (the latest 10,000): ``key in recent``."""

    TTL, MAX = 60.0, 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, float] = {}

    def add(self, key: str) -> None:
        now = clock.monotonic()
        with self._lock:
            self._keys.pop(key, None)
            self._keys[key] = now
            while self._keys and (len(self._keys) > self.MAX or now - next(iter(self._keys.values())) > self.TTL):
                self._keys.pop(next(iter(self._keys)))

    def discard(self, key: str) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by another thread

    def __contains__(self, key: object) -> bool:
        with self._lock:
            when = self._keys.get(key) if isinstance(key, str) else None
        return when is not None and clock.monotonic() - when <= self.TTL


#: Sessions this process deleted in the last minute, by the SHA-256 of their id (``keys.hashed_id``, the
#: ``ref`` a user's list gives): read as missing, never written back here. KV may serve a deleted value for up
#: to ~60 s, so without this a token revoked or a session logged out here could still be read, and refreshed,
#: by the next request in this same process. It costs no API call (a recently deleted key is not even read);
#: other processes are covered only by KV reads, with KV's ~60 s staleness.
recently_deleted = Recent()
#: ``userId`` values (as text) that a user of this process left in the last minute: a store that read one
#: before the change asks the database again, so it does not write the session back under the former value.
former_user_values = Recent()
# A test pointing CFKV or the session settings elsewhere starts with nothing deleted.
for _recent in (recently_deleted, former_user_values):
    conf.on_reset(_recent.clear, settings=("CFKV", "SESSION_*"))
    conf.on_reset(_recent.after_fork, after_fork=True)


def near_cache() -> nearcache.NearCache | None:
    """Return the process-wide near cache of session values, or None (the default: off)."""
    space = ("sessions", conf.setting("SESSION_CFKV_ALIAS"), conf.setting("SESSION_CFKV_KEY_PREFIX"))
    return nearcache.near_cache(space, conf.setting("SESSION_CFKV_NEAR_CACHE_TIMEOUT"))


def forget_nearby(*kv_keys: str) -> None:
    """Drop keys this process just wrote or deleted from the near cache (after the write: no read may refill)."""
    near = near_cache()
    if near is not None:
        near.invalidate_many(kv_keys)


def writing(*kv_keys: str) -> contextlib.AbstractContextManager[None]:
    """Around a write or delete of ``kv_keys``: the near cache's rule for them (NearCache.writing), if on."""
    near = near_cache()
    return contextlib.nullcontext() if near is None else near.writing(kv_keys)
