"""The audio ``voxwire speak`` receives, kept in a temporary file until it is complete.

The WAV is written once the audio is complete (its header names the length, so a pipe gets a
WAV whose sizes are right, and a synthesis that fails leaves an existing file as it was). Kept
in memory, that audio grew with the text: 595 s of speech at 22,050 Hz took the command to 221
MB of RSS (about 5x the 26 MB of audio: the parts, their join, wave's copy). Here it goes to an
unlinked temporary file (``tempfile.TemporaryFile``) in batches of ``BATCH_BYTES``, each
written in a worker thread so that no disk write blocks the event loop, and it is read back a
block at a time: the command holds at most about two batches, whatever the text's length.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from voxwire.cli.common import CliError

BATCH_BYTES = 1 << 20  # about 24 s of 22,050 Hz PCM16 per worker-thread write
READ_BYTES = 1 << 20


class AudioSpool:
    """Created and read back outside the event loop (blocking); ``add`` and ``finish`` on it."""

    def __init__(self, file: BinaryIO | None = None) -> None:
        self._file = file if file is not None else _temporary_file()
        self._batch = bytearray()
        self.size = 0  # bytes added

    async def add(self, audio: bytes) -> None:
        self._batch += audio
        self.size += len(audio)
        if len(self._batch) >= BATCH_BYTES:
            await self._write_batch()

    async def finish(self) -> None:
        """Everything added is in the file."""
        if self._batch:
            await self._write_batch()

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

    def close(self) -> None:
        self._file.close()  # unlinked already: closing frees the disk

    async def _write_batch(self) -> None:
        batch = bytes(self._batch)
        self._batch.clear()
        try:
            await asyncio.to_thread(self._file.write, batch)
        except OSError as exc:
            raise CliError(f"the temporary file for the audio: cannot write: {_why(exc)}") from exc


def _temporary_file() -> BinaryIO:
    try:
        return tempfile.TemporaryFile(prefix="voxwire-speak-")
    except OSError as exc:
        raise CliError(f"cannot make a temporary file for the audio: {_why(exc)}") from exc


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
