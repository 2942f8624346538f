"""The wall-clock end of each attempt awaited on an event loop, kept by one timer for them all.

aiohttp's own total timeout arms a timer per request and re-enters it at every read:
against a loopback emulator that was about 10 µs, a twentieth, of an awaited call's CPU
(docs/explanation/performance.md). Here an attempt only notes its task and when it must end; while
any is in flight, one timer per loop looks every :data:`TICK` seconds and cancels the task
of each attempt past its end, which the attempt then reports as a timeout. So an attempt
may run up to TICK past its end: nothing next to a window of seconds.

A cancel the attempt did not ask for (the caller's own timeout, a server shutting down) stays a
cancel, even in the moment the window ends: Python 3.11's tasks count the cancels asked of them,
and only this one is taken back, as ``asyncio.timeout`` does. Python 3.10's tasks keep no count,
so there a cancel that comes in that same moment ends the attempt as its timeout.

No I/O, and no aiohttp: this module reads the loop's clock and cancels tasks.
"""

import asyncio
import sys

TICK = 0.05  # seconds between looks while attempts are in flight


class Deadlines:
    """The attempts in flight on one event loop, by task: when each must end (on the loop's clock), and the
    cancels its task had been asked for when it started."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ends: dict[asyncio.Task[object], tuple[float, int]] = {}
        self._cut: dict[asyncio.Task[object], int] = {}  # tasks cancelled here: their cancels before the attempt
        self._armed = False
        self.in_flight = 0  # attempts started and not ended (a cut one included, until it ends)

    def start(self, task: asyncio.Task[object], seconds: float) -> None:
        """Note that ``task`` is making an attempt that must end within ``seconds``."""
        # The cancels asked before the attempt, as asyncio.timeout notes them on entry: one asked in the same
        # loop iteration as the cut, before it, is not the cut's to take back.
        before = 0
        if sys.version_info >= (3, 11):  # 3.10's tasks keep no count
            before = task.cancelling()
        self._ends[task] = (self._loop.time() + seconds, before)
        self.in_flight += 1
        if not self._armed:
            self._armed = True
            self._loop.call_later(TICK, self._look)

    def was_cut(self, task: asyncio.Task[object]) -> bool:
        """Say whether the CancelledError ``task`` just got is this deadline's (then it is taken back).

        A cancel from anywhere else, even one that came with this one, is not: it must go on.
        """
        before = self._cut.pop(task, None)
        if before is None:
            return False
        return sys.version_info < (3, 11) or task.uncancel() <= before  # 3.11+ counts the cancels asked

    def end(self, task: asyncio.Task[object]) -> None:
        """Forget ``task``'s attempt (it is over, however it ended)."""
        self.in_flight -= 1
        self._ends.pop(task, None)  # a task cut is no longer there
        if self._cut:  # cut, but the attempt ended some other way: its cancel is taken back all the same
            self.was_cut(task)

    def _look(self) -> None:
        try:
            now = self._loop.time()
            late = [(task, before) for task, (ends, before) in self._ends.items() if ends <= now]
            for task, before in late:
                del self._ends[task]
                task.cancel()
                self._cut[task] = before  # once cancelled: a task that refused is not taken for cut
        finally:  # whatever a task's cancel() did, the attempts still in flight are looked at again
            self._armed = bool(self._ends)
            if self._armed:
                self._loop.call_later(TICK, self._look)
