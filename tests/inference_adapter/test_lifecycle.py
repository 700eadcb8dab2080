"""Drain, maximum stream duration, and telemetry (spans, trace context, metrics)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inference_adapter.config import AdapterConfig, Limits
from inference_adapter.server import AdapterServer
from inference_adapter.telemetry import Telemetry
from localstack.client import StreamOutcome, collect, transcribe, write_all
from tests.helpers.raw_calls import read_rest
from tests.helpers.status import from_trailers
from voxwire.v1 import (
    audio_pb2,
    stream_pb2,
    synthesis_pb2,
    synthesis_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)

PCM16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
SILENCE_3S = np.zeros(48000, dtype="<i2").tobytes()


def config_msg(model: str) -> transcription_pb2.StreamingTranscribeRequest:
    return transcription_pb2.StreamingTranscribeRequest(
        config=transcription_pb2.TranscriptionConfig(model=model, audio_format=PCM16)
    )


async def run(channel, messages) -> StreamOutcome:
    call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(timeout=10)
    writer = asyncio.create_task(write_all(call, messages))
    out = await collect(call)
    await writer
    return out


# The labels of the two gauges of what holds a replica slot: STT sequences, TTS contexts.
SLOT_LABELS = {"service", "model", "replica"}


def config(triton, **kw) -> AdapterConfig:
    return AdapterConfig(listen="127.0.0.1:0", triton_urls=(triton.grpc_url,), **kw)


async def test_drain_refuses_new_streams_lets_short_ones_finish_and_ends_the_rest(triton, caplog):
    caplog.set_level(logging.INFO, logger="inference_adapter.server")
    server = AdapterServer(config(triton))
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        short = asyncio.create_task(
            transcribe(channel, SILENCE_3S[:9600], PCM16, model="bench_stt", realtime=True)
        )
        long = asyncio.create_task(
            transcribe(channel, SILENCE_3S, PCM16, model="bench_stt", realtime=True)
        )
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        stopping = asyncio.create_task(server.stop(grace=1.5))
        await asyncio.sleep(0.1)
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        refused = await run(channel, [config_msg("bench_stt")])
        # The refusal alone: it was first told to "finish within the remaining time".
        assert not refused.of("notice"), refused.of("notice")
        err = from_trailers(refused.trailers)
        assert (refused.code, err.reason, err.retryable) == (
            grpc.StatusCode.UNAVAILABLE,
            "DRAINING",
            True,
        )
        keep = synthesis_pb2.StreamingSynthesizeRequest(keep_alive=stream_pb2.KeepAlive())
        synth = synthesis_pb2_grpc.SynthesisStub(channel)
        refused_tts = await collect(synth.StreamingSynthesize(iter([keep]), timeout=10))
        assert from_trailers(refused_tts.trailers).reason == "DRAINING"
        ok = await short
        assert ok.code == grpc.StatusCode.OK and ok.responses[-1].HasField("summary")
        cut = await long
        elapsed = time.monotonic() - t0
        err = from_trailers(cut.trailers)
        assert (cut.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "DRAINING")
        assert 0.9 < elapsed < 1.5  # at grace minus the abort margin
        # Both streams were told when the drain began, and how long they had: the time before
        # the cut (the grace less the abort margin). They were told the whole grace, and the
        # cut came 0.5 s before what they were told.
        for out in (ok, cut):
            (notice,) = out.of("notice")
            assert notice.kind == stream_pb2.StreamNotice.KIND_DRAINING
            assert 0.7 <= notice.remaining.ToMilliseconds() / 1000 <= 1.0
        await stopping
    # The operator's view of it: the drain's start and its outcome (the adapter said nothing).
    said = [r.getMessage() for r in caplog.records if r.name == "inference_adapter.server"]
    assert "drain started: 2 streams open, grace 1.5 s" in said, said
    assert "drain finished: 1 streams ended by themselves, 1 cut at the grace" in said, said


async def test_a_second_signal_ends_the_drain_now(triton, caplog):
    # What a second SIGTERM or Ctrl-C calls (voxwire.startup.drain_then_stop): the process
    # waited out the whole grace, silently.
    caplog.set_level(logging.WARNING, logger="inference_adapter.server")
    server = AdapterServer(config(triton))
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        long = asyncio.create_task(
            transcribe(channel, SILENCE_3S * 4, PCM16, model="bench_stt", realtime=True)
        )
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        stopping = asyncio.create_task(server.stop(grace=30.0))
        await asyncio.sleep(0.2)
        server.end_drain_now()
        cut = await asyncio.wait_for(long, 10)
        await asyncio.wait_for(stopping, 10)
        elapsed = time.monotonic() - t0
    assert (cut.code, from_trailers(cut.trailers).reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "DRAINING",
    )
    assert elapsed < 5.0, elapsed
    said = [r.getMessage() for r in caplog.records]
    assert any("a second signal: the drain ends now; 1 open streams" in m for m in said), said


async def test_max_stream_duration_finalizes_then_fails(triton):
    server = AdapterServer(config(triton, limits=Limits(max_stream_seconds=1.0)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            out = await transcribe(channel, SILENCE_3S, PCM16, model="bench_stt", realtime=True)
        err = from_trailers(out.trailers)
        assert (out.code, err.reason, err.retryable) == (
            grpc.StatusCode.OUT_OF_RANGE,
            "STREAM_TOO_LONG",
            True,
        )
        finals = [r for r in out.of("result") if r.is_final]
        # Pending audio was finalized first: the last final covers every byte received (how
        # much arrives within the second depends on the machine's load).
        (summary,) = out.of("summary")
        assert finals and finals[-1].end_ms == summary.audio_ms
        assert 300 <= summary.audio_ms <= 1200
    finally:
        await server.stop(grace=0.5)


async def timed(call: grpc.aio.StreamStreamCall) -> tuple[list[tuple[float, object]], object]:
    """Every response with its arrival time (from now), then the status's arrival time and the
    outcome."""
    t0 = time.monotonic()
    arrivals = []
    out = StreamOutcome()
    try:
        async for response in call:
            arrivals.append((time.monotonic() - t0, response))
            out.responses.append(response)
    except grpc.aio.AioRpcError:
        pass
    out.code = await call.code()
    out.trailers = dict(await call.trailing_metadata() or ())
    arrivals.append((time.monotonic() - t0, out))
    return arrivals, out


async def test_idle_and_duration_warnings_come_before_the_end(triton):
    limits = Limits(
        idle_timeout_seconds=1.5,
        idle_warning_seconds=1.0,
        # The duration warning (at 2 s) comes after the idle ends (1.5 s): a silent stream gets
        # its idle warning alone.
        max_stream_seconds=3.0,
        duration_warning_seconds=1.0,
    )
    server = AdapterServer(config(triton, limits=limits))
    await server.start()
    notice = stream_pb2.StreamNotice
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stt = transcription_pb2_grpc.TranscriptionStub(channel)
            tts = synthesis_pb2_grpc.SynthesisStub(channel)
            keep = transcription_pb2.StreamingTranscribeRequest(keep_alive=stream_pb2.KeepAlive())
            # A client that says nothing after its config; one that keeps the stream alive
            # (it reaches the maximum duration); a TTS stream that says nothing.
            silent = stt.StreamingTranscribe(timeout=10)
            await silent.write(config_msg("bench_stt"))
            lively = stt.StreamingTranscribe(timeout=10)
            writer = asyncio.create_task(
                write_all(lively, [config_msg("bench_stt"), *[keep] * 16], pace_s=0.25)
            )
            quiet_tts = tts.StreamingSynthesize(timeout=10)
            await quiet_tts.write(
                synthesis_pb2.StreamingSynthesizeRequest(keep_alive=keep.keep_alive)
            )
            results = await asyncio.gather(timed(silent), timed(lively), timed(quiet_tts))
            writer.cancel()
    finally:
        await server.stop(grace=0.5)
    expected = [
        (notice.KIND_IDLE_WARNING, "IDLE_TIMEOUT", 1.5),
        (notice.KIND_DURATION_WARNING, "STREAM_TOO_LONG", 3.0),
        (notice.KIND_IDLE_WARNING, "IDLE_TIMEOUT", 1.5),
    ]
    for (arrivals, out), (kind, reason, end_s) in zip(results, expected, strict=True):
        assert from_trailers(out.trailers).reason == reason
        (warning,) = out.of("notice")
        assert warning.kind == kind
        warned_at = next(t for t, r in arrivals[:-1] if r.HasField("notice"))
        ended_at = arrivals[-1][0]
        # One second's warning (as configured), which the end then keeps to.
        assert warning.remaining.ToMilliseconds() == pytest.approx(1000, abs=150)
        assert ended_at - warned_at == pytest.approx(1.0, abs=0.4), (warned_at, ended_at)
        assert ended_at == pytest.approx(end_s, abs=0.5)


async def test_stream_span_continues_the_callers_trace_and_metrics_are_recorded(triton):
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        AdapterConfig(),
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    server = AdapterServer(config(triton), telemetry=telemetry)
    await server.start()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            ok = await transcribe(
                channel, SILENCE_3S[:16000], PCM16, model="bench_stt", metadata=metadata
            )
            bad = await transcribe(channel, b"\x00", PCM16, model="bench_stt")
        assert ok.code == grpc.StatusCode.OK and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(grace=0.5)
    stream_spans = [s for s in spans.get_finished_spans() if s.name == "voxwire.stt.stream"]
    traced = [s for s in stream_spans if format(s.context.trace_id, "032x") == trace_id]
    assert len(traced) == 1 and format(traced[0].parent.span_id, "016x") == parent_id
    assert traced[0].attributes["model"] == "bench_stt"
    (utterance,) = [e for e in traced[0].events if e.name == "voxwire.utterance"]
    assert utterance.attributes["voxwire.compute_us"] > 0  # stages ride on the stream's span
    failed = [s for s in stream_spans if s.attributes.get("voxwire.error.reason")]
    assert failed[0].attributes["voxwire.error.reason"] == "MISALIGNED_AUDIO"
    # The trace context that goes to Triton continues the trace with the stream's span as parent.
    with telemetry.stream_span("probe", metadata) as span:
        outgoing = dict(telemetry.outgoing_metadata(span))
    _, out_trace, out_parent, _ = outgoing["traceparent"].split("-")
    assert out_trace == trace_id and out_parent == format(span.get_span_context().span_id, "016x")

    points = {}
    for metric in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
        points[metric.name] = list(metric.data.data_points)
    stages = {p.attributes["stage"] for p in points["voxwire.stage.duration"]}
    assert {"decode", "triton", "compute", "send"} <= stages
    assert [p.attributes["reason"] for p in points["voxwire.errors"]] == ["MISALIGNED_AUDIO"]
    assert all(p.value == 0 for p in points["voxwire.streams.active"])  # all closed again
    assert all(set(p.attributes) == SLOT_LABELS for p in points["voxwire.sequences.active"])
    # Both streams' Triton calls ended, and the one that ended OK was half-closed, not cancelled.
    ended = {p.attributes["ended"]: p.value for p in points["voxwire.triton.calls"]}
    assert sum(ended.values()) == 2 and ended.get("finished", 0) >= 1, ended
    why = {p.attributes["why"]: p.value for p in points.get("voxwire.triton.cancels", [])}
    assert sum(why.values()) == ended.get("cancelled", 0), (why, ended)


async def test_prometheus_scrape_endpoint_serves_stream_metrics(triton, unused_tcp_port):
    telemetry = Telemetry(AdapterConfig(telemetry="prometheus", prometheus_port=unused_tcp_port))
    server = AdapterServer(config(triton), telemetry=telemetry)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            ok = await transcribe(channel, SILENCE_3S[:16000], PCM16, model="bench_stt")
        assert ok.code == grpc.StatusCode.OK
        url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
        # The stream's Triton call is counted when it has ended, which may be just after the
        # client's status (a CI run scraped before it: no voxwire_triton_calls_total yet).
        async with asyncio.timeout(5):
            while True:
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=5).read().decode()
                )
                if "# HELP voxwire_triton_calls_total" in body:
                    break
                await asyncio.sleep(0.05)
    finally:
        await server.stop(grace=0.5)
    compute = re.search(
        r'voxwire_stage_duration_milliseconds_count\{[^}]*stage="compute"\} (\S+)', body
    )
    assert compute and float(compute.group(1)) >= 1, body[-2000:]
    assert re.search(r"voxwire_streams_active\{", body)
    # The HELP an operator reads names every value of the label (it lacked "failed").
    (calls_help,) = re.findall(r"# HELP voxwire_triton_calls_total (.*)", body)
    assert all(ended in calls_help for ended in ("finished", "cancelled", "failed")), calls_help


def gauges(reader: InMemoryMetricReader) -> dict[str, dict[tuple, float]]:
    """Up-down counter values by metric name and attribute set."""
    out: dict[str, dict[tuple, float]] = {}
    data = reader.get_metrics_data()
    for metric in data.resource_metrics[0].scope_metrics[0].metrics:
        if metric.name.endswith(".active"):
            points = metric.data.data_points
            out[metric.name] = {tuple(sorted(p.attributes.items())): p.value for p in points}
    return out


async def test_tts_streams_and_contexts_are_counted(triton):
    # Before, voxwire.streams.active counted STT streams only: a TTS leak never showed.
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        AdapterConfig(),
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    server = AdapterServer(config(triton), telemetry=telemetry)
    await server.start()
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000)
    req = synthesis_pb2.StreamingSynthesizeRequest
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=10)
            for cid in ("a", "b"):
                config_ = synthesis_pb2.SynthesisContextConfig(model="bench_tts", output_format=fmt)
                await call.write(req(context_id=cid, open=config_))
                assert (await call.read()).HasField("opened")
            during = gauges(reader)
            await call.done_writing()
            await read_rest(call)
    finally:
        await server.stop(grace=0.5)
    after = gauges(reader)
    assert during["voxwire.streams.active"][(("service", "tts"),)] == 1
    assert sum(during["voxwire.contexts.active"].values()) == 2
    # The same labels as voxwire.sequences.active (contexts had no "service"): one query
    # (sum by (service, model, replica)) covers both kinds of replica slot.
    for labels in during["voxwire.contexts.active"]:
        assert {k for k, _ in labels} == SLOT_LABELS and ("service", "tts") in labels, labels
    assert after["voxwire.streams.active"][(("service", "tts"),)] == 0
    assert sum(after["voxwire.contexts.active"].values()) == 0


async def test_a_tts_contexts_error_is_counted_by_reason(triton, caplog):
    # A context's error (a capacity refusal, a replica lost) ends the context, not the
    # stream: voxwire.errors counted only streams' errors, and nothing was logged.
    caplog.set_level(logging.INFO, logger="inference_adapter.tts.service")
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        AdapterConfig(),
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    server = AdapterServer(config(triton, max_streams_per_replica=1), telemetry=telemetry)
    await server.start()
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=24000)
    req = synthesis_pb2.StreamingSynthesizeRequest
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(timeout=10)
            config_ = synthesis_pb2.SynthesisContextConfig(model="bench_tts", output_format=fmt)
            await call.write(req(context_id="held", open=config_))
            assert (await call.read()).HasField("opened")
            await call.write(req(context_id="refused", open=config_))  # over the 1 slot
            refused = await call.read()
            assert refused.HasField("error"), refused
            await call.done_writing()
            await read_rest(call)
    finally:
        await server.stop(grace=0.5)
    counted = {
        tuple(sorted(p.attributes.items())): p.value
        for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if m.name == "voxwire.errors"
        for p in m.data.data_points
    }
    assert counted.get((("reason", "OVERLOADED"), ("service", "tts"))) == 1, counted
    assert any("tts context failed: OVERLOADED" in r.getMessage() for r in caplog.records)
