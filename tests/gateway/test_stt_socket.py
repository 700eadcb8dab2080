"""WS /v1/stt/stream end to end: a real WebSocket into the gateway, the adapter and Triton."""

from __future__ import annotations

import json

import aiohttp
import pytest

from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav
from tests.helpers.wer import word_error_rate

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000&word_timestamps=true"


async def transcribe(
    edge: Edge, name: str, *, query: str = QUERY, after_close: tuple[str | bytes, ...] = ()
) -> tuple[list[dict], int]:
    """Stream a fixture in 100 ms frames (as fast as the socket takes them), close (then send
    ``after_close``), and return every JSON message and the close code."""
    pcm, rate = read_wav(SPEECH_DIR / name)
    audio = pcm.tobytes()
    step = rate // 10 * 2
    messages: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream?{query}", headers=edge.headers) as ws:
            for pos in range(0, len(audio), step):
                await ws.send_bytes(audio[pos : pos + step])
            await ws.send_str(json.dumps({"close": {}}))
            for late in after_close:
                await (ws.send_bytes(late) if isinstance(late, bytes) else ws.send_str(late))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    messages.append(json.loads(msg.data))
            return messages, ws.close_code or 0


async def test_a_file_is_transcribed_through_the_gateway(edge: Edge):
    messages, code = await transcribe(edge, "call_me_back.wav")
    assert code == 1000
    kinds = [next(k for k in m if k != "ack") if set(m) - {"ack"} else "ack" for m in messages]
    assert kinds[0] == "session" and kinds[1] == "started" and kinds[-1] == "summary"
    finals = [m for m in messages if m.get("result", {}).get("isFinal")]
    words = " ".join(f["result"]["transcript"] for f in finals).split()
    # One word of slack: this checks the transport, the model's accuracy has its own test
    # (tests/inference_adapter/test_transcription.py); a lost chunk costs more than a word.
    assert word_error_rate(TRANSCRIPTS["call_me_back.wav"], " ".join(words)) <= 0.125, words
    acks = [m["ack"]["finalizedThroughMs"] for m in messages if "ack" in m]
    assert acks and acks == sorted(acks)
    assert all("ack" in f for f in finals)
    session = messages[0]["session"]
    assert session["resumeToken"] and session["sessionId"]
    # One id for the client: started and the summary name the session, not the upstream.
    assert messages[1]["started"]["sessionId"] == session["sessionId"]
    assert messages[-1]["summary"]["sessionId"] == session["sessionId"]
    # The keepalive docs/edge.md gives (15 s ping, 7.5 s pong): EdgeLimits had room for it,
    # never filled.
    assert (session["limits"]["pingInterval"], session["limits"]["pongTimeout"]) == (
        "15s",
        "7.500s",
    )
    timings = messages[-1]["summary"]["timings"]
    assert int(timings["computeUs"]) > 0 and int(timings["edgeConnectUs"]) > 0


async def test_messages_after_close_are_discarded_and_the_results_still_come(edge: Edge):
    # A stray message after close used to fail the session (1008, INVALID_MESSAGE) and lose
    # the final result and the summary; like the contract's, the edge discards it unread.
    late = (b"\x00" * 3200, b"\x01", '{"finalize": {}}', '{"close": {}}', "not json", '{"x": 1}')
    messages, code = await transcribe(edge, "pay_bill.wav", after_close=late)
    assert code == 1000, messages
    assert not [m for m in messages if "error" in m], messages
    finals = [m["result"]["transcript"] for m in messages if m.get("result", {}).get("isFinal")]
    assert word_error_rate(TRANSCRIPTS["pay_bill.wav"], " ".join(finals)) <= 0.2, finals
    assert "summary" in messages[-1]


async def test_a_missing_key_is_refused_after_the_upgrade_with_an_event(edge: Edge):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream?{QUERY}") as ws:
            msg = await ws.receive()
            event = json.loads(msg.data)["error"]
            assert event["reason"] == "UNAUTHENTICATED" and event["closeCode"] == 4001
            await ws.receive()
            assert ws.close_code == 4001


async def test_audio_before_the_config_is_config_required(edge: Edge):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream", headers=edge.headers) as ws:
            await ws.send_bytes(bytes(3200))
            msg = await ws.receive()
            assert json.loads(msg.data)["error"]["reason"] == "CONFIG_REQUIRED"
            await ws.receive()
            assert ws.close_code == 1008


async def test_a_resume_on_a_url_with_the_config_says_to_drop_the_query(edge: Edge):
    # Reconnecting to the same URL (config in the query string) to resume started a new
    # session at the upgrade, so the start{resume} sent first was refused with "start may only
    # be the first message of a session": true of neither what the client sent nor the fix.
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/stt/stream?{QUERY}"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            await ws.send_str(json.dumps({"start": {"resume": {"resumeToken": "t"}}}))
            errors = [
                json.loads(msg.data)["error"] async for msg in ws if "error" in json.loads(msg.data)
            ]
    assert ws.close_code == 1008 and [e["reason"] for e in errors] == ["CONFIG_ALREADY_SET"]
    assert "query string" in errors[0]["message"], errors[0]["message"]


async def test_an_unknown_query_parameter_is_invalid_config(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/stt/stream?{QUERY}&encodng=mulaw"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            msg = await ws.receive()
            error = json.loads(msg.data)["error"]
            assert error["reason"] == "INVALID_CONFIG"
            assert error["fieldViolations"][0]["field"] == "encodng"


async def test_a_query_encoding_the_contract_does_not_carry_is_unsupported_encoding(edge: Edge):
    # As a start message's unknown encoding is, and POST /v1/stt's and /v1/tts's query's:
    # the reason no longer depends on where the encoding was named.
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/stt/stream?sample_rate=16000&encoding=opus"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            msg = await ws.receive()
            error = json.loads(msg.data)["error"]
            await ws.receive()
    assert error["reason"] == "UNSUPPORTED_ENCODING", error
    assert [v["field"] for v in error["fieldViolations"]] == ["encoding"], error
    assert "'opus' is not one of" in error["fieldViolations"][0]["description"], error
    assert ws.close_code == 1003, ws.close_code  # the error table's code for it


@pytest.mark.parametrize(
    ("query", "reason", "field"),
    [
        ("?encoding=pcm_s16le&sample_rate=7000", "UNSUPPORTED_SAMPLE_RATE", "sample_rate"),
        ("?encoding=pcm_s16le&sample_rate=16000&vad=9", "INVALID_CONFIG", "vad"),
    ],
)
async def test_errors_name_a_query_configs_fields_by_their_parameters(
    edge: Edge, query: str, reason: str, field: str
):
    # docs/edge.md: a violation's field is named as the client set it. A config in the query
    # string was told of "config.audio_format.sample_rate_hz", which it never set.
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream{query}", headers=edge.headers) as ws:
            while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
                if "error" in (event := json.loads(msg.data)):
                    break
    error = event["error"]
    assert error["reason"] == reason, error
    assert [v["field"] for v in error["fieldViolations"]] == [field], error
    assert "config." not in error["message"], error


async def test_a_query_config_without_its_audio_format_names_both_parameters(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/stt/stream?model=stt_pocketsphinx"
        async with http.ws_connect(url, headers=edge.headers) as ws:
            error = json.loads((await ws.receive(timeout=10)).data)["error"]
    assert error["reason"] == "INVALID_CONFIG", error
    assert [v["field"] for v in error["fieldViolations"]] == ["encoding", "sample_rate"], error


async def test_permessage_deflate_is_declined_unless_configured(
    edge: Edge, edge_adapter: AdapterServer
):
    """The client offers deflate (aiohttp does by default): the gateway declines it, since
    speech PCM barely compresses; with ``websocket_compression`` on, it is negotiated and a
    compressed session still transcribes."""
    async with aiohttp.ClientSession() as http:
        url = f"{edge.ws}/v1/stt/stream?{QUERY}"
        async with http.ws_connect(url, headers=edge.headers, compress=15) as ws:
            assert ws.compress == 0
    server = GatewayServer(
        GatewayConfig(
            listen="127.0.0.1:0",
            grpc_listen="",
            adapters=(edge_adapter.address,),
            auth=edge.auth,
            websocket_compression=True,
        )
    )
    await server.start()
    try:
        deflating = Edge(server, edge.key, edge.keys_file, edge.auth)
        async with aiohttp.ClientSession() as http:
            url = f"{deflating.ws}/v1/stt/stream?{QUERY}"
            async with http.ws_connect(url, headers=edge.headers, compress=15) as ws:
                assert ws.compress == 15
        deflated, code = await transcribe(deflating, "call_me_back.wav")
    finally:
        await server.stop(grace=1.0)
    plain, plain_code = await transcribe(edge, "call_me_back.wav")
    assert code == plain_code == 1000
    # Streams are isolated in the model, so the same audio gives the same words either way.
    assert _final_words(deflated) == _final_words(plain) != []


def _final_words(messages: list[dict]) -> list[str]:
    finals = [m["result"] for m in messages if m.get("result", {}).get("isFinal")]
    return " ".join(f["transcript"] for f in finals).split()


async def test_a_defect_reading_a_client_message_is_internal_and_logged(
    edge: Edge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # Fault injection (the one way to reach this path on purpose): the message decoder raises
    # what no client input should make it raise. Before, the reader task died silently (its
    # exception swallowed when the run gathered its tasks) and the client got close 1000
    # with no event and no summary: the edge fuzzer's "close 1000 without a summary".
    import gateway.stt.runner

    def broken_decode(*_args: object, **_kwargs: object) -> None:
        raise SystemError("injected: a defect in the decoder")

    monkeypatch.setattr(gateway.stt.runner, "decode", broken_decode)
    query = "model=bench_stt&encoding=pcm_s16le&sample_rate=16000"
    messages = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream?{query}", headers=edge.headers) as ws:
            await ws.send_bytes(bytes(3200))
            await ws.send_str('{"keepAlive": {}}')
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    messages.append(json.loads(msg.data))
            code = ws.close_code
    assert "error" in messages[-1], messages
    assert (messages[-1]["error"]["reason"], code) == ("INTERNAL", 1011)
    failures = [r for r in caplog.records if "reading the client failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None


@pytest.mark.parametrize("path", ["/v1/stt/stream", "/v1/tts/stream"])
async def test_a_text_frame_that_is_not_utf8_is_an_event_and_close_1007(edge: Edge, path: str):
    # aiohttp's own check closed with a bare 1007 and dropped the socket at once: a client
    # still writing could lose the close to a reset (the edge fuzzer's reset_after_1007).
    messages = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}{path}", headers=edge.headers) as ws:
            await ws.send_frame(b'{"keepAlive": {"\xff": 1}}', aiohttp.WSMsgType.TEXT)
            for _ in range(20):  # still writing after the bad frame
                await ws.send_bytes(bytes(3200))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    messages.append(json.loads(msg.data))
            code = ws.close_code
    error = messages[-1]["error"]
    assert (error["reason"], error["closeCode"], code) == ("INVALID_MESSAGE", 1007, 1007)
    assert "UTF-8" in error["message"]


async def test_pcm_declared_as_mulaw_gets_a_notice_event(edge: Edge):
    # docs/contract.md, "Input that does not match its declared format": the vendors' "PCM
    # sent as mu-law" static, named in a notice; the session goes on to its summary.
    query = "model=stt_pocketsphinx&encoding=mulaw&sample_rate=8000"
    messages, code = await transcribe(edge, "pay_bill.wav", query=query)
    assert code == 1000 and "summary" in messages[-1]
    notices = [m["notice"] for m in messages if "notice" in m]
    assert len(notices) == 1 and notices[0]["kind"] == "KIND_FORMAT_SUSPECT", notices
    assert "MULAW as declared" in notices[0]["message"]


async def test_a_browsers_media_recorder_stream_is_named_not_heard_as_samples(edge: Edge):
    # Chrome's and Firefox's MediaRecorder make WebM (Opus): streamed as it records, it was
    # heard as 16-bit samples (speech_started, a summary, no word of why).
    webm = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream?{QUERY}", headers=edge.headers) as ws:
            await ws.send_bytes(webm + bytes(range(256)) * 12)
            await ws.send_str(json.dumps({"close": {}}))
            messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
    error = messages[-1]["error"]
    assert error["reason"] == "INVALID_AUDIO", messages
    assert "WebM" in error["message"] and "AudioWorklet" in error["message"], error
    assert not [m for m in messages if "result" in m], messages


@pytest.mark.parametrize(
    ("ack", "field"),
    [
        ({"finalizedThroughMs": 4_294_967_000}, "start.resume.ack.finalizedThroughMs"),
        ({"nextUtteranceIndex": 4_294_967_000}, "start.resume.ack.nextUtteranceIndex"),
    ],
)
async def test_a_resume_ack_past_any_session_is_rejected_naming_the_ack(
    edge: Edge, ack: dict, field: str
):
    # It went to the adapter, which refused it INVALID_CONFIG naming config.stream_offset_ms,
    # a field the client never set.
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream?{QUERY}", headers=edge.headers) as ws:
            token = json.loads((await ws.receive(timeout=10)).data)["session"]["resumeToken"]
            await ws.send_str(json.dumps({"close": {}}))
        async with http.ws_connect(f"{edge.ws}/v1/stt/stream", headers=edge.headers) as ws:
            resume = {"resume": {"resumeToken": token, "ack": ack}}
            await ws.send_str(json.dumps({"start": resume}))
            errors = [
                json.loads(msg.data)["error"] async for msg in ws if "error" in json.loads(msg.data)
            ]
    assert ws.close_code == 4011, errors
    assert [e["reason"] for e in errors] == ["RESUME_REJECTED"], errors
    assert [v["field"] for v in errors[0]["fieldViolations"]] == [field], errors


@pytest.mark.parametrize(
    ("query", "field"), [("silence_ms=300", "endpointing"), ("vad=2", "endpointing")]
)
async def test_endpointing_a_model_lacks_is_named_by_the_query(edge: Edge, query: str, field: str):
    # bench_stt has no endpointing: the refusal named config.endpointing, the contract's
    # field, to a client that wrote a query string.
    url = f"{edge.ws}/v1/stt/stream?model=bench_stt&encoding=pcm_s16le&sample_rate=16000&{query}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers=edge.headers) as ws:
            errors = [
                json.loads(msg.data)["error"] async for msg in ws if "error" in json.loads(msg.data)
            ]
    assert errors, errors
    assert [v["field"] for v in errors[0].get("fieldViolations", [])] == [field], errors
    assert "config." not in errors[0]["message"], errors
