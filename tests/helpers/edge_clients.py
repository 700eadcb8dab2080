"""One session attempt on each wire of the gateway, as a client makes it, and what came back.

Each returns an ``Attempt``: admitted or not, and for a refusal its reason, the wire's own
signal (WebSocket close code, HTTP status, gRPC code) and the retry delay the wire carries
(``retryAfterMs`` of the error event, ``Retry-After``, ``RetryInfo``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import grpc

from localstack.client import collect, write_all
from tests.helpers.front import rich_error, stt_config
from voxwire.v1 import transcription_pb2, transcription_pb2_grpc

STT_QUERY = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000"
SHORT_TEXT = "Call me back."


@dataclass(frozen=True)
class Attempt:
    wire: str
    admitted: bool
    reason: str = ""
    signal: int | str = 0  # close code, HTTP status, or gRPC code name
    retry_after_s: float | None = None
    retryable: bool = False


async def http_refused(wire: str, resp: aiohttp.ClientResponse) -> Attempt:
    """The refusal an HTTP error answer carries: its JSON error event, status, Retry-After."""
    event = (await resp.json())["error"]
    after = resp.headers.get("Retry-After")
    return Attempt(
        wire,
        False,
        event["reason"],
        resp.status,
        float(after) if after is not None else None,
        event.get("retryable", False),
    )


async def grpc_refused(wire: str, call: object) -> Attempt:
    """The refusal a failed gRPC call's status carries (its google.rpc details)."""
    error = await rich_error(call)
    return Attempt(wire, False, error.reason, error.code.name, error.retry_delay_s, error.retryable)


async def websocket(
    base: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    protocols: Sequence[str] = (),
    query: str = "",
    first: dict | None = None,
) -> Attempt:
    """Connect, send ``first`` if given, and read the first message: ``session`` (admitted:
    the session is closed at once) or ``error`` (refused: the close code follows)."""
    url = f"{base}{path}" + (f"?{query}" if query else "")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            url, headers=headers or {}, protocols=protocols, timeout=aiohttp.ClientWSTimeout(10)
        ) as ws:
            if first is not None:
                await ws.send_str(json.dumps(first))
            message = json.loads((await ws.receive(timeout=10)).data)
            if "session" in message and "error" not in message:
                return Attempt(f"ws {path}", True)
            event = message["error"]
            await ws.receive(timeout=10)  # the close
            assert ws.close_code == event["closeCode"], (ws.close_code, event)
            delay = event.get("retryAfterMs")
            return Attempt(
                f"ws {path}",
                False,
                event["reason"],
                ws.close_code or 0,
                int(delay) / 1000 if delay is not None else None,
                event.get("retryable", False),
            )


async def http_tts(base: str, headers: Mapping[str, str]) -> Attempt:
    """POST /v1/tts with a short text; admitted when the audio comes back."""
    async with aiohttp.ClientSession() as http:
        url = f"{base}/v1/tts?model=tts_espeak&sample_rate=16000"
        async with http.post(url, data=SHORT_TEXT, headers=dict(headers)) as resp:
            if resp.status == 200:
                await resp.read()
                return Attempt("http /v1/tts", True)
            return await http_refused("http /v1/tts", resp)


async def grpc_stt(address: str, metadata: Sequence[tuple[str, str]]) -> Attempt:
    """StreamingTranscribe with a config and a half-close; admitted when it ends OK."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = transcription_pb2_grpc.TranscriptionStub(channel).StreamingTranscribe(
            metadata=tuple(metadata), timeout=20
        )
        await write_all(call, [transcription_pb2.StreamingTranscribeRequest(config=stt_config())])
        outcome = await collect(call)
        if outcome.code == grpc.StatusCode.OK:
            return Attempt("grpc StreamingTranscribe", True)
        return await grpc_refused("grpc StreamingTranscribe", call)
