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
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType


class Watchdog:
    __slots__ = ("_timeout", "_began", "_timer", "_loop")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # Per await in flight: when it began, its task's cancel count then, whether we cancelled
        # it. One dict and no more, so an idle owner (the gateway holds thousands) stays small.
        self._began: dict[asyncio.Task[object], tuple[float, int, bool]] = {}
        self._timer: asyncio.TimerHandle | None = None
        # The owner's event loop, from its first await on: ``current_task(loop)`` skips the
        # running-loop lookup, which on Python 3.11 makes a getpid() syscall each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None and task not in self._began, "one await per task at a time"
        self._began[task] = (time.monotonic(), task.cancelling(), False)
        if self._timer is None:
            self._timer = loop.call_later(self._timeout, self._check)

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
        oldest = now
        for task, (began, cancelling, fired) in list(self._began.items()):
            if fired:
                continue
            if now - began >= self._timeout:
                self._began[task] = (began, cancelling, True)
                task.cancel()
            else:
                oldest = min(oldest, began)
        if oldest < now:
            delay = oldest + self._timeout - now
        else:
            delay = self._timeout  # only overdue ones left: they end at once
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def close(self) -> None:
        """Stop the timer (the owner is done; awaits still in flight lose their deadline)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
