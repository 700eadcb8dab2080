"""The example server passes the kit, and the kit's command line works against it as a
separate process (exit status, JSON, known-failing semantics)."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from examples import minimal_server as ex
from examples.minimal_server import (
    Capabilities,
    Synthesis,
    ToneVoice,
    Transcription,
    add_services,
    build_server,
)
from voxwire.conformance import Options, load_cases, run_kit
from voxwire.conformance.__main__ import main
from voxwire.conformance.casefile import select
from voxwire.conformance.runner import (
    FAIL,
    PASS,
    PLAIN_ATTEMPTS,
    PLAIN_RACES_TO_FAIL,
    SKIP,
)
from voxwire.v1 import audio_pb2, capabilities_pb2

ROOT = Path(__file__).resolve().parents[2]
# What the toy models lack, so the cases about it have nothing to run on.
EXPECTED_SKIPS = {
    "stt.results.interim-before-final": "no STT model advertises interim_results",
    "stt.update-config.accepted": "no STT model advertises endpointing",
    "stt.update-config.rejected": "no STT model advertises endpointing",
    "stt.config.every-violation-at-once": "no STT model advertises endpointing",
    "stt.config.lacking-word-timestamps": "every STT model advertises word_timestamps",
    "stt.audio.nan-samples": "advertises PCM_F32LE",
    "stt.audio.infinite-samples": "advertises PCM_F32LE",
    "stt.limits.stream-too-long": "advertises no max_stream_duration_ms",
    "tts.context.ssml-invalid": "no TTS model advertises ssml",
    "tts.context.ssml-unsupported-element": "no TTS model advertises ssml",
    "tts.context.invalid-pronunciation": "no TTS model advertises pronunciation",
    "tts.context.unadvertised-alphabet": "no TTS model advertises pronunciation",
    "tts.config.lacking-word-timestamps": "every TTS model advertises word_timestamps",
    "tts.limits.slow-consumer": "advertises no write_timeout_ms",
    "tts.limits.unit-audio": "no TTS model states max_unit_audio_ms",
    "stt.format.pcm-declared-as-g711": "advertises MULAW",
}


async def test_the_example_server_passes_every_case_that_applies():
    server, port = await build_server(0, idle_s=2.0)
    try:
        report = await run_kit(Options(target=f"127.0.0.1:{port}"))
    finally:
        await server.stop(0.5)
    failed = {r.case.id: r.evidence for r in report.results if r.result not in (PASS, SKIP)}
    assert not failed
    skipped = {r.case.id: r.evidence for r in report.results if r.result == SKIP}
    assert set(skipped) == set(EXPECTED_SKIPS)
    for case_id, why in EXPECTED_SKIPS.items():
        assert why in skipped[case_id]
    assert report.ok and len(report.results) - len(skipped) >= 70
    # A plain writer's case passes only after as many streams kept the status as settle it.
    (plain,) = (r for r in report.results if r.case.writer == "plain")
    assert plain.attempts == PLAIN_ATTEMPTS - PLAIN_RACES_TO_FAIL + 1, plain


async def _kit(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxwire.conformance",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


@pytest.fixture
async def example_process():
    """examples/minimal_server.py as its own process on a free port; yields host:port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "minimal_server.py"),
        "--port",
        "0",
        "--idle-timeout",
        "2",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_cli_exit_status_json_and_known_failing(example_process, tmp_path):
    target, report = example_process, tmp_path / "report.json"
    code, out = await _kit("--target", target, "--cases", "stt.config.*", "--json", str(report))
    assert code == 0, out
    data = json.loads(report.read_text())
    assert data["ok"] and data["counts"]["pass"] >= 8
    assert all(c["id"].startswith("stt.config.") for c in data["cases"])
    assert "stt.config.required" in out and "conforms" in out

    # A listed case that passes shrinks the list: the run fails until its line goes.
    known = tmp_path / "known.txt"
    known.write_text("stt.config.required  # fixed meanwhile\n")
    code, out = await _kit(
        "--target",
        target,
        "--cases",
        "stt.config.required",
        "--known-failing",
        str(known),
        "--json",
        str(report),
    )
    assert code == 1, out
    assert json.loads(report.read_text())["cases"][0]["result"] == "unexpected-pass"


def test_cli_says_once_when_no_server_answers(capsys):
    # Nothing listens there. It printed 90 failures of "no model to run on" and exit 1, as a
    # server that does not conform would get: now one line on stderr and exit 2.
    code = main(["--target", "127.0.0.1:1", "--cases", "stt.config.required", "--deadline", "20"])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    assert "cannot check 127.0.0.1:1: GetCapabilities failed: UNAVAILABLE" in err


def test_cli_refuses_cases_that_match_nothing(capsys):
    # A typo in --cases ran nothing and said "conforms", exit 0.
    assert main(["--target", "127.0.0.1:1", "--cases", "nomatch.*"]) == 2
    assert "no case matches --cases nomatch.*" in capsys.readouterr().err


async def test_cli_refuses_models_the_server_does_not_serve(example_process):
    # --models naming no model of the server skipped every case that needs one, "conforms".
    code, out = await _kit("--target", example_process, "--models", "nosuchmodel")
    assert code == 2, out
    assert "--models names what" in out and "nosuchmodel" in out and "toy_beep" in out
    # One served and one not: said before any case ran, with no table saying "conforms" (every
    # case ran first, the table said "conforms", then the error came).
    code, out = await _kit("--target", example_process, "--models", "toy_beep,nosuch")
    assert code == 2, out
    assert "--models names what" in out and "nosuch" in out, out
    assert "conforms" not in out and "pass" not in out, out


def test_cli_refuses_a_bad_case_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[case]]\nid = "x"\npromise = "p"\nsection = "s"\nservice = "nope"\n')
    assert main(["--list", "--case-file", str(bad)]) == 2
    assert "service must be one of" in capsys.readouterr().err


class _OddLengthVoice(ToneVoice):
    """A voice whose chunks are not whole milliseconds (1001 samples at 16 kHz: 62.5625 ms),
    as a real synthesizer's are."""

    def speak(self, text: str, rate: int = 16000) -> list[tuple[str, np.ndarray]]:
        return [(word, np.zeros(1001 * rate // 16000)) for word in text.split()]


async def test_a_voice_whose_chunks_are_not_whole_ms_keeps_its_timeline():
    # The example counted each chunk's duration in whole ms and added them up: with a voice
    # of 1001-sample chunks the timeline fell behind the audio, 0.56 ms a chunk, and the kit
    # failed tts.audio.tiling ("chunks say 1809 ms, their bytes hold 1815 ms").
    class OddSynthesis(Synthesis):
        voice_class = _OddLengthVoice

    server = grpc.aio.server()
    add_services(server, Transcription(2.0), OddSynthesis(2.0), Capabilities(2.0))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        cases = select(load_cases(), ["tts.audio.*", "tts.contexts.*", "tts.close.*"])
        report = await run_kit(Options(target=f"127.0.0.1:{port}"), cases)
    finally:
        await server.stop(0.5)
    assert {r.case.id: (r.result, r.evidence) for r in report.results if r.result != PASS} == {}


async def test_step_one_advertising_other_formats_is_all_it_takes(monkeypatch):
    # examples/README.md, step 1: "Change STT_MODEL / TTS_MODEL to say what your model does:
    # if it takes 8 kHz mu-law, list that format". Doing only that failed 30 cases: the
    # example's checks and audio handling said "PCM_S16LE only", "16 kHz only" whatever
    # Capabilities said. Now the formats, languages and voices come from the two models.
    fmt = capabilities_pb2.FormatSupport
    pcm16, f32 = audio_pb2.AUDIO_ENCODING_PCM_S16LE, audio_pb2.AUDIO_ENCODING_PCM_F32LE
    mulaw = audio_pb2.AUDIO_ENCODING_MULAW
    stt_model = capabilities_pb2.ModelCapabilities()
    stt_model.CopyFrom(ex.STT_MODEL)
    del stt_model.input_formats[:]
    stt_model.input_formats.extend(
        [
            fmt(encoding=mulaw, sample_rates_hz=[8000]),
            fmt(encoding=pcm16, sample_rates_hz=[8000, 16000], max_channels=2),
            fmt(encoding=f32, sample_rates_hz=[16000]),
        ]
    )
    stt_model.native_sample_rate_hz = 8000
    tts_model = capabilities_pb2.ModelCapabilities()
    tts_model.CopyFrom(ex.TTS_MODEL)
    del tts_model.output_formats[:]
    tts_model.output_formats.extend(
        [fmt(encoding=pcm16, sample_rates_hz=[24000]), fmt(encoding=mulaw, sample_rates_hz=[8000])]
    )
    tts_model.native_sample_rate_hz = 24000
    tts_model.voices.append("low")
    monkeypatch.setattr(ex, "STT_MODEL", stt_model)
    monkeypatch.setattr(ex, "TTS_MODEL", tts_model)
    server, port = await build_server(0, idle_s=2.0)
    try:
        report = await run_kit(Options(target=f"127.0.0.1:{port}"))
    finally:
        await server.stop(0.5)
    results = {r.case.id: (r.result, r.evidence) for r in report.results}
    assert {k: v for k, v in results.items() if v[0] not in (PASS, SKIP)} == {}
    assert results["stt.formats.every-advertised"] == (
        PASS,
        "toy_beep: all 5 advertised formats work",
    )
    assert results["tts.formats.every-advertised"] == (
        PASS,
        "toy_tone: all 2 advertised formats work",
    )
    assert results["stt.audio.nan-samples"][0] == PASS  # PCM_F32LE is advertised now


class _LoudOnly(ex.BeepDetector):
    """A recognizer that hears nothing in the kit's speech (a keypad decoder, a wake word
    model): only sound louder than the bundled recording counts."""

    LOUD = 0.5


class _LoudOnlyTranscription(Transcription):
    def start(self, config: Any) -> ex.BeepDetector:
        super().start(config)
        return _LoudOnly(config.word_timestamps, config.audio_format.sample_rate_hz)


def _loud_bursts(path: Path) -> Path:
    """2 s at 16 kHz: a loud 440 Hz burst from 0.3 to 1.5 s (open at the 60 % cut, 1.2 s)."""
    t = np.arange(32000) / 16000
    x = np.where((t > 0.3) & (t < 1.5), 0.8 * np.sin(2 * np.pi * 440 * t), 0.0)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes((x * 32767).astype("<i2").tobytes())
    return path


async def test_speech_of_your_own_for_a_model_that_does_not_hear_the_kits(tmp_path):
    # A keypad (DTMF) recognizer heard nothing in the kit's speech and failed six cases with
    # "speech was sent, no final result came (0 results)": a conforming server, failed for
    # what it recognises. The evidence now says so, and --speech gives it audio it hears.
    server = grpc.aio.server()
    add_services(server, _LoudOnlyTranscription(2.0), Synthesis(2.0), Capabilities(2.0))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    patterns = ["stt.results.*", "stt.finalize.ack-after-results", "stt.order.close-*"]
    try:
        cases = select(load_cases(), patterns)
        target = f"127.0.0.1:{port}"
        kit_speech, own = await asyncio.gather(
            run_kit(Options(target=target), cases),
            run_kit(Options(target=target, speech=_loud_bursts(tmp_path / "keys.wav")), cases),
        )
    finally:
        await server.stop(0.5)
    failed = {r.case.id: r.evidence for r in kit_speech.results if r.result == FAIL}
    assert "stt.results.within-audio-sent" in failed
    assert all("--speech" in evidence for evidence in failed.values()), failed
    assert {r.case.id: r.evidence for r in own.results if r.result not in (PASS, SKIP)} == {}


def test_cli_refuses_speech_that_is_not_a_wav_file(tmp_path, capsys):
    bad = tmp_path / "speech.wav"
    bad.write_text("not audio")
    assert main(["--target", "127.0.0.1:1", "--speech", str(bad)]) == 2
    assert "--speech" in capsys.readouterr().err


def test_cli_refuses_a_known_failing_entry_that_names_no_case(tmp_path, capsys):
    # A typo (or a case renamed since) in known.txt was ignored, exit 0: the entry could never
    # shrink the list, and the case it meant was not listed at all.
    known = tmp_path / "known.txt"
    known.write_text("stt.config.requred  # typo\nstt.limits.*\n")
    code = main(
        ["--target", "127.0.0.1:1", "--cases", "stt.config.*", "--known-failing", str(known)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "stt.config.requred" in err and "stt.limits" not in err, err


def test_cli_refuses_an_unwritable_json_path_before_the_run(tmp_path, capsys):
    # --json into a path it cannot write ran every case, then ended in a traceback, exit 1
    # (as if a case had failed).
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["--target", "127.0.0.1:1", "--json", str(blocker / "report.json")])
    out, err = capsys.readouterr()
    assert code == 2 and "--json" in err and not out, (out, err)


async def test_the_chunk_limit_is_checked_on_a_model_without_pcm16(monkeypatch):
    # A model that takes 8 kHz mu-law only (what docs/contract.md asks phone audio to be
    # sent as) skipped both chunk limit cases, "no fitting STT model advertises PCM_S16LE",
    # though max_chunk_bytes holds for every encoding.
    stt_model = capabilities_pb2.ModelCapabilities()
    stt_model.CopyFrom(ex.STT_MODEL)
    del stt_model.input_formats[:]
    stt_model.input_formats.add(encoding=audio_pb2.AUDIO_ENCODING_MULAW, sample_rates_hz=[8000])
    stt_model.native_sample_rate_hz = 8000
    monkeypatch.setattr(ex, "STT_MODEL", stt_model)
    server, port = await build_server(0, idle_s=2.0)
    try:
        cases = select(load_cases(), ["stt.limits.chunk-*"])
        report = await run_kit(Options(target=f"127.0.0.1:{port}"), cases)
    finally:
        await server.stop(0.5)
    assert {r.case.id: r.result for r in report.results} == {
        "stt.limits.chunk-too-large": PASS,
        "stt.limits.chunk-at-limit": PASS,
    }, [(r.case.id, r.evidence) for r in report.results]


def test_cli_list_is_one_line_per_case(capsys):
    # Piped (no terminal), --list wrapped each case over two lines at 80 columns, so
    # `--list | grep tts.limits` lost the promises and `| wc -l` counted twice the cases.
    assert main(["--list", "--cases", "stt.limits.*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(select(load_cases(), ["stt.limits.*"])), lines
    assert all(line.startswith("stt.limits.") for line in lines), lines


def test_cli_json_says_nothing_was_checked_when_no_server_answers(tmp_path, capsys):
    # Exit 2 said "not a verdict on a server", but the JSON for CI held every selected case
    # as "fail" ("GetCapabilities failed: no model to run on") and not why.
    report = tmp_path / "report.json"
    code = main(["--target", "127.0.0.1:1", "--cases", "stt.config.*", "--json", str(report)])
    data = json.loads(report.read_text())
    assert code == 2 and not data["ok"]
    assert data["error"].startswith("GetCapabilities failed: UNAVAILABLE"), data
    assert data["counts"] == {} and data["cases"] == [], data


def test_cli_cases_takes_a_comma_separated_list_as_models_does(capsys):
    # --models a,b is comma-separated; --cases 'stt.*,tts.*' matched nothing, exit 2.
    assert main(["--list", "--cases", "stt.limits.chunk-*,tts.limits.chunk-*"]) == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(ids) == [
        "stt.limits.chunk-at-limit",
        "stt.limits.chunk-too-large",
        "tts.limits.chunk-too-large",
    ], ids


async def test_features_the_models_do_not_advertise_are_refused(monkeypatch):
    # Step 1 again: a model without word timestamps cleared features.word_timestamps, and the
    # kit failed stt/tts.config.lacking-word-timestamps: the example's own list of what to
    # refuse did not follow Capabilities, so a request for them was silently ignored.
    stt_model, tts_model = (
        capabilities_pb2.ModelCapabilities(),
        capabilities_pb2.ModelCapabilities(),
    )
    stt_model.CopyFrom(ex.STT_MODEL)
    tts_model.CopyFrom(ex.TTS_MODEL)
    stt_model.features.word_timestamps = tts_model.features.word_timestamps = False
    monkeypatch.setattr(ex, "STT_MODEL", stt_model)
    monkeypatch.setattr(ex, "TTS_MODEL", tts_model)
    server, port = await build_server(0, idle_s=2.0)
    try:
        cases = select(load_cases(), ["*.config.lacking-*"])
        report = await run_kit(Options(target=f"127.0.0.1:{port}"), cases)
    finally:
        await server.stop(0.5)
    results = {r.case.id: (r.result, r.evidence) for r in report.results}
    assert results["stt.config.lacking-word-timestamps"][0] == PASS, results
    assert results["tts.config.lacking-word-timestamps"][0] == PASS, results
    assert all(result in (PASS, SKIP) for result, _ in results.values()), results


class _LongWordVoice(ToneVoice):
    """Half-second chunks whose word is the first 400 ms (then a pause)."""

    def speak(self, text: str, rate: int = 16000) -> list[tuple[str, np.ndarray, int]]:
        return [(word, np.zeros(rate // 2), rate * 2 // 5) for word in text.split()]


def test_a_words_timestamp_ends_where_its_voice_says_the_word_ends():
    # The example ended every word 150 ms after its start (the tone voice's constant), whatever
    # the voice: a 400 ms word was stamped 0-150.
    stream = ex.SynthesisStream(_LongWordVoice())
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000)
    config = ex.tts.SynthesisContextConfig(output_format=fmt, word_timestamps=True)
    stream.open("a", config)
    out = stream.speak("a", stream.contexts["a"], "two words")
    stamps = [
        (w.word, w.start_ms, w.end_ms) for r in out if r.HasField("words") for w in r.words.words
    ]
    assert stamps == [("two", 0, 400), ("words", 500, 900)]
