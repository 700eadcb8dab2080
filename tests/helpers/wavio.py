"""Read and write 16-bit PCM WAV files with the standard ``wave`` module."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["read_wav", "write_wav"]


def read_wav(path: str | Path) -> tuple[npt.NDArray[np.int16], int]:
    """Return (samples, sample_rate_hz); samples are int16, shape (frames,) for mono and
    (frames, channels) otherwise.

    Raises:
        ValueError: the file is not 16-bit PCM.
        wave.Error / OSError: the file is not a readable WAV.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        data = wav.readframes(wav.getnframes())
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels)
    return samples, rate


def write_wav(path: str | Path, samples: npt.NDArray[np.int16], sample_rate_hz: int) -> None:
    """Write int16 samples, shape (frames,) or (frames, channels), as a PCM WAV file.

    Raises:
        TypeError: ``samples`` is not int16.
    """
    if samples.dtype != np.int16:
        raise TypeError(f"samples must be int16, got {samples.dtype}")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(samples.astype("<i2", copy=False).tobytes())
