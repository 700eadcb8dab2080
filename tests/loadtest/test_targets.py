"""One short real run through each target: the whole tool (pacing, targets, interval logs,
merge, result) against real servers on loopback and the session's Triton. The echo run goes
through spawned worker processes, as the command line does; the others run their worker in
the test's event loop (``runner.run_inline``), which saves a process start each."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from loadtest import results, runner
from loadtest.events import Audio, Ended
from loadtest.scenario import ArrivalSpec, LengthSpec, Limits, Scenario, TargetSpec
from loadtest.targets import make_target
from loadtest.targets.base import TtsOptions
from tests.helpers.edge import Edge
from voxwire.audio.codecs import Encoding

pytestmark = pytest.mark.timeout(240)


def _scenario(target: str, address: str, kind: str = "stt", **stt: Any) -> Scenario:
    base = Scenario()
    length = LengthSpec(distribution="fixed", seconds=1.5, files=0)
    return Scenario(
        name=f"test-{target}-{kind}",
        kind=kind,
        stt_share=0.5,
        target=TargetSpec(target, address),
        limits=Limits(duration_s=2.0, max_duration_s=30.0, workers=1, step_timeout_s=20.0),
        arrivals=ArrivalSpec(process="concurrency", sessions=3, stagger_s=0.1),
        stt=dataclasses.replace(
            base.stt,
            **{"model": "bench_stt", "chunk_ms": 100, "wer": False, "length": length, **stt},
        ),
        tts=dataclasses.replace(base.tts, model="bench_tts", turns=2),
    )


async def _run(s: Scenario, tmp_path: Path, sessions: int = 3, spawn: bool = False):
    if spawn:
        merged = await asyncio.to_thread(runner.run, s, tmp_path / s.name, live=False)
    else:
        merged = await runner.run_inline(s, tmp_path / s.name)
    result = results.build(merged, s.to_dict())
    assert result["errors"] == {}, result["errors"]
    assert result["sessions"]["ok"] >= sessions
    return result


def _paced(result: dict[str, Any], chunks_per_session: int = 15) -> None:
    """Every 1.5 s session sent its 15 chunks, and every answer was measured once: one per
    chunk (an interim or an echo) plus each final."""
    m, chunks = result["metrics"]["stt.message"], result["counters"]["stt.chunks"]
    finals = result["metrics"].get("stt.final", {"count": 0})["count"]
    assert m["count"] == chunks + finals
    assert chunks % chunks_per_session == 0 and chunks > 0
    assert 0 < m["p50"] < 1000


async def test_echo_floor(echo_address: str, tmp_path: Path) -> None:
    s = _scenario("echo", echo_address)
    s = dataclasses.replace(s, limits=dataclasses.replace(s.limits, workers=2))
    result = await _run(s, tmp_path, spawn=True)
    _paced(result)
    assert result["run"]["workers"] == 2 and len(result["generator"]["workers"]) == 2
    assert result["generator"]["cpu_us_per_message"] > 0


async def test_triton_direct_stt_and_tts(triton: Any, tmp_path: Path) -> None:
    result = await _run(_scenario("triton", triton.grpc_url, kind="mixed"), tmp_path)
    counters = result["counters"]
    assert counters.get("stt.chunks", 0) + counters.get("tts.requests", 0) > 0
    if counters.get("stt.chunks"):
        _paced(result)
        assert result["metrics"]["stt.final"]["count"] >= 1
        assert "compute" in result["stages"]  # COMPUTE_US summed per stream
    if counters.get("tts.requests"):
        assert result["metrics"]["tts.first_audio"]["count"] == counters["tts.contexts"]


async def test_tritonclient_stream_client(triton: Any, tmp_path: Path) -> None:
    result = await _run(_scenario("tritonclient", triton.grpc_url), tmp_path)
    _paced(result)


async def test_null_proxy(proxy_address: str, triton: Any, tmp_path: Path) -> None:
    s = _scenario("triton", proxy_address)
    # The proxy serves only ModelStreamInfer: model configs come from Triton itself.
    s = dataclasses.replace(s, target=dataclasses.replace(s.target, models_from=triton.grpc_url))
    result = await _run(s, tmp_path)
    _paced(result)


async def test_adapter_stt_and_tts_with_stage_timings(adapter_address: str, tmp_path: Path) -> None:
    s = _scenario("grpc", adapter_address, kind="stt")
    result = await _run(s, tmp_path)
    _paced(result)
    assert result["counters"]["stt.chunks"] == 15 * result["sessions"]["ok"]
    # voxwire-timings-bin, one per stream, aggregated per stage.
    assert {"receive", "decode", "triton", "compute", "send", "total"} <= set(result["stages"])
    assert result["stages"]["total"]["count"] == result["sessions"]["ok"]
    tts = await _run(
        dataclasses.replace(_scenario("grpc", adapter_address, kind="tts"), name="test-grpc-tts"),
        tmp_path,
    )
    assert tts["metrics"]["tts.first_audio"]["count"] == tts["tts"]["contexts"] > 0
    assert tts["metrics"]["tts.chunk_gap"]["count"] > 0
    assert tts["tts"]["underruns"] >= 0 and "session.setup" in tts["metrics"]


async def test_adapter_with_the_real_model_and_word_error_rate(
    adapter_address: str, tmp_path: Path
) -> None:
    s = _scenario(
        "grpc",
        adapter_address,
        model="stt_pocketsphinx",
        wer=True,
        length=LengthSpec(distribution="files", files=1),
    )
    s = dataclasses.replace(s, arrivals=dataclasses.replace(s.arrivals, sessions=2))
    result = await _run(s, tmp_path, sessions=2)
    assert result["wer"]["words"] > 0
    assert result["wer"]["wer"] <= 0.25  # the fixtures decode exactly alone; allow the rate
    assert result["metrics"]["stt.final"]["count"] >= result["sessions"]["ok"]


async def test_gateway_stt_and_tts_with_edge_stage_timings(edge: Edge, tmp_path: Path) -> None:
    address = edge.ws.removeprefix("ws://")
    s = _scenario("gateway", address, kind="stt")
    s = dataclasses.replace(s, target=dataclasses.replace(s.target, api_key=edge.key))
    result = await _run(s, tmp_path)
    _paced(result)
    assert result["counters"]["stt.chunks"] == 15 * result["sessions"]["ok"]
    assert result["metrics"]["stt.final"]["count"] >= result["sessions"]["ok"]
    # The session summary's timings: the adapter's stages and the gateway's own.
    stages = result["stages"]
    assert {"receive", "triton", "send", "edge-receive", "edge-send", "total"} <= set(stages)
    assert stages["total"]["count"] == result["sessions"]["ok"]
    assert result["scenario"]["target"]["api_key"] == "(redacted)"
    tts = dataclasses.replace(s, kind="tts", name="test-gateway-tts")
    out = await _run(tts, tmp_path)
    assert out["metrics"]["tts.first_audio"]["count"] == out["tts"]["contexts"] > 0
    assert out["metrics"]["tts.chunk_gap"]["count"] > 0 and "session.setup" in out["metrics"]


async def test_gateway_refuses_a_bad_key_as_an_error_event(edge: Edge, tmp_path: Path) -> None:
    s = _scenario("gateway", edge.ws.removeprefix("ws://"), kind="stt")
    s = dataclasses.replace(s, target=dataclasses.replace(s.target, api_key="vx_nope_nope"))
    merged = await runner.run_inline(s, tmp_path / "bad-key")
    result = results.build(merged, s.to_dict())
    assert result["sessions"]["ok"] == 0
    assert set(result["errors"]) == {"UNAUTHENTICATED/UNAUTHENTICATED"}, result["errors"]


async def test_a_refused_config_is_reported_with_what_the_target_said(
    adapter_address: str, edge: Edge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every session refused INVALID_CONFIG (a scenario asking what the model does not do)
    # was reported as a count and "is the target up at that address, and the key right?":
    # the run now keeps each error key's first message, and says it.
    from loadtest import cli

    for target, address, key in (
        ("grpc", adapter_address, ""),
        ("gateway", edge.ws.removeprefix("ws://"), edge.key),
    ):
        s = _scenario(target, address, kind="stt", model="no_such_model")
        s = dataclasses.replace(s, target=dataclasses.replace(s.target, api_key=key))
        merged = await runner.run_inline(s, tmp_path / target)
        result = results.build(merged, s.to_dict())
        ((error, _),) = result["errors"].items()
        assert error.endswith("/UNKNOWN_MODEL"), result["errors"]
        assert "no_such_model" in result["error_examples"][error], result["error_examples"]
        assert cli.failed_outright(result)
        err = capsys.readouterr().err
        assert "the target said:" in err and "no_such_model" in err, err
        assert "is the target up" not in err, err
        assert "hint: --stt-model (stt.model): to what the model takes" in err, err


async def test_null_relay_floor(relay_address: str, tmp_path: Path) -> None:
    result = await _run(_scenario("null-relay", relay_address), tmp_path)
    _paced(result)
    # The adapter's summary passes the relay untouched: its stages, no edge stages.
    assert "triton" in result["stages"] and "edge-receive" not in result["stages"]


async def test_lean_adapter_floor(lean_adapter_address: str, tmp_path: Path) -> None:
    # The contract's conversions alone (BENCHMARKS.md): the same client as the adapter's, and
    # every chunk answered, so what it measures is the same work.
    result = await _run(_scenario("grpc", lean_adapter_address, interim_results=True), tmp_path)
    _paced(result)


async def test_lean_gateway_floor(lean_gateway_address: str, tmp_path: Path) -> None:
    # The edge protocol's conversions alone: the gateway's own client, and the adapter's
    # summary arrives as the session's summary (its stages, no edge stages).
    s = _scenario("gateway", lean_gateway_address, interim_results=True)
    # The client needs a key to send; the instrument does not look at it.
    s = dataclasses.replace(s, target=dataclasses.replace(s.target, api_key="not-checked"))
    result = await _run(s, tmp_path)
    _paced(result)
    assert "triton" in result["stages"] and "edge-receive" not in result["stages"]


async def test_a_target_that_refuses_every_session_fails_the_run_without_hammering_it(
    tmp_path: Path,
) -> None:
    # Nothing listens on the port: every session fails. The closed loop started the next one
    # at once (2,262 sessions in 3 s, a core spent), and the command exited 0.
    import socket

    from loadtest import cli

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        address = f"127.0.0.1:{held.getsockname()[1]}"
        s = dataclasses.replace(
            _scenario("grpc", address),
            arrivals=ArrivalSpec(process="concurrency", sessions=4, stagger_s=0.1),
            limits=Limits(duration_s=3.0, max_duration_s=30.0, workers=1, step_timeout_s=5.0),
        )
        merged = await runner.run_inline(s, tmp_path / s.name)
    result = results.build(merged, s.to_dict())
    assert result["sessions"]["ok"] == 0 and result["sessions"]["failed"] > 0
    # 4 slots backing off from 0.1 s to 2 s over 3 s: a few sessions each, not thousands.
    assert result["sessions"]["total"] <= 4 * 6, result["sessions"]
    assert cli.failed_outright(result)


@pytest.mark.parametrize("target", ["grpc", "gateway"])
async def test_a_target_that_takes_the_connection_and_never_answers_fails_the_run(
    tmp_path: Path, target: str
) -> None:
    # It held every session to the run's hard stop, counted CUT/MAX_DURATION, exit 0: a run
    # that measured nothing passed. Opening the stream is a step's wait like any other.
    from loadtest import cli

    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # kept open, never answered

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        s = dataclasses.replace(
            _scenario(target, address),
            arrivals=ArrivalSpec(process="concurrency", sessions=2, stagger_s=0.1),
            limits=Limits(duration_s=1.0, max_duration_s=20.0, workers=1, step_timeout_s=2.0),
        )
        if target == "gateway":
            s = dataclasses.replace(s, target=dataclasses.replace(s.target, api_key="k"))
        began = time.monotonic()
        merged = await runner.run_inline(s, tmp_path / s.name)
        elapsed = time.monotonic() - began
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    result = results.build(merged, s.to_dict())
    assert result["sessions"]["failed"] >= 1 and result["sessions"]["cut"] == 0, result
    assert "TIMEOUT/OPEN" in result["errors"], result["errors"]
    assert cli.failed_outright(result)
    assert elapsed < 15.0, elapsed  # the step's 2 s, not the 20 s hard stop


async def test_a_slot_starts_no_session_that_would_run_past_the_duration(
    echo_address: str, tmp_path: Path
) -> None:
    # 1.5 s sessions in a 2 s run: a slot's second session (from 1.5 s) would run alone to
    # 3 s, outside the measured window. The README's 20 s run took 45 s that way.
    s = _scenario("echo", echo_address)
    began = time.monotonic()
    merged = await runner.run_inline(s, tmp_path / s.name)
    elapsed = time.monotonic() - began
    result = results.build(merged, s.to_dict())
    assert result["sessions"]["total"] == result["sessions"]["ok"] == 3, result["sessions"]
    assert elapsed < 2.0 + 1.5, elapsed  # before: about 3 s of sessions, plus the set-up


@pytest.mark.parametrize("target", ["grpc", "echo", "gateway", "null-relay"])
async def test_nothing_listening_is_one_reason_whatever_the_target(
    target: str, tmp_path: Path
) -> None:
    # The gateway target reported CLIENT_ERROR/ClientConnectorError where the gRPC one
    # reported UNAVAILABLE: a user comparing targets saw two failures for one cause.
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        address = f"127.0.0.1:{held.getsockname()[1]}"
        s = dataclasses.replace(
            _scenario(target, address),
            target=TargetSpec(target, address, api_key="not-sent"),
            arrivals=ArrivalSpec(process="concurrency", sessions=1),
            limits=Limits(duration_s=0.5, max_duration_s=10.0, workers=1, step_timeout_s=5.0),
        )
        merged = await runner.run_inline(s, tmp_path / s.name)
    result = results.build(merged, s.to_dict())
    assert result["sessions"]["failed"] >= 1 and result["sessions"]["ok"] == 0
    assert set(result["errors"]) == {"UNAVAILABLE/CONNECT_FAILED"}, result["errors"]


async def test_a_mixed_run_times_its_stt_and_tts_streams_apart(
    adapter_address: str, tmp_path: Path
) -> None:
    s = _scenario("grpc", adapter_address, kind="mixed")
    s = dataclasses.replace(s, arrivals=dataclasses.replace(s.arrivals, sessions=4))
    result = await _run(s, tmp_path, sessions=4)
    by_kind = result["stages_by_kind"]
    assert set(by_kind) == {"stt", "tts"}, "the draw of 4 sessions at a share of 0.5"
    stt, tts = by_kind["stt"]["total"]["count"], by_kind["tts"]["total"]["count"]
    assert stt + tts == result["stages"]["total"]["count"] == result["sessions"]["ok"]
    # An STT stream's trailer is summed over its 15 chunks, a TTS stream's over 2 turns of text.
    assert by_kind["stt"]["total"]["p50"] > 1000  # 1.5 s of audio paced at real time
    assert abs(sum(v["share"] for v in by_kind["tts"].values() if "share" in v) - 1) < 1e-9


async def test_notices_are_counted_by_kind(adapter_address: str, tmp_path: Path) -> None:
    # A StreamNotice was dropped unread: a run under faults could not tell its failovers or
    # drains, a run with a mislabelled input its FORMAT_SUSPECT. An SSML document sent as a
    # plain context's text gets one per context (docs/contract.md).
    s = _scenario("grpc", adapter_address, kind="tts")
    s = dataclasses.replace(
        s, name="test-grpc-notices", tts=dataclasses.replace(s.tts, texts=("<speak>Hi.</speak>",))
    )
    result = await _run(s, tmp_path)
    contexts = result["counters"]["tts.requests"]
    assert contexts > 0 and result["notices"] == {"FORMAT_SUSPECT": contexts}
    plain = await _run(_scenario("grpc", adapter_address, kind="tts"), tmp_path)
    assert plain["notices"] == {}


async def test_telephony_through_the_gateway_mulaw_at_8_khz_in_20_ms_frames(
    edge: Edge, tmp_path: Path
) -> None:
    """A contact center's load: the speech set as 8 kHz mu-law (resampled and encoded once),
    in Twilio's 20 ms frames, to the real model through the gateway; TTS answers in mu-law."""
    s = _scenario(
        "gateway",
        edge.ws.removeprefix("ws://"),
        model="stt_pocketsphinx",
        wer=True,
        encoding="mulaw",
        chunk_ms=20,
        length=LengthSpec(distribution="files", files=1),
    )
    s = dataclasses.replace(
        s,
        target=dataclasses.replace(s.target, api_key=edge.key),
        arrivals=dataclasses.replace(s.arrivals, sessions=2),
    )
    result = await _run(s, tmp_path, sessions=2)
    assert result["scenario"]["stt"]["encoding"] == "mulaw"
    assert result["wer"]["words"] > 0
    assert result["wer"]["wer"] <= 0.25, result["wer"]  # 8 kHz phone band, as the adapter's
    # Each 20 ms frame was one message of 160 bytes: the chunks are at the telephony pace.
    sent_s = result["counters"]["stt.chunks"] * 0.02
    assert sent_s >= 2 * 1.5
    tts = dataclasses.replace(
        s,
        kind="tts",
        name="test-gateway-tts-mulaw",
        tts=dataclasses.replace(s.tts, encoding="mulaw", sample_rate_hz=8000),
    )
    out = await _run(tts, tmp_path, sessions=2)
    assert out["metrics"]["tts.first_audio"]["count"] == out["tts"]["contexts"] > 0
    assert out["scenario"]["tts"]["encoding"] == "mulaw"


@pytest.mark.parametrize(
    ("encoding", "rate"), [(Encoding.MULAW, 8000), (Encoding.PCM_F32LE, 24000)]
)
async def test_gateway_tts_chunk_durations_follow_the_output_encoding(
    edge: Edge, encoding: Encoding, rate: int
) -> None:
    """The playback simulation reads each chunk's duration from its bytes: one byte a sample
    in mu-law, four in float. The chunks tile the context's timeline exactly."""
    spec = TargetSpec("gateway", edge.ws.removeprefix("ws://"), api_key=edge.key)
    target = make_target(spec, stt_model="bench_stt", tts_model="bench_tts")
    await target.start()
    try:
        stream = await target.open_tts(TtsOptions("bench_tts", "", rate, 30.0, encoding))
        await stream.open_context("c1")
        await stream.append("c1", "Hello there. This is a second sentence to speak.")
        await stream.close_context("c1")
        await stream.finish()
        events = []
        async with asyncio.timeout(30):
            while not isinstance(event := await stream.next_event(), Ended):
                events.append(event)
    finally:
        await target.close()
    audio = [e for e in events if isinstance(e, Audio)]
    assert len(audio) >= 2 and event.ok
    for a, b in zip(audio, audio[1:], strict=False):
        assert abs(a.start_ms + a.duration_ms - b.start_ms) <= 1, (a, b)


def test_a_grpc_target_refused_for_want_of_a_key_says_how_to_give_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--target grpc --address <a gateway's front>` with $VOXWIRE_API_KEY set: the gateway
    # target takes the key from it, the grpc one does not, and the run said only "is the key
    # right?" about a key it never sent.
    from loadtest import cli

    monkeypatch.setenv("VOXWIRE_API_KEY", "vx_test")
    result = {
        "sessions": {"ok": 0, "failed": 16, "total": 16},
        "errors": {"UNAUTHENTICATED/UNAUTHENTICATED": 16},
        "scenario": {"target": {"kind": "grpc", "address": "127.0.0.1:8081", "api_key": ""}},
    }
    assert cli.failed_outright(result)
    err = capsys.readouterr().err
    assert '--api-key "$VOXWIRE_API_KEY"' in err, err
    result["scenario"] = {"target": {"kind": "grpc", "api_key": "(redacted)"}}  # one was sent
    assert cli.failed_outright(result)
    assert "hint" not in capsys.readouterr().err
