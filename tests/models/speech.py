"""Speech with known text for STT tests: CMU Flite (voice slt) rendered on the fly."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

RATE_HZ = 16000
FLITE = shutil.which("flite")


@functools.cache
def flite_speech(text: str, rate_hz: int = RATE_HZ) -> np.ndarray:
    """``text`` spoken by flite's slt voice as int16 mono at ``rate_hz`` (cached per text)."""
    if FLITE is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            [FLITE, "-voice", "slt", "-t", text, "-o", str(path)], check=True, timeout=30
        )
        with wave.open(str(path), "rb") as wav:
            native = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if native != rate_hz:
        samples = soxr.resample(samples, native, rate_hz)
    return samples.astype(np.int16)


def silence(seconds: float, rate_hz: int = RATE_HZ) -> np.ndarray:
    return np.zeros(int(seconds * rate_hz), dtype=np.int16)


def chunks(audio: np.ndarray, chunk_ms: int = 100, rate_hz: int = RATE_HZ) -> list[np.ndarray]:
    size = rate_hz * chunk_ms // 1000
    return [audio[i : i + size] for i in range(0, len(audio), size)]
