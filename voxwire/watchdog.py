"""A deadline on each of many short awaits, kept by one timer per owner instead of one per await.

``async with asyncio.timeout(s)`` schedules a timer handle when it is entered and cancels it
when it is left: about 11 us per await on uvloop on the 2-core machine of BENCHMARKS.md, paid
on every message a stream writes, although almost no write ever comes near its deadline. A
``Watchdog`` is entered (``with watchdog:``) the same way around one await, with the same
outcome (the awaiting task is cancelled at the deadline and the block raises TimeoutError), but
entering costs a clock read and a dict entry: its one timer is armed by the first await and,
when it fires, cancels the awaits that are overdue and re-arms itself for the oldest one left;
with none in flight it stops, and the next await arms it again. So the deadline holds to within
one timer period (it is checked when the oldest await in flight falls due).

One owner (a stream's call, an outbox) may have several awaits in flight, from different tasks;
a task has at most one at a time (nesting is not supported, as no caller needs it).

``with watchdog.after(s):`` gives one await a later deadline: its timeout counts from ``s``
seconds on (the adapter's TTS outbox: a client is not late while it still plays audio it got).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class Watchdog:
    __slots__ = ("_timeout", "_began", "_timer", "_due", "_loop", "_delay")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # Per await in flight: when it began, its task's cancel count then, whether we cancelled
        # it. One dict and no more, so an idle owner (the gateway holds thousands) stays small.
        self._began: dict[asyncio.Task[object], tuple[float, int, bool]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the timer fires (monotonic)
        # The owner's event loop, from its first await on: ``current_task(loop)`` skips the
        # running-loop lookup, which on Python 3.11 makes a getpid() syscall each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delay = 0.0  # ``after``: how much later the next await's timeout starts

    def after(self, seconds: float) -> Watchdog:
        """The next await entered has its timeout start ``seconds`` from now."""
        self._delay = seconds
        return self

    def __enter__(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None and task not in self._began, "one await per task at a time"
        began = time.monotonic()
        if self._delay:
            began += self._delay
            self._delay = 0.0
        self._began[task] = (began, task.cancelling(), False)
        due = began + self._timeout
        if self._timer is None or due < self._due:
            # (A timer armed for a later deadline, an ``after`` one, is brought forward.)
            if self._timer is not None:
                self._timer.cancel()
            self._arm(loop, due)

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self._due = due
        self._timer = loop.call_later(due - time.monotonic(), self._check)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task(self._loop)
        assert task is not None
        _, cancelling, fired = self._began.pop(task)
        if not fired:
            return
        # Ours, unless the task was also cancelled from outside (then that cancel goes on), as
        # asyncio.Timeout decides. An await that swallowed our cancel and returned is late too.
        ours = task.uncancel() <= cancelling
        if ours and exc_type in (None, asyncio.CancelledError):
            raise TimeoutError from exc

    def _check(self) -> None:
        self._timer = None
        if not self._began:
            # Idle: the next await arms the timer again. A fresh dict, as an emptied one keeps
            # the table it grew (an idle owner stays small).
            self._began = {}
            return
        now = time.monotonic()
        due: float | None = None  # the next deadline of an await not yet overdue
        for task, (began, cancelling, fired) in list(self._began.items()):
            if fired:
                continue
            if now - began >= self._timeout:
                self._began[task] = (began, cancelling, True)
                task.cancel()
            elif due is None or began + self._timeout < due:
                due = began + self._timeout
        # Only overdue ones left: they end at once, and the timer runs on until they have.
        self._arm(asyncio.get_running_loop(), now + self._timeout if due is None else due)

    def close(self) -> None:
        """Stop the timer (the owner is done; awaits still in flight lose their deadline)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
