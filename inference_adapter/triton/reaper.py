"""Model calls that are ending after the stream that made them stopped wanting them.

A TTS context that stops (the client cancels it, or the stream ends with it open) does not
cancel its Triton call: Triton 2.51, the build the nvidia-pytriton wheel ships, dies under
cancelled streaming calls (SIGSEGV in 3 of 6 fuzz runs; ``tools/triton_cancel_storm.py``
reproduces it without the adapter). triton-inference-server/server#8034 describes such a race on
cancelled gRPC requests, fixed by #7840 and #8078 in later releases (not verified to be this
one). The call is
half-closed instead, its unit finishes, and its output is read and dropped
(``ModelStream.finish``). That can outlive the client's stream by up to a unit's synthesis, so
the task that does it belongs to the adapter, not to the stream.

Bounded: the context's lease goes back at once (held, a barge-in's next context was refused
OVERLOADED while the old unit ran out), so the calls running out are bounded apart, per replica
and model, by as many as contexts are admitted (``ReplicaPool.may_drain``; past it, a cancel);
``finish`` cancels a call after its budget. On shutdown, what is left is cancelled.

A stream's task caught in a client read at the stream's end is kept here too (``adopt``): that
read must finish, not be cancelled (``boundary.ClientReader``), and it finishes with the call,
after the stream. Its failure is the stream's runner's to read (its done callback).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class CallReaper:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"voxwire.reaper.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("ending a model call failed", exc_info=exc)

    def adopt(self, task: asyncio.Task[Any], within_s: float) -> None:
        """Keep ``task`` (a stream's, whose client read was in flight when the stream ended:
        ``ClientReader.close``) until it ends; cancelled after ``within_s``."""
        self.spawn(_ended(task, within_s), "read")

    async def wait(self, within_s: float) -> bool:
        """Wait (up to ``within_s``) until no call is ending; returns whether none is."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within_s)
        return not self._tasks

    async def close(self, within_s: float) -> None:
        """Shutdown: give the calls ``within_s`` to end, then cancel what is left (``finish``
        then cancels its call) and wait for that."""
        if await self.wait(within_s):
            return
        for task in list(self._tasks):
            task.cancel()
        await asyncio.wait(set(self._tasks), timeout=within_s)


async def _ended(task: asyncio.Task[Any], within_s: float) -> None:
    try:
        await asyncio.wait({task}, timeout=within_s)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=within_s)
