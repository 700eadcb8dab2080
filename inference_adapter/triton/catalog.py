"""What a voxwire model is, read from its Triton ``config.pbtxt`` parameters.

A model opts in with ``parameters { key: "voxwire.kind" ... }`` (docs/design/spine.md); models
without it are ignored, so a Triton server may host other models too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2


class ModelKind(enum.Enum):
    STT = "stt"
    TTS = "tts"


FEATURES = (
    "interim_results",
    "word_timestamps",
    "endpointing",
    "vocabulary",
    "pronunciation",
    "ssml",
)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    kind: ModelKind
    sample_rate_hz: int
    languages: tuple[str, ...]
    features: frozenset[str]
    voices: tuple[str, ...]
    benchmark: bool
    # Requests carry a leading batch dimension (max_batch_size > 0).
    batched: bool
    # Sequences one replica can hold at once (sequence batcher slots), 0 when not sequenced.
    sequence_slots: int
    # Triton drops a sequence that sends nothing for this long (max_sequence_idle_microseconds).
    sequence_idle_s: float = 1.0

    def supports(self, feature: str) -> bool:
        return feature in self.features


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def model_info(config: model_config_pb2.ModelConfig) -> ModelInfo | None:
    """The voxwire view of a Triton model config, or None when it is not a voxwire model.

    Raises ValueError when the voxwire parameters are present but malformed.
    """
    params = {k: v.string_value for k, v in config.parameters.items()}
    kind = params.get("voxwire.kind")
    if kind is None:
        return None
    try:
        model_kind = ModelKind(kind)
        rate = int(params["voxwire.sample_rate_hz"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"model {config.name}: bad voxwire parameters: {exc}") from exc
    features = frozenset(_csv(params.get("voxwire.features", "")))
    unknown = features - set(FEATURES)
    if unknown:
        raise ValueError(f"model {config.name}: unknown voxwire.features {sorted(unknown)}")
    instances = sum(max(1, g.count) for g in config.instance_group) or 1
    slots = 0
    idle_s = 1.0
    if config.HasField("sequence_batching"):
        batching = config.sequence_batching
        # Triton's default when unset (or 0) is 1 s.
        idle_s = (batching.max_sequence_idle_microseconds or 1_000_000) / 1e6
        if batching.HasField("oldest"):
            # "oldest" holds max_candidate_sequences live sequences per instance.
            slots = instances * max(1, batching.oldest.max_candidate_sequences)
        else:
            # "direct" binds each sequence to one batch slot of one instance.
            slots = instances * max(1, config.max_batch_size)
    return ModelInfo(
        name=config.name,
        kind=model_kind,
        sample_rate_hz=rate,
        languages=_csv(params.get("voxwire.languages", "en-US")),
        features=features,
        voices=_csv(params.get("voxwire.voices", "")),
        benchmark=params.get("voxwire.benchmark", "false").lower() == "true",
        batched=config.max_batch_size > 0,
        sequence_slots=slots,
        sequence_idle_s=idle_s,
    )
