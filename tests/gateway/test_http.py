"""The HTTP endpoints through real aiohttp connections into the real adapter and Triton."""

from __future__ import annotations

import datetime
import io
import json
import logging
import wave

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from gateway.auth.keys import create_key
from gateway.http import stt as http_stt
from gateway.http import tts as http_tts
from tests.gateway.conftest import Edge
from tests.helpers.long_text import long_text, speak_events
from tests.helpers.speech_fixtures import SPEECH_DIR
from voxwire.edge.http_errors import documented

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEXT = "Hello from voxwire. This is a test of the speech endpoint."


async def test_tts_wav_streams_a_playable_file_with_server_timing(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.server.url}/v1/tts?model=tts_espeak&sample_rate=16000"
        async with http.post(url, data=TEXT, headers=edge.headers) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            assert "first;dur=" in resp.headers["Server-Timing"]
            body = await resp.read()
    # Python's wave reads the streaming header (sizes 0xFFFFFFFF) by reading to the end.
    pcm = body[44:]
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and len(pcm) > 16000 * 2
    with wave.open(io.BytesIO(body[:40] + len(pcm).to_bytes(4, "little") + pcm)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)


async def _speak_raw(edge: Edge, body: str, content_type: str) -> tuple[int, bytes]:
    headers = {**edge.headers, "Content-Type": content_type}
    url = f"{edge.server.url}/v1/tts?model=tts_espeak&sample_rate=16000&container=raw"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.read()


async def test_tts_takes_an_ssml_document_as_application_ssml_xml(edge: Edge):
    # Before, only a JSON SpeakRequest could ask for SSML: the media type of SSML documents
    # (RFC 4267) was refused 415, and as text/plain the markup was read out as words.
    ssml = '<speak>Hello <break time="1500ms"/> there.</speak>'
    status, plain = await _speak_raw(edge, "Hello there.", "text/plain")
    assert status == 200
    status, marked_up = await _speak_raw(edge, ssml, "application/ssml+xml; charset=utf-8")
    assert status == 200, marked_up
    # The break is silence of its own length; read as text, the markup would be a few words.
    pause_s = (len(marked_up) - len(plain)) / (2 * 16000)
    assert 1.3 < pause_s < 2.0, pause_s
    status, body = await _speak_raw(edge, "<speak>Hello", "application/ssml+xml")
    assert status == 400 and json.loads(body)["error"]["reason"] == "SSML_INVALID", body
    # The same markup as text/plain stays text: spoken, tags and all.
    status, literal = await _speak_raw(edge, "<speak>Hello", "text/plain")
    assert status == 200 and len(literal) > 8000


async def test_audio_that_fails_after_its_first_byte_is_cut_with_one_warning_line(
    edge: Edge, caplog: pytest.LogCaptureFixture
):
    # 35 ten-second breaks run past tts_espeak's max_unit_audio_ms (300 s): TEXT_TOO_LARGE
    # after minutes of audio. The client gets that audio, then the end of the connection without
    # the final chunk; the gateway logs one line, not aiohttp's ERROR and traceback for an
    # exception out of the handler (before).
    ssml = "<speak>" + 'a<break time="10s"/>' * 35 + "end</speak>"
    headers = {**edge.headers, "Content-Type": "application/ssml+xml"}
    url = f"{edge.server.url}/v1/tts?model=tts_espeak&sample_rate=8000&container=raw"
    received = 0
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=ssml.encode(), headers=headers) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content.iter_any():
                    received += len(chunk)
    assert 285 <= received / (2 * 8000) <= 300, received  # the audio up to the limit
    cuts = [r for r in caplog.records if "cut after" in r.getMessage()]
    assert len(cuts) == 1 and cuts[0].levelno == logging.WARNING, caplog.text
    assert "TEXT_TOO_LARGE" in cuts[0].getMessage() and f"{received} bytes" in cuts[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_an_ssml_document_posted_as_text_plain_says_its_markup_is_spoken(edge: Edge):
    # docs/contract.md, "Input that does not match its declared format": the document is
    # still spoken as declared (plain), and the response says why it sounds as it does.
    doc = '<speak>Hello <break time="1s"/> there.</speak>'
    url = f"{edge.server.url}/v1/tts?model=tts_espeak&sample_rate=16000&word_timestamps=true"
    async with aiohttp.ClientSession() as http:
        headers = {**edge.headers, "Content-Type": "text/plain"}
        async with http.post(url, data=doc, headers=headers) as resp:
            assert resp.status == 200 and "text_format SSML" in resp.headers["Voxwire-Notice"]
            assert len(await resp.read()) > 16000
        async with http.post(url, data="Hello there.", headers=headers) as resp:
            assert resp.status == 200 and "Voxwire-Notice" not in resp.headers
        sse = {**headers, "Accept": "text/event-stream"}
        async with http.post(url, data=doc, headers=sse) as resp:
            text = await resp.text()
            assert "Voxwire-Notice" not in resp.headers
    names = [block.split("\n")[0].removeprefix("event: ") for block in text.strip().split("\n\n")]
    assert names.count("notice") == 1 and names.index("notice") < names.index("audio")
    notice = json.loads(text.split("event: notice\ndata: ")[1].split("\n")[0])
    assert notice["kind"] == "KIND_FORMAT_SUSPECT"


async def test_tts_raw_mulaw_is_audio_basic(edge: Edge):
    async with aiohttp.ClientSession() as http:
        url = f"{edge.server.url}/v1/tts?encoding=mulaw&container=raw"
        async with http.post(url, data="Call me back.", headers=edge.headers) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "audio/basic"
            body = await resp.read()
    assert len(body) > 4000  # 8000 one-byte samples per second


@pytest.mark.parametrize(
    ("query", "accept", "status", "content_type"),
    [
        # Compressed audio asked for was answered WAV: saved as .mp3, a file of the wrong kind.
        ("", "audio/mpeg", 406, "application/json"),
        ("", "audio/ogg, audio/webm;q=0.5", 406, "application/json"),
        ("?encoding=mulaw&container=raw", "audio/wav", 406, "application/json"),
        ("?encoding=mulaw&container=raw", "audio/basic", 200, "audio/basic"),
        ("", "audio/*", 200, "audio/wav"),
        ("", "text/event-stream;q=0.5, audio/wav", 200, "audio/wav"),  # was events
        ("", "audio/wav;q=0.5, text/event-stream", 200, "text/event-stream"),
    ],
)
async def test_tts_answers_the_form_its_accept_prefers_or_406(
    edge: Edge, query: str, accept: str, status: int, content_type: str
):
    headers = {**edge.headers, "Content-Type": "text/plain", "Accept": accept}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{edge.server.url}/v1/tts{query}", data="Call me back.", headers=headers
        ) as resp:
            assert resp.status == status, await resp.text()
            assert resp.headers["Content-Type"].split(";")[0] == content_type
            body = await resp.read()
    if status == 406:
        error = json.loads(body)["error"]
        assert error["reason"] == "NOT_ACCEPTABLE" and "no compressed audio" in error["message"]


async def test_tts_sse_interleaves_audio_and_words_and_ends_with_done(edge: Edge):
    request = {
        "text": TEXT,
        "config": {"model": "tts_espeak", "wordTimestamps": True},
    }
    headers = {**edge.headers, "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{edge.server.url}/v1/tts", json=request, headers=headers) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            text = await resp.text()
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
        for block in text.strip().split("\n\n")
    ]
    names = [name for name, _ in events]
    assert names[-1] == "done" and "audio" in names and "words" in names
    done = events[-1][1]
    assert int(done["timings"]["computeUs"]) > 0 and "edgeConnectUs" in done["timings"]
    # SpeakDone names the session, as POST /v1/stt's response does (to find it in logs).
    assert done["sessionId"], done
    seqs = [body["sequenceNumber"] for name, body in events if name == "audio"]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_tts_speaks_a_body_longer_than_a_context_holds_every_word_in_order(edge: Edge):
    # A body of up to 64 KiB was taken, then failed 413 TEXT_TOO_LARGE ("context 'http' would
    # hold more than max_pending_text_bytes 16384") from 16 KiB: it now goes to the model in
    # pieces as the model speaks them (voxwire.text_pieces).
    text = long_text(24)
    assert len(text.encode()) > 16 * 1024
    request = {"text": text, "config": {"model": "bench_tts", "wordTimestamps": True}}
    events = await speak_events(edge.server.url, edge.headers, request)
    assert events[-1][0] == "done", events[-1]
    words = [w for name, e in events if name == "words" for w in e["words"]]
    # Every word once, in order, where it is in the text.
    assert [text[w.get("textOffset", 0) : w.get("textOffset", 0) + 190] for w in words] == [
        part.rstrip(".") for part in text.split()
    ]
    seqs = [e["sequenceNumber"] for name, e in events if name == "audio"]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_an_ssml_document_over_what_a_context_holds_is_413_in_the_clients_terms(
    edge: Edge,
):
    # An SSML document goes whole; one over the 16 KiB a context holds was refused with the
    # adapter's words, "context 'http' would hold more than ...": a context the client never
    # named.
    ssml = "<speak>" + "word " * 4000 + "</speak>"
    status, body = await _speak_raw(edge, ssml, "application/ssml+xml")
    error = json.loads(body)["error"]
    assert status == 413 and error["reason"] == "TEXT_TOO_LARGE", body
    assert error["message"] == (
        f"the SSML document is {len(ssml)} bytes, more than the server holds at once "
        "(max_pending_text_bytes 16384): an SSML document goes to the model whole, so split it "
        "into several requests"
    ), error


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"data": TEXT, "headers": {}}, 401, "UNAUTHENTICATED"),
        ({"data": b"\x00" * 10, "content_type": "audio/wav"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"data": "x" * 70_000}, 413, "BODY_TOO_LARGE"),
        ({"data": ""}, 400, "INVALID_CONFIG"),
        ({"data": TEXT, "query": "?voice=nobody"}, 400, "INVALID_CONFIG"),
        ({"data": TEXT, "query": "?volume=11"}, 400, "INVALID_CONFIG"),
        ({"data": TEXT, "query": "?word_timestamps=maybe"}, 400, "INVALID_CONFIG"),
        ({"json": {"text": TEXT, "bogus": 1}}, 400, "INVALID_MESSAGE"),
        # An encoding number outside the enum (open in proto3 JSON): a KeyError answered 500
        # before (the edge fuzzer's find), now the adapter's own format check, before a byte
        # of the response.
        (
            {"json": {"text": TEXT, "config": {"outputFormat": {"encoding": -1}}}},
            400,
            "UNSUPPORTED_ENCODING",
        ),
        (
            {"json": {"text": TEXT, "config": {"outputFormat": {"sampleRateHz": 7}}}},
            400,
            "UNSUPPORTED_SAMPLE_RATE",
        ),
        # A text/plain body that is not UTF-8 was spoken with U+FFFD in place of its bad
        # bytes, silently; one in another charset as whatever its bytes read as in UTF-8.
        ({"data": b"caf\xe9", "content_type": "text/plain"}, 400, "INVALID_MESSAGE"),
        (
            {"data": "café".encode("latin-1"), "content_type": "text/plain; charset=latin-1"},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            {"data": b"<speak>caf\xe9</speak>", "content_type": "application/ssml+xml"},
            400,
            "INVALID_MESSAGE",
        ),
    ],
)
async def test_tts_bad_requests_get_their_status_and_reason(edge: Edge, kwargs, status, reason):
    kwargs = dict(kwargs)
    headers = kwargs.pop("headers", edge.headers)
    query = kwargs.pop("query", "")
    content_type = kwargs.pop("content_type", None)
    if content_type:
        headers = {**headers, "Content-Type": content_type}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{edge.server.url}/v1/tts{query}", headers=headers, **kwargs) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]["reason"]) == (status, reason), body
    assert documented("POST", "/v1/tts", reason)  # as the OpenAPI document lists it


@pytest.mark.parametrize(
    ("kwargs", "reason", "field"),
    [
        ({"data": TEXT, "params": {"voice": "nobody"}}, "INVALID_CONFIG", "voice"),
        ({"data": TEXT, "params": {"sample_rate": "7"}}, "UNSUPPORTED_SAMPLE_RATE", "sample_rate"),
        (
            {"data": "<speak>hi</speak>", "params": {"model": "bench_tts"}, "ssml": True},
            "INVALID_CONFIG",
            "Content-Type",
        ),
        ({"json": {"text": TEXT, "config": {"voice": "nobody"}}}, "INVALID_CONFIG", "config.voice"),
        # A SpeakRequest carries its options: the query's were ignored (?container=raw&
        # encoding=mulaw answered 24 kHz WAV), silently.
        (
            {"json": {"text": TEXT}, "params": {"encoding": "mulaw"}},
            "INVALID_CONFIG",
            "encoding",
        ),
        # The query names no encoding the contract carries: as a JSON body's unknown one.
        ({"data": TEXT, "params": {"encoding": "opus"}}, "UNSUPPORTED_ENCODING", "encoding"),
        # A name given twice: the first won, silently; refused as on the WebSocket.
        (
            {"data": TEXT, "params": [("sample_rate", "8000"), ("sample_rate", "16000")]},
            "INVALID_CONFIG",
            "sample_rate",
        ),
        (
            {"json": {"text": TEXT, "config": {"outputFormat": {"sampleRateHz": 7}}}},
            "UNSUPPORTED_SAMPLE_RATE",
            "config.output_format.sample_rate_hz",
        ),
    ],
)
async def test_tts_config_errors_name_the_fields_as_the_request_set_them(
    edge: Edge, kwargs, reason, field
):
    # The adapter names a context's fields from its open message ("open.voice"); an HTTP
    # client set them in the query string or in its SpeakRequest's config.
    kwargs = dict(kwargs)
    headers = dict(edge.headers)
    if kwargs.pop("ssml", False):
        headers["Content-Type"] = "application/ssml+xml"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{edge.server.url}/v1/tts", headers=headers, **kwargs) as resp:
            error = (await resp.json())["error"]
    assert error["reason"] == reason, error
    assert [v["field"] for v in error["fieldViolations"]] == [field], error
    assert "open." not in error["message"], error


async def test_a_browser_token_opens_one_websocket_session_from_an_allowed_origin(edge: Edge):
    origin = "https://app.example"
    key, _ = create_key(
        edge.keys_file,
        name="browser",
        now=datetime.datetime.now(datetime.UTC),
        allowed_origins=[origin],
    )
    edge.server.auth.keys.reload_if_changed()
    bearer = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{edge.server.url}/v1/auth/token", headers=bearer) as resp:
            token = (await resp.json())["token"]
        protocols = ("voxwire.v1", f"voxwire.token.{token}")
        url = f"{edge.ws}/v1/tts/stream"
        wrong = {"Origin": "https://evil.example"}
        async with http.ws_connect(url, protocols=protocols, headers=wrong) as ws:
            assert json.loads((await ws.receive()).data)["error"]["reason"] == "PERMISSION_DENIED"
        async with http.post(f"{edge.server.url}/v1/auth/token", headers=bearer) as resp:
            token = (await resp.json())["token"]
        protocols = ("voxwire.v1", f"voxwire.token.{token}")
        async with http.ws_connect(url, protocols=protocols, headers={"Origin": origin}) as ws:
            assert ws.protocol == "voxwire.v1"  # the token is never echoed
            await ws.send_str(json.dumps({"keepAlive": {}}))
            assert "session" in json.loads((await ws.receive()).data)
        # Single use: the same token again is refused.
        async with http.ws_connect(url, protocols=protocols, headers={"Origin": origin}) as ws:
            assert json.loads((await ws.receive()).data)["error"]["reason"] == "UNAUTHENTICATED"


async def test_capabilities_openapi_and_metrics(edge: Edge):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.server.url}/v1/capabilities", headers=edge.headers) as resp:
            models = {m["name"] for m in (await resp.json())["models"]}
        assert {"stt_pocketsphinx", "tts_espeak"} <= models
        async with http.get(f"{edge.server.url}/v1/openapi.json") as resp:
            doc = await resp.json()
        assert doc["openapi"].startswith("3.")
        schema = doc["components"]["schemas"]["voxwire.edge.v1.TranscribeFileResponse"]
        assert "results" in schema["properties"]
        # Every query parameter the handlers take is in the document, and the statuses each
        # endpoint answers (404 UNKNOWN_MODEL and 500 MODEL_ERROR were missing; then every
        # status of the error table was given to every endpoint: 413 on GET /v1/capabilities,
        # 409 CONTEXT_ALREADY_OPEN on POST /v1/stt), each with its reasons.
        for path, taken in (("/v1/stt", http_stt._QUERY), ("/v1/tts", http_tts._QUERY)):
            post = doc["paths"][path]["post"]
            assert {p["name"] for p in post["parameters"]} == taken, path
            assert {"400", "404", "413", "500", "503"} <= set(post["responses"]), path
            assert "409" not in post["responses"], path
        get = doc["paths"]["/v1/capabilities"]["get"]["responses"]
        assert {"401", "429", "503"} <= set(get) and "413" not in get
        assert get["400"]["x-voxwire-reasons"] == ["INVALID_CONFIG"]  # a query string
        assert get["503"]["x-voxwire-reasons"] == ["DRAINING", "BACKEND_UNAVAILABLE"]
        async with http.get(f"{edge.server.url}/metrics") as resp:
            assert "voxwire_gateway_sessions_active" in await resp.text()
        async with http.get(f"{edge.server.url}/readyz") as resp:
            assert resp.status == 200


def _conforms(doc: dict, schema: dict, body: object) -> list[str]:
    """What in ``body`` breaks ``schema`` (a ``$ref`` into the document), as a client
    generated from the document would find it."""
    validator = OAS31Validator({**doc, **schema})
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


async def test_the_bodies_on_the_wire_are_what_the_openapi_document_says(edge: Edge):
    # Every error's body, {"error": {...}}, was documented as a bare ErrorEvent whose schema
    # allows no other property: a client generated from the document could parse no error.
    # The document is checked as OpenAPI 3.1, and each real body (successes, errors, each SSE
    # event) against the schema the document gives its path, method, status and media type.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.server.url}/v1/openapi.json") as resp:
            doc = await resp.json()
        validate_spec(doc)
        seen: list[tuple[str, str, int]] = []

        async def check(method: str, path: str, query: str = "", **kwargs: object) -> None:
            url = f"{edge.server.url}{path}{query}"
            async with http.request(method, url, **kwargs) as resp:
                body = await resp.json()
                status = resp.status
            listed = doc["paths"][path][method.lower()]["responses"][str(status)]
            schema = listed["content"]["application/json"]["schema"]
            assert not _conforms(doc, schema, body), (path, status, _conforms(doc, schema, body))
            if status >= 400:  # its reason is one the document lists for the status
                assert body["error"]["reason"] in listed["x-voxwire-reasons"], (path, body)
            seen.append((method, path, status))

        wav = (SPEECH_DIR / "call_me_back.wav").read_bytes()
        audio = {**edge.headers, "Content-Type": "audio/wav"}
        await check("POST", "/v1/stt", "?model=stt_pocketsphinx", data=wav, headers=audio)
        await check("POST", "/v1/stt", "?model=nope", data=wav, headers=audio)
        text = {**edge.headers, "Content-Type": "text/plain"}
        await check("POST", "/v1/stt", "?model=stt_pocketsphinx", data=b"x", headers=text)
        await check("GET", "/v1/capabilities", headers=edge.headers)
        await check("GET", "/v1/capabilities")
        await check("POST", "/v1/auth/token", headers=edge.headers)
        await check("POST", "/v1/auth/token", json={"ttlSeconds": 86400}, headers=edge.headers)
        await check("POST", "/v1/tts", "?encoding=opus", data="Hi.", headers=edge.headers)
        await check("GET", "/healthz")
        await check("GET", "/readyz")
        statuses = [status for *_, status in seen]
        assert statuses == [200, 404, 415, 200, 401, 200, 400, 400, 200, 200], seen

        sse = {**edge.headers, "Accept": "text/event-stream"}
        request = {"text": TEXT, "config": {"model": "tts_espeak", "wordTimestamps": True}}
        async with http.post(f"{edge.server.url}/v1/tts", json=request, headers=sse) as resp:
            text = await resp.text()
    events = doc["paths"]["/v1/tts"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    names = []
    for block in text.strip().split("\n\n"):
        name, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        names.append(name)
        schema = events["x-voxwire-events"][name]
        assert not _conforms(doc, schema, json.loads(data)), (name, data[:200])
    assert {"audio", "words", "done"} <= set(names), names


async def test_a_wrong_path_or_method_gets_an_error_event_not_plain_text(edge: Edge):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.server.url}/v1/stt/", headers=edge.headers) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]["reason"]) == (404, "UNKNOWN_ENDPOINT"), body
            assert "/v1/openapi.json" in body["error"]["message"]
        async with http.get(f"{edge.server.url}/v1/tts", headers=edge.headers) as resp:
            body = await resp.json()
            assert (resp.status, body["error"]["reason"]) == (405, "METHOD_NOT_ALLOWED"), body
            assert "POST" in resp.headers["Allow"]
        # A plain GET of a WebSocket endpoint, and an upgrade without its key: aiohttp's
        # plain-text 400 ("No WebSocket UPGRADE hdr") before.
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        for path, headers in (("/v1/stt/stream", {}), ("/v1/tts/stream", upgrade)):
            async with http.get(
                f"{edge.server.url}{path}", headers={**edge.headers, **headers}
            ) as resp:
                assert resp.content_type == "application/json", await resp.text()
                body = await resp.json()
                assert (resp.status, body["error"]["reason"]) == (400, "INVALID_MESSAGE"), body
                assert "RFC 6455 handshake" in body["error"]["message"], body


@pytest.mark.parametrize("version", ["8", "7", "14"])
async def test_a_websocket_version_other_than_13_is_refused_naming_13(edge: Edge, version: str):
    # RFC 6455 section 4.4: the handshake is aborted with the version the server speaks.
    # aiohttp upgraded drafts 7 and 8 (whose framing differs) as if they were 13.
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": version,
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{edge.server.url}/v1/stt/stream", headers={**edge.headers, **upgrade}
        ) as resp:
            body = await resp.json()
    assert (resp.status, body["error"]["reason"]) == (400, "INVALID_MESSAGE"), body
    assert resp.headers["Sec-WebSocket-Version"] == "13"
    assert "version 13" in body["error"]["message"], body


async def test_a_cors_preflight_is_refused_with_no_cors_headers(edge: Edge):
    # docs/edge.md, "HTTP": the endpoints are for servers; a page on another origin uses the
    # WebSockets with a browser token, so no origin is ever granted here.
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{edge.server.url}/v1/tts", headers=preflight) as resp:
            body = await resp.json()
    assert (resp.status, body["error"]["reason"]) == (405, "METHOD_NOT_ALLOWED"), body
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/capabilities?foo=1&foo=2"),
        ("POST", "/v1/auth/token?ttl=5"),
        ("GET", "/v1/openapi.json?v=2"),
    ],
)
async def test_an_endpoint_that_takes_no_query_refuses_one(edge: Edge, method: str, path: str):
    # docs/edge.md: a query parameter an endpoint does not know is INVALID_CONFIG naming it;
    # these endpoints answered 200 (a token issued for "?ttl=5" with the default lifetime).
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"{edge.server.url}{path}", headers=edge.headers) as resp:
            body = await resp.json()
    assert (resp.status, body["error"]["reason"]) == (400, "INVALID_CONFIG"), body
    named = path.split("?")[1].split("=")[0]
    assert [v["field"] for v in body["error"]["fieldViolations"]] == [named], body
