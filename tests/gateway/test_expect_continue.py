"""``Expect: 100-continue`` on the POST endpoints (RFC 9110 10.1.1): a request the gateway
will refuse is refused before its client sends the body, and one it will take gets 100
Continue, then its answer.

aiohttp's own expect handler sent 100 Continue to every request, before any check: curl (which
asks for any body over 1 MiB) then sent a file to a bad key, a key over its limits or an
endpoint that does not take its media type, to be refused after it. Real loopback sockets
written by hand here, as the exchange is about what goes on the wire when; the gateway, the
adapter and Triton are real."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import InstrumentedEdge
from tests.helpers.front import open_grpc_session
from tests.helpers.speech_fixtures import SPEECH_DIR

pytestmark = pytest.mark.asyncio(loop_scope="session")

_WAV = (SPEECH_DIR / "kitchen_lights.wav").read_bytes()


@dataclass
class Exchange:
    continued: bool  # the server answered 100 Continue, and the body was sent after it
    status: int
    headers: dict[str, str]
    body: dict
    closed: bool  # the server closed the connection after its answer


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        if field:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(line.split()[1]), headers


async def post_expecting(
    url: str, path: str, headers: dict[str, str], body: bytes, content_length: int | None = None
) -> Exchange:
    """POST ``body`` with ``Expect: 100-continue``, sending it only after a 100 Continue."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        length = len(body) if content_length is None else content_length
        fields = {"Host": parts.netloc, "Content-Length": str(length), **headers}
        if "Expect" not in fields:
            fields["Expect"] = "100-continue"
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        writer.write(head.encode("latin-1") + b"\r\n")
        await writer.drain()
        status, response_headers = await _read_head(reader)
        continued = status == 100
        if continued:
            writer.write(body)
            await writer.drain()
            status, response_headers = await _read_head(reader)
        payload = await asyncio.wait_for(
            reader.readexactly(int(response_headers["content-length"])), 30
        )
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return Exchange(continued, status, response_headers, json.loads(payload), closed)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.contextmanager
def nothing_reaches_the_adapter(front: InstrumentedEdge):
    before = len(front.recorder.contract_calls())
    yield
    assert front.recorder.contract_calls()[before:] == []


def assert_refused_before_the_body(exchange: Exchange, status: int, reason: str) -> None:
    assert not exchange.continued, exchange
    assert (exchange.status, exchange.body["error"]["reason"]) == (status, reason), exchange
    # The body was never read: the server says it closes the connection (RFC 9112 9.6).
    assert exchange.headers.get("connection") == "close", exchange


def _auth(key: str, content_type: str = "audio/wav") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": content_type}


async def test_an_upload_the_gateway_takes_gets_100_continue_and_its_transcript(
    front: InstrumentedEdge,
):
    # A key allowed one session a minute: the check before 100 Continue takes none of it.
    key = front.new_key("expect-once-a-minute", max_new_sessions_per_minute=1)
    exchange = await post_expecting(front.url, "/v1/stt", _auth(key), _WAV)
    assert exchange.continued and exchange.status == 200, exchange
    assert "light" in exchange.body["transcript"], exchange.body
    assert exchange.headers.get("connection") != "close" and not exchange.closed
    # The minute's session is used now, and the next request is refused before its body.
    with nothing_reaches_the_adapter(front):
        exchange = await post_expecting(front.url, "/v1/stt", _auth(key), _WAV)
    assert_refused_before_the_body(exchange, 429, "RATE_LIMITED")
    assert 50 <= int(exchange.headers["retry-after"]) <= 60


async def test_an_untyped_upload_is_let_through_to_be_known_by_its_first_bytes(
    front: InstrumentedEdge,
):
    # application/octet-stream with no format in the query: the head cannot tell a WAV from
    # raw samples (gateway/http/stt.py, _untyped), so it gets 100 Continue, and a WAV its
    # transcript.
    key = front.new_key("expect-untyped")
    headers = _auth(key, "application/octet-stream")
    exchange = await post_expecting(front.url, "/v1/stt", headers, _WAV)
    assert exchange.continued and exchange.status == 200, exchange
    assert "light" in exchange.body["transcript"], exchange.body


@pytest.mark.parametrize(
    ("credential", "status", "reason"),
    [
        ("", 401, "UNAUTHENTICATED"),
        ("Bearer vx_zzzzzzzzzz_" + "A" * 43, 401, "UNAUTHENTICATED"),
        ("Basic abc", 401, "UNAUTHENTICATED"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/stt", "/v1/tts", "/v1/auth/token"])
async def test_bad_credentials_are_refused_before_the_body(
    front: InstrumentedEdge, credential: str, status: int, reason: str, path: str
):
    headers = {"Content-Type": "audio/wav" if path == "/v1/stt" else "text/plain"}
    if credential:
        headers["Authorization"] = credential
    with nothing_reaches_the_adapter(front):
        exchange = await post_expecting(front.url, path, headers, _WAV[:4096])
    assert_refused_before_the_body(exchange, status, reason)


@pytest.mark.parametrize("path", ["/v1/stt", "/v1/tts"])
async def test_a_key_at_its_concurrency_limit_is_refused_before_the_body(
    front: InstrumentedEdge, path: str
):
    key = front.new_key(f"expect-one-at-a-time{path.replace('/', '-')}", max_concurrent_sessions=1)
    content_type = "audio/wav" if path == "/v1/stt" else "text/plain"
    async with open_grpc_session(front, key):
        with nothing_reaches_the_adapter(front):
            exchange = await post_expecting(front.url, path, _auth(key, content_type), _WAV)
    assert_refused_before_the_body(exchange, 429, "RATE_LIMITED")
    assert exchange.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("path", "query", "content_type", "length", "status", "reason", "field"),
    [
        ("/v1/stt", "", "text/plain", None, 415, "UNSUPPORTED_MEDIA_TYPE", None),
        ("/v1/stt", "", "audio/wav", 201 * 1024 * 1024, 413, "BODY_TOO_LARGE", None),
        ("/v1/stt", "?encoding=pcm_s16le", "application/octet-stream", None, 400,
         "INVALID_CONFIG", "sample_rate"),
        ("/v1/stt", "?sample_rate=abc", "audio/wav", None, 400, "INVALID_CONFIG", "sample_rate"),
        ("/v1/stt", "?encoding=pcm_s16le&sample_rate=16000&channels=5",
         "application/octet-stream", None, 400, "UNSUPPORTED_SAMPLE_RATE", "channels"),
        ("/v1/tts", "", "audio/wav", None, 415, "UNSUPPORTED_MEDIA_TYPE", None),
        ("/v1/tts", "", "text/plain", 65 * 1024, 413, "BODY_TOO_LARGE", None),
        ("/v1/auth/token", "", "application/json", 8192, 413, "BODY_TOO_LARGE", None),
    ],
)  # fmt: skip
async def test_what_the_head_of_a_request_says_is_refused_before_its_body(
    front: InstrumentedEdge,
    path: str,
    query: str,
    content_type: str,
    length: int | None,
    status: int,
    reason: str,
    field: str | None,
):
    with nothing_reaches_the_adapter(front):
        exchange = await post_expecting(
            front.url, path + query, _auth(front.key, content_type), _WAV[:4096], length
        )
    assert_refused_before_the_body(exchange, status, reason)
    if field is not None:
        violations = exchange.body["error"]["fieldViolations"]
        assert [v["field"] for v in violations] == [field], exchange.body


@pytest.mark.parametrize(
    ("path", "content_type", "accept", "body"),
    [
        ("/v1/tts", "text/plain", "audio/mpeg", b"Hello there."),
        ("/v1/stt", "audio/wav", "audio/wav", _WAV),
    ],
)
async def test_an_accept_that_admits_no_form_is_refused_before_the_body(
    front: InstrumentedEdge, path: str, content_type: str, accept: str, body: bytes
):
    key = front.new_key(f"expect-accept{path.replace('/', '-')}")
    headers = {**_auth(key, content_type), "Accept": accept}
    with nothing_reaches_the_adapter(front):
        exchange = await post_expecting(front.url, path, headers, body)
    assert_refused_before_the_body(exchange, 406, "NOT_ACCEPTABLE")


async def test_an_expectation_other_than_100_continue_gets_an_error_event(
    front: InstrumentedEdge,
):
    # aiohttp answered it 417 in text/plain; every other error of the gateway is its JSON.
    headers = {**_auth(front.key), "Expect": "200-ok"}
    with nothing_reaches_the_adapter(front):
        exchange = await post_expecting(front.url, "/v1/stt", headers, _WAV[:4096])
    assert_refused_before_the_body(exchange, 400, "INVALID_MESSAGE")
    assert "100-continue" in exchange.body["error"]["message"]
