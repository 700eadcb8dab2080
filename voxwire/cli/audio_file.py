"""``voxwire transcribe FILE``: an audio file (WAV, FLAC, OGG, MP3, ...) read with libsndfile
(the soundfile wheel) in a worker thread, a second at a time, sent as 16-bit PCM at its rate.

Samples are read as float32 and converted here (``float32_to_int16``: scaled, rounded,
clipped). Read as int16, libsndfile does not scale float samples (SFC_SET_SCALE_FLOAT_INT_READ
is off by default): a float WAV in [-1, 1] would come out as -1, 0 and 1, silence. float32
holds every 16- and 24-bit sample exactly, and the scale is 2**15 both ways, so an integer file
is sent sample for sample. NaN or infinity has no PCM value: the file is refused where one
appears. A file that libsndfile cannot decode past some point (a FLAC cut short: its decoder
loses sync in the cut frame; or one damaged inside) is sent up to that point, and the command
says where it stopped and ends with status 1 after printing what was heard. More than two
channels are mixed down to mono (in float, so nothing overflows).
A WAV is held to its own header, as the gateway's upload is (voxwire/audio/wav.py): a data size
of 0 (a recorder stopped before it patched its header) means the samples run to the file's end
(libsndfile read none: "held no audio", status 0); a data chunk shorter than the size its header
declares was cut short, and the command says so after what was heard, status 1, as for a WAV
on stdin (libsndfile shortened its frame count without a word).
A rate the contract does not carry (96 kHz, 6 kHz) is resampled (soxr) to the one it is sent
at (``voxwire.audio.formats.carried_rate``, the gateway's rule for uploads), in mono; a rate
below 4 kHz is refused, as the gateway refuses it. A file of raw samples (no header) is read
in the format ``--encoding``, ``--rate`` and ``--channels`` give, as raw stdin is (``_open``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from voxwire.cli.common import CliError, os_reason
from voxwire.cli.source import FRAME_MS, Source, check_format_flags

if TYPE_CHECKING:
    import numpy as np
    import soundfile

READ_FRAMES_MS = 1000  # per read in the worker thread: few thread hops, little memory


async def open_file(path: Path, args: argparse.Namespace | None = None) -> Source:
    """The file's audio. Raises CliError for a file that is missing, a directory, unreadable
    or not audio libsndfile knows, or at a rate below 4 kHz, or whose format contradicts the
    format flags in ``args`` (before anything is sent), and for NaN or infinity in its
    samples (while they are read)."""
    from voxwire.audio.formats import SNDFILE_SUBTYPES, carried_rate
    from voxwire.errors import UnsupportedSampleRate

    handle = await asyncio.to_thread(_open, path, args)
    cut: str | None = None
    if handle.format in ("WAV", "WAVEX"):
        handle, cut = await asyncio.to_thread(_held_to_header, path, handle)
    try:
        if args is not None and handle.format != "RAW":
            own = {
                "--encoding": getattr(SNDFILE_SUBTYPES.get(handle.subtype), "value", None),
                "--rate": handle.samplerate,
                "--channels": handle.channels,
            }
            what = (
                f"{path} is {handle.format} of {handle.subtype} at {handle.samplerate} Hz, "
                f"{handle.channels} channel(s)"
            )
            advice = "leave the format flags out for a file (they are for raw stdin)"
            check_format_flags(args, what, own, advice)
        rate = carried_rate(handle.samplerate)
    except UnsupportedSampleRate as exc:
        handle.close()
        raise CliError(f"{path}: {exc.message}") from None
    except CliError:
        handle.close()
        raise
    reader = _Reader(path, handle, rate)
    seconds = handle.frames / handle.samplerate if handle.frames > 0 else None
    return Source(
        name=str(path),
        encoding="pcm_s16le",
        rate=rate,
        channels=reader.channels,
        seconds=seconds,
        chunks=reader.chunks(),
        close=reader.close,
        stopped_early=lambda: reader.stopped_early or cut,
    )


def _open(path: Path, args: argparse.Namespace | None = None) -> soundfile.SoundFile:
    """The file, opened by libsndfile: by its header, or, for raw samples (no header: libsndfile
    does not recognise it, or its name is .raw or .pcm), in the format the flags give
    (``--encoding``, ``--rate``, ``--channels``), as for raw stdin. A raw file without them is
    refused saying so (libsndfile's own words were "TypeError: samplerate must be
    specified")."""
    import soundfile

    # The OS says what is wrong with the path in its own terms; libsndfile would answer
    # "System error." for a missing file and "Format not recognised." for a directory.
    # O_NONBLOCK: the check must not wait for the writer of a FIFO.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {os_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise CliError(f"{path}: is a directory, not an audio file")
    finally:
        os.close(fd)
    pipe = stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)
    # libsndfile seeks in FLAC and MP3: given as a pipe (`<(cat x.flac)`, /dev/stdin of a
    # pipe), a FLAC "lost sync" and was called "not an audio file", an MP3 dropped words.
    piped = CliError(
        f"{path}: is a pipe, and libsndfile must seek in this file: save it to a file and give "
        "that (a WAV stream or raw samples can come on stdin, -)",
        status=2,
    )
    try:
        handle = soundfile.SoundFile(path)
    except TypeError:
        # A name libsndfile takes for raw samples (.raw, .pcm): it needs their format.
        return _open_raw(path, args, "")
    except soundfile.LibsndfileError as exc:
        if pipe:
            raise piped from None
        return _open_raw(path, args, exc.error_string)
    if pipe and handle.format in ("FLAC", "MP3"):
        handle.close()
        raise piped
    return handle


def _open_raw(path: Path, args: argparse.Namespace | None, why: str) -> soundfile.SoundFile:
    import soundfile

    from voxwire.audio.format_check import file_kind
    from voxwire.audio.formats import SNDFILE_SUBTYPES

    with path.open("rb") as f:
        what = file_kind(f.read(12))
    if what is not None:
        # A file of a kind libsndfile does not read (WebM, MP4, AMR): never raw samples, which
        # the flags would have made of it (its bytes heard as noise).
        raise CliError(f"{path}: {what}, which voxwire cannot decode: convert it to WAV or FLAC")
    encoding = getattr(args, "encoding", None)
    rate = getattr(args, "rate", None)
    subtype = next((k for k, v in SNDFILE_SUBTYPES.items() if v.value == encoding), None)
    if subtype is None or not rate:
        said = f"not an audio file libsndfile reads ({why})" if why else "raw samples (no header)"
        # A raw name without its format is a wrong command line (2); a file libsndfile does
        # not know may be anything, raw samples among them (1, as before).
        hint = f"{path}: {said}: for raw samples give --encoding and --rate"
        raise CliError(hint, status=1 if why else 2)
    channels = getattr(args, "channels", None) or 1
    try:
        return soundfile.SoundFile(
            path, samplerate=rate, channels=channels, subtype=subtype, endian="LITTLE",
            format="RAW",
        )  # fmt: skip
    except (soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise CliError(f"{path}: cannot read it as raw {encoding} at {rate} Hz ({exc})") from None


# libsndfile's subtypes of the WAV formats the contract carries.
_RAW_SUBTYPES = {"pcm_s16le": "PCM_16", "pcm_f32le": "FLOAT", "mulaw": "ULAW", "alaw": "ALAW"}


def _held_to_header(
    path: Path, handle: soundfile.SoundFile
) -> tuple[soundfile.SoundFile, str | None]:
    """The WAV as its own header has it: (the handle to read, why it was cut short or None).
    A data size of 0 reads the samples after the header to the file's end (raw, in the
    header's format); a data chunk shorter than its declared size is said to be cut."""
    import soundfile

    from voxwire.audio.wav import WavHeaderReader
    from voxwire.errors import InvalidAudio

    reader = WavHeaderReader()
    with path.open("rb") as f:
        head = f.read(64 * 1024)
        size = os.fstat(f.fileno()).st_size
    with contextlib.suppress(InvalidAudio):  # 24-bit and such: the data chunk is read first
        reader.feed(head)
    if reader.data_offset is None:
        return handle, None
    held = size - reader.data_offset
    if reader.data_bytes is not None:
        if reader.data_bytes <= held:
            return handle, None
        rate = handle.samplerate
        declared_s = reader.data_bytes / max(1, held) * handle.frames / rate
        return handle, (
            f"{path}: its WAV header declares {declared_s:.2f} s of audio, the file holds "
            f"{handle.frames / rate:.2f} s: it is cut short; what was heard is above"
        )
    fmt = reader.format
    if handle.frames > 0 or held <= 0 or fmt is None:
        return handle, None  # a placeholder size libsndfile read to the end; or no samples
    handle.close()
    raw = _From(path.open("rb"), reader.data_offset)
    try:
        return soundfile.SoundFile(
            raw, samplerate=fmt.rate, channels=fmt.channels,
            subtype=_RAW_SUBTYPES[fmt.encoding.value], endian="LITTLE", format="RAW",
        ), None  # fmt: skip
    except BaseException:
        raw.close()
        raise


class _From:
    """A file read from ``offset`` on, as if it began there (libsndfile reads it as raw
    samples through soundfile's virtual I/O: seek, tell, read, readinto)."""

    def __init__(self, file: io.BufferedReader, offset: int) -> None:
        self._file, self._offset = file, offset
        file.seek(offset)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = self._offset if whence == os.SEEK_SET else 0
        return self._file.seek(pos + base, whence) - self._offset

    def tell(self) -> int:
        return self._file.tell() - self._offset

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()


def _sent_channels(channels: int) -> int:
    """Mono and stereo go as they are; more channels are mixed down to mono."""
    return channels if channels <= 2 else 1


class _Reader:
    """Reads in a worker thread. A read and ``close`` never overlap (the lock): a cancelled
    session may close the file while a read it no longer waits for is still running."""

    def __init__(self, path: Path, handle: soundfile.SoundFile, rate: int) -> None:
        from voxwire.audio.resample import StreamResampler

        self._path = path
        self._handle = handle
        self._lock = threading.Lock()
        self._closed = False
        self._position = 0  # frames read so far
        self._rate = rate  # sent at
        self._resampler = (
            None
            if rate == handle.samplerate
            else StreamResampler(handle.samplerate, rate, latency="bulk")  # a file: cheapest
        )
        self.channels = 1 if self._resampler else _sent_channels(handle.channels)
        self.stopped_early: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        step = self._rate * FRAME_MS // 1000 * 2 * self.channels
        frames = self._handle.samplerate * READ_FRAMES_MS // 1000
        while True:
            pcm = await asyncio.to_thread(self._read, frames)
            if pcm is None:
                return
            for pos in range(0, len(pcm), step):
                yield pcm[pos : pos + step]

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _read(self, frames: int) -> bytes | None:
        """The next samples to send (maybe none yet, while soxr fills); None at the end."""
        import numpy as np
        import soundfile

        from voxwire.audio.codecs import downmix, float32_to_int16

        with self._lock:
            if self._closed or self.stopped_early is not None:
                return None
            try:
                data = self._handle.read(frames, dtype="float32", always_2d=True)
            except soundfile.LibsndfileError as exc:
                data = self._salvage()
                if not self._position and not len(data):
                    raise CliError(f"{self._path}: cannot decode it ({exc.error_string})") from None
                rate, total = self._handle.samplerate, self._handle.frames
                self.stopped_early = (
                    f"{self._path}: cannot decode past "
                    f"{(self._position + len(data)) / rate:.2f} s of {total / rate:.2f} s "
                    f"({exc.error_string}): the file is cut short or damaged; what was heard "
                    "before that is above"
                )
        if not len(data):
            if self._resampler is not None and not self._resampler.is_flushed:
                return float32_to_int16(self._resampler.flush()).tobytes()  # its last samples
            return None
        finite = np.isfinite(data).all(axis=1)
        if not finite.all():
            at = (self._position + int(np.argmin(finite))) / self._handle.samplerate
            raise CliError(
                f"{self._path}: NaN or infinity at {at:.2f} s: the file holds no audio there"
            )
        self._position += len(data)
        if self._resampler is not None:
            return float32_to_int16(self._resampler.process(downmix(data))).tobytes()
        if data.shape[1] > 2:
            data = data.mean(axis=1, keepdims=True, dtype=np.float32)
        return float32_to_int16(data).tobytes()  # C order: samples interleaved by frame

    def _salvage(self) -> np.ndarray:
        """After a failed read: the frames from the last good position that still decode, read
        again in blocks of 100 ms (libsndfile returns nothing of a read that fails, and a
        second of audio is read at a time). Called with the lock held."""
        import numpy as np
        import soundfile

        blocks = []
        step = max(1, self._handle.samplerate // 10)
        with contextlib.suppress(soundfile.LibsndfileError, RuntimeError):
            self._handle.seek(self._position)
            while len(block := self._handle.read(step, dtype="float32", always_2d=True)):
                blocks.append(block)
        if not blocks:
            return np.zeros((0, self._handle.channels), dtype=np.float32)
        return np.concatenate(blocks)

    def _close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._handle.close()
                if isinstance(self._handle.name, _From):  # libsndfile leaves a file object open
                    self._handle.name.close()
