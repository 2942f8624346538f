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

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from ..plans import afollow, follow

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
    override of either is the one called."""

    def __init__(self, blocking: Callable[..., Any], awaited: Callable[..., Awaitable[Any]], *args: Any,
                 **kwargs: Any) -> None:
        self.blocking, self.awaited, self.args, self.kwargs = blocking, awaited, args, kwargs

    def run(self, kv: Callable[[], Any]) -> Any:
        return self.blocking(*self.args, **self.kwargs)

    async def arun(self, kv: Callable[[], Awaitable[Any]]) -> Any:
        return await self.awaited(*self.args, **self.kwargs)


def run(plan: Plan[R], kv: Callable[[], Any]) -> R:
    """Follow ``plan`` with blocking calls (``kv()`` returns the KV object); return its result. Whatever a
    step raises, the plan sees raised where it made the call."""
    return follow(plan, lambda step: step.run(kv))


async def arun(plan: Plan[R], kv: Callable[[], Awaitable[Any]]) -> R:
    """Follow ``plan`` awaiting each call (``await kv()`` returns the KV object); return its result."""
    return await afollow(plan, lambda step: step.arun(kv))
