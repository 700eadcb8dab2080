"""The audio file ``voxwire speak`` writes: opened before synthesis, written after it (from
``voxwire.cli.audio_spool``, a block at a time), or, for a pipe or a device, as the audio comes
(WAV with a streaming header, whatever the name).

A regular file is written in the format its name says: ``.wav`` (and any name that names no
audio format) WAV; ``.flac``, ``.ogg``/``.oga`` (Vorbis), ``.opus`` (Ogg Opus), ``.mp3``,
``.au``, ``.aif``/``.aiff``, ``.caf`` through libsndfile; ``.raw``/``.pcm`` the bare 16-bit
samples. A name of a format libsndfile cannot write (``.m4a``, ``.aac``, ``.webm``, ...) fails at
once: a WAV named ``out.mp3`` (as it was written) is a file of the wrong kind.

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

import numpy as np
import soundfile

from voxwire.audio.codecs import Encoding
from voxwire.audio.wav import streaming_header
from voxwire.cli.common import CliError, os_reason

# A file name's suffix -> libsndfile's (format, subtype); "RAW" is the bare samples.
_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".oga": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".au": ("AU", "PCM_16"),
    ".snd": ("AU", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
    ".caf": ("CAF", "PCM_16"),
    ".raw": ("RAW", "PCM_16"),
    ".pcm": ("RAW", "PCM_16"),
    # Headerless G.711, a phone prompt's format (8 kHz unless --rate says otherwise). These
    # names were written as 16-bit PCM WAV (.mulaw, .ul) or refused (.ulaw, .alaw).
    ".mulaw": ("RAW", "ULAW"),
    ".ulaw": ("RAW", "ULAW"),
    ".ul": ("RAW", "ULAW"),
    ".alaw": ("RAW", "ALAW"),
    ".al": ("RAW", "ALAW"),
}
_G711 = {".mulaw", ".ulaw", ".ul", ".alaw", ".al"}
# Audio formats libsndfile does not write: named so, the file would be of the wrong kind.
_UNWRITABLE = {".m4a", ".mp4", ".aac", ".webm", ".mka", ".wma", ".amr"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # RFC 7845, 5.1: Opus codes at these only


def default_rate(path: Path) -> int:
    """The rate ``voxwire speak`` writes when not told: 22050 Hz, 24000 for Opus (which has no
    22050), 8000 for G.711 (telephony's)."""
    suffix = path.suffix.lower()
    if suffix in _G711:
        return 8000
    return 24000 if suffix == ".opus" else 22050


def output_format(path: Path, rate: int) -> tuple[str, str]:
    """The (format, subtype) ``path``'s name asks for at ``rate``. Raises CliError for a
    format that cannot be written (at that rate)."""
    suffix = path.suffix.lower()
    if suffix in _UNWRITABLE:
        raise CliError(
            f"{path}: cannot write {suffix} audio: voxwire speak writes WAV, FLAC, Ogg "
            "(Vorbis; .opus for Opus), MP3, AU, AIFF, CAF, raw samples (.raw) or G.711 (.mulaw, "
            ".alaw)"
        )
    chosen = _FORMATS.get(suffix, _FORMATS[".wav"])
    if chosen == ("OGG", "OPUS") and rate not in OPUS_RATES:
        raise CliError(
            f"{path}: Opus is coded at {', '.join(map(str, OPUS_RATES))} Hz, not {rate}: "
            "pass --rate 24000 (or another of them)"
        )
    return chosen


class WavOutput:
    def __init__(
        self, path: Path, file: BinaryIO, created: bool, kind: tuple[str, str] = _FORMATS[".wav"]
    ) -> None:
        self.path = path
        self._file = file
        self._created = created
        self._kind = kind
        # A pipe, a terminal or a device takes the audio as it comes (``start_stream``); a
        # regular file is written whole once it is complete (``write``).
        self.streams = not stat.S_ISREG(os.fstat(file.fileno()).st_mode)

    @property
    def name(self) -> str:
        """The output as the command's messages name it."""
        return "stdout" if str(self.path) == "-" else str(self.path)

    @classmethod
    def open(cls, path: Path, rate: int = 22050) -> WavOutput:
        """``-`` is stdout (as ``-`` is stdin for the text). Raises CliError when ``path``
        cannot be written, or its name asks for a format that cannot be (``output_format``)."""
        kind = output_format(path, rate) if str(path) != "-" else _FORMATS[".wav"]
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
        return cls(path, os.fdopen(fd, "wb"), created, kind)

    def write(self, blocks: Iterable[bytes], nbytes: int, rate: int) -> None:
        """Write ``blocks`` (16-bit mono PCM, ``nbytes`` in all) as the file's whole content.
        Raises CliError."""
        try:
            if not self.streams:
                self._file.truncate(0)  # not a pipe or a device such as /dev/null
                if self._kind != _FORMATS[".wav"]:
                    self._write_encoded(blocks, rate)
                    self._file.close()
                    return
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

    def _write_encoded(self, blocks: Iterable[bytes], rate: int) -> None:
        """Through libsndfile (``soundfile``), into the file object (which it leaves open)."""
        fmt, subtype = self._kind
        if fmt == "RAW":
            for block in blocks:
                self._file.write(block)
            return
        try:
            with soundfile.SoundFile(
                self._file, "w", samplerate=rate, channels=1, format=fmt, subtype=subtype
            ) as out:
                for block in blocks:  # whole samples: the spool's blocks are an even size
                    out.write(np.frombuffer(block, dtype="<i2"))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise OSError(f"libsndfile: {exc}") from exc

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
