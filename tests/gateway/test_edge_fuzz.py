"""The edge fuzzer, a short run in ``make test``: hostile and valid WebSocket sessions and HTTP
requests against the real gateway (adapter, Triton, benchmark models), checked by its oracle
(voxwire/fuzz/edge/verdict.py), plus the gateway's own log: no error logged while it runs.
The long runs are ``make fuzz-edge`` (docs/fuzzing.md, "The edge")."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.gateway.conftest import Edge
from voxwire.fuzz.cases import read_audio
from voxwire.fuzz.edge.cases import FAMILIES, Case, Plan, Step, make_case
from voxwire.fuzz.edge.client import Outcome
from voxwire.fuzz.edge.runner import (
    Options,
    Readings,
    _result,
    _sample_peak,
    compressed,
    fuzz,
    variants,
)
from voxwire.fuzz.edge.verdict import BAD, judge

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech" / "kitchen_lights.wav"


def _audio() -> tuple[bytes, int]:
    return read_audio(SPEECH)


def test_cases_are_a_pure_function_of_seed_and_index_and_cover_every_family():
    audio, rate = _audio()
    plan = Plan(audio=audio, audio_rate_hz=rate, encoded=compressed(audio[: rate * 2], rate))
    first = [make_case(5, i, plan) for i in range(400)]
    assert first == [make_case(5, i, plan) for i in range(400)]
    assert {c.family for c in first} == set(FAMILIES)
    assert all(c.valid for c in first if c.family == "valid")
    # Uploads over time: valid files in pieces (compressed ones too), long ones left.
    uploads = [make_case(5, i, replace(plan, families=("http_stt",))) for i in range(400)]
    paced = {c.content_type for c in uploads if c.detail.startswith("paced")}
    assert paced == {"audio/wav", "audio/flac", "audio/ogg", "audio/mpeg"}, paced
    left = [c for c in uploads if c.ended_by_client]
    assert left and all(c.leave_after_s > 0 for c in left)
    assert max(c.body_bytes for c in left) > 1_000_000
    # Some of each HTTP kind ask for 100 Continue, valid or not; no WebSocket case does.
    asked = {(c.kind, c.valid) for c in first + uploads if c.expect_continue}
    assert {("http_stt", True), ("http_stt", False), ("http_tts", False)} <= asked, asked
    assert not any(c.expect_continue for c in first if c.kind in ("stt", "tts"))


def test_the_oracle_fails_what_breaks_a_promise():
    case = Case(0, "schema", "stt", "x", steps=(Step("text", "{}"),))
    # An error event whose close code is not the close's; a close other than 1000 with no
    # event; close 1000 with no summary; no close at all; a reason that is not documented.
    event = {"error": {"reason": "INVALID_MESSAGE", "closeCode": 1008}}
    big = Case(0, "oversize", "stt", "x", expect="CHUNK_TOO_LARGE")
    limited = {"error": {"reason": "RATE_LIMITED", "closeCode": 1013}}
    cases = [
        (Outcome(case, True, 0, True, 1011, [event]), "mismatch"),
        (Outcome(case, True, 0, True, 1008, [event]), "rejected"),
        (Outcome(case, True, 0, True, 4000, [{"session": {}}]), "no_event"),
        (Outcome(case, True, 0, True, 1000, [{"session": {}}]), "mismatch"),
        (Outcome(case, True, 0, False, 0, []), "no_close"),
        # A family with one right reason: another is wrong, a capacity refusal is no verdict.
        (Outcome(big, True, 0, True, 1008, [event]), "wrong_reason"),
        (Outcome(big, True, 0, True, 1013, [limited]), "rejected"),
        (
            Outcome(case, True, 0, True, 1008, [{"error": {"reason": "OOPS", "closeCode": 1008}}]),
            "crash",
        ),
    ]
    # An upload its client left: no verdict on a response it did not wait for, but one that
    # came before it left is judged as any other.
    left = Case(0, "http_stt", "http_stt", "abandoned", ended_by_client=True, leave_after_s=1)
    internal = b'{"error": {"reason": "INTERNAL", "httpStatus": 500}}'
    cases += [
        (Outcome(left, True), "client_ended"),
        (Outcome(left, True, closed=True, http_status=500, http_body=internal), "crash"),
    ]
    # An HTTP error its endpoint does not list (the OpenAPI document's reasons).
    upload = Case(0, "http_stt", "http_stt", "x")
    conflict = b'{"error": {"reason": "CONTEXT_ALREADY_OPEN", "httpStatus": 409}}'
    bad_audio = b'{"error": {"reason": "INVALID_AUDIO", "httpStatus": 400}}'
    cases += [
        (Outcome(upload, True, closed=True, http_status=409, http_body=conflict), "wrong_reason"),
        (Outcome(upload, True, closed=True, http_status=400, http_body=bad_audio), "rejected"),
    ]
    for outcome, verdict in cases:
        assert judge(outcome)[0] == verdict, (outcome, judge(outcome))


@pytest.mark.asyncio(loop_scope="session")
async def test_the_peak_rss_reading_catches_a_transient_the_three_readings_miss():
    # A process that takes 200 MiB for a second and gives it back: what a 1 Hz WAV header
    # did to the gateway (250-400 MiB for one upload), which RSS read at three moments missed.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import time; time.sleep(0.5); b = bytearray(200 * 2**20); time.sleep(1); del b; "
        "time.sleep(1)",
    )
    options = Options(target="http://127.0.0.1:1", key="k", pid=child.pid, rss_every_s=0.05)
    peak: list[int] = []
    sampler = asyncio.create_task(_sample_peak(options, peak))
    try:
        await asyncio.wait_for(child.wait(), 10)
    finally:
        sampler.cancel()
    assert peak and peak[0] >= 200 * 2**20, peak
    failed = _result(options, [], [], Readings(), Readings(), None, 1.0, [None], peak)
    (inv,) = [i for i in failed.invariants if i["name"].startswith("RSS at its highest")]
    assert inv["ok"] is (peak[0] <= options.peak_rss_limit)
    low = Options(target="http://127.0.0.1:1", key="k", peak_rss_limit=100 * 2**20)
    assert not _result(low, [], [], Readings(), Readings(), None, 1.0, [None], peak).passed


@pytest.mark.asyncio(loop_scope="session")
async def test_a_short_edge_fuzz_run_keeps_every_promise(
    edge: Edge, caplog: pytest.LogCaptureFixture
):
    audio, rate = _audio()
    caplog.set_level(logging.WARNING)
    result = await fuzz(
        Options(
            target=edge.server.url,
            key=edge.key,
            cases=600,
            concurrency=24,
            seed=20261203,
            audio=audio,
            audio_rate_hz=rate,
            deadline_s=30.0,
        )
    )
    bad = {v: result.verdicts[v] for v in BAD if result.verdicts[v]}
    assert not bad, (bad, result.examples)
    assert result.passed, result.invariants
    assert result.verdicts["ok"] > 100 and result.verdicts["rejected"] > 200, result.verdicts
    errors_logged = [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR
    ]
    assert errors_logged == []


def test_the_cases_fit_the_stt_model_the_target_describes():
    # Against a gateway in front of the example server (no interim results, PCM16 only) every
    # valid STT session was refused INVALID_CONFIG and every float case was judged wrong: the
    # cases asked what the reference models do.
    from voxwire.fuzz.edge.runner import plan_of
    from voxwire.v1 import audio_pb2, capabilities_pb2

    audio, rate = _audio()
    pcm16 = capabilities_pb2.FormatSupport(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rates_hz=[rate], max_channels=1
    )
    offered = capabilities_pb2.GetCapabilitiesResponse(
        models=[
            capabilities_pb2.ModelCapabilities(
                name="toy", kind=capabilities_pb2.MODEL_KIND_STT, input_formats=[pcm16]
            )
        ]
    )
    options = Options(
        target="http://127.0.0.1:9",
        key="k",
        stt_model="toy",
        audio=audio,
        audio_rate_hz=rate,
        families=("valid", "binary"),
    )
    fitted, assumed = plan_of(options, offered), plan_of(options)
    assert (fitted.interim, assumed.interim) == (False, True)
    stt = [make_case(7, i, fitted) for i in range(300)]
    valid = [c for c in stt if c.valid and c.kind == "stt"]
    floats = [c for c in stt if c.detail.startswith("f32 ")]
    assert valid and floats
    for case in valid:
        assert "interim" not in case.query and '"interimResults": true' not in str(case.steps)
    # The gateway converts float audio a model does not take, and refuses NaN in it itself.
    assert {c.expect for c in floats} == {"INVALID_AUDIO"}
    # The other cases are the seed's own whatever the fit (the draws are made either way).
    assert [c.detail for c in stt] == [make_case(7, i, assumed).detail for i in range(300)]


def test_valid_sessions_send_and_ask_the_formats_a_gateway_converts():
    # A gateway converts audio a model does not take (docs/edge.md): valid sessions fuzz it
    # with a phone's 8 kHz mu-law and a browser's 48 kHz float, and TTS contexts ask 8 kHz
    # mu-law, 48 kHz float and 24 kHz; the hostile families keep PCM16 (their expectations).
    audio = bytes(range(256)) * 25 * 10  # 2 s of 16 kHz PCM16 (any samples)
    plan = Plan(audio=audio, variants=variants(audio, 16000), families=("valid",))
    assert [(e, r, len(a)) for e, r, a in plan.variants] == [
        ("mulaw", 8000, 16000),
        ("pcm_f32le", 48000, 2 * 48000 * 4),
    ]
    cases = [make_case(3, i, plan) for i in range(200)]
    stt = " ".join(c.query + str(c.steps) for c in cases if c.kind == "stt")
    tts = " ".join(str(c.steps) for c in cases if c.kind == "tts")
    for name in ("mulaw", "pcm_f32le", "pcm_s16le"):
        assert name in stt or name.upper() in stt, name
    for name in ("AUDIO_ENCODING_MULAW", "AUDIO_ENCODING_PCM_F32LE", '"sampleRateHz": 24000'):
        assert name in tts, name
    hostile = [make_case(3, i, replace(plan, families=("binary",))) for i in range(100)]
    assert all("mulaw" not in c.query and "MULAW" not in str(c.steps) for c in hostile)
