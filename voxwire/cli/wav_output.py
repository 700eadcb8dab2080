"""The WAV file ``voxwire speak`` writes: opened before synthesis, written after it (from
``voxwire.cli.audio_spool``, a block at a time), or, for a pipe or a device, as the audio comes.

Opening first makes a path that cannot be written (no such directory, a directory, /proc, no
permission) fail at once, not after the synthesis it would throw away. The file is not
truncated until the audio is there: a synthesis that fails leaves a file that existed as it
was, and removes one it created. The file object is handed to ``wave``, which then never
opens a file itself (a ``wave.open`` of a path that fails leaves a half-built writer whose
``__del__`` prints "Exception ignored ... AttributeError" on Python 3.11). Blocking calls: the
caller runs these before and after the event loop, not on it.
"""

from __future__ import annotations

import errno
import os
import stat
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from voxwire.audio.codecs import Encoding
from voxwire.audio.wav import streaming_header
from voxwire.cli.common import CliError, os_reason


class WavOutput:
    def __init__(self, path: Path, file: BinaryIO, created: bool) -> None:
        self.path = path
        self._file = file
        self._created = created
        # A pipe, a terminal or a device takes the audio as it comes (``start_stream``); a
        # regular file is written whole once it is complete (``write``).
        self.streams = not stat.S_ISREG(os.fstat(file.fileno()).st_mode)

    @property
    def name(self) -> str:
        """The output as the command's messages name it."""
        return "stdout" if str(self.path) == "-" else str(self.path)

    @classmethod
    def open(cls, path: Path) -> WavOutput:
        """``-`` is stdout (as ``-`` is stdin for the text). Raises CliError when ``path``
        cannot be written."""
        if str(path) == "-":
            # Its own descriptor, so that closing the file object leaves fd 1 to Python.
            return cls(path, os.fdopen(os.dup(1), "wb"), created=False)
        flags = os.O_WRONLY | os.O_CLOEXEC
        try:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
                created = True
            except FileExistsError:
                fd = os.open(path, flags)  # no O_TRUNC: kept as it is until the audio comes
                created = False
        except OSError as exc:
            raise CliError(cannot_write(path, exc)) from None
        return cls(path, os.fdopen(fd, "wb"), created)

    def write(self, blocks: Iterable[bytes], nbytes: int, rate: int) -> None:
        """Write ``blocks`` (16-bit mono PCM, ``nbytes`` in all) as the file's whole content.
        Raises CliError."""
        try:
            if not self.streams:
                self._file.truncate(0)  # not a pipe or a device such as /dev/null
            with wave.open(self._file, "wb") as wav:  # wave leaves a file object open
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(rate)
                # The length is known: the header is right the first time, never patched by
                # seeking back.
                wav.setnframes(nbytes // 2)
                for block in blocks:
                    wav.writeframesraw(block)
            self._file.close()
        except OSError as exc:
            self.discard()
            raise CliError(cannot_write(self.path, exc)) from None

    def start_stream(self, rate: int) -> BinaryIO:
        """Write a streaming header (sizes unknown: the reader reads to the end) and return
        the file the audio goes to, after it. Raises CliError."""
        try:
            self._file.write(streaming_header(Encoding.PCM_S16LE, rate))
            self._file.flush()
        except OSError as exc:
            raise CliError(cannot_write(self.path, exc)) from None
        return self._file

    def end_stream(self) -> None:
        """Raises CliError."""
        try:
            self._file.close()
        except OSError as exc:
            raise CliError(cannot_write(self.path, exc)) from None

    def discard(self) -> None:
        """No audio to write: close, and remove the file if it was created here."""
        try:
            self._file.close()
        except OSError:
            pass  # a close that fails to flush: the file goes (or stays as it was) anyway
        if self._created:
            self.path.unlink(missing_ok=True)
            self._created = False


def cannot_write(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and not path.parent.is_dir():
        reason = f"no such directory: {path.parent}"
    elif exc.errno == errno.EISDIR:
        reason = "is a directory"
    else:
        reason = os_reason(exc)
    return f"{path}: cannot write: {reason}"
