"""What a voxwire model is, read from its Triton ``config.pbtxt``: kind, formats, limits, capacity.

A model opts in with ``parameters { key: "voxwire.kind" ... }`` (docs/contract.md, "Implementing
a model on Triton"); models without it are ignored, so a Triton server may host other models too.

The model's config is the one source of its input limits: the model reads the same
``voxwire.max_*`` parameters from ``args["model_config"]`` that the adapter reads here, the
adapter validates client input against them once, and Capabilities publishes them. Capacity
(how many streams one replica admits) comes from the same config: instance count, sequence
slots, the model's own concurrency and its queue policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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
class ModelLimits:
    """Input limits a model declares (``voxwire.max_*`` parameters); the defaults apply to a
    model that declares none."""

    max_vocabulary_entries: int = 500
    max_phrase_chars: int = 100
    # A vocabulary boost is a number in [0, max_vocabulary_boost] (0 = no boost).
    max_vocabulary_boost: float = 20.0
    # The largest synthesis unit (one request) a TTS model takes, in UTF-8 bytes.
    max_unit_text_bytes: int = 4096
    # The most audio one TTS unit gives, in ms (0: no limit stated); the model enforces it.
    max_unit_audio_ms: int = 0


_LIMIT_PARAMETERS = {
    "voxwire.max_vocabulary_entries": ("max_vocabulary_entries", int),
    "voxwire.max_phrase_chars": ("max_phrase_chars", int),
    "voxwire.max_vocabulary_boost": ("max_vocabulary_boost", float),
    "voxwire.max_unit_text_bytes": ("max_unit_text_bytes", int),
    "voxwire.max_unit_audio_ms": ("max_unit_audio_ms", int),
}


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
    # Model instances per replica, and requests one instance runs at once
    # (voxwire.instance_concurrency; 1 unless the model's execute is a coroutine).
    instances: int = 1
    concurrency: int = 1
    # Requests a replica queues beyond what its instances run (dynamic batching
    # default_queue_policy.max_queue_size); 0 means no limit.
    max_queue: int = 0
    limits: ModelLimits = field(default_factory=ModelLimits)
    # Streams (STT) or contexts (TTS) one instance serves at real time, as the model's author
    # measured it (voxwire.max_streams_per_instance); 0: not declared. Triton's config says
    # how many sequences a model *holds*, not how many it keeps up with: pocketsphinx holds
    # 16 per instance and keeps up with 2 or 3 on this machine's cores (BENCHMARKS.md, "The
    # real models"). Past it every stream falls behind together instead of the newest being
    # refused.
    streams_per_instance: int = 0
    # SSML elements the model accepts (voxwire.ssml_elements); empty without SSML.
    ssml_elements: tuple[str, ...] = ()

    def supports(self, feature: str) -> bool:
        return feature in self.features

    def streams_per_replica(self, cap: int, tts_oversubscription: int) -> int:
        """Streams (STT) or contexts (TTS) one replica admits, at most ``cap``.

        STT: one stream holds one sequence slot for its whole life, so the slots are the limit.
        TTS: a context holds a model call for its whole life but occupies an instance only while
        one of its units synthesizes (units are faster than real time, and a context waits for
        text between them), so ``instances x concurrency`` slots are shared by
        ``tts_oversubscription`` contexts each; never more than the model queues without
        refusing (``instances x concurrency + max_queue``), since each context has at most one
        request in flight.
        Either way never more than ``instances x streams_per_instance`` when the model declares
        what one instance keeps up with.
        """
        if self.streams_per_instance:
            cap = min(cap, self.instances * self.streams_per_instance)
        if self.kind is ModelKind.STT:
            return min(cap, self.sequence_slots or cap)
        running = self.instances * self.concurrency
        admitted = running * max(1, tts_oversubscription)
        if self.max_queue:
            admitted = min(admitted, running + self.max_queue)
        return max(1, min(cap, admitted))


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _limits(name: str, params: dict[str, str]) -> ModelLimits:
    values: dict[str, int | float] = {}
    for key, (attr, kind) in _LIMIT_PARAMETERS.items():
        if key in params:
            try:
                values[attr] = kind(params[key])
            except ValueError as exc:
                raise ValueError(f"model {name}: {key} is not a number: {exc}") from exc
            if values[attr] <= 0:
                raise ValueError(f"model {name}: {key} must be positive")
    return ModelLimits(**values)  # type: ignore[arg-type]


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
        concurrency = int(params.get("voxwire.instance_concurrency", "1"))
        per_instance = int(params.get("voxwire.max_streams_per_instance", "0"))
        if "voxwire.max_streams_per_instance" in params and per_instance < 1:
            raise ValueError("voxwire.max_streams_per_instance must be a positive integer")
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
    max_queue = 0
    if config.HasField("dynamic_batching"):
        max_queue = config.dynamic_batching.default_queue_policy.max_queue_size
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
        instances=instances,
        concurrency=max(1, concurrency),
        max_queue=max_queue,
        streams_per_instance=per_instance,
        limits=_limits(config.name, params),
        ssml_elements=_csv(params.get("voxwire.ssml_elements", "")) if "ssml" in features else (),
    )
