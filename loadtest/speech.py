"""Speech sets: WAV files with their transcripts, and the audio of one STT session.

A speech set is a folder of 16-bit mono PCM WAVs, all at one rate, with an optional
``transcripts.json`` (file name -> text) and ``wer_exempt.json`` (file name -> why its words are
not expected back; left out of WER). The default set is the repository's
``tests/fixtures/speech`` (see its README).
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soxr

from loadtest.scenario import Scenario, ScenarioError
from voxwire.audio.codecs import Encoding, encode, int16_to_float32


@dataclass(frozen=True, slots=True)
class SpeechFile:
    name: str
    pcm: bytes  # mono audio in ``encoding``: PCM16 little-endian as read (see ``to_wire``)
    rate_hz: int
    transcript: str | None  # None: unknown or WER-exempt
    encoding: Encoding = Encoding.PCM_S16LE

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.encoding.bytes_per_sample / self.rate_hz


@dataclass(frozen=True, slots=True)
class SessionAudio:
    pcm: bytes
    rate_hz: int
    reference: str | None  # the transcripts of every file played, None if any is unknown
    encoding: Encoding = Encoding.PCM_S16LE


def load_speech(folder: Path) -> list[SpeechFile]:
    """Read a speech set (blocking file I/O: call it before the event loop runs, or through
    ``asyncio.to_thread``). Raises ScenarioError for a missing folder, a non-PCM16-mono file or
    mixed rates."""
    if not folder.is_dir():
        raise ScenarioError(f"speech set {folder} is not a folder")
    texts = _json(folder / "transcripts.json")
    exempt = _json(folder / "wer_exempt.json")
    files = []
    for path in sorted(folder.glob("*.wav")):
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise ScenarioError(f"{path}: need 16-bit mono PCM")
            pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
        text = None if path.name in exempt else texts.get(path.name)
        files.append(SpeechFile(path.name, pcm, rate, text))
    if not files:
        raise ScenarioError(f"no .wav files in {folder}")
    if len({f.rate_hz for f in files}) > 1:
        raise ScenarioError(f"{folder}: the files have different sample rates")
    return files


def to_wire(files: list[SpeechFile], encoding: Encoding, rate_hz: int) -> list[SpeechFile]:
    """The speech set as a client would send it: resampled to ``rate_hz`` (0: the files' own)
    with soxr and encoded (telephony: 8 kHz mu-law or A-law), once, before a run. CPU work:
    call it before the event loop runs, or through ``asyncio.to_thread``."""
    out = []
    for f in files:
        rate = rate_hz or f.rate_hz
        samples = int16_to_float32(np.frombuffer(f.pcm, dtype="<i2"))
        if rate != f.rate_hz:
            samples = soxr.resample(samples, f.rate_hz, rate, quality="HQ")
        out.append(replace(f, pcm=encode(samples, encoding), rate_hz=rate, encoding=encoding))
    return out


def wire_speech(s: Scenario) -> list[SpeechFile]:
    """The scenario's speech set in its wire format (blocking: file I/O and resampling)."""
    files = load_speech(s.stt.speech)
    encoding = Encoding(s.stt.encoding)
    if encoding is Encoding.PCM_S16LE and s.stt.wire_rate_hz in (0, files[0].rate_hz):
        return files  # as read
    return to_wire(files, encoding, s.stt.wire_rate_hz)


def _json(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ScenarioError(f"{path} must hold one JSON object")
    return {str(k): str(v) for k, v in data.items()}


def session_audio(
    files: list[SpeechFile], first: int, files_wanted: int, seconds: float
) -> SessionAudio:
    """``files_wanted`` whole files from ``files[first % n]`` on (``seconds`` 0), or files back
    to back cut at ``seconds``. Only whole files have a reference transcript (for WER)."""
    parts: list[SpeechFile] = []
    total = 0.0
    index = first
    while len(parts) < (files_wanted if seconds <= 0 else 1) or total < seconds:
        part = files[index % len(files)]
        parts.append(part)
        total += part.seconds
        index += 1
    pcm = b"".join(p.pcm for p in parts)
    texts = [p.transcript for p in parts]
    reference = None if any(t is None for t in texts) else " ".join(t or "" for t in texts)
    encoding = parts[0].encoding
    if seconds > 0:
        keep = round(seconds * parts[0].rate_hz) * encoding.bytes_per_sample
        if keep < len(pcm):
            pcm, reference = pcm[:keep], None  # a file cut short has no known transcript
    return SessionAudio(pcm, parts[0].rate_hz, reference, encoding)


def chunk_audio(
    pcm: bytes, rate_hz: int, chunk_ms: int, encoding: Encoding = Encoding.PCM_S16LE
) -> list[bytes]:
    """``chunk_ms`` pieces of audio (the last may be shorter, never empty)."""
    size = rate_hz * chunk_ms // 1000 * encoding.bytes_per_sample
    if size <= 0:
        raise ScenarioError(f"a {chunk_ms} ms chunk at {rate_hz} Hz holds no sample")
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
