"""voxwire.v1.Capabilities: the typed catalog of models, formats, features and limits."""

from __future__ import annotations

import grpc

from inference_adapter.config import AdapterConfig
from inference_adapter.runtime import Runtime
from inference_adapter.stt.config import pick_model
from inference_adapter.triton.catalog import ModelInfo, ModelKind
from voxwire.audio.formats import PROTO_ENCODINGS, rates_for
from voxwire.v1 import capabilities_pb2, capabilities_pb2_grpc, synthesis_pb2

# The optional parts of the contract this server implements (docs/contract.md, "Resuming",
# "Notices", "Failover"); transparent_failover only while failover is on (server_features).
SERVER_FEATURES = capabilities_pb2.ServerFeatures(
    stream_offsets=True,
    synthesis_offsets=True,
    word_text_offsets=True,
    synthesis_skip_audio=True,
    stream_notices=True,
    transparent_failover=True,
)


def server_features(config: AdapterConfig) -> capabilities_pb2.ServerFeatures:
    """What this server, so configured, offers: failover can be turned off
    (``max_failovers`` 0)."""
    features = capabilities_pb2.ServerFeatures()
    features.CopyFrom(SERVER_FEATURES)
    features.transparent_failover = config.max_failovers > 0 and config.replay_window_seconds > 0
    return features


_KINDS = {
    ModelKind.STT: capabilities_pb2.MODEL_KIND_STT,
    ModelKind.TTS: capabilities_pb2.MODEL_KIND_TTS,
}


def _formats(max_channels: int) -> list[capabilities_pb2.FormatSupport]:
    return [
        capabilities_pb2.FormatSupport(
            encoding=value, sample_rates_hz=list(rates_for(enc)), max_channels=max_channels
        )
        for enc, value in PROTO_ENCODINGS.items()
    ]


def describe(
    info: ModelInfo, *, ready_replicas: int, is_default: bool, per_replica: int
) -> capabilities_pb2.ModelCapabilities:
    """A model's capabilities; ``per_replica`` is what the pool admits per replica."""
    features = capabilities_pb2.Features(
        interim_results=info.supports("interim_results"),
        word_timestamps=info.supports("word_timestamps"),
        pronunciation=info.supports("pronunciation"),
        ssml=info.supports("ssml"),
        diarization=False,
        endpointing=info.supports("endpointing"),
        vocabulary=info.supports("vocabulary"),
    )
    if info.supports("pronunciation"):
        features.pronunciation_alphabets.append(synthesis_pb2.PHONEME_ALPHABET_ESPEAK)
    if info.supports("ssml"):
        features.ssml_elements.extend(info.ssml_elements)  # the model's own subset
    caps = capabilities_pb2.ModelCapabilities(
        name=info.name,
        kind=_KINDS[info.kind],
        languages=list(info.languages),
        features=features,
        voices=list(info.voices),
        native_sample_rate_hz=info.sample_rate_hz,
        benchmark=info.benchmark,
        is_default=is_default,
        ready_replicas=ready_replicas,
        capacity=capabilities_pb2.Capacity(
            max_streams_per_replica=per_replica,
            instances=info.instances,
            concurrency=info.concurrency,
            sequence_slots=info.sequence_slots,
            max_streams=per_replica * ready_replicas,
        ),
    )
    limits = info.limits
    if info.kind is ModelKind.STT:
        caps.limits.max_vocabulary_entries = limits.max_vocabulary_entries
        caps.limits.max_phrase_chars = limits.max_phrase_chars
        caps.limits.max_vocabulary_boost = limits.max_vocabulary_boost
    else:
        caps.limits.max_unit_text_bytes = limits.max_unit_text_bytes
        caps.limits.max_unit_audio_ms = limits.max_unit_audio_ms
    if info.kind is ModelKind.STT:
        caps.input_formats.extend(_formats(max_channels=2))
    else:
        caps.output_formats.extend(_formats(max_channels=1))
    return caps


class CapabilitiesService(capabilities_pb2_grpc.CapabilitiesServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def GetCapabilities(
        self, request: capabilities_pb2.GetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> capabilities_pb2.GetCapabilitiesResponse:
        catalog = self._rt.pool.catalog()
        cfg = self._rt.config
        defaults = set()
        for kind, name in (
            (ModelKind.STT, cfg.default_stt_model),
            (ModelKind.TTS, cfg.default_tts_model),
        ):
            try:
                defaults.add(pick_model("", kind, catalog, name).name)
            except Exception:  # no model of that kind: nothing is the default
                pass
        limits = cfg.limits
        response = capabilities_pb2.GetCapabilitiesResponse(
            models=[
                describe(
                    info,
                    ready_replicas=len(self._rt.pool.ready_replicas(info.name)),
                    is_default=info.name in defaults,
                    per_replica=self._rt.pool.streams_per_replica(info),
                )
                for info in sorted(catalog.values(), key=lambda m: (m.kind.value, m.name))
            ],
            limits=capabilities_pb2.Limits(
                max_contexts_per_stream=limits.max_contexts_per_stream,
                max_chunk_bytes=limits.max_chunk_bytes,
                max_pending_text_bytes=limits.max_pending_text_bytes,
                max_unread_response_bytes=limits.max_unread_response_bytes,
            ),
            server_features=server_features(cfg),
        )
        response.limits.write_timeout.FromMilliseconds(round(limits.write_timeout_seconds * 1000))
        response.limits.max_stream_duration.FromMilliseconds(
            round(limits.max_stream_seconds * 1000)
        )
        response.limits.idle_timeout.FromMilliseconds(round(limits.idle_timeout_seconds * 1000))
        return response
