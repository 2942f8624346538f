"""Following a plan: an operation written once as a generator of steps, made blocking or awaited.

A plan yields a step, is sent what the step returned or has what it raised thrown in (so it may mend
a failure where it made the call), and returns the operation's result. The cache's operations
(cache/plans.py), the session store's (sessions/plans.py) and strict rate counting
(ratelimit/strict.py) each say what a step is; :func:`follow` and :func:`afollow` are the one loop
that makes the steps. No I/O of its own.
"""

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

S = TypeVar("S")
R = TypeVar("R")


def follow(plan: Generator[S, Any, R], perform: Callable[[S], Any],
           errors: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> R:
    """Make each of ``plan``'s steps with ``perform``; an error of ``errors`` is thrown into the plan."""
    try:
        step = next(plan)
        while True:
            try:
                result = perform(step)
            except errors as exc:
                step = plan.throw(exc)
            else:
                step = plan.send(result)
    except StopIteration as done:
        return done.value


async def afollow(plan: Generator[S, Any, R], perform: Callable[[S], Awaitable[Any]],
                  errors: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> R:
    """:func:`follow`, awaiting each step."""
    try:
        step = next(plan)
        while True:
            try:
                result = await perform(step)
            except errors as exc:
                step = plan.throw(exc)
            else:
                step = plan.send(result)
    except StopIteration as done:
        return done.value
