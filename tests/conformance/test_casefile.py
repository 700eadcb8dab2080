"""The kit's pure parts: case files, expressions, model choice, rich errors, Server-Timing."""

from __future__ import annotations

import io
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from google.protobuf.message import DecodeError

from voxwire import errors
from voxwire.audio.codecs import Encoding
from voxwire.audio.wav import WavHeaderReader
from voxwire.conformance import expect, plan, richstatus, signals, stream_checks
from voxwire.conformance.casefile import AUDIO_SOURCES, CaseFileError, load, parse_case
from voxwire.conformance.catalog import Format, ServerCatalog, unadvertised_rate
from voxwire.conformance.driver import Outcome
from voxwire.conformance.expr import ExprError, evaluate
from voxwire.conformance.plan import Plan
from voxwire.conformance.runner import (
    FAIL,
    FLAKY,
    KNOWN_FAILING,
    PASS,
    UNEXPECTED_PASS,
    CaseResult,
    _judge,
    load_cases,
    read_case_list,
)
from voxwire.conformance.stream_checks import parse_server_timing
from voxwire.v1 import audio_pb2, capabilities_pb2, synthesis_pb2, transcription_pb2

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def test_bundled_cases_load_with_unique_ids_and_real_contract_sections():
    cases = load_cases()
    assert len(cases) > 80
    assert len({c.id for c in cases}) == len(cases)
    headings = set(re.findall(r"^#+ (.+)$", CONTRACT.read_text(), re.M))
    assert {c.section for c in cases} <= headings


BASE = {"id": "x", "promise": "p", "section": "Errors", "service": "transcription"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"steps": [{"config": {}}], "colour": "red"}, "unknown keys"),
        ({"steps": [{"config": {}, "audio": "speech"}]}, "exactly one action"),
        ({"steps": [{"open": {}}]}, "is not a transcription step"),
        ({"steps": [{"audio": {"bytes": "max_chunk + 1"}}]}, "unknown names"),
        ({"steps": [{"sleep_ms": "__import__('os')"}]}, "only integers"),
        ({"steps": [{"config": {}}], "expect": {"reason": "NO_SUCH"}}, "not a reason"),
        ({"steps": [{"config": {}}], "probe": "health_watch"}, "either steps or a probe"),
        ({"steps": [{"config": {}}], "needs": ["telepathy"]}, "unknown feature"),
        ({"steps": [{"config": {}}], "waits": "forever"}, "waits must name"),
        ({"steps": [{"config": {}}], "holds": "max_streams"}, "holds: unknown names"),
        ({"steps": [{"config": {}}], "holds": 8}, "holds must be an expression"),
        ({"probe": "health_watch", "service": "health", "holds": "1"}, "holds needs a streaming"),
        ({"steps": [{"audio": {"source": "infinity"}}]}, "audio source 'infinity'"),
        ({"steps": [{"audio": "noise"}]}, "audio source 'noise'"),
        ({"steps": [{"audio": {"source": "tone", "millis": 5}}]}, "unknown audio keys"),
        ({"steps": [{"audio": {"source": "speech", "file": "mp3"}}]}, "audio file 'mp3'"),
        ({"steps": [{"garbage": "xyz"}]}, "is not hex"),
        ({"steps": [{"garbage": {"size": 3}}]}, "garbage is hex or"),
        ({"steps": [{"garbage": {"bytes": "max_chunk + 1"}}]}, "unknown names"),
        ({"steps": [{"config": {"model": "@longest"}}]}, "unknown symbol '@longest'"),
        ({"steps": [{"update_config": {"vocabulary": [{"phrase": "@x"}]}}]}, "unknown symbol"),
    ],
)
def test_malformed_cases_are_refused_with_a_reason(extra, message):
    with pytest.raises(CaseFileError, match=message):
        parse_case({**BASE, **extra}, source="t.toml")


def test_unknown_property_and_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[[case]]\nid = "a"\npromise = "p"\nsection = "Errors"\nservice = "transcription"\n'
        'steps = [{ config = {} }]\nexpect = { properties = ["nope"] }\n'
    )
    with pytest.raises(CaseFileError, match="unknown property 'nope'"):
        load_cases([path])
    twice = tmp_path / "d.toml"
    twice.write_text(path.read_text().replace('["nope"]', "[]") * 2)
    with pytest.raises(CaseFileError, match="already in"):
        load([twice])


def test_an_expected_error_defaults_to_its_contract_code_and_a_settle_before_half_close():
    case = parse_case({**BASE, "steps": [{"config": {}}], "expect": {"reason": "UNKNOWN_MODEL"}})
    assert case.expect.status == "NOT_FOUND" and case.half_close == "settle"
    ok = parse_case({**BASE, "steps": [{"config": {}}]})
    assert ok.expect.status == "OK" and ok.half_close == "now"


def test_expressions():
    names = {"max_chunk_bytes": 65536, "frame": 4, "idle_timeout_ms": 5000}
    assert evaluate("(max_chunk_bytes / frame + 1) * frame", names) == 65540
    assert evaluate("idle_timeout_ms * 6 / 10", names) == 3000
    assert evaluate("max_chunk_bytes > 1000", names) == 1
    assert evaluate(7, names) == 7
    for bad in ("frame.__class__", "open('x')", "nope + 1", "1 / 0"):
        with pytest.raises(ExprError):
            evaluate(bad, names)


def _caps() -> capabilities_pb2.GetCapabilitiesResponse:
    pcm = capabilities_pb2.FormatSupport(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE,
        sample_rates_hz=[8000, 16000],
        max_channels=1,
    )
    stt = capabilities_pb2.MODEL_KIND_STT
    return capabilities_pb2.GetCapabilitiesResponse(
        models=[
            capabilities_pb2.ModelCapabilities(
                name="bench",
                kind=stt,
                benchmark=True,
                input_formats=[pcm],
                features=capabilities_pb2.Features(interim_results=True),
            ),
            capabilities_pb2.ModelCapabilities(name="real", kind=stt, input_formats=[pcm]),
            capabilities_pb2.ModelCapabilities(
                name="main",
                kind=stt,
                is_default=True,
                input_formats=[pcm],
                features=capabilities_pb2.Features(word_timestamps=True),
            ),
        ]
    )


def test_model_choice_prefers_the_default_then_real_models_and_says_why_it_cannot():
    catalog = ServerCatalog(_caps())
    assert [m.name for m in catalog.models("stt")] == ["main", "real", "bench"]
    assert catalog.pick("stt", ["interim_results"], [], []).name == "bench"  # type: ignore[union-attr]
    assert catalog.pick("stt", [], ["word_timestamps"], []).name == "real"  # type: ignore[union-attr]
    assert catalog.pick("stt", ["vocabulary"], [], []) == "no STT model advertises vocabulary"
    assert catalog.pick("tts", [], [], []) == "the server offers no TTS model"
    only = ServerCatalog(_caps(), ["bench", "main"])
    assert [m.name for m in only.models("stt")] == ["bench", "main"]
    assert unadvertised_rate(_caps().models[0], audio_pb2.AUDIO_ENCODING_PCM_S16LE) == 22050


def test_rich_errors_are_judged_against_the_contract_table():
    err = errors.InvalidConfig("bad", violations=[errors.Violation("config.language", "x")])
    trailers = {"grpc-status-details-bin": err.to_rpc_status().SerializeToString()}
    seen = richstatus.from_trailers(trailers)
    assert isinstance(seen, richstatus.RichError)
    assert richstatus.check_against_contract(seen, "INVALID_CONFIG", ("config.language",)) is None
    assert "no field violation for config.voice" in str(
        richstatus.check_against_contract(seen, "INVALID_CONFIG", ("config.voice",))
    )
    assert "reason INVALID_CONFIG, expected UNKNOWN_MODEL" in str(
        richstatus.check_against_contract(seen, "UNKNOWN_MODEL")
    )

    class Lenient(errors.IdleTimeout):
        retryable = False

    status = Lenient("idle").to_rpc_status().SerializeToString()
    seen = richstatus.from_trailers({"grpc-status-details-bin": status})
    assert isinstance(seen, richstatus.RichError) and seen.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "the contract says true" in str(richstatus.check_against_contract(seen, "IDLE_TIMEOUT"))
    overloaded = richstatus.from_proto(errors.Overloaded("busy").to_proto())
    assert "without RetryInfo" in str(richstatus.check_against_contract(overloaded, "OVERLOADED"))
    assert richstatus.from_trailers({}) == "no grpc-status-details-bin trailer"


def test_server_timing_parsing_follows_the_w3c_syntax():
    assert parse_server_timing("receive;dur=0.210, total;dur=2400.000") == {
        "receive": 0.21,
        "total": 2400.0,
    }
    assert parse_server_timing('db;desc="a, b";dur=3') != {}  # quoted values, any param order
    assert isinstance(parse_server_timing("total=5"), str)
    assert isinstance(parse_server_timing("total;dur=fast"), str)


def test_known_failing_lists_and_their_verdicts(tmp_path):
    listed = tmp_path / "known.txt"
    listed.write_text("# why\nstt.a   # because\n\ntts.*\n")
    assert read_case_list(listed) == ("stt.a", "tts.*")
    case = parse_case({**BASE, "id": "tts.b", "steps": [{"config": {}}]})
    assert _judge(CaseResult(case, FAIL, "e"), ("tts.*",)).result == KNOWN_FAILING
    assert _judge(CaseResult(case, PASS, "e"), ("tts.*",)).result == UNEXPECTED_PASS
    assert _judge(CaseResult(case, FAIL, "e"), ("stt.*",)).result == FAIL
    assert _judge(CaseResult(case, FAIL, "e"), (), ("tts.b",)).result == FLAKY
    assert _judge(CaseResult(case, PASS, "e"), (), ("tts.b",)).result == PASS


def _refused_open_outcome() -> tuple[Outcome, Plan]:
    """A TTS stream whose context 'a' was refused at open, then ended OK."""
    case = {c.id: c for c in load_cases()}["tts.close.done-names-the-audio"]
    error = errors.UnsupportedSampleRate(
        "22050 Hz only", violations=[errors.Violation("open.output_format.sample_rate_hz", "")]
    ).to_proto()
    Resp = synthesis_pb2.StreamingSynthesizeResponse
    out = Outcome(
        responses=[
            Resp(context_id="a", error=synthesis_pb2.ContextError(error=error)),
            Resp(summary=synthesis_pb2.SynthesisSummary()),
        ],
        code=grpc.StatusCode.OK,
    )
    return out, Plan(case, None, {})


def test_evidence_names_the_reason_of_a_context_error():
    # An engineer whose server refused every open saw "context 'a' never got ContextDone
    # (error, error, error)" on 30 cases, and had to guess which error it was.
    out, plan = _refused_open_outcome()
    verdict = expect.evaluate(out, plan)
    assert not verdict.ok
    assert "error UNSUPPORTED_SAMPLE_RATE" in verdict.evidence, verdict.evidence
    assert "22050 Hz only" in verdict.evidence, verdict.evidence
    assert "UNSUPPORTED_SAMPLE_RATE" in expect.summary(out)


def test_evidence_of_a_missed_wait_leads_with_it():
    # A server that held text until the close got IDLE_TIMEOUT while the kit waited for
    # audio; the evidence said "ended DEADLINE_EXCEEDED IDLE_TIMEOUT ..., expected OK", not
    # that the audio the kit was waiting for never came.
    case = {c.id: c for c in load_cases()}["tts.append.sentence-starts-at-once"]
    Resp = synthesis_pb2.StreamingSynthesizeResponse
    timeout = errors.IdleTimeout("no message for 2 s")
    out = Outcome(
        responses=[Resp(context_id="a", opened=synthesis_pb2.ContextOpened())],
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        details="no message for 2 s",
        trailers={"grpc-status-details-bin": timeout.to_rpc_status().SerializeToString()},
        missed_wait="audio",
    )
    evidence = expect.evaluate(out, Plan(case, None, {})).evidence
    assert evidence.startswith("no audio came"), evidence
    assert "IDLE_TIMEOUT" in evidence, evidence


def test_float_sources_that_are_not_numbers_exist_in_pcm_f32le_only():
    f32 = Format(audio_pb2.AUDIO_ENCODING_PCM_F32LE, 16000)
    for source in AUDIO_SOURCES:
        assert len(signals.render(source, f32, ms=10)) == 160 * 4
    inf = np.frombuffer(signals.render("inf", f32, ms=10), dtype="<f4")
    assert np.isinf(inf).all()
    with pytest.raises(ValueError, match="inf samples exist only in PCM_F32LE"):
        signals.render("inf", Format(audio_pb2.AUDIO_ENCODING_PCM_S16LE, 16000), ms=10)


def test_files_on_the_stream_are_real_files_of_the_samples():
    pcm = Format(audio_pb2.AUDIO_ENCODING_PCM_S16LE, 16000)
    mulaw = Format(audio_pb2.AUDIO_ENCODING_MULAW, 8000)
    raw = signals.render("speech", mulaw)
    wav = signals.render("speech", mulaw, file="wav")
    reader = WavHeaderReader()
    assert reader.feed(wav) == raw  # the header, then the samples as they are
    assert reader.format is not None
    assert (reader.format.encoding, reader.format.rate) == (Encoding.MULAW, 8000)
    speech = np.frombuffer(signals.render("speech", pcm), dtype="<i2") / 32768
    for kind, magic in (("flac", b"fLaC"), ("ogg", b"OggS")):
        data = signals.render("speech", pcm, file=kind)
        assert data.startswith(magic)
        decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert rate == 16000 and abs(len(decoded) - len(speech)) < 0.01 * len(speech)
        n = min(len(decoded), len(speech))
        assert np.corrcoef(decoded[:n], speech[:n])[0, 1] > 0.9, kind  # the same speech


def _built(*steps: dict) -> list:
    caps = _caps()
    caps.limits.max_chunk_bytes = 1000
    main = next(m for m in caps.models if m.name == "main")
    case = parse_case({**BASE, "steps": list(steps)})
    return [s.message for s in plan.build(case, ServerCatalog(caps), main).sends]


def test_garbage_of_a_size_never_parses():
    (garbage,) = _built({"garbage": {"bytes": "max_chunk_bytes + 65537"}})
    assert isinstance(garbage, bytes) and len(garbage) == 1000 + 65537
    with pytest.raises(DecodeError):
        transcription_pb2.StreamingTranscribeRequest.FromString(garbage)
    with pytest.raises(DecodeError):
        synthesis_pb2.StreamingSynthesizeRequest.FromString(garbage)


def test_long_input_is_two_kib_wherever_a_config_says_at_long():
    step = {"config": {"model": "@long", "vocabulary": [{"phrase": "@long"}]}}
    (sent,) = _built(step)
    assert sent.config.model == plan.LONG_INPUT and len(plan.LONG_INPUT.encode()) == 2048
    assert sent.config.vocabulary[0].phrase == plan.LONG_INPUT
    assert step["config"]["model"] == "@long"  # the case's own data stays as loaded


def test_the_kits_echo_caps_are_the_contracts():
    assert (
        stream_checks.MAX_MESSAGE_BYTES,
        stream_checks.MAX_VIOLATIONS,
        stream_checks.MAX_FIELD_BYTES,
        stream_checks.MAX_DESCRIPTION_BYTES,
    ) == (
        errors.MAX_MESSAGE_BYTES,
        errors.MAX_VIOLATIONS,
        errors.MAX_FIELD_BYTES,
        errors.MAX_DESCRIPTION_BYTES,
    )


def test_the_report_prints_what_the_server_said_as_text():
    # Evidence quotes the server under test (its messages, its reasons): rich took a "[/x]"
    # in it for a closing tag and the kit ended in a MarkupError, the report unprinted.
    from rich.console import Console

    from voxwire.conformance.casefile import Case
    from voxwire.conformance.report import print_report
    from voxwire.conformance.runner import Report

    case = Case(id="stt.[b]odd", promise="keeps [its] word", section="1 [x]", service="stt")
    said = "INVALID_ARGUMENT: bad [/x] frame [bold]"
    report = Report(target="127.0.0.1:1", started_at="now")
    report.results.append(CaseResult(case, FAIL, said, model="m[/y]"))
    out = io.StringIO()
    print_report(report, Console(file=out, width=300, color_system=None))
    printed = out.getvalue()
    for text in (said, "stt.[b]odd", "keeps [its] word", "1 [x]", "(m[/y])"):
        assert text in printed, (text, printed)
