"""Validate a TranscriptionConfig against the model catalog: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_adapter.config import Limits
from inference_adapter.triton.catalog import ModelInfo, ModelKind
from voxwire.audio.codecs import PcmFormat
from voxwire.audio.formats import resolve_format
from voxwire.errors import InvalidConfig, UnknownModel, Violation
from voxwire.replay import continued_from_violations
from voxwire.v1 import transcription_pb2

# Bounds that keep a configuration meaningful (and a model's VAD sane). Vocabulary limits are
# the model's own (ModelInfo.limits, read from its config.pbtxt): one source for the model, the
# adapter and Capabilities.
SILENCE_MS = (50, 10_000)
VAD_LEVELS = (0, 3)


@dataclass(frozen=True, slots=True)
class ResolvedTranscriptionConfig:
    model: ModelInfo
    input_format: PcmFormat
    language: str
    interim_results: bool
    word_timestamps: bool
    endpointing: dict[str, Any]
    vocabulary: tuple[dict[str, Any], ...]
    request_id: str
    # Continuing an earlier stream: positions start here, utterance ids at this index.
    stream_offset_ms: int = 0
    first_utterance_index: int = 0

    def model_control(self) -> dict[str, Any]:
        """The START request's CONTROL object (docs/design/spine.md)."""
        return {
            "config": {
                "language": self.language,
                "interim_results": self.interim_results,
                "word_timestamps": self.word_timestamps,
                "endpointing": self.endpointing,
                "vocabulary": list(self.vocabulary),
                # The client's rate before resampling: a model may adapt to the audio's band
                # (stt_pocketsphinx picks its starting cepstral mean by it).
                "source_sample_rate_hz": self.input_format.sample_rate_hz,
            }
        }


def pick_model(
    name: str, kind: ModelKind, catalog: Mapping[str, ModelInfo], default: str
) -> ModelInfo:
    """The model a config names, or the default of its kind. Raises UnknownModel."""
    if not name:
        name = default or next(
            (
                m.name
                for m in sorted(catalog.values(), key=lambda m: m.name)
                if m.kind is kind and not m.benchmark
            ),
            "",
        )
        if not name:
            raise UnknownModel(f"no {kind.value} model is available")
    info = catalog.get(name)
    if info is None or info.kind is not kind:
        known = sorted(m.name for m in catalog.values() if m.kind is kind)
        raise UnknownModel(
            f"no {kind.value} model named {name!r}; available: {known}",
            violations=[Violation("model", f"must be one of {known}")],
        )
    return info


def endpointing_dict(
    cfg: transcription_pb2.EndpointingConfig, field: str, model: ModelInfo
) -> tuple[dict[str, Any], list[Violation]]:
    out: dict[str, Any] = {}
    bad: list[Violation] = []
    if cfg.ByteSize() and not model.supports("endpointing"):
        bad.append(Violation(field, f"model {model.name} does not support endpointing"))
    if cfg.HasField("enabled"):
        out["enabled"] = cfg.enabled
    if cfg.HasField("silence_ms"):
        if not SILENCE_MS[0] <= cfg.silence_ms <= SILENCE_MS[1]:
            bad.append(
                Violation(f"{field}.silence_ms", f"must be in {SILENCE_MS[0]}..{SILENCE_MS[1]}")
            )
        out["silence_ms"] = cfg.silence_ms
    if cfg.HasField("vad_aggressiveness"):
        if not VAD_LEVELS[0] <= cfg.vad_aggressiveness <= VAD_LEVELS[1]:
            bad.append(Violation(f"{field}.vad_aggressiveness", "must be in 0..3"))
        out["vad_aggressiveness"] = cfg.vad_aggressiveness
    return out, bad


def vocabulary_list(
    entries: Any, field: str, model: ModelInfo
) -> tuple[tuple[dict[str, Any], ...], list[Violation]]:
    out: list[dict[str, Any]] = []
    bad: list[Violation] = []
    limits = model.limits
    if len(entries) and not model.supports("vocabulary"):
        bad.append(Violation(field, f"model {model.name} does not support vocabulary"))
    if len(entries) > limits.max_vocabulary_entries:
        bad.append(Violation(field, f"at most {limits.max_vocabulary_entries} entries"))
    for i, entry in enumerate(entries):
        phrase = entry.phrase.strip()
        if not phrase or len(phrase) > limits.max_phrase_chars:
            bad.append(
                Violation(
                    f"{field}[{i}].phrase", f"must be 1..{limits.max_phrase_chars} characters"
                )
            )
        item: dict[str, Any] = {"phrase": phrase}
        if entry.HasField("boost"):
            # NaN fails both comparisons, so it is refused too.
            if not 0.0 <= entry.boost <= limits.max_vocabulary_boost:
                bad.append(
                    Violation(
                        f"{field}[{i}].boost", f"must be in [0, {limits.max_vocabulary_boost:g}]"
                    )
                )
            item["boost"] = entry.boost
        if entry.pronunciation.strip():
            item["pronunciation"] = entry.pronunciation.strip()
        out.append(item)
    return tuple(out), bad


def resolve(
    config: transcription_pb2.TranscriptionConfig,
    catalog: Mapping[str, ModelInfo],
    limits: Limits,
    *,
    default_model: str = "",
    request_id: str,
) -> ResolvedTranscriptionConfig:
    """Check every field. Raises UnknownModel, UnsupportedEncoding, UnsupportedSampleRate or
    InvalidConfig (with all field violations at once)."""
    model = pick_model(config.model, ModelKind.STT, catalog, default_model)
    if not config.HasField("audio_format"):
        raise InvalidConfig(
            "config.audio_format is required",
            violations=[Violation("config.audio_format", "required")],
        )
    fmt = resolve_format(config.audio_format, "config.audio_format", max_channels=2)
    bad: list[Violation] = []
    language = config.language or model.languages[0]
    if language.lower() not in {lang.lower() for lang in model.languages}:
        bad.append(Violation("config.language", f"must be one of {list(model.languages)}"))
    for feature in ("interim_results", "word_timestamps"):
        if getattr(config, feature) and not model.supports(feature):
            bad.append(Violation(f"config.{feature}", f"model {model.name} does not support it"))
    endpointing, more = endpointing_dict(config.endpointing, "config.endpointing", model)
    bad += more
    vocabulary, more = vocabulary_list(config.vocabulary, "config.vocabulary", model)
    bad += more
    bad += continued_from_violations(
        offset=("config.stream_offset_ms", config.stream_offset_ms),
        utterance=("config.first_utterance_index", config.first_utterance_index),
    )
    if bad:
        raise InvalidConfig.of("invalid config", bad)
    return ResolvedTranscriptionConfig(
        model=model,
        input_format=fmt,
        language=language,
        interim_results=config.interim_results,
        word_timestamps=config.word_timestamps,
        endpointing=endpointing,
        vocabulary=vocabulary,
        request_id=config.request_id or request_id,
        stream_offset_ms=config.stream_offset_ms,
        first_utterance_index=config.first_utterance_index,
    )
