"""The gateway in front of a server that is not the reference adapter: the example server an ML
engineer starts from (examples/minimal_server.py: PCM16 at 16 kHz only, no resampling).

``POST /v1/tts`` with no format asked for was answered 400 UNSUPPORTED_SAMPLE_RATE ("rates
[16000] only"): the gateway's default, 24 kHz, is one the reference adapter makes by
resampling and this server does not. The defaults now fit what the model offers (its
capabilities, which the gateway asks each adapter as it starts serving).
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
import pytest_asyncio
import soundfile
import soxr

from examples.minimal_server import build_server
from gateway.http.tts import _defaults
from inference_adapter.server import AdapterServer
from tests.client.cli_process import run_voxwire
from tests.helpers.edge import Edge, start_edge
from tests.helpers.speech_fixtures import SPEECH_DIR
from voxwire import errors
from voxwire.client import fetch_capabilities
from voxwire.edge.v1 import http_pb2
from voxwire.v1 import audio_pb2, capabilities_pb2

PCM16, MULAW = audio_pb2.AUDIO_ENCODING_PCM_S16LE, audio_pb2.AUDIO_ENCODING_MULAW
SPEECH = str(SPEECH_DIR / "kitchen_lights.wav")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def toy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    server, port = await build_server(0)
    upstream = cast(AdapterServer, SimpleNamespace(address=f"127.0.0.1:{port}"))
    try:
        async for edge in start_edge(upstream, tmp_path_factory):
            yield edge
    finally:
        await server.stop(1.0)


async def _speak(edge: Edge, query: str = "") -> tuple[int, bytes]:
    headers = {**edge.headers, "Content-Type": "text/plain"}
    async with aiohttp.ClientSession() as http:
        url = f"{edge.server.url}/v1/tts{query}"
        async with http.post(url, data=b"Hello there.", headers=headers) as resp:
            return resp.status, await resp.read()


@pytest.mark.asyncio(loop_scope="session")
async def test_post_tts_with_no_format_gets_one_the_model_offers(toy: Edge):
    status, body = await _speak(toy)
    assert status == 200, body[:300]
    with wave.open(io.BytesIO(body)) as wav:  # a WAV with its streaming header: read it whole
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (16000, 2, 1)
    assert len(body) > 44 + 3200  # audio: the toy voice's tone, 0.1 s and more
    # A format the contract does not carry is still refused, before any audio.
    status, body = await _speak(toy, "?sample_rate=23000")
    assert status == 400 and b"UNSUPPORTED_SAMPLE_RATE" in body, body


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "query, rate, subtype",
    [
        ("?encoding=mulaw&sample_rate=8000", 8000, "ULAW"),  # a phone call's audio
        ("?sample_rate=24000", 24000, "PCM_16"),
        ("?encoding=pcm_f32le&sample_rate=48000", 48000, "FLOAT"),
    ],
)
async def test_post_tts_converts_what_the_model_makes_to_the_format_asked(
    toy: Edge, query: str, rate: int, subtype: str
):
    # A server that makes PCM16 at 16 kHz only refused mu-law at 8 kHz UNSUPPORTED_ENCODING
    # and 24 kHz UNSUPPORTED_SAMPLE_RATE: a telephony client could not use it at all.
    import numpy as np

    status, native = await _speak(toy)
    assert status == 200
    status, body = await _speak(toy, query)
    assert status == 200, body[:300]
    want, want_rate = soundfile.read(io.BytesIO(native), dtype="float32")
    got, got_rate = soundfile.read(io.BytesIO(body), dtype="float32")
    assert (got_rate, soundfile.info(io.BytesIO(body)).subtype) == (rate, subtype)
    assert abs(len(got) / got_rate - len(want) / want_rate) < 0.002  # the same length of audio

    # The same sound: the strongest frequency and the level of the native audio.
    def peak_hz(x: np.ndarray, r: int) -> float:
        return float(np.argmax(np.abs(np.fft.rfft(x))) * r / len(x))

    assert abs(peak_hz(got, got_rate) - peak_hz(want, want_rate)) < 5
    assert abs(float(np.std(got)) - float(np.std(want))) < 0.02 * max(float(np.std(want)), 0.05)


@pytest.mark.asyncio(loop_scope="session")
async def test_post_tts_events_carry_converted_audio(toy: Edge):
    headers = {**toy.headers, "Content-Type": "text/plain", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        url = f"{toy.server.url}/v1/tts?encoding=mulaw&sample_rate=8000"
        async with http.post(url, data=b"Hello there.", headers=headers) as resp:
            text = await resp.text()
    assert resp.status == 200, text[:300]
    import base64
    import json

    chunks = [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and '"audio"' in line and '"sequenceNumber"' in line
    ]
    audio = b"".join(base64.b64decode(c["audio"]) for c in chunks)
    ends = [int(c.get("startMs", 0)) + int(c.get("durationMs", 0)) for c in chunks]
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    done = next(e for e in events if "done" in e)  # after the session id, when there is one
    assert abs(len(audio) / 8 - ends[-1]) < 2  # 8 mu-law bytes a millisecond, to the end
    assert ends[-1] == done["done"]["audioMs"]
    starts = [int(c.get("startMs", 0)) for c in chunks]
    assert starts == [0, *ends[:-1]]  # they tile
    numbers = [c["sequenceNumber"] for c in chunks]
    assert (
        numbers
        == list(range(1, len(chunks) + 1))
        == list(range(1, done["done"]["lastSequenceNumber"] + 1))
    )


def _model(native: int, *formats: tuple[int, list[int]]) -> capabilities_pb2.ModelCapabilities:
    return capabilities_pb2.ModelCapabilities(
        name="m",
        kind=capabilities_pb2.MODEL_KIND_TTS,
        native_sample_rate_hz=native,
        output_formats=[
            capabilities_pb2.FormatSupport(encoding=e, sample_rates_hz=r) for e, r in formats
        ],
    )


@pytest.mark.parametrize(
    ("model", "asked", "got"),
    [
        (None, (0, 0), (PCM16, 24000)),  # nothing known: the documented defaults
        (_model(22050, (PCM16, [8000, 16000, 22050, 24000])), (0, 0), (PCM16, 24000)),
        (_model(22050, (PCM16, [16000, 22050])), (0, 0), (PCM16, 22050)),  # its native rate
        (_model(44100, (PCM16, [16000, 22050])), (0, 0), (PCM16, 16000)),  # the first offered
        (_model(8000, (MULAW, [8000])), (0, 0), (MULAW, 8000)),  # a telephony-only model
        (_model(16000, (PCM16, [16000])), (MULAW, 0), (MULAW, 8000)),  # asked: kept, refused later
        (_model(16000, (PCM16, [16000])), (PCM16, 48000), (PCM16, 48000)),
    ],
)
def test_the_defaults_fit_what_the_model_offers(model, asked, got):
    req = http_pb2.SpeakRequest(text="hi")
    req.config.output_format.encoding, req.config.output_format.sample_rate_hz = asked
    _defaults(req, model)
    fmt = req.config.output_format
    assert (fmt.encoding, fmt.sample_rate_hz) == got


@pytest.mark.asyncio(loop_scope="session")
async def test_speak_resamples_to_a_rate_the_model_does_not_make(toy: Edge, tmp_path: Path):
    # `--rate 8000` (a telephony file) and `--rate 22050` were refused by a server that makes
    # 16 kHz only: "UNSUPPORTED_SAMPLE_RATE: rates [16000] only (--rate: [16000])".
    native = tmp_path / "native.wav"
    run = await run_voxwire(
        "speak", "Hello there.", "-o", str(native), "--rate", "16000", "--url", toy.ws, key=toy.key
    )
    assert run.status == 0 and "resampled" not in run.err, run.err
    want, _ = soundfile.read(native, dtype="float32")
    for rate in (8000, 22050):
        out = tmp_path / f"hi{rate}.wav"
        run = await run_voxwire(
            "speak", "Hello there.", "-o", str(out), "--rate", str(rate), "--url", toy.ws,
            key=toy.key,
        )  # fmt: skip
        assert run.status == 0, run.err
        assert f"model toy_tone makes 16000 Hz: 16000 Hz resampled to {rate} Hz" in run.err
        got, got_rate = soundfile.read(out, dtype="float32")
        assert got_rate == rate
        assert abs(len(got) / rate - len(want) / 16000) < 0.002  # all of it, the tail too


@pytest.mark.asyncio(loop_scope="session")
async def test_speak_with_no_rate_asks_one_the_model_offers(toy: Edge, tmp_path: Path):
    # Its default, 22050 Hz, was refused UNSUPPORTED_SAMPLE_RATE by a 16 kHz-only server.
    for name in ("hi.wav", "hi.opus"):
        out = tmp_path / name
        run = await run_voxwire("speak", "Hello.", "-o", str(out), "--url", toy.ws, key=toy.key)
        assert run.status == 0, run.err
        assert soundfile.info(str(out)).samplerate == 16000, name


@pytest.mark.asyncio(loop_scope="session")
async def test_transcribe_asks_interim_results_only_of_a_model_that_makes_them(toy: Edge):
    # `voxwire transcribe file.wav` asked interim results of every model: the toy model,
    # which makes none, refused the session ("INVALID_CONFIG: config.interim_results toy_beep
    # does not advertise interim_results") where it could transcribe.
    run = await run_voxwire("transcribe", SPEECH, "--url", toy.ws, key=toy.key)
    assert (run.status, run.out.strip()) == (0, "beep"), run.err


@pytest.mark.asyncio(loop_scope="session")
async def test_the_sdk_reads_the_gateways_capabilities(toy: Edge):
    reply = await fetch_capabilities(toy.ws, toy.key)
    assert {m.name for m in reply.models} >= {"toy_beep"}
    assert reply.limits.max_pending_text_bytes == 16384
    with pytest.raises(errors.Unauthenticated):
        await fetch_capabilities(toy.server.url, "vx_nobody_x")
    with pytest.raises(errors.BackendUnavailable, match="127.0.0.1:9 did not answer"):
        await fetch_capabilities("ws://127.0.0.1:9", toy.key, timeout_s=2)


@pytest.mark.asyncio(loop_scope="session")
async def test_transcribe_resamples_a_file_to_a_rate_the_model_takes(toy: Edge, tmp_path: Path):
    # A 44.1 kHz WAV was refused UNSUPPORTED_SAMPLE_RATE by a server that takes 16 kHz only,
    # and the flag the error named, --rate, is refused with a file.
    audio, rate = soundfile.read(SPEECH, dtype="float32")
    path = tmp_path / "k44.wav"
    soundfile.write(path, soxr.resample(audio, rate, 44100), 44100, subtype="PCM_16")
    run = await run_voxwire("transcribe", str(path), "--url", toy.ws, key=toy.key)
    assert (run.status, run.out.strip()) == (0, "beep"), run.err
    assert "44100 Hz, 1 channel(s); model toy_beep takes pcm_s16le at 16000 Hz" in run.err


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("shape", ["stereo file", "mu-law stdin"])
async def test_transcribe_converts_audio_to_a_format_the_model_takes(
    toy: Edge, tmp_path: Path, shape: str
):
    # A stereo WAV, and 8 kHz mu-law on stdin, were refused by a server that takes 16 kHz
    # PCM16 mono only ("max_channels", "UNSUPPORTED_SAMPLE_RATE"); the stdin's --rate the
    # error named is the audio's own, not one to change.
    from voxwire.audio.codecs import Encoding, encode

    audio, rate = soundfile.read(SPEECH, dtype="float32")
    if shape == "stereo file":
        path = tmp_path / "stereo.wav"
        soundfile.write(path, audio[:, None].repeat(2, axis=1), rate, subtype="PCM_16")
        args, stdin, was = (str(path),), None, "pcm_s16le at 16000 Hz, 2 channel(s)"
    else:
        args = ("-", "--encoding", "mulaw", "--rate", "8000")
        stdin = encode(soxr.resample(audio, rate, 8000), Encoding.MULAW)
        was = "mulaw at 8000 Hz, 1 channel(s)"
    run = await run_voxwire("transcribe", *args, "--url", toy.ws, key=toy.key, stdin=stdin)
    assert (run.status, run.out.strip()) == (0, "beep"), run.err
    assert (
        f"is {was}; model toy_beep takes pcm_s16le at 16000 Hz, 1 channel(s): "
        "sent as pcm_s16le at 16000 Hz, 1 channel(s)"
    ) in run.err


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "name, rate, channels, subtype",
    [
        ("k44.wav", 44100, 1, "PCM_16"),
        ("stereo.wav", 16000, 2, "PCM_16"),
        ("phone.wav", 8000, 1, "ULAW"),
        ("k44.flac", 44100, 1, "PCM_16"),  # decoded anyway: at a rate the model takes
    ],
)
async def test_post_stt_decodes_a_file_to_a_format_the_model_takes(
    toy: Edge, tmp_path: Path, name: str, rate: int, channels: int, subtype: str
):
    # A 44.1 kHz or a stereo WAV was refused by a server that takes 16 kHz mono only
    # (400 UNSUPPORTED_SAMPLE_RATE, naming a sample_rate field that an upload of a file cannot
    # change), and a 44.1 kHz FLAC too, decoded to its own rate.
    audio, own = soundfile.read(SPEECH, dtype="float32")
    audio = soxr.resample(audio, own, rate)
    path = tmp_path / name
    soundfile.write(path, audio[:, None].repeat(channels, axis=1), rate, subtype=subtype)
    kind = "audio/flac" if name.endswith("flac") else "audio/wav"
    headers = {**toy.headers, "Content-Type": kind}
    async with aiohttp.ClientSession() as http:
        url = f"{toy.server.url}/v1/stt"
        async with http.post(url, data=path.read_bytes(), headers=headers) as resp:
            body = await resp.json()
    assert resp.status == 200, body
    assert body["transcript"] == "beep"
    assert abs(body["audioMs"] - 1000 * len(audio) / rate) < 30  # all of it, once


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "kind, query, rate, channels, encoding",
    [
        ("audio/basic", "", 8000, 1, "mulaw"),
        (
            "application/octet-stream",
            "?encoding=pcm_s16le&sample_rate=44100&channels=2",
            44100,
            2,
            "pcm_s16le",
        ),
        ("application/octet-stream", "?encoding=alaw&sample_rate=8000", 8000, 1, "alaw"),
    ],
)
async def test_post_stt_converts_raw_samples_to_a_format_the_model_takes(
    toy: Edge, kind: str, query: str, rate: int, channels: int, encoding: str
):
    # 8 kHz mu-law (audio/basic, a phone recording) was refused UNSUPPORTED_ENCODING, naming an
    # `encoding` field the client never gave; raw 44.1 kHz stereo UNSUPPORTED_SAMPLE_RATE.
    from voxwire.audio.codecs import Encoding, encode

    audio, own = soundfile.read(SPEECH, dtype="float32")
    audio = soxr.resample(audio, own, rate)
    body = encode(audio.repeat(channels), Encoding(encoding))  # interleaved: the same twice
    status, reply = await _transcribe_raw(toy, kind, query, body)
    assert status == 200, reply
    assert reply["transcript"] == "beep"
    assert abs(reply["audioMs"] - 1000 * len(audio) / rate) < 30  # all of it, once


@pytest.mark.asyncio(loop_scope="session")
async def test_post_stt_refuses_nan_samples_it_converts(toy: Edge):
    import numpy as np

    samples = np.zeros(16000, "<f4")
    samples[8000] = np.nan
    query = "?encoding=pcm_f32le&sample_rate=16000"
    status, reply = await _transcribe_raw(toy, "application/octet-stream", query, samples.tobytes())
    assert (status, reply["error"]["reason"]) == (400, "INVALID_AUDIO"), reply


async def _transcribe_raw(toy: Edge, kind: str, query: str, body: bytes) -> tuple[int, dict]:
    headers = {**toy.headers, "Content-Type": kind}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{toy.server.url}/v1/stt{query}", data=body, headers=headers) as r:
            return r.status, await r.json()


async def _stream(toy: Edge, query: str, audio: bytes, frame: int) -> tuple[list[dict], int]:
    """``audio`` over ``WS /v1/stt/stream?query`` in ``frame``-byte frames, a finalize after
    the first half, then close; every JSON message and the close code."""
    import json

    messages: list[dict] = []
    half = len(audio) // 2 // frame * frame
    async with aiohttp.ClientSession() as http:
        url = f"{toy.ws}/v1/stt/stream?model=toy_beep&{query}"
        async with http.ws_connect(url, headers=toy.headers) as ws:
            for pos in range(0, len(audio), frame):
                if pos == half:
                    await ws.send_str(json.dumps({"finalize": {"finalizeId": "half"}}))
                await ws.send_bytes(audio[pos : pos + frame])
            await ws.send_str(json.dumps({"close": {}}))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    messages.append(json.loads(msg.data))
            return messages, ws.close_code or 0


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "encoding, rate, channels",
    [
        ("pcm_f32le", 48000, 1),  # a browser's AudioContext
        ("mulaw", 8000, 1),  # a telephony bridge
        ("pcm_s16le", 44100, 2),
    ],
)
async def test_socket_audio_is_converted_to_a_format_the_model_takes(
    toy: Edge, encoding: str, rate: int, channels: int
):
    # A server that takes 16 kHz PCM16 mono only refused a browser's 48 kHz float audio over
    # the socket (UNSUPPORTED_ENCODING) and a phone bridge's 8 kHz mu-law; the gateway's
    # uploads and the CLI converted, its sockets did not.
    from voxwire.audio.codecs import Encoding, encode

    audio, own = soundfile.read(SPEECH, dtype="float32")
    audio = soxr.resample(audio, own, rate)
    body = encode(audio.repeat(channels), Encoding(encoding))
    frame = len(encode(audio[: rate // 10].repeat(channels), Encoding(encoding)))  # 100 ms
    query = f"encoding={encoding}&sample_rate={rate}&channels={channels}"
    messages, code = await _stream(toy, query, body, frame)
    assert code == 1000, messages
    finals = [m["result"] for m in messages if m.get("result", {}).get("isFinal")]
    assert "beep" in " ".join(f["transcript"] for f in finals), messages
    # The finalize covers all the audio before it (the resampler's tail goes first), and the
    # summary all the audio, in the client's own timeline.
    half_ms = 1000 * (len(body) // 2 // frame * frame) / len(body) * len(audio) / rate
    ack = next(m["finalizeAck"] for m in messages if "finalizeAck" in m)
    assert abs(ack["audioMs"] - half_ms) <= 2, (ack, half_ms)
    summary = messages[-1]["summary"]
    assert abs(summary["audioMs"] - 1000 * len(audio) / rate) <= 2, summary
    ends = [f["endMs"] for f in finals]
    assert ends == sorted(ends) and ends[-1] <= summary["audioMs"] + 2


@pytest.mark.asyncio(loop_scope="session")
async def test_socket_refuses_nan_samples_it_converts(toy: Edge):
    import numpy as np

    samples = np.zeros(4800, "<f4")
    samples[100] = np.nan
    messages, code = await _stream(
        toy, "encoding=pcm_f32le&sample_rate=48000", samples.tobytes(), 4800
    )
    assert messages[-1]["error"]["reason"] == "INVALID_AUDIO", messages
    assert code == errors.InvalidAudio.ws_close_code


async def _speak_socket(toy: Edge, fmt: dict) -> tuple[list, list[dict], int]:
    """One toy_tone context over ``WS /v1/tts/stream`` in ``fmt``: two texts, a flush between,
    then close; its audio frames, its JSON messages (a flush ack's place among the frames as
    ``framesBefore``) and the close code."""
    import json

    from gateway.wire.frames import unpack

    frames: list = []
    messages: list[dict] = []
    context = {"model": "toy_tone", "outputFormat": fmt}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{toy.ws}/v1/tts/stream?lead_ms=0", headers=toy.headers) as ws:
            for msg in (
                {"contextId": "c", "open": context},
                {"contextId": "c", "append": {"text": "Hello there."}},
                {"contextId": "c", "flush": {"flushId": "f1"}},
                {"contextId": "c", "append": {"text": "And again, a little longer."}},
                {"contextId": "c", "close": {}},
                {"closeSession": {}},
            ):
                await ws.send_str(json.dumps(msg))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    frames.append(unpack(msg.data))
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    messages.append({**json.loads(msg.data), "framesBefore": len(frames)})
            return frames, messages, ws.close_code or 0


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    "encoding, rate",
    [("AUDIO_ENCODING_MULAW", 8000), ("AUDIO_ENCODING_PCM_F32LE", 48000)],
)
async def test_socket_tts_converts_what_the_model_makes_to_the_format_asked(
    toy: Edge, encoding: str, rate: int
):
    # A server that makes 16 kHz PCM16 only refused a context in 8 kHz mu-law (the format a
    # Twilio call bridge asks: voxwire.client.twilio) UNSUPPORTED_ENCODING.
    import numpy as np

    from voxwire.audio.codecs import Encoding, PcmFormat, decode

    native = {"encoding": "AUDIO_ENCODING_PCM_S16LE", "sampleRateHz": 16000}
    want, _, code = await _speak_socket(toy, native)
    assert code == 1000
    frames, messages, code = await _speak_socket(toy, {"encoding": encoding, "sampleRateHz": rate})
    assert code == 1000, messages
    assert not [m for m in messages if "contextError" in m or "error" in m], messages
    fmt = PcmFormat(Encoding.MULAW if "MULAW" in encoding else Encoding.PCM_F32LE, rate)
    # The same chunks as the native context: numbers, places; each converted whole.
    assert [(f.sequence_number, f.start_ms) for f in frames] == [
        (f.sequence_number, f.start_ms) for f in want
    ]
    for got, native_frame in zip(frames, want, strict=True):
        native_ms = len(native_frame.audio) / 32
        assert abs(len(got.audio) / fmt.bytes_per_frame * 1000 / rate - native_ms) <= 0.2
    done = next(m for m in messages if "done" in m)
    assert done["done"]["lastSequenceNumber"] == frames[-1].sequence_number
    # The flush ack follows all the audio of the text before it.
    ack = next(m for m in messages if "flushAck" in m)
    assert ack["flushAck"]["lastSequenceNumber"] == frames[ack["framesBefore"] - 1].sequence_number

    def peak_hz(audio: bytes, f: PcmFormat) -> float:
        x = decode(audio, f)
        return float(np.argmax(np.abs(np.fft.rfft(x))) * f.sample_rate_hz / len(x))

    native_fmt = PcmFormat(Encoding.PCM_S16LE, 16000)
    whole = b"".join(f.audio for f in frames)
    assert abs(peak_hz(whole, fmt) - peak_hz(b"".join(f.audio for f in want), native_fmt)) < 5


@pytest.mark.asyncio(loop_scope="session")
async def test_a_twilio_call_runs_on_a_server_that_takes_16_khz_pcm16_only(toy: Edge):
    # A phone call is 8 kHz mu-law both ways (voxwire.client.twilio asks STT and TTS in the
    # call's format): on a server that does not resample, the STT session was refused
    # UNSUPPORTED_ENCODING and no call could run. Twilio's side is FakeTwilio (it cannot run
    # here); the application is examples/twilio_agent.py on the SDK, as a user runs it.
    from examples.twilio_agent import make_app
    from tests.helpers.fake_twilio import MULAW_SILENCE, FakeTwilio, serve
    from voxwire.audio.codecs import Encoding, encode
    from voxwire.client.twilio import CallEnded, ReplyPlayed
    from voxwire.v1 import transcription_pb2

    audio, own = soundfile.read(SPEECH, dtype="float32")
    caller = encode(soxr.resample(audio, own, 8000), Encoding.MULAW) + MULAW_SILENCE * 4000
    events: list = []
    app = make_app(
        [toy.ws], toy.key, stt_model="toy_beep", tts_model="toy_tone", on_event=events.append
    )
    runner, base = await serve(app)
    twilio = FakeTwilio(f"{base}/media", caller, tail_s=1.5)
    try:
        await twilio.run(timeout_s=30)
    finally:
        await runner.cleanup()
    finals = [e for e in events if isinstance(e, transcription_pb2.TranscriptResult) and e.is_final]
    assert [f.transcript for f in finals] == ["beep"], events
    played = [e for e in events if isinstance(e, ReplyPlayed)]
    assert len(played) == 1 and played[0].played_ms > 500, events
    # What Twilio played is the reply, whole: 8 kHz mu-law, a byte a sample.
    assert abs(len(twilio.played) / 8 - played[0].played_ms) <= 5
    assert isinstance(events[-1], CallEnded) and events[-1].reason == "stop"
