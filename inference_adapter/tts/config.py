"""Validate a SynthesisContextConfig against the model catalog: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_adapter.stt.config import pick_model
from inference_adapter.triton.catalog import ModelInfo, ModelKind
from voxwire.audio.codecs import PcmFormat
from voxwire.audio.formats import resolve_format
from voxwire.errors import InvalidConfig, InvalidPronunciation, Violation
from voxwire.replay import continued_from_violations
from voxwire.v1 import synthesis_pb2

MAX_PRONUNCIATIONS = 200
MAX_GRAPHEME_CHARS = 100
MAX_PHONEME_CHARS = 200
# Characters that would let a pronunciation escape eSpeak's [[...]] phoneme input.
_FORBIDDEN_PHONEME_CHARS = set("[]<>\n\r")
_ALPHABETS = {synthesis_pb2.PHONEME_ALPHABET_ESPEAK: "espeak"}


@dataclass(frozen=True, slots=True)
class ResolvedSynthesisConfig:
    model: ModelInfo
    voice: str
    output_format: PcmFormat
    word_timestamps: bool
    ssml: bool
    language: str
    pronunciations: tuple[dict[str, str], ...]
    # Continuing an earlier context (resume): its timeline and numbering start here.
    timeline_offset_ms: int = 0
    first_sequence_number: int = 1
    # ... from the start of text whose first ``skip_audio_ms`` the client has (SSML resumes).
    skip_audio_ms: int = 0

    def model_config(self) -> dict[str, Any]:
        """The CONFIG tensor of every request of the context (docs/design/spine.md)."""
        return {
            "voice": self.voice,
            "language": self.language,
            "text_format": "ssml" if self.ssml else "plain",
            "word_timestamps": self.word_timestamps,
            "pronunciations": list(self.pronunciations),
        }


def _pronunciations(
    entries: Any, model: ModelInfo
) -> tuple[tuple[dict[str, str], ...], list[Violation]]:
    out: list[dict[str, str]] = []
    bad: list[Violation] = []
    if len(entries) > MAX_PRONUNCIATIONS:
        bad.append(Violation("open.pronunciations", f"at most {MAX_PRONUNCIATIONS} entries"))
    for i, entry in enumerate(entries):
        field = f"open.pronunciations[{i}]"
        alphabet = _ALPHABETS.get(entry.alphabet)
        if alphabet is None:
            bad.append(Violation(f"{field}.alphabet", "only PHONEME_ALPHABET_ESPEAK is supported"))
        grapheme = entry.grapheme.strip()
        if not grapheme or len(grapheme) > MAX_GRAPHEME_CHARS:
            bad.append(
                Violation(f"{field}.grapheme", f"must be 1..{MAX_GRAPHEME_CHARS} characters")
            )
        phonemes = entry.phonemes.strip()
        if not phonemes or len(phonemes) > MAX_PHONEME_CHARS:
            bad.append(Violation(f"{field}.phonemes", f"must be 1..{MAX_PHONEME_CHARS} characters"))
        elif _FORBIDDEN_PHONEME_CHARS & set(phonemes):
            bad.append(Violation(f"{field}.phonemes", "must not contain [ ] < > or line breaks"))
        out.append({"grapheme": grapheme, "phonemes": phonemes, "alphabet": alphabet or ""})
    return tuple(out), bad


def resolve(
    config: synthesis_pb2.SynthesisContextConfig,
    catalog: Mapping[str, ModelInfo],
    *,
    default_model: str = "",
) -> ResolvedSynthesisConfig:
    """Check every field. Raises UnknownModel, UnsupportedEncoding, UnsupportedSampleRate,
    InvalidPronunciation or InvalidConfig (with all field violations at once)."""
    model = pick_model(config.model, ModelKind.TTS, catalog, default_model)
    if not config.HasField("output_format"):
        raise InvalidConfig(
            "open.output_format is required",
            violations=[Violation("open.output_format", "required")],
        )
    fmt = resolve_format(config.output_format, "open.output_format", max_channels=1)
    bad: list[Violation] = []
    voice = config.voice or (model.voices[0] if model.voices else "")
    if model.voices and voice not in model.voices:
        bad.append(Violation("open.voice", f"must be one of {list(model.voices)}"))
    language = config.language or model.languages[0]
    if language.lower() not in {lang.lower() for lang in model.languages}:
        bad.append(Violation("open.language", f"must be one of {list(model.languages)}"))
    if config.word_timestamps and not model.supports("word_timestamps"):
        bad.append(Violation("open.word_timestamps", f"model {model.name} does not support it"))
    ssml = config.text_format == synthesis_pb2.TEXT_FORMAT_SSML
    if config.text_format not in synthesis_pb2.TextFormat.values():
        # An enum value this server does not know (proto3 enums are open: a newer client's
        # format) was spoken as plain text, silently; unknown encodings are refused too.
        bad.append(Violation("open.text_format", f"unknown text format {config.text_format}"))
    if ssml and not model.supports("ssml"):
        bad.append(Violation("open.text_format", f"model {model.name} does not support SSML"))
    if len(config.pronunciations) and not model.supports("pronunciation"):
        # A feature the model lacks is a config violation (docs/contract.md), whatever the
        # entries hold; INVALID_PRONUNCIATION is for bad entries on a model that takes them.
        bad.append(Violation("open.pronunciations", f"model {model.name} does not support them"))
    pronunciations, pron_bad = _pronunciations(config.pronunciations, model)
    if pron_bad and not bad:
        raise InvalidPronunciation.of("invalid pronunciation", pron_bad)
    bad += pron_bad
    bad += continued_from_violations(
        offset=("open.timeline_offset_ms", config.timeline_offset_ms),
        skip=("open.skip_audio_ms", config.timeline_offset_ms + config.skip_audio_ms),
        sequence=("open.first_sequence_number", config.first_sequence_number),
    )
    if bad:
        raise InvalidConfig.of("invalid context config", bad)
    return ResolvedSynthesisConfig(
        model=model,
        voice=voice,
        output_format=fmt,
        word_timestamps=config.word_timestamps,
        ssml=ssml,
        language=language,
        pronunciations=pronunciations,
        timeline_offset_ms=config.timeline_offset_ms,
        first_sequence_number=max(1, config.first_sequence_number),
        skip_audio_ms=config.skip_audio_ms,
    )
