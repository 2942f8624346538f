"""SessionStore: Django's session API over one KV value per session (see the package for what KV allows).

Reading a session (its key names, load(), exists()) is ``reading``'s
SessionReader, which this class extends. A session enters KV only in ``_write()`` and leaves it only in ``delete()``
(tokens are revoked through it too), besides ``clear_expired()``'s sweep of
sessions past their expiry and the bulk revocations of ``per_user``. The
index of a user's sessions (``index``) follows each signed-in session there:
its entry is written before the session, whenever the session's user, expiry
or client changes (so at sign-in and at each expiry refresh, at most once per
SESSION_CFKV_REFRESH_INTERVAL, never on every change of data), and deleted
with it, in the same bulk call. Each operation is one plan (``plans``): the
blocking method follows it (``save``), its async twin awaits it (``asave``).
"""

import math
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management.base import CommandError

from .. import clock, conf, metadata
from ..exceptions import KVError
from ..types import PageWalk
from . import codec, entries, keys, memory, users
from .plans import KVCall, Plan, Twin
from .reading import SessionReader, logger, security_logger
from .state import State, Stored
from .users import SESSION_KEY

__all__ = ["ExpiredSessionsNotCleared", "SessionStore", "logger", "security_logger"]


class ExpiredSessionsNotCleared(KVError, CommandError):
    """clear_expired() failed on KV. A KVError as any, and a CommandError, so that ``manage.py clearsessions``
    (Django's own command, whichever app provides it) ends with this sentence instead of a traceback."""

    def __init__(self, cause: KVError) -> None:
        super().__init__(f"Expired sessions were not cleared: Workers KV failed ({cause}). Expired sessions stay "
                         "until the next run; run clearsessions again once KV answers.", status=cause.status)


class SessionStore(SessionReader):
    """A session in Workers KV (the package docstring says what KV allows, and how the store copes)."""

    #: True for a session a bearer token names (BearerSessionMiddleware sets
    #: it): cycle_key() keeps the key, which is the token the client holds.
    keep_key = False

    # Writing

    def create(self) -> None:
        self._run(self._create())

    async def acreate(self) -> None:
        await self._arun(self._create())

    def _create(self) -> Plan[None]:
        self._session_key = self._get_new_session_key()
        # A new key has nothing stored under it to overwrite, even after a failed load.
        self._state = State.NEW
        yield Twin(self.save, self.asave, must_create=True)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """Write the session: one PUT, none when nothing changed and no refresh is due."""
        self._run(self._save(must_create))

    async def asave(self, must_create: bool = False) -> None:
        await self._arun(self._save(must_create))

    def _save(self, must_create: bool) -> Plan[None]:
        if self.session_key is None:
            return (yield Twin(self.create, self.acreate))
        data = yield Twin(self._get_session, self._aget_session,  # type: ignore[attr-defined]  # SessionBase's
                          no_load=must_create)
        session_key = self.session_key
        if session_key is None:  # the load this save made found no live session: there is nothing to update
            raise UpdateError
        if self._state is State.LOAD_FAILED:
            if not self.modified:
                return  # nothing to write: the stored session is untouched
            raise KVError("The session could not be loaded from Workers KV, so it is not saved: "
                          "writing it would replace the stored session with partial data.")
        if must_create and self._state is not State.NEW and (yield Twin(self.exists, self.aexists, session_key)):
            raise CreateError
        canonical = self._canonical(data)
        if not must_create and self.deleted_here(session_key):
            if canonical == self._stored.canonical:
                return  # only an expiry refresh: the deletion (logout, revocation) wins
            raise UpdateError
        if must_create or self._state is State.NEW:
            return (yield from self._write(session_key, data, self._next_expiry(new=True), canonical))
        expires = self._next_expiry(new=False)
        if canonical == self._stored.canonical and expires == self._stored.expires:
            return  # unchanged, and no refresh due
        try:
            # A copy this store did not GET itself may outlive a logout or
            # revocation elsewhere: never write it back without asking KV.
            if self._state is not State.READ and not (yield from self._live_in_kv(session_key)):
                raise UpdateError
            yield from self._write(session_key, data, expires, canonical)
        except KVError as exc:
            if canonical != self._stored.canonical:
                raise  # a real change is never dropped silently
            # Only the expiry refresh failed (429, budget, outage): the request
            # has succeeded and the stored session is intact; a later one retries.
            logger.warning("Session expiry refresh not written to Workers KV (%s: %s); the stored session "
                           "is unchanged.", type(exc).__name__, exc)

    def _next_expiry(self, new: bool) -> float:
        """Return the expiry to write: Django's, within the absolute lifetime, the stored one until a refresh is due.

        The stored expiry moves only when it would move forward by
        SESSION_CFKV_REFRESH_INTERVAL or more, or back (set_expiry()): a
        change of data alone keeps it, so the user's index entry, which
        carries it, is rewritten at most once per interval.
        """
        expires = clock.now() + super().get_expiry_age()
        stored = self._stored
        if stored.ends is not None:
            expires = min(expires, stored.ends)  # sliding refresh only within the absolute lifetime
        if not new and stored.expires is not None and \
                0 <= expires - stored.expires < conf.setting("SESSION_CFKV_REFRESH_INTERVAL"):
            return stored.expires
        return expires

    def _write(self, session_key: str, data: dict[str, Any], expires: float, canonical: str | bytes) -> Plan[None]:
        """Write the session to KV: one PUT, after its index entry's when that changed (the only place)."""
        now, stored = clock.now(), self._stored
        created = stored.created if stored.created is not None else int(now * 1000)
        envelope = {"createdAt": created, "expiresAt": int(expires * 1000), "data": data}
        if stored.ends is not None:
            envelope["absoluteExpiresAt"] = int(stored.ends * 1000)
        if self._format == "json":
            value = codec.dumps_json((yield from self._json_envelope(envelope)))
        else:
            value = codec.dumps_signed(envelope, self.key_salt_value(), self.serializer, session_key)
        # The index entry first: no signed-in session is ever stored without one.
        yield from entries.rewrite(self.key_prefix(), session_key, stored, data, expires, created, now)
        kv_key = self.kv_key(session_key)
        with memory.writing(kv_key):
            yield KVCall(
                "put", kv_key, value,
                expiration_ttl=metadata.kv_ttl(expires, now),
                # "size" lets `manage.py cfkv stats` total sizes from listings alone.
                metadata=metadata.build(metadata.SESSION, expires=expires, size=len(value.encode("utf-8"))),
            )
        memory.recently_deleted.discard(keys.hashed_id(session_key))  # a deleted key is written only when created anew
        # Data this store read is still known to be in KV; data it never read (a new key, a blind save) is not.
        self._state = State.READ if self._state in (State.READ, State.NEAR) else State.UNREAD
        stored.created, stored.expires, stored.canonical = created, expires, canonical
        stored.user = data.get(SESSION_KEY)

    def _entries_of(self, session_key: str, stored: Stored | None) -> Plan[list[str]]:
        """Return the names the session's index entry may have: its user from ``stored``, else from KV (one GET)."""
        read_owner = lambda: self._owner_in_kv(session_key)  # noqa: E731  only when ``stored`` does not know
        return (yield from entries.names(self.key_prefix(), session_key, stored, read_owner))

    def _json_envelope(self, envelope: dict[str, Any]) -> Plan[dict[str, Any]]:
        """Return the JSON value: the Worker's fields, ``userId`` and Django's data (minus the user id)."""
        data = dict(envelope["data"])
        user_id = yield from users.worker_user_id(data.pop(SESSION_KEY, None), self._stored.user_ref)
        return {**self._stored.extra, "userId": user_id, **envelope, "data": data}

    def set_absolute_expiry(self, seconds: float) -> None:
        """End the session ``seconds`` from now however often it is used: refreshes slide it only up to then.

        Stored with the session (``absoluteExpiresAt``, epoch ms, in the
        value) and written by the next save(), even if nothing else changed.
        """
        self._get_session()  # type: ignore[attr-defined]  # a load replaces what is stored here: load first
        self._end_in(seconds)

    async def aset_absolute_expiry(self, seconds: float) -> None:
        """Async twin of :meth:`set_absolute_expiry`."""
        await self._aget_session()
        self._end_in(seconds)

    def _end_in(self, seconds: float) -> None:
        self._stored.ends = clock.now() + seconds
        self._stored.canonical = None

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Return Django's expiry age, never past the absolute lifetime (set_absolute_expiry())."""
        return self._within_end(super().get_expiry_age(**kwargs), kwargs)  # loads the session, and its end

    async def aget_expiry_age(self, **kwargs: Any) -> int:
        return self._within_end(await super().aget_expiry_age(**kwargs), kwargs)

    def _within_end(self, age: int, kwargs: dict[str, Any]) -> int:
        if kwargs or self._stored.ends is None:
            return age
        return max(0, min(age, math.ceil(self._stored.ends - clock.now())))

    # Deleting and moving

    def delete(self, session_key: str | None = None) -> None:
        """Delete the session (this one, or the one ``session_key`` names) and its index entry (the only place).

        One call: a DELETE, or a bulk delete with the index entry of a
        signed-in session. For a session this store did not read, one GET
        first finds its user.
        """
        self._run(self._delete_session(session_key))

    async def adelete(self, session_key: str | None = None) -> None:
        await self._arun(self._delete_session(session_key))

    def _delete_session(self, session_key: str | None) -> Plan[None]:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        if keys.is_valid_key(session_key, self._format):
            own = session_key == self.session_key
            names = yield from self._entries_of(session_key, self._stored if own else None)
            yield from self._delete(session_key, names)
        if session_key == self.session_key:
            if self._state in (State.READ, State.NEAR):
                self._state = State.UNREAD
            self._stored = Stored()

    def _delete(self, session_key: str, entry_names: list[str]) -> Plan[None]:
        kv_key = self.kv_key(session_key)
        with memory.writing(kv_key):
            yield KVCall("delete_many", [kv_key, *entry_names]) if entry_names else KVCall("delete", kv_key)
        memory.recently_deleted.add(keys.hashed_id(session_key))

    def cycle_key(self) -> None:
        """Move the data to a new key and delete the old one (a bearer session keeps its key: keep_key).

        The new key is written by the next save() only: Django's login() sets
        the user right after this, and KV allows one write per second per key.
        The Worker's fields (``email``...), ``userId`` and ``createdAt`` move
        along only when the session still holds the user it was stored with
        (update_session_auth_hash() after a password change). login() cycles
        only an anonymous session, or one whose ``userId`` names no user: it is
        about to become someone else's, so those fields start afresh.
        """
        self._run(self._cycle_key())

    async def acycle_key(self) -> None:
        await self._arun(self._cycle_key())

    def _cycle_key(self) -> Plan[None]:
        data = yield Twin(self._get_session, self._aget_session)  # type: ignore[attr-defined]  # SessionBase's
        key, stored = self.session_key, self._stored
        entry_names = (yield from self._entries_of(key, stored)) if key and not self.keep_key else []
        if data.get(SESSION_KEY) is None or data.get(SESSION_KEY) != stored.user:
            stored.created, stored.extra, stored.user_ref = None, {}, None
        if self.keep_key:
            # A new key would delete the token and the client could never learn
            # its successor; a token the server issued cannot be fixed by a third party.
            self.modified = True
            return
        self._session_key = self._get_new_session_key()
        self._state = State.NEW
        stored.canonical = stored.expires = stored.index = None
        stored.index_known = True  # the new key has no entry yet
        self._session_cache = data
        self.modified = True
        if key:
            yield from self._delete(key, entry_names)

    def flush(self) -> None:
        super().flush()
        self._stored.extra, self._stored.user_ref = {}, None

    async def aflush(self) -> None:
        await super().aflush()
        self._stored.extra, self._stored.user_ref = {}, None

    @classmethod
    def clear_expired(cls) -> int:  # type: ignore[override]  # Django's returns None; the count helps the command
        """Delete sessions past their exact expiry that KV's TTL has not removed yet.

        Works from the key listing's metadata alone (no value reads) and
        deletes in bulk; the index entries of such sessions go too (they carry
        the same expiry). Entries without our metadata (sessions a Worker
        wrote) are left to their KV TTL. Return the number of keys deleted.
        """
        try:
            return cls._run(cls._clear_expired())
        except KVError as exc:
            raise ExpiredSessionsNotCleared(exc) from exc

    @classmethod
    async def aclear_expired(cls) -> int:  # type: ignore[override]  # as clear_expired()
        try:
            return await cls._arun(cls._clear_expired())
        except KVError as exc:
            raise ExpiredSessionsNotCleared(exc) from exc

    @classmethod
    def _clear_expired(cls) -> Plan[int]:
        now, prefix, walk = clock.now(), cls.key_prefix(), PageWalk()
        expired = []
        while not walk.done:
            page = walk.step((yield KVCall("list_keys", prefix=prefix, limit=1000, cursor=walk.cursor)))
            for info in page.keys:
                meta = metadata.read(info.metadata)
                if meta.kind == metadata.SESSION and meta.expires is not None and meta.expires <= now:
                    expired.append(info.name)
        if expired:
            try:
                yield KVCall("delete_many", expired)
            finally:
                memory.forget_nearby(*expired)
        return len(expired)
