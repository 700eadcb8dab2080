"""The audio ``voxwire speak`` receives, kept in a temporary file, not in memory.

Kept in memory, that audio grew with the text: 595 s of speech at 22,050 Hz took the command to
221 MB of RSS (about 5x the 26 MB of audio: the parts, their join, wave's copy). Here it goes
to an unlinked temporary file (``tempfile.TemporaryFile``), each write in a worker thread so
that no disk write blocks the event loop, and the command holds at most a batch in memory,
whatever the text's length.

Two ways out of it:
- ``blocks()``, once the audio is complete: a regular file gets a WAV whose header names the
  length, written in one go (a synthesis that fails leaves an existing file as it was).
- ``stream_to(out)``, run in a thread of its own while the audio arrives: a pipe (``-o - |
  aplay``) gets the audio as it comes, at the pace the reader takes it, behind a streaming
  header (sizes unknown, ``voxwire.audio.wav.streaming_header``). The model's pace is not the
  reader's: with lead 0 eSpeak makes audio about 100 times faster than a player plays it, so
  the spool takes it all and the reader falls behind on disk, not in memory, and never makes the
  gateway wait (which would end the session ``SLOW_CONSUMER`` past its read-ahead).
In that mode a chunk is written at once when the reader has passed on all there is (the first
chunk, and a reader that keeps up), so audio never waits for a batch to fill while the reader
waits; a reader behind gets batches.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import BinaryIO

from voxwire.cli.common import CliError, os_reason

BATCH_BYTES = 1 << 20  # about 24 s of 22,050 Hz PCM16 per worker-thread write
READ_BYTES = 1 << 20


class AudioSpool:
    """Created, read back and closed outside the event loop (blocking); ``add`` and ``finish``
    on it. ``stream_to`` in a thread of its own."""

    def __init__(self, file: BinaryIO | None = None) -> None:
        self._file = file if file is not None else _temporary_file()
        self._batch = bytearray()
        self.size = 0  # bytes added
        # What stream_to may read: bytes in the file, and whether more will come.
        self._ready = threading.Condition()
        self._in_file = 0
        self._ended = False
        self._aborted = False
        self._reader_waits = False  # stream_to has passed on all there is
        self.sink_error: OSError | None = None  # the reader of stream_to went away
        self._sink_name = "the output"

    def check_sink(self) -> None:
        """Raises CliError when stream_to's reader went away."""
        if self.sink_error is not None:
            raise CliError(f"{self._sink_name}: cannot write: {os_reason(self.sink_error)}")

    async def add(self, audio: bytes) -> None:
        self.check_sink()
        self._batch += audio
        self.size += len(audio)
        if len(self._batch) >= BATCH_BYTES or self._reader_waits:
            await self._write_batch()

    async def finish(self) -> None:
        """Everything added is in the file, and stream_to ends once it has passed it on."""
        if self._batch:
            await self._write_batch()
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def abort(self) -> None:
        """stream_to returns without passing on the rest (the synthesis failed)."""
        with self._ready:
            self._aborted = True
            self._ready.notify_all()

    @property
    def held_bytes(self) -> int:
        """Audio held in memory, not yet written."""
        return len(self._batch)

    def blocks(self) -> Iterator[bytes]:
        """The audio from its start, ``READ_BYTES`` at a time (blocking reads)."""
        if self._batch:
            raise RuntimeError("finish() the spool before reading it")
        self._file.seek(0)
        while block := self._file.read(READ_BYTES):
            yield block

    def stream_to(self, out: BinaryIO, name: str = "the output") -> None:
        """Pass the audio on to ``out`` as it reaches the file, until ``finish`` and all of it
        passed on, or ``abort``. Blocking: a thread's target. A write that fails (the reader
        closed its end: EPIPE) is kept in ``sink_error`` and ends it; ``add`` then says so."""
        self._sink_name = name
        fd = self._file.fileno()
        offset = 0
        while True:
            with self._ready:
                while offset == self._in_file and not (self._ended or self._aborted):
                    self._reader_waits = True
                    self._ready.wait()
                self._reader_waits = False
                if self._aborted or offset == self._in_file:
                    return
                end = self._in_file
            while offset < end:
                block = os.pread(fd, min(READ_BYTES, end - offset), offset)
                try:
                    out.write(block)
                    out.flush()
                except OSError as exc:
                    self.sink_error = exc
                    return
                offset += len(block)

    def close(self) -> None:
        self._file.close()  # unlinked already: closing frees the disk

    async def _write_batch(self) -> None:
        batch = bytes(self._batch)
        self._batch.clear()
        try:
            await asyncio.to_thread(self._write, batch)
        except OSError as exc:
            why = os_reason(exc)
            raise CliError(f"the temporary file for the audio: cannot write: {why}") from exc
        with self._ready:
            self._in_file += len(batch)
            self._ready.notify_all()

    def _write(self, batch: bytes) -> None:
        self._file.write(batch)
        self._file.flush()  # in the file for stream_to's reads (pread, its own offset)


def _temporary_file() -> BinaryIO:
    try:
        return tempfile.TemporaryFile(prefix="voxwire-speak-")
    except OSError as exc:
        raise CliError(f"cannot make a temporary file for the audio: {os_reason(exc)}") from exc
