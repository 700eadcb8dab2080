"""The gateway's upload decoders: child processes running libsndfile (decoder_child.py).

At most ``max_decoders`` decode at once (503 OVERLOADED beyond: each is a process); one that
finished its upload cleanly waits for the next, so a steady stream of uploads does not start a
process each. When its upload ends any other way (the client left, the body failed) it is
told to cancel and kept once it answered; it is killed, and replaced when next needed, when
it does not answer within 2 s, or it crashed or stalled (that upload alone fails, 400
``INVALID_AUDIO``: the file made the decoder fail; every other session of the gateway goes
on).

Its stderr (libmpg123 writes a line for every bad frame) is read all the time and summed up, a
log line per burst, never passed on line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from gateway.http.decoder_child import (
    BODY,
    CANCEL,
    DONE,
    END,
    FAILED,
    FORMAT,
    HEADER,
    PCM,
    READY,
    START,
    encode,
)
from gateway.http.upload import DecodedFormat
from voxwire import errors
from voxwire.child_signal import signal_child

log = logging.getLogger(__name__)

# A new decoder is ready (Python, numpy, soxr and libsndfile imported) well within this.
_SPAWN_TIMEOUT_S = 30.0
# How long a decoder whose upload was left may take to answer its cancel before it is
# killed instead (it decodes at most the body it holds: about 1 MiB, tens of milliseconds).
_RESET_S = 2.0
# A decoder's stderr is logged in bursts: lines ``_STDERR_QUIET_S`` apart are one burst, and
# one log line gives its count and first ``_STDERR_KEPT`` lines.
_STDERR_QUIET_S = 0.5
_STDERR_KEPT = 3


class _DecoderGone(Exception):
    """A write to the decoder failed: it died; its exit status tells how (``_read``)."""


class DecoderProcess:
    """One child process; one upload at a time (``decode``)."""

    def __init__(self, process: asyncio.subprocess.Process, pool: DecoderPool) -> None:
        self.process = process
        self._pool = pool
        self._stderr_task = asyncio.create_task(self._read_stderr(), name="decoder-stderr")
        # Set by decode: ready for another upload; the body's bytes it was given; the body
        # ended before the audio its header declares.
        self.reusable = False
        self.received = 0
        self.truncated = False
        # For the stall check: the last message or body write the decoder took, and whether
        # the feeder waits for the client's bytes.
        self._progress = 0.0
        self._awaiting_body = False
        # For ``reset``: the body's end was written; a message was read in part (a read
        # cancelled between its header and its payload); it stalled.
        self._end_written = False
        self._mid_message = False
        self._stalled = False

    @classmethod
    async def spawn(cls, pool: DecoderPool) -> DecoderProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.http.decoder_child",
            str(os.getpid()),  # the parent it must outlive by no more than a signal
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        decoder = cls(process, pool)
        try:
            kind, _ = await asyncio.wait_for(decoder._read(), _SPAWN_TIMEOUT_S)
            if kind != READY:
                raise errors.InternalError(f"the upload decoder began with {kind!r}")
        except BaseException:
            await decoder.kill()
            raise
        return decoder

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def kill(self) -> None:
        # Not process.kill(): it reaps a decoder that the process group's signal has just
        # ended behind the child watcher's back (voxwire/child_signal.py).
        signal_child(self.process, signal.SIGKILL)
        if self.process.stdin is not None:
            self.process.stdin.close()  # the transport closes once every pipe has
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait(), 5)
        # Its stderr ends with it: the last burst is logged, unless the pipe lingers (a
        # grandchild holding it).
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._stderr_task, 1)

    async def _read_stderr(self) -> None:
        """Its stderr, summed up: one log line per burst (``_STDERR_QUIET_S`` of quiet ends
        one), with its count and first lines."""
        assert self.process.stderr is not None
        count, first = 0, list[str]()
        while True:
            try:
                line = await asyncio.wait_for(
                    self.process.stderr.readline(), _STDERR_QUIET_S if count else None
                )
            except TimeoutError:
                self._log_stderr(count, first)
                count, first = 0, []
                continue
            except ValueError:  # a line over the reader's 64 KiB limit: dropped, counted
                line = b"(a line over 64 KiB)"
            if not line:
                break
            count += 1
            self._pool.stderr_lines += 1
            if len(first) < _STDERR_KEPT:
                first.append(line.decode(errors="replace").rstrip()[:200])
        if count:
            self._log_stderr(count, first)

    def _log_stderr(self, count: int, first: list[str]) -> None:
        log.warning(
            "upload decoder (pid %d) wrote %d line(s) to stderr; the first: %s",
            self.process.pid,
            count,
            " | ".join(first),
        )

    async def _read(self) -> tuple[bytes, bytes]:
        assert self.process.stdout is not None
        try:
            header = await self.process.stdout.readexactly(HEADER.size)
            kind, length = HEADER.unpack(header)
            self._mid_message = True
            payload = await self.process.stdout.readexactly(length) if length else b""
            self._mid_message = False
        except asyncio.IncompleteReadError:
            code = await self.process.wait()
            self._pool.failed["crashed"] += 1
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            if code < 0:
                with contextlib.suppress(ValueError):
                    how = signal.Signals(-code).name
            raise errors.InvalidAudio(
                f"the audio decoder failed on this audio ({how}); nothing else was affected"
            ) from None
        return kind, payload

    async def _write(self, message: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(message)
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _DecoderGone from exc

    async def decode(
        self,
        body: AsyncIterator[bytes],
        size: int | None,
        max_seconds: float,
        stall_s: float,
        rates: Sequence[int] = (),
    ) -> AsyncGenerator[tuple[DecodedFormat, bytes], None]:
        """(format, PCM16 mono) blocks of ``body``'s audio (``size`` bytes when known); at most
        ``max_seconds`` of it (BodyTooLarge when its header declares more), at one of ``rates``
        (the model's; the contract's when empty). ``received``
        counts the body's bytes given to the decoder; ``truncated`` is set at the end. A
        decoder that neither answers nor takes more of the body for ``stall_s`` while it
        holds all that arrived has stalled (InvalidAudio; ``_next``).

        Raises what the decoder raised (InvalidAudio, BodyTooLarge, ...), or the body's error.
        ``reusable`` says afterwards whether the decoder is ready for another upload: it ended
        its answer (audio or error) and was told the body's end."""
        self.reusable = self.truncated = self._end_written = False
        self.received = 0
        asked = {"size": size, "max_seconds": max_seconds, "rates": list(rates)}
        start = json.dumps(asked).encode()
        await self._write(encode(START, start))

        async def feed() -> None:
            self._awaiting_body = True
            async for chunk in body:
                self._awaiting_body = False
                self.received += len(chunk)
                await self._write(encode(BODY, chunk))
                self._progress = time.monotonic()
                self._awaiting_body = True
            self._awaiting_body = False
            self._end_written = True
            await self._write(encode(END))

        feeder = asyncio.create_task(feed(), name="upload-decoder-feed")
        try:
            while True:
                kind, payload = await self._next(feeder, stall_s)
                if kind == PCM:
                    fmt = DecodedFormat(*FORMAT.unpack_from(payload))
                    yield fmt, payload[FORMAT.size :]
                    continue
                if kind not in (DONE, FAILED):
                    raise errors.InternalError(f"the upload decoder sent {kind!r}")
                # Its answer is complete: the rest of the body is not needed (tags after the
                # audio; a body after an error). Told the body's end, it reads up to it and
                # waits for the next upload. (The feeder writes whole messages: cancelled in
                # its drain, its last one is whole in the pipe's buffer.)
                if not feeder.done():
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder
                if not self._end_written:
                    self._end_written = True
                    await self._write(encode(END))
                self.reusable = True
                if kind == DONE:
                    self.truncated = bool(json.loads(payload)["truncated"])
                    return
                failure = json.loads(payload)
                error = errors.reasons().get(failure["reason"])
                if error is None:
                    raise errors.InvalidAudio(f"cannot decode the audio: {failure['message']}")
                raise error(failure["message"])
        finally:
            if not feeder.done():
                feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder

    async def reset(self, within_s: float) -> bool:
        """After an upload the gateway stopped following (its client left, its body failed):
        tells the decoder to cancel (unless the body's end went already), reads and drops
        what it still sends up to its answer. True when it is ready for another upload
        within ``within_s``; else (or when it died, stalled or a message was read in part)
        it must be killed."""
        if not self.alive or self._stalled or self._mid_message:
            return False
        assert self.process.stdin is not None
        try:
            async with asyncio.timeout(within_s):
                if not self._end_written:
                    self._end_written = True
                    # Not drained here: the decoder reads it once it has room, which the
                    # reads below make.
                    self.process.stdin.write(encode(CANCEL))
                while True:
                    kind, _ = await self._read()
                    if kind in (DONE, FAILED):
                        return not self._mid_message
        except (TimeoutError, OSError, errors.VoxwireError):
            return False

    async def _next(self, feeder: asyncio.Task[None], stall_s: float) -> tuple[bytes, bytes]:
        """The decoder's next message; raises the feeder's failure (the body's) meanwhile.

        Raises InvalidAudio when the decoder has stalled: ``stall_s`` without a message from
        it or a body write it took, while it had all the body that had arrived (time spent
        waiting for the client's bytes is the body's idle timeout's, not the decoder's)."""
        reading = asyncio.ensure_future(self._read())
        self._progress = time.monotonic()
        tick = min(1.0, stall_s / 4)
        try:
            while not reading.done():
                waiting = {reading} if feeder.done() else {reading, feeder}
                done, _ = await asyncio.wait(
                    waiting, timeout=tick, return_when=asyncio.FIRST_COMPLETED
                )
                now = time.monotonic()
                if not done:
                    if self._awaiting_body and not feeder.done():
                        self._progress = now  # the client is the slow one
                    elif now - self._progress >= stall_s:
                        self._stalled = True
                        self._pool.failed["stalled"] += 1
                        raise errors.InvalidAudio(
                            f"the audio decoder made no progress in {stall_s:g} s"
                        )
                    continue
                failure = feeder.exception() if feeder in done else None
                if failure is not None and not isinstance(failure, _DecoderGone):
                    raise failure  # the body's (the client left, stalled, sent too much)
        except BaseException:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
            raise
        return reading.result()


class DecoderPool:
    """At most ``size`` decoders busy at once; idle ones kept for the next uploads, and
    ``spare`` of them started ahead of need (``start``) so that an upload seldom waits for
    one to start."""

    def __init__(self, size: int, *, spare: int = 0) -> None:
        self.size = size
        self.spare = spare
        self._busy = 0
        self._idle: list[DecoderProcess] = []
        self._starting: asyncio.Task[None] | None = None  # one spare at a time
        self._closed = False
        self.active: set[DecoderProcess] = set()  # decoding an upload now
        # For /metrics (gateway/metrics.py reads them at scrape time).
        self.spawned = 0
        self.failed = {"crashed": 0, "stalled": 0}
        self.stderr_lines = 0

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def starting(self) -> bool:
        """A spare is being started."""
        return self._starting is not None

    def start(self) -> None:
        """Start the spare decoders in the background (the gateway's start-up: the loop runs)."""
        self._refill()

    async def settle(self) -> None:
        """Wait until no spare is being started (they all started, or failed to: each start
        has its own deadline). For benchmarks and tests."""
        while (starting := self._starting) is not None:
            await asyncio.wait({starting})

    async def acquire(self) -> DecoderProcess:
        """A decoder of its own for one upload. Raises Overloaded when ``size`` are busy."""
        if self._busy >= self.size:
            raise errors.Overloaded(
                "every upload decoder is busy; retry shortly",
                retry_delay=datetime.timedelta(seconds=1),
            )
        self._busy += 1
        try:
            decoder = await self._idle_one()
            if decoder is None:
                decoder = await self._spawn()
            self.active.add(decoder)
            return decoder
        except BaseException:
            self._busy -= 1
            raise
        finally:
            self._refill()

    async def _idle_one(self) -> DecoderProcess | None:
        """An idle decoder; a spare under way is waited for (it is ready sooner than a new
        one). None when there is none."""
        while True:
            while self._idle:
                decoder = self._idle.pop()
                if decoder.alive:
                    return decoder
                await decoder.kill()
            starting = self._starting
            if starting is None:
                return None
            # Not cancelled with this upload: the spare stays for the next.
            await asyncio.wait({starting}, timeout=_SPAWN_TIMEOUT_S)
            if not self._idle:
                return None  # another upload took it, or it did not start

    async def _spawn(self) -> DecoderProcess:
        started = time.monotonic()
        decoder = await DecoderProcess.spawn(self)
        self.spawned += 1
        log.debug("upload decoder started in %.0f ms", (time.monotonic() - started) * 1e3)
        return decoder

    def _refill(self) -> None:
        """Start a spare when fewer than ``spare`` are idle and the processes (busy, idle and
        starting) are fewer than ``size``."""
        if self._closed or self._starting is not None or len(self._idle) >= self.spare:
            return
        if self._busy + len(self._idle) >= self.size:
            return
        self._starting = asyncio.create_task(self._start_spare(), name="decoder-spare")

    async def _start_spare(self) -> None:
        try:
            decoder = await self._spawn()
        except Exception as exc:
            # Not retried until an upload needs a decoder: one that cannot start at all
            # would otherwise be restarted in a loop (the upload's own start reports why).
            log.warning("a spare upload decoder did not start: %r", exc)
            return
        finally:
            self._starting = None
        if self._closed:
            await decoder.kill()
            return
        self._idle.append(decoder)
        self._refill()

    async def release(self, decoder: DecoderProcess) -> None:
        """The upload is over: the decoder is kept for the next (reset first if the upload
        did not end cleanly) or killed. Its place is free whatever happens meanwhile (a
        second cancellation of the handler included)."""
        try:
            if not decoder.reusable:
                decoder.reusable = await decoder.reset(_RESET_S)
        finally:
            self._busy -= 1
            self.active.discard(decoder)
            if decoder.reusable and decoder.alive and len(self._idle) < self.size:
                self._idle.append(decoder)
            else:
                decoder.reusable = False
                await decoder.kill()
            self._refill()

    async def close(self) -> None:
        self._closed = True
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()  # DecoderProcess.spawn kills a process it was starting
            await asyncio.gather(starting, return_exceptions=True)
        idle, self._idle = self._idle, []
        for decoder in idle:
            await decoder.kill()
