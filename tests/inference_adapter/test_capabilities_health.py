"""Capabilities, health and reflection of the adapter."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.inference_adapter.conftest import TEST_LIMITS
from voxwire.v1 import audio_pb2, capabilities_pb2, capabilities_pb2_grpc, synthesis_pb2


async def test_capabilities_are_typed_and_complete(channel):
    stub = capabilities_pb2_grpc.CapabilitiesStub(channel)
    caps = await stub.GetCapabilities(capabilities_pb2.GetCapabilitiesRequest(), timeout=5)
    models = {m.name: m for m in caps.models}
    assert set(models) == {"stt_pocketsphinx", "tts_espeak", "bench_stt", "bench_tts"}

    stt = models["stt_pocketsphinx"]
    assert stt.kind == capabilities_pb2.MODEL_KIND_STT and stt.is_default and not stt.benchmark
    assert stt.native_sample_rate_hz == 16000 and stt.languages[0] == "en-US"
    assert (
        stt.features.interim_results and stt.features.word_timestamps and stt.features.endpointing
    )
    assert not stt.features.diarization and not stt.output_formats
    inputs = {f.encoding: f for f in stt.input_formats}
    assert list(inputs[audio_pb2.AUDIO_ENCODING_MULAW].sample_rates_hz) == [8000]
    assert 48000 in inputs[audio_pb2.AUDIO_ENCODING_PCM_F32LE].sample_rates_hz
    assert inputs[audio_pb2.AUDIO_ENCODING_PCM_S16LE].max_channels == 2

    tts = models["tts_espeak"]
    assert tts.kind == capabilities_pb2.MODEL_KIND_TTS and tts.is_default
    assert tts.features.ssml and "break" in tts.features.ssml_elements
    assert list(tts.features.pronunciation_alphabets) == [synthesis_pb2.PHONEME_ALPHABET_ESPEAK]
    assert tts.voices[0] == "en-us" and tts.native_sample_rate_hz == 22050
    assert {f.encoding for f in tts.output_formats} == {1, 2, 3, 4}

    assert models["bench_stt"].benchmark and not models["bench_stt"].is_default
    assert all(m.ready_replicas == 1 for m in caps.models)

    # Capacity and input limits come from each model's own config.pbtxt (one source).
    def capacity(name: str) -> tuple[int, ...]:
        c = models[name].capacity
        return (c.instances, c.concurrency, c.sequence_slots, c.max_streams_per_replica)

    # 2 instances x 16 batch slots, of which each instance keeps up with 2 streams
    # (voxwire.max_streams_per_instance)
    assert capacity("stt_pocketsphinx") == (2, 1, 32, 4)
    assert capacity("bench_stt") == (1, 1, 256, 256)  # oldest: 256 candidate sequences
    assert capacity("tts_espeak") == (2, 1, 0, 8)  # 2 instances x 1 x oversubscription 4
    assert capacity("bench_tts") == (1, 64, 0, 256)  # async execute, capped at 256 per replica
    assert all(m.capacity.max_streams == m.capacity.max_streams_per_replica for m in caps.models)
    assert (stt.limits.max_vocabulary_entries, stt.limits.max_phrase_chars) == (500, 100)
    assert stt.limits.max_vocabulary_boost == 20
    assert tts.limits.max_unit_text_bytes == 4096
    assert tts.limits.max_unit_audio_ms == 300_000  # its config's voxwire.max_unit_audio_ms
    assert models["bench_tts"].limits.max_unit_audio_ms == 0  # states none
    # Each TTS model states its own SSML subset; bench_tts takes none.
    assert list(tts.features.ssml_elements) == [
        "speak", "p", "s", "break", "prosody", "emphasis", "say-as", "sub", "phoneme"
    ]  # fmt: skip
    assert not models["bench_tts"].features.ssml_elements

    limits = caps.limits
    assert limits.max_chunk_bytes == TEST_LIMITS.max_chunk_bytes
    assert limits.max_contexts_per_stream == TEST_LIMITS.max_contexts_per_stream
    assert limits.idle_timeout.ToTimedelta().total_seconds() == TEST_LIMITS.idle_timeout_seconds
    assert (
        limits.max_stream_duration.ToTimedelta().total_seconds() == TEST_LIMITS.max_stream_seconds
    )
    assert limits.max_unread_response_bytes == TEST_LIMITS.max_unread_response_bytes
    assert limits.write_timeout.ToTimedelta().total_seconds() == TEST_LIMITS.write_timeout_seconds


async def test_health_per_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in (
        "",
        "voxwire.v1.Transcription",
        "voxwire.v1.Synthesis",
        "voxwire.v1.Capabilities",
    ):
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    try:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("unknown service must be NOT_FOUND")


async def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    services = set()
    async for resp in call:
        services |= {s.name for s in resp.list_services_response.service}
    assert {
        "voxwire.v1.Transcription",
        "voxwire.v1.Synthesis",
        "voxwire.v1.Capabilities",
        "grpc.health.v1.Health",
    } <= services
