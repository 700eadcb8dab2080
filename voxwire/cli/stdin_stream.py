"""stdin as bounded reads that never block the event loop, whatever stdin is.

A pipe, a socket or a terminal is read through the loop (``connect_read_pipe``): a read waits
for data without a thread, and a session that ends stops waiting at once. What the loop cannot
watch is read in a worker thread: a regular file, and devices that epoll refuses with EPERM,
such as /dev/null. Such reads return at once (data or end of file), so a thread never stays
blocked. The loop cannot be asked first and told no: ``connect_read_pipe`` registers the
descriptor in a callback, whose failure is only logged, and the read then waits forever. So a
throwaway selector of the loop's kind is asked instead.

The loop's transport makes the descriptor non-blocking, a flag of the open file that the shell
shares on a terminal; ``close`` puts it back.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import stat
import sys

from voxwire.cli.common import CliError


class StdinStream:
    """Use ``await StdinStream.open()``; ``close`` when done."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending = b""
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._was_blocking = True

    @classmethod
    async def open(cls) -> StdinStream:
        """Raises CliError when there is no stdin (closed by the shell: ``<&-``)."""
        try:
            fd = sys.stdin.fileno() if sys.stdin is not None else -1
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError):
            raise CliError("stdin is closed: nothing to read") from None
        stream = cls(fd)
        if _pollable(fd, mode):
            loop = asyncio.get_running_loop()
            stream._was_blocking = os.get_blocking(fd)
            reader = stream._reader = asyncio.StreamReader()
            # A duplicate, so that closing the transport leaves descriptor 0 open.
            pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
            stream._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        return stream

    @property
    def is_terminal(self) -> bool:
        return os.isatty(self.fd)

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (what is there, at least one); b"" at the end."""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        if self._reader is not None:
            return await self._reader.read(size)
        return await asyncio.to_thread(os.read, self.fd, size)

    async def read_exactly(self, size: int) -> bytes:
        """``size`` bytes; fewer only when stdin ends first."""
        parts: list[bytes] = []
        left = size
        while left > 0:
            data = await self.read(left)
            if not data:
                break
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what comes next."""
        self._pending = data + self._pending

    async def close(self) -> None:
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()
            os.set_blocking(self.fd, self._was_blocking)


def _pollable(fd: int, mode: int) -> bool:
    """Whether the event loop can wait on ``fd``: a pipe, a socket or a character device
    that the selector takes (a terminal; not /dev/null, which epoll refuses)."""
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return False  # a regular file or a block device: always "ready", never watched
    with selectors.DefaultSelector() as probe:  # the kind of selector the loop uses
        try:
            probe.register(fd, selectors.EVENT_READ)
        except OSError:
            return False
    return True
