"""The gateway hides an adapter's death (issue 7; docs/design/edge.md, "Upstream failover
inside the gateway"): two adapter processes on the session's Triton, a gateway in front of
both, a real WebSocket client; the adapter that serves the session is SIGKILLed by PID
mid-utterance (STT) or mid-context (TTS).

The client must see a StreamNotice FAILOVER and no error, and get what a run without the fault
gets: the same words (pocketsphinx may change one, never drop or repeat one: see
tests/client/test_stt_resume.py, assert_same_words), final results continuous with ids
continuing; TTS audio with sequence numbers and timeline continuing and every word once. With
no adapter left: an error event BACKEND_UNAVAILABLE, retryable, with a retry delay, close 1013.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio

from gateway.auth.keys import create_key
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.upstream.pool import AdapterPool
from gateway.wire.frames import unpack
from localstack.triton import TritonServer
from tests.client.test_stt_resume import edit_ops
from tests.helpers.adapter_process import AdapterProcess, start_adapter
from tests.helpers.edge import auth_config
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.status import from_trailers
from tests.helpers.wavio import read_wav
from voxwire.stream_write import write_unless_ended
from voxwire.v1 import (
    audio_pb2,
    stream_pb2,
    synthesis_pb2,
    synthesis_pb2_grpc,
    timings_pb2,
    transcription_pb2,
    transcription_pb2_grpc,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIXTURE = "two_sentences_gap.wav"  # the second sentence runs from 4.3 to 5.9 s
FAULT_AT_MS = 5000
STT_QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000&word_timestamps=true"
TTS_TEXT = (
    "Hello from the voxwire gateway. This is a second sentence to speak. "
    "And here is a third one, somewhat longer than the others."
)


@dataclass
class Fleet:
    gateway: GatewayServer
    key: str
    adapters: list[AdapterProcess]

    @property
    def ws(self) -> str:
        return self.gateway.url.replace("http", "ws", 1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def serving(self) -> AdapterProcess:
        """The adapter process that holds the gateway's one open upstream stream."""
        (busy,) = [a for a in self.gateway.pool.adapters if a.active]
        return next(p for p in self.adapters if p.address == busy.address)

    async def all_serving(self) -> None:
        for _ in range(100):
            if all(a.serving for a in self.gateway.pool.adapters):
                return
            await asyncio.sleep(0.05)  # the gateway's health watch follows each adapter
        raise AssertionError("the gateway does not see both adapters serving")


@pytest_asyncio.fixture(loop_scope="session")
async def fleet(triton: TritonServer, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Adapters A and B (processes, killed by the tests) and a gateway in front of both."""
    started = await asyncio.gather(
        *(start_adapter([triton.grpc_url], tmp_path / f"adapter-{n}.log") for n in "ab"),
        return_exceptions=True,
    )
    adapters = [a for a in started if isinstance(a, AdapterProcess)]
    gateway: GatewayServer | None = None
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        key, _ = create_key(
            tmp_path / "keys.toml", name="failover", now=datetime.datetime.now(datetime.UTC)
        )
        gateway = GatewayServer(
            GatewayConfig(
                listen="127.0.0.1:0",
                grpc_listen="127.0.0.1:0",  # the gRPC front: the caller resumes itself
                adapters=tuple(a.address for a in adapters),
                auth=auth_config(tmp_path / "keys.toml"),
            )
        )
        await gateway.start()
        fleet = Fleet(gateway, key, adapters)
        await fleet.all_serving()
        yield fleet
    finally:
        if gateway is not None:
            await gateway.stop(grace=0.5)
        await asyncio.gather(*(a.stop() for a in adapters))


# -- STT -----------------------------------------------------------------------------------------


@dataclass
class SttRun:
    messages: list[tuple[float, dict]] = field(default_factory=list)
    close_code: int = 0
    killed_at: float = 0.0

    def of(self, kind: str) -> list[dict]:
        return [m[kind] for _, m in self.messages if kind in m]

    @property
    def finals(self) -> list[dict]:
        return [r for r in self.of("result") if r.get("isFinal")]

    @property
    def words(self) -> list[str]:
        return " ".join(f.get("transcript", "") for f in self.finals).split()


async def stt_session(fleet: Fleet, *, fault: bool = False, kill_all: bool = False) -> SttRun:
    """Stream the fixture in 100 ms frames (as fast as the socket takes them), close, and read
    every message. With ``fault``: at 5.0 s of audio (mid second sentence), once the first
    utterance's final has come (its ack is where a failover replays from), SIGKILL the adapter
    serving the session (``kill_all``: every adapter)."""
    pcm, rate = read_wav(SPEECH_DIR / FIXTURE)
    audio = pcm.tobytes()
    step = rate // 10 * 2
    run = SttRun()
    first_final = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        url = f"{fleet.ws}/v1/stt/stream?{STT_QUERY}"
        async with http.ws_connect(url, headers=fleet.headers) as ws:

            async def read() -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        message = json.loads(msg.data)
                        run.messages.append((time.monotonic(), message))
                        if message.get("result", {}).get("isFinal"):
                            first_final.set()

            reader = asyncio.create_task(read())
            for pos in range(0, len(audio), step):
                if fault and pos == FAULT_AT_MS * rate * 2 // 1000:
                    async with asyncio.timeout(20):
                        await first_final.wait()
                    for victim in fleet.adapters if kill_all else [fleet.serving()]:
                        victim.kill()
                    run.killed_at = time.monotonic()
                if ws.closed:
                    break
                await ws.send_bytes(audio[pos : pos + step])
            if not ws.closed:
                await ws.send_str(json.dumps({"close": {}}))
            async with asyncio.timeout(30):
                await reader
            run.close_code = ws.close_code or 0
    return run


def assert_continuous(run: SttRun) -> None:
    ids = [f["utteranceId"] for f in run.finals]
    assert ids == [f"u{i}" for i in range(len(ids))], ids
    end = 0
    for final in run.finals:
        start, stop = final.get("startMs", 0), final.get("endMs", 0)
        assert end <= start <= stop, (end, start, stop)
        end = stop
    acks = [m["ack"].get("finalizedThroughMs", 0) for _, m in run.messages if "ack" in m]
    assert acks == sorted(acks)


async def test_stt_session_survives_the_sigkill_of_its_adapter(fleet: Fleet):
    reference = await stt_session(fleet)
    assert reference.close_code == 1000 and len(reference.finals) >= 2
    await fleet.all_serving()
    run = await stt_session(fleet, fault=True)
    assert run.close_code == 1000, run.of("error")
    assert not run.of("error")
    (notice,) = run.of("notice")
    assert notice["kind"] == "KIND_FAILOVER"
    # No word lost, none repeated (pocketsphinx may decode one differently: see module doc).
    ops = edit_ops(reference.words, run.words)
    assert ops["insert"] == ops["delete"] == 0 and ops["substitute"] <= 1, (
        reference.words,
        run.words,
    )
    assert_continuous(run)
    (summary,) = run.of("summary")
    assert summary["resumes"] == 1
    notice_at = next(t for t, m in run.messages if "notice" in m)
    print(f"gateway STT failover: SIGKILL -> FAILOVER notice {notice_at - run.killed_at:.3f} s")
    assert notice_at - run.killed_at < 3.0


# -- the gRPC front: the same failover, on the contract's messages ---------------------------


@dataclass
class FrontRun:
    responses: list[transcription_pb2.StreamingTranscribeResponse]
    code: grpc.StatusCode
    trailers: dict
    killed_at: float = 0.0
    notice_at: float = 0.0

    def of(self, kind: str) -> list:
        return [getattr(r, kind) for r in self.responses if r.WhichOneof("response") == kind]

    @property
    def finals(self) -> list[transcription_pb2.TranscriptResult]:
        return [r for r in self.of("result") if r.is_final]


async def front_call(
    fleet: Fleet, config: transcription_pb2.TranscriptionConfig, audio: bytes, *, fault: bool
) -> FrontRun:
    """One StreamingTranscribe through the gateway's gRPC front: ``audio`` in 100 ms messages
    (as fast as the call takes them), then the half-close. With ``fault``, as ``stt_session``:
    at 5.0 s, once a final has come, SIGKILL the adapter serving the call."""
    step = 16000 // 10 * 2
    first_final = asyncio.Event()
    responses: list[transcription_pb2.StreamingTranscribeResponse] = []
    metadata = (("authorization", f"Bearer {fleet.key}"),)
    killed_at = notice_at = 0.0
    async with grpc.aio.insecure_channel(fleet.gateway.grpc_address) as channel:
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(
            metadata=metadata, timeout=60
        )

        async def write() -> None:
            nonlocal killed_at
            await call.write(transcription_pb2.StreamingTranscribeRequest(config=config))
            for pos in range(0, len(audio), step):
                if fault and pos == FAULT_AT_MS * 16000 * 2 // 1000:
                    async with asyncio.timeout(20):
                        await first_final.wait()
                    fleet.serving().kill()
                    killed_at = time.monotonic()
                # A plain write racing the status would turn it into INTERNAL (grpc#36066).
                chunk = transcription_pb2.StreamingTranscribeRequest(audio=audio[pos : pos + step])
                if not await write_unless_ended(call, chunk):
                    return  # the call ended: its status says how
            if not call.done():
                await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            async with asyncio.timeout(60):
                async for response in call:
                    responses.append(response)
                    if response.HasField("result") and response.result.is_final:
                        first_final.set()
                    if response.HasField("notice") and not notice_at:
                        notice_at = time.monotonic()
        except grpc.aio.AioRpcError:
            pass
        code = await call.code()
        trailers = dict(await call.trailing_metadata() or ())
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    return FrontRun(responses, code, trailers, killed_at, notice_at)


async def test_a_grpc_call_through_the_front_survives_the_sigkill_of_its_adapter(fleet: Fleet):
    """docs/design/edge.md, "Upstream failover inside the gateway": the front runs
    StreamingTranscribe on the WebSocket session's core, so the caller sees a FAILOVER notice
    and no error: no word lost or repeated, ids and offsets continuing, one summary for the
    whole call and the timing trailers of both upstream streams."""
    pcm, rate = read_wav(SPEECH_DIR / FIXTURE)
    assert rate == 16000
    audio = pcm.tobytes()
    config = transcription_pb2.TranscriptionConfig(
        model="stt_pocketsphinx",
        word_timestamps=True,
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
    )
    reference = await front_call(fleet, config, audio, fault=False)
    assert reference.code == grpc.StatusCode.OK and len(reference.finals) >= 2
    await fleet.all_serving()

    run = await front_call(fleet, config, audio, fault=True)
    assert run.code == grpc.StatusCode.OK, from_trailers(run.trailers)
    (notice,) = run.of("notice")
    assert notice.kind == stream_pb2.StreamNotice.KIND_FAILOVER
    assert len(run.of("started")) == 1  # the second upstream's is the notice
    finals = run.finals
    assert [f.utterance_id for f in finals] == [f"u{i}" for i in range(len(finals))]
    end = 0
    for final in finals:
        assert end <= final.start_ms <= final.end_ms, (end, final.start_ms, final.end_ms)
        end = final.end_ms
    words = " ".join(f.transcript for f in finals).split()
    want = " ".join(f.transcript for f in reference.finals).split()
    ops = edit_ops(want, words)
    assert ops["insert"] == ops["delete"] == 0 and ops["substitute"] <= 1, (want, words)
    (summary,) = run.of("summary")
    (expected,) = reference.of("summary")
    assert (summary.audio_ms, summary.utterances) == (expected.audio_ms, len(finals))
    assert summary.session_id == run.of("started")[0].session_id  # not the second upstream's
    timings = timings_pb2.StageTimings.FromString(run.trailers["voxwire-timings-bin"])
    assert timings.edge_connect_us > 0 and timings.total_us > 0
    print(f"gRPC front failover: SIGKILL -> FAILOVER notice {run.notice_at - run.killed_at:.3f} s")
    assert run.notice_at - run.killed_at < 3.0


async def test_a_grpc_caller_continuing_with_the_contracts_offsets_gets_them_through_the_front(
    fleet: Fleet,
):
    """A caller that continues an earlier call itself (``stream_offset_ms`` and
    ``first_utterance_index`` from its last final): the front's session starts at that
    position, so offsets and ids continue, and the summary counts this call's utterances."""
    pcm, rate = read_wav(SPEECH_DIR / FIXTURE)
    audio = pcm.tobytes()
    config = transcription_pb2.TranscriptionConfig(
        model="stt_pocketsphinx",
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
    )
    whole = await front_call(fleet, config, audio, fault=False)
    assert whole.code == grpc.StatusCode.OK and len(whole.finals) >= 2
    first = whole.finals[0]
    resumed = transcription_pb2.TranscriptionConfig()
    resumed.CopyFrom(config)
    resumed.stream_offset_ms = first.end_ms
    resumed.first_utterance_index = 1
    rest = await front_call(fleet, resumed, audio[first.end_ms * rate * 2 // 1000 :], fault=False)
    assert rest.code == grpc.StatusCode.OK, from_trailers(rest.trailers)
    assert rest.finals and rest.finals[0].utterance_id == "u1"
    assert all(f.start_ms >= first.end_ms for f in rest.finals)
    words = " ".join(f.transcript for f in [first, *rest.finals]).split()
    want = " ".join(f.transcript for f in whole.finals).split()
    ops = edit_ops(want, words)
    assert ops["insert"] == ops["delete"] == 0 and ops["substitute"] <= 1, (want, words)
    (summary,) = rest.of("summary")
    (expected,) = whole.of("summary")
    assert (summary.audio_ms, summary.utterances) == (expected.audio_ms, len(rest.finals))


async def test_with_no_adapter_left_the_session_ends_with_a_retryable_error(fleet: Fleet):
    run = await stt_session(fleet, fault=True, kill_all=True)
    (error,) = run.of("error")
    assert error["reason"] == "BACKEND_UNAVAILABLE" and error["retryable"] is True
    assert error["retryAfterMs"] > 0 and error["closeCode"] == 1013
    assert run.close_code == 1013
    assert not run.of("summary")


# -- TTS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ssml", [False, True], ids=["text", "ssml"])
async def test_tts_context_survives_the_sigkill_of_its_adapter(fleet: Fleet, ssml: bool):
    # SSML: the document is reopened whole, with what the client has as skip_audio_ms (before,
    # the text after the last word sent, no document: SSML_INVALID ended the context).
    text = f"<speak>{TTS_TEXT}</speak>" if ssml else TTS_TEXT
    text_format = "TEXT_FORMAT_SSML" if ssml else "TEXT_FORMAT_PLAIN"
    frames, messages = [], []
    notice_at = killed_at = 0.0
    async with aiohttp.ClientSession() as http:
        url = f"{fleet.ws}/v1/tts/stream?lead_ms=300"
        async with http.ws_connect(url, headers=fleet.headers) as ws:
            await ws.send_str(
                json.dumps(
                    {
                        "contextId": "c1",
                        "open": {
                            "model": "tts_espeak",
                            "outputFormat": {
                                "encoding": "AUDIO_ENCODING_PCM_S16LE",
                                "sampleRateHz": 22050,
                            },
                            "wordTimestamps": True,
                            "textFormat": text_format,
                        },
                    }
                )
            )
            await ws.send_str(json.dumps({"contextId": "c1", "append": {"text": text}}))
            # An SSML document is spoken from its flush (or the close) on.
            await ws.send_str(json.dumps({"contextId": "c1", "flush": {"flushId": "f1"}}))
            # The context stays open (no close yet) so its upstream call is alive at the kill.
            async with asyncio.timeout(30):
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        frames.append(unpack(msg.data))
                        if len(frames) == 8:
                            fleet.serving().kill()
                            killed_at = time.monotonic()
                        continue
                    message = json.loads(msg.data)
                    messages.append(message)
                    if "notice" in message:
                        notice_at = time.monotonic()
                        await ws.send_str(json.dumps({"contextId": "c1", "close": {}}))
                        await ws.send_str(json.dumps({"closeSession": {}}))
            code = ws.close_code
    assert code == 1000
    assert not [m for m in messages if "error" in m or "contextError" in m], messages
    (notice,) = [m["notice"] for m in messages if "notice" in m]
    assert notice["kind"] == "KIND_FAILOVER"
    assert [f.sequence_number for f in frames] == list(range(1, len(frames) + 1))
    position = 0
    for frame in frames:  # the timeline goes on across the failover, no chunk twice
        assert abs(frame.start_ms - position) <= 1, (frame.start_ms, position)
        position = frame.start_ms + len(frame.audio) * 1000 // (22050 * 2)
    done = next(m["done"] for m in messages if "done" in m)
    assert done["lastSequenceNumber"] == len(frames)
    assert [m["flushAck"]["flushId"] for m in messages if "flushAck" in m] == ["f1"]
    words = [w for m in messages if "words" in m for w in m["words"]["words"]]
    # Every word once, in order (SSML too: eSpeak marks "from the" once, on "from", and "the"
    # gets its share of the time, as in plain text).
    expected = TTS_TEXT.replace(",", "").replace(".", "").split()
    assert [w["word"] for w in words] == expected, words
    for word in words:
        offset = word.get("textOffset", 0)
        assert text[offset : offset + word["textLength"]] == word["word"]
    print(f"gateway TTS failover: SIGKILL -> FAILOVER notice {notice_at - killed_at:.3f} s")
    assert 0 < notice_at - killed_at < 3.0


async def test_a_grpc_tts_context_through_the_front_survives_the_sigkill_of_its_adapter(
    fleet: Fleet,
):
    """The same through the gRPC front (contract messages, audio as fast as the model goes):
    the context is reopened on the other adapter from its last word sent, the caller sees a
    FAILOVER notice and no error, sequence numbers and timeline continue, every word once."""
    Req = synthesis_pb2.StreamingSynthesizeRequest
    responses: list[synthesis_pb2.StreamingSynthesizeResponse] = []
    notice_at = killed_at = 0.0
    metadata = (("authorization", f"Bearer {fleet.key}"),)
    async with grpc.aio.insecure_channel(fleet.gateway.grpc_address) as channel:
        call = synthesis_pb2_grpc.SynthesisStub(channel).StreamingSynthesize(
            metadata=metadata, timeout=60
        )
        await call.write(
            Req(
                context_id="c1",
                open=synthesis_pb2.SynthesisContextConfig(
                    model="tts_espeak",
                    output_format=audio_pb2.AudioFormat(
                        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=22050
                    ),
                    word_timestamps=True,
                ),
            )
        )
        await call.write(Req(context_id="c1", append=synthesis_pb2.AppendText(text=TTS_TEXT)))
        chunks = 0
        async with asyncio.timeout(30):
            while (response := await call.read()) is not grpc.aio.EOF:
                responses.append(response)
                kind = response.WhichOneof("response")
                if kind == "audio":
                    chunks += 1
                    if chunks == 2:  # mid-text: the context's call is alive at the kill
                        fleet.serving().kill()
                        killed_at = time.monotonic()
                elif kind == "notice":
                    notice_at = time.monotonic()
                    await call.write(Req(context_id="c1", close=synthesis_pb2.CloseContext()))
                    await call.done_writing()
        code = await call.code()
        trailers = dict(await call.trailing_metadata() or ())
    assert code == grpc.StatusCode.OK, from_trailers(trailers)
    of = collections.defaultdict(list)
    for response in responses:
        of[response.WhichOneof("response")].append(response)
    assert not of["error"], of["error"]
    (notice,) = of["notice"]
    assert notice.notice.kind == stream_pb2.StreamNotice.KIND_FAILOVER
    assert len(of["opened"]) == 1  # the reopened context's is the notice
    audio = [r.audio for r in of["audio"]]
    assert [a.sequence_number for a in audio] == list(range(1, len(audio) + 1))
    position = 0
    for chunk in audio:  # the timeline goes on across the failover, no chunk twice
        assert abs(chunk.start_ms - position) <= 1, (chunk.start_ms, position)
        position = chunk.start_ms + len(chunk.audio) * 1000 // (22050 * 2)
    (done,) = of["done"]
    assert done.done.last_sequence_number == len(audio)
    words = [w for r in of["words"] for w in r.words.words]
    assert [w.word for w in words] == TTS_TEXT.replace(",", "").replace(".", "").split(), words
    for word in words:
        assert TTS_TEXT[word.text_offset : word.text_offset + word.text_length] == word.word
    (summary,) = of["summary"]
    assert summary.summary.contexts == 1 and summary.summary.audio_ms >= position - 1
    print(f"gRPC front TTS failover: SIGKILL -> FAILOVER notice {notice_at - killed_at:.3f} s")
    assert 0 < notice_at - killed_at < 3.0


# -- the log -------------------------------------------------------------------------------------


async def test_an_adapter_that_stops_or_starts_serving_is_logged(fleet: Fleet, caplog):
    # An operator saw /readyz answer 503 "no adapter serving" when the adapter's Triton went
    # away (its health NOT_SERVING) or the adapter died with no stream open, and the gateway's
    # log said nothing: only a stream that broke logged its adapter's failure.
    caplog.set_level(logging.INFO, logger="gateway.upstream.pool")
    victim = fleet.adapters[0]
    pool = AdapterPool([victim.address])
    await pool.start()
    try:
        assert await pool.wait_ready(10)
        victim.kill()
        fleets = [a for a in fleet.gateway.pool.adapters if a.address == victim.address]
        for _ in range(100):
            if not pool.ready and not any(a.serving for a in fleets):
                break
            await asyncio.sleep(0.05)
        assert not pool.ready
        await asyncio.sleep(0.5)  # a watch retried meanwhile logs nothing more
    finally:
        await pool.close()
    lines = [r.getMessage() for r in caplog.records if victim.address in r.getMessage()]
    served = [i for i, line in enumerate(lines) if line.endswith(" is serving")]
    lost = [i for i, line in enumerate(lines) if " is not serving: " in line]
    assert served and lost and served[0] < lost[0], lines
    # Once per pool (this one and the fleet gateway's), not once per retry of a watch.
    assert len(lost) == 2, lines
