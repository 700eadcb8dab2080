"""Speech with known text for STT tests: the committed flite fixtures of tests/fixtures/speech."""

from __future__ import annotations

import functools

import numpy as np
import soxr

from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav

RATE_HZ = 16000


@functools.cache
def _fixture_names() -> dict[str, str]:
    """text -> WAV file name, from transcripts.json."""
    by_text = {text: name for name, text in TRANSCRIPTS.items()}
    assert len(by_text) == len(TRANSCRIPTS), "two fixtures share one text"
    return by_text


@functools.cache
def spoken(text: str, rate_hz: int = RATE_HZ) -> np.ndarray:
    """``text`` spoken by flite's slt voice as read-only int16 mono at ``rate_hz`` (cached).

    The audio is the committed fixture whose transcripts.json text is ``text``, exactly what
    ``flite -voice slt`` renders (16 kHz, untrimmed); other rates are resampled with soxr.

    Raises:
        LookupError: no fixture has this text.
    """
    name = _fixture_names().get(text)
    if name is None:
        raise LookupError(
            f"no speech fixture for {text!r} in {SPEECH_DIR / 'transcripts.json'}: add it to"
            " FIXTURES in tests/fixtures/speech/make_fixtures.py and run that script (needs"
            " flite), then commit the new WAV and transcripts.json"
        )
    samples, native = read_wav(SPEECH_DIR / name)
    assert samples.ndim == 1, f"{name} is not mono"
    if native != rate_hz:
        samples = soxr.resample(samples, native, rate_hz)
    samples = samples.astype(np.int16)
    samples.flags.writeable = False  # shared by every caller through the cache
    return samples


def silence(seconds: float, rate_hz: int = RATE_HZ) -> np.ndarray:
    return np.zeros(int(seconds * rate_hz), dtype=np.int16)


def chunks(audio: np.ndarray, chunk_ms: int = 100, rate_hz: int = RATE_HZ) -> list[np.ndarray]:
    size = rate_hz * chunk_ms // 1000
    return [audio[i : i + size] for i in range(0, len(audio), size)]
