"""Each session operation as a plan: its calls written once, followed blocking or awaited.

No I/O. A plan is a generator that yields a step (a KV call, a query of the user model, or a
call of the store's own method), is sent what the step returned or has what it raised thrown
in, and returns the operation's result. :func:`run` follows a plan with blocking calls (load(),
save()...), :func:`arun` awaits them (aload(), asave()...): every decision (the State, the codec,
the index entry, the near cache) is made in one place, and only the awaiting differs.

From async code a KV call awaits the KV object's twin (``aget``, ``aput``...), never a thread of
its own (with the ``async`` extra the REST client makes it on the event loop). A query of the
database runs in a thread, as Django's ORM requires; only the JSON format's sessions a Worker
wrote and SESSION_CFKV_USER_FIELD other than "pk" make one.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from ..plans import afollow, follow

logger = logging.getLogger("django_cfkv.sessions")

R = TypeVar("R")


class Step:
    """One call a plan makes: ``run`` makes it blocking, ``arun`` awaits it."""

    def run(self, kv: Callable[[], Any]) -> Any:
        raise NotImplementedError

    async def arun(self, kv: Callable[[], Awaitable[Any]]) -> Any:
        raise NotImplementedError


Plan = Generator[Step, Any, R]


class KVCall(Step):
    """A call of the KV interface by its blocking name (``get``); awaited, its twin (``aget``)."""

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs

    def run(self, kv: Callable[[], Any]) -> Any:
        return getattr(kv(), self.name)(*self.args, **self.kwargs)

    async def arun(self, kv: Callable[[], Awaitable[Any]]) -> Any:
        return await getattr(await kv(), "a" + self.name)(*self.args, **self.kwargs)


class Query(Step):
    """A blocking call of the database (the user model): in a thread when awaited, as Django's ORM requires."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def run(self, kv: Callable[[], Any]) -> Any:
        return self.function(*self.args)

    async def arun(self, kv: Callable[[], Awaitable[Any]]) -> Any:
        return await sync_to_async(self.function)(*self.args)


class Twin(Step):
    """A method of the store (or any session) and its async twin (``save`` and ``asave``): a subclass's
    override of either is the one called. Awaited, a blocking method overridden below its twin (an engine
    that overrides ``save()`` only, as engines were written before Django 5) runs in a thread, as Django's
    own async methods run it: its twin would skip the override."""

    def __init__(self, blocking: Callable[..., Any], awaited: Callable[..., Awaitable[Any]], *args: Any,
                 **kwargs: Any) -> None:
        self.blocking, self.awaited, self.args, self.kwargs = blocking, awaited, args, kwargs

    def run(self, kv: Callable[[], Any]) -> Any:
        return self.blocking(*self.args, **self.kwargs)

    async def arun(self, kv: Callable[[], Awaitable[Any]]) -> Any:
        if _overridden_below(self.blocking, self.awaited):
            return await sync_to_async(self.blocking)(*self.args, **self.kwargs)
        return await self.awaited(*self.args, **self.kwargs)


class Finished(Twin):
    """A Twin that, once begun, runs to its end even if the request is cancelled meanwhile (its client went
    away): a session's save lands or fails whole, as in Django's middleware, whose save runs in a thread
    that nothing stops. The cancel is raised when it is done."""

    async def arun(self, kv: Callable[[], Awaitable[Any]]) -> Any:
        return await finished(super().arun(kv))


async def finished(awaitable: Awaitable[R]) -> R:
    """Await ``awaitable`` to its end, even through cancels of the caller; then raise the cancel, if any."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait((task,))  # a cancel of the caller ends this wait, never the task
        except asyncio.CancelledError:
            cancelled = True
    if not cancelled:
        return task.result()
    if not task.cancelled() and task.exception() is not None:  # the caller hears of its cancel only
        logger.warning("A session write finished after its request was cancelled, and failed (%s).",
                       type(task.exception()).__name__)
    raise asyncio.CancelledError


def _overridden_below(blocking: Callable[..., Any], awaited: Callable[..., Any]) -> bool:
    """Return True if ``blocking`` (a bound method) is defined in a subclass of the class defining ``awaited``."""
    owner, name, aname = (getattr(awaited, "__self__", None), getattr(blocking, "__name__", None),
                          getattr(awaited, "__name__", None))
    if owner is None or name is None or aname is None:
        return False
    return _defined_first(owner if isinstance(owner, type) else type(owner), name, aname)


@functools.cache
def _defined_first(cls: type, name: str, aname: str) -> bool:
    """Return True if, in ``cls``'s method resolution order, ``name`` is defined before ``aname``."""
    for klass in cls.__mro__:
        if aname in vars(klass):
            return False
        if name in vars(klass):
            return True
    return False


def run(plan: Plan[R], kv: Callable[[], Any]) -> R:
    """Follow ``plan`` with blocking calls (``kv()`` returns the KV object); return its result. Whatever a
    step raises, the plan sees raised where it made the call."""
    return follow(plan, lambda step: step.run(kv))


async def arun(plan: Plan[R], kv: Callable[[], Awaitable[Any]]) -> R:
    """Follow ``plan`` awaiting each call (``await kv()`` returns the KV object); return its result."""
    return await afollow(plan, lambda step: step.arun(kv))
