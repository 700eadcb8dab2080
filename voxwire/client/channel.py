"""A bounded, single-consumer stream of events that ends with success or with an exception.

The SDK's connection task puts events in; the application iterates them. When the application
does not read, ``put`` waits: the connection task stops reading the socket, and TCP carries the
pause to the gateway (which ends the connection with SLOW_CONSUMER after its write timeout; the
session then resumes). Memory stays bounded by ``max_items`` whatever the application does.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class EventChannel(Generic[T]):
    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be positive")
        self._items: collections.deque[T] = collections.deque()
        self._max = max_items
        self._changed = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T) -> None:
        """Add ``item``, waiting while the channel is full; dropped after ``close``."""
        while len(self._items) >= self._max and not self._closed:
            self._changed.clear()
            await self._changed.wait()
        if self._closed:
            return
        self._items.append(item)
        self._changed.set()

    def close(self, error: BaseException | None = None) -> None:
        """No more items: the reader gets what is queued, then the end (or ``error``)."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._changed.set()

    def __aiter__(self) -> EventChannel[T]:
        return self

    async def __anext__(self) -> T:
        """The next item. Raises StopAsyncIteration at the end, or the close's error."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        item = self._items.popleft()
        self._changed.set()
        return item
