"""A cache operation's KV calls as a plan, written once and followed blocking or awaited.

A plan is a generator that yields a :class:`Call` (a KV method's name and arguments), is sent the
call's result or has the KVError it raised thrown in, and returns the operation's result.
:func:`run` makes each call with the blocking method (``get``), :func:`arun` awaits its async twin
(``aget``). So add, touch, incr, set with nx or xx, clear, delete_pattern and django-redis' expiry
methods decide once, for their blocking and their async names.
"""

from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from .. import limits
from ..exceptions import KVError
from ..plans import afollow, follow
from ..types import KeyPage, PageWalk

R = TypeVar("R")


class Call(NamedTuple):
    """One KV call: the blocking method's name, its arguments, and whether it skips the near cache."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = {}
    fresh: bool = False  # read KV itself: a read-modify-write never trusts the near cache


Plan = Generator[Call, Any, R]


class KVSource:
    """Where a plan's calls go: the KV object behind the near cache, or KV itself (``fresh``)."""

    def kv_for(self, fresh: bool) -> Any:
        raise NotImplementedError("subclasses of KVSource must provide a kv_for() method")

    async def akv_for(self, fresh: bool) -> Any:
        raise NotImplementedError("subclasses of KVSource must provide an akv_for() method")


def run(plan: Plan[R], source: KVSource) -> R:
    """Follow ``plan``, making each call with the KV object's blocking method; a KVError is the plan's to mend
    (a bulk read refused) or let rise."""
    return follow(plan, lambda call: getattr(source.kv_for(call.fresh), call.method)(*call.args, **call.kwargs),
                  KVError)


async def arun(plan: Plan[R], source: KVSource) -> R:
    """Follow ``plan``, awaiting each call's async twin (``a`` + the method's name)."""
    async def perform(call: Call) -> Any:
        kv = await source.akv_for(call.fresh)
        return await getattr(kv, "a" + call.method)(*call.args, **call.kwargs)

    return await afollow(plan, perform, KVError)


def delete_listed(prefix: str | None, limit: int, select: Callable[[KeyPage], Iterable[str]]) -> Plan[int]:
    """List keys with ``prefix`` page by page (``limit`` keys a page) and delete the names ``select``
    picks from each page as they are listed, one bulk call per 10,000, so memory stays bounded and an
    interrupted run has already deleted what it passed; return how many."""
    walk, batch, count = PageWalk(), list[str](), 0
    while not walk.done:
        page = walk.step((yield Call("list_keys", (), {"prefix": prefix, "limit": limit, "cursor": walk.cursor})))
        for name in select(page):
            batch.append(name)
            if len(batch) >= limits.BULK_DELETE_MAX_KEYS:
                yield Call("delete_many", (batch,))
                count, batch = count + len(batch), []
    if batch:
        yield Call("delete_many", (batch,))
    return count + len(batch)
