"""The ``gateway`` target: the voxwire gateway's WebSockets (docs/edge.md).

One aiohttp client session per worker (connections unlimited); one WebSocket per stream,
authenticated with ``Authorization: Bearer <api key>``.

- STT: ``WS /v1/stt/stream`` with the config in the query string (the session starts at the
  upgrade, so audio may follow at once), binary frames of PCM16 audio, ``{"close": {}}`` to
  finish. ``started`` -> Started, each ``result`` -> Result; the ``summary`` (the session's
  last message) ends the stream with its stage timings, edge stages included; an ``error``
  event ends it with its gRPC code name and reason.
- TTS: ``WS /v1/tts/stream`` (binary audio delivery): one context per turn (``open``,
  ``append``, ``close``), ``closeSession`` to finish. Binary frames are audio chunks of the
  context their header's handle names (``voxwire.edge.frames``); ``opened``, ``done``,
  ``contextError``, ``cancelled`` are the context's events.

The wire code is the SDK's (``voxwire.edge``): client messages are written with
``voxwire.edge.messages.encode``; server messages are read with its ``decode``, except the
STT ``result`` (the one message per audio chunk), which is read off the parsed JSON by its
canonical field names, so that the tool's own cost per message stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp

from loadtest.events import (
    Audio,
    ContextDone,
    ContextFailed,
    ContextOpened,
    Ended,
    Event,
    Notice,
    Result,
    Started,
    notice_kind,
)
from loadtest.targets.base import SttOptions, TargetError, TtsOptions, UnconnectedStream
from loadtest.targets.voxwire_grpc import stages_from_timings
from voxwire.edge import frames
from voxwire.edge.messages import decode, encode
from voxwire.edge.v1 import stt_pb2, tts_pb2
from voxwire.v1 import synthesis_pb2, transcription_pb2

API_KEY_ENV = "VOXWIRE_API_KEY"
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_CLOSE_TIMEOUT_S = 2.0
_CONNECT_TIMEOUT_S = 30.0
_STT_CLOSE = encode(stt_pb2.SttClientMessage(close=transcription_pb2.CloseStream()))
_TTS_CLOSE_SESSION = encode(tts_pb2.TtsClientMessage(close_session=tts_pb2.CloseSession()))
_GONE = (ConnectionError, aiohttp.ClientError, RuntimeError)


class _Socket:
    """One WebSocket: writes that never raise for a closed peer, a bounded close, and the end
    of a stream without a summary as an ``Ended`` event."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, closing: set[asyncio.Task[Any]]):
        self.ws = ws
        self._closing = closing
        self.ended: Ended | None = None

    async def send_str(self, text: str) -> None:
        if not self.ws.closed:
            with contextlib.suppress(*_GONE):
                await self.ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(*_GONE):
                await self.ws.send_bytes(data)

    def closed_event(self, message: aiohttp.WSMessage, at: float) -> Ended:
        """The connection ended before the summary or an error event."""
        code = self.ws.close_code or 1006
        detail = f"CLOSE_{code}" if message.type is not aiohttp.WSMsgType.ERROR else "WS_ERROR"
        return Ended(at, "UNAVAILABLE", detail)

    def cancel(self) -> None:
        if self.ws.closed:
            return
        task = asyncio.get_running_loop().create_task(self._close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self) -> None:
        with contextlib.suppress(*_GONE, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self.ws.close()


def _error_end(event: Any, at: float) -> Ended:
    return Ended(at, event.code or "UNKNOWN", event.reason, message=event.message)


_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class GatewayStt(_Socket):
    async def send_audio(self, pcm: bytes) -> None:
        await self.send_bytes(pcm)

    async def finish(self) -> None:
        await self.send_str(_STT_CLOSE)

    async def next_event(self) -> Event:
        if self.ended is not None:
            return self.ended
        while True:
            message = await self.ws.receive()
            at = time.monotonic()
            if message.type is aiohttp.WSMsgType.TEXT:
                event = self._text(message.data, at)
                if event is not None:
                    return event
            elif message.type in _CLOSED or message.type is aiohttp.WSMsgType.ERROR:
                self.ended = self.closed_event(message, at)
                return self.ended

    def _text(self, text: str, at: float) -> Event | None:
        data = json.loads(text)
        result = data.get("result")
        if result is not None:
            # Canonical proto3 JSON of TranscriptResult: defaults (false, 0, "") are omitted.
            return Result(
                at,
                bool(result.get("isFinal", False)),
                str(result.get("transcript", "")),
                int(result.get("endMs", 0)),
            )
        msg = decode(
            text,
            stt_pb2.SttServerMessage,
            max_bytes=_MAX_MESSAGE_BYTES,
            ignore_unknown_fields=True,
        )
        kind = msg.WhichOneof("message")
        if kind == "started":
            return Started(at)
        if kind == "notice":
            return Notice(at, notice_kind(msg.notice.kind))
        if kind == "summary":
            self.ended = Ended(at, "OK", "", stages_from_timings(msg.summary.timings))
            return self.ended
        if kind == "error":
            self.ended = _error_end(msg.error, at)
            return self.ended
        return None


class GatewayTts(_Socket):
    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        closing: set[asyncio.Task[Any]],
        options: TtsOptions,
    ) -> None:
        super().__init__(ws, closing)
        self._config = synthesis_pb2.SynthesisContextConfig(
            model=options.model, voice=options.voice, output_format=options.audio_format
        )
        self._bytes_per_ms = options.sample_rate_hz * options.encoding.bytes_per_sample / 1000
        self._contexts: dict[int, str] = {}  # handle -> context id

    async def open_context(self, context_id: str) -> None:
        message = tts_pb2.TtsClientMessage(context_id=context_id, open=self._config)
        await self.send_str(encode(message))

    async def append(self, context_id: str, text: str) -> None:
        append = synthesis_pb2.AppendText(text=text)
        await self.send_str(encode(tts_pb2.TtsClientMessage(context_id=context_id, append=append)))

    async def close_context(self, context_id: str) -> None:
        close = synthesis_pb2.CloseContext()
        await self.send_str(encode(tts_pb2.TtsClientMessage(context_id=context_id, close=close)))

    async def finish(self) -> None:
        await self.send_str(_TTS_CLOSE_SESSION)

    async def next_event(self) -> Event:
        if self.ended is not None:
            return self.ended
        while True:
            message = await self.ws.receive()
            at = time.monotonic()
            if message.type is aiohttp.WSMsgType.BINARY:
                frame = frames.unpack(message.data)
                context = self._contexts.get(frame.handle, "")
                duration = len(frame.audio) / self._bytes_per_ms
                return Audio(at, context, float(frame.start_ms), duration)
            if message.type is aiohttp.WSMsgType.TEXT:
                event = self._text(message.data, at)
                if event is not None:
                    return event
            elif message.type in _CLOSED or message.type is aiohttp.WSMsgType.ERROR:
                self.ended = self.closed_event(message, at)
                return self.ended

    def _text(self, text: str, at: float) -> Event | None:
        msg = decode(
            text,
            tts_pb2.TtsServerMessage,
            max_bytes=_MAX_MESSAGE_BYTES,
            ignore_unknown_fields=True,
        )
        kind, cid = msg.WhichOneof("message"), msg.context_id
        if kind == "opened":
            self._contexts[msg.opened.handle] = cid
            return ContextOpened(at, cid)
        if kind == "done":
            return ContextDone(at, cid)
        if kind == "cancelled":
            return ContextFailed(at, cid, "CANCELLED")
        if kind == "context_error":
            error = msg.context_error.error
            return ContextFailed(at, cid, error.reason or "UNSPECIFIED", error.message)
        if kind == "notice":
            return Notice(at, notice_kind(msg.notice.kind), cid)
        if kind == "summary":
            self.ended = Ended(at, "OK", "", stages_from_timings(msg.summary.timings))
            return self.ended
        if kind == "error":
            self.ended = _error_end(msg.error, at)
            return self.ended
        return None


async def ws_connect(
    http: aiohttp.ClientSession, url: str, **options: Any
) -> aiohttp.ClientWebSocketResponse | None:
    """A stream's WebSocket, or None when no connection could be made at all: the stream then
    ends as UNAVAILABLE/CONNECT_FAILED, as a gRPC one would (``UnconnectedStream``)."""
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            return await http.ws_connect(
                url,
                # The server pings; aiohttp answers them (autoping). No pings of our own.
                heartbeat=None,
                compress=0,  # as the SDK: audio does not pay for deflate
                **options,
            )
    except aiohttp.ClientConnectorError:
        return None


class GatewayTarget:
    name = "gateway"

    def __init__(self, address: str, api_key: str = "", *, lead_ms: int = -1) -> None:
        self.address = address
        self._api_key = api_key or os.environ.get(API_KEY_ENV, "")
        self._tts_query = {"audio": "binary"} | ({"lead_ms": str(lead_ms)} if lead_ms >= 0 else {})
        self._http: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if not self._api_key:
            raise TargetError(
                f"the gateway target needs an API key (target.api_key or ${API_KEY_ENV})"
            )
        # No connection limit: every stream holds its own WebSocket for its whole life.
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def _connect(
        self, path: str, query: dict[str, str]
    ) -> aiohttp.ClientWebSocketResponse | None:
        """The stream's WebSocket, or None when no connection could be made at all."""
        if self._http is None:
            raise RuntimeError("target not started")
        return await ws_connect(
            self._http,
            f"ws://{self.address}{path}?{urlencode(query)}",
            headers={"Authorization": f"Bearer {self._api_key}"},
            max_msg_size=_MAX_MESSAGE_BYTES,
        )

    async def open_stt(self, options: SttOptions) -> GatewayStt | UnconnectedStream:
        query = {
            "model": options.model,
            "encoding": options.encoding.value,
            "sample_rate": str(options.rate_hz),
            "interim_results": "true" if options.interim_results else "false",
        }
        ws = await self._connect("/v1/stt/stream", query)
        return GatewayStt(ws, self._closing) if ws is not None else UnconnectedStream()

    async def open_tts(self, options: TtsOptions) -> GatewayTts | UnconnectedStream:
        ws = await self._connect("/v1/tts/stream", self._tts_query)
        return GatewayTts(ws, self._closing, options) if ws is not None else UnconnectedStream()
