"""POST /v1/tts: text in, audio streamed back as it is synthesized.

The body is a ``SpeakRequest`` (JSON) or the text itself, options in the query string:
``text/plain``, or ``application/ssml+xml`` for an SSML document (RFC 4267's media type, the one
Azure's speech REST API takes; the model's subset, ``Features.ssml_elements``). The response
streams with chunked transfer as the model produces audio: WAV with a streaming header (the
default), the bare samples (``container=raw``), mu-law as ``audio/basic``; with ``Accept:
text/event-stream``, Server-Sent Events interleave ``audio`` (an AudioChunk, data in base64),
``words`` and a last ``done`` (or ``error``). Errors before the first byte are an
HTTP status with the JSON error event; after it, SSE sends an ``error`` event and the audio
forms end the connection without the final chunk (so no client mistakes a cut stream for a
whole one). ``Server-Timing`` carries what is known at the first byte (edge-connect, first);
the SSE ``done`` event carries the whole breakdown.

Writes wait for the client (aiohttp drains), and the next upstream message is read only after
the last one was written: a slow reader slows the upstream stream down through HTTP/2 flow
control instead of growing a buffer. Each write has a deadline (``_ClientWrites``): the
client may take the audio at playback pace, so it is late only ``[runner] write_timeout_s``
after the audio it was sent would have played; then the connection ends (SLOW_CONSUMER).

A cut (``_Cut``) is one WARNING line and the handler returns: a client that stopped reading is
reset (its socket's megabytes of unread audio freed at once; closing it gracefully left it
open, with them, for as long as the client kept it), one whose stream failed gets what it was
sent and then the end of the connection, within the time that audio takes to play. An
exception from the handler would do the same for the stream but is logged by aiohttp as an
ERROR with a traceback, and the graceful close had no bound.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import let_go
from gateway.http.accept import Form, choose
from gateway.http.common import (
    NOTICE_HEADER,
    admissible,
    admit,
    client_left,
    declared_within,
    error_body,
    error_response,
    expect_handler,
    media_type,
    query_encoding,
    query_flag,
    read_body,
    single_query,
)
from gateway.state import GATEWAY, upstream_metadata
from gateway.upstream.call import UpstreamCall, UpstreamError
from gateway.wire.messages import decode, encode
from gateway.wire.query import refuse
from voxwire import errors
from voxwire.audio.codecs import PcmFormat
from voxwire.audio.convert import FormatConverter
from voxwire.audio.formats import ENCODINGS as PROTO_ENCODINGS
from voxwire.audio.formats import offered_rate, resolve_format
from voxwire.audio.wav import streaming_header
from voxwire.capabilities import fitted_output
from voxwire.edge.v1 import http_pb2
from voxwire.playback_clock import PlaybackClock
from voxwire.text_pieces import Append, Flush, TextFeed, piece_bytes
from voxwire.timings import add_up
from voxwire.v1 import audio_pb2, capabilities_pb2, stream_pb2, synthesis_pb2, timings_pb2
from voxwire.watchdog import Watchdog

log = logging.getLogger(__name__)

Request = synthesis_pb2.StreamingSynthesizeRequest
Response = synthesis_pb2.StreamingSynthesizeResponse

MAX_BODY_BYTES = 64 * 1024
SSML_MEDIA_TYPE = "application/ssml+xml"  # RFC 4267
DEFAULT_RATE_HZ = 24_000
_CONTEXT = "http"
_PIECE = "piece-"  # the flush ids of the text's pieces
_QUERY = {"model", "voice", "language", "encoding", "sample_rate", "container", "word_timestamps"}


def speak_request(text_body: str, query: dict[str, str]) -> http_pb2.SpeakRequest:
    """A SpeakRequest from a text/plain body and query options. Raises InvalidConfig."""
    unknown = set(query) - _QUERY
    if unknown:
        raise errors.InvalidConfig.of(
            "invalid query string",
            [errors.Violation(name[:40], "unknown query parameter") for name in sorted(unknown)],
        )
    req = http_pb2.SpeakRequest(text=text_body)
    cfg = req.config
    cfg.model = query.get("model", "")
    cfg.voice = query.get("voice", "")
    cfg.language = query.get("language", "")
    bad: list[errors.Violation] = []
    cfg.word_timestamps = query_flag(query, "word_timestamps", bad)
    if (encoding := query_encoding(query, bad)) is not None:
        cfg.output_format.encoding = encoding
    if "sample_rate" in query:
        if query["sample_rate"].isdigit():
            cfg.output_format.sample_rate_hz = int(query["sample_rate"])
        else:
            bad.append(errors.Violation("sample_rate", "must be a positive integer"))
    container = query.get("container", "wav").lower()
    if container not in ("wav", "raw"):
        bad.append(errors.Violation("container", "must be wav or raw"))
    req.container = (
        http_pb2.AUDIO_CONTAINER_RAW if container == "raw" else http_pb2.AUDIO_CONTAINER_WAV
    )
    refuse(bad)
    return req


def _body_text(request: web.Request, kind: str, body: bytes) -> str:
    """A text/plain (or SSML) body, which is UTF-8 (US-ASCII is a part of it). Its bytes were
    decoded with replacement before: text that was not UTF-8 was spoken as U+FFFD, silently, and a
    body in another charset (declared or not) as garbage."""
    kind = kind or "text/plain"
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii"):
        raise errors.UnsupportedMediaType(
            f"{kind[:40]} in charset {charset[:40]!r}: send the text in UTF-8"
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidMessage(
            f"the {kind[:40]} body is not valid UTF-8 (byte {exc.start})"
        ) from None


def _defaults(req: http_pb2.SpeakRequest, model: capabilities_pb2.ModelCapabilities | None) -> None:
    """The output format's defaults, PCM16 at 24 kHz (G.711 at 8 kHz), as far as ``model``
    (what the adapters say of it; None: nothing known) offers them: else its native rate, or
    the first it offers. A server that resamples (the reference adapter) offers every rate;
    one that does not (an ML engineer's own, 16 kHz only) failed a request that named no
    rate with UNSUPPORTED_SAMPLE_RATE."""
    fmt = req.config.output_format
    offered = [f.encoding for f in model.output_formats] if model else []
    if not fmt.encoding:
        pcm16 = audio_pb2.AUDIO_ENCODING_PCM_S16LE
        fmt.encoding = pcm16 if not offered or pcm16 in offered else offered[0]
    if not fmt.sample_rate_hz:
        usual = 8000 if fmt.encoding in (3, 4) else DEFAULT_RATE_HZ
        fmt.sample_rate_hz = offered_rate(model, fmt.encoding, usual)
    # The adapter's own check (inference_adapter/tts/config.py), made here before anything is
    # written: the response's status and its WAV header come from this format (an encoding
    # number outside the enum was a KeyError there, answered 500).
    resolve_format(fmt, "open.output_format", max_channels=1)
    if not req.text.strip():
        raise errors.InvalidConfig(
            "no text to speak", violations=[errors.Violation("text", "must not be empty")]
        )


def _fit_output(
    req: http_pb2.SpeakRequest, model: capabilities_pb2.ModelCapabilities | None
) -> _OutputConverter | None:
    """When ``model`` (what the adapters say of it) does not make the format the request asks,
    the request is made to ask the nearest one it does (the asked encoding if offered, else
    PCM16, else the first; of its rates, ``carried_rate``'s choice), and the returned
    converter turns that into what was asked. A server that does not resample (16 kHz PCM16
    only) refused mu-law at 8 kHz (a telephony client's) and 24 kHz with
    UNSUPPORTED_ENCODING or UNSUPPORTED_SAMPLE_RATE. None: the model makes it (the reference
    adapter makes every format), or nothing is known of it."""
    asked = req.config.output_format
    made = fitted_output(model, asked.encoding, asked.sample_rate_hz)
    if made is None:
        return None
    source = PcmFormat(PROTO_ENCODINGS[made.encoding], made.sample_rate_hz)
    target = PcmFormat(PROTO_ENCODINGS[asked.encoding], asked.sample_rate_hz)
    asked.encoding, asked.sample_rate_hz = made.encoding, made.sample_rate_hz
    return _OutputConverter(FormatConverter(source, target), target)


class _OutputConverter:
    """The model's audio chunks in the asked format, as they come. The resampler holds back a
    few tens of milliseconds, so each chunk's place on the timeline is that of the bytes it
    carries (from the first chunk's start; they tile, as the contract's do), a chunk it held
    back whole is not sent (None), the chunks are numbered as sent, what is held back at the
    end comes in one more chunk (``tail``), and the ``done`` names the last."""

    def __init__(self, converter: FormatConverter, target: PcmFormat) -> None:
        self._converter = converter
        self._bytes_per_s = target.bytes_per_second
        self._start_ms: int | None = None
        self._sent = 0  # bytes
        self._sequence = 0

    def chunk(self, chunk: synthesis_pb2.AudioChunk) -> synthesis_pb2.AudioChunk | None:
        if self._start_ms is None:
            self._start_ms = chunk.start_ms
        return self._placed(self._converter.convert(chunk.audio))

    def tail(self) -> synthesis_pb2.AudioChunk | None:
        return self._placed(self._converter.flush())

    def done(self, done: synthesis_pb2.ContextDone) -> synthesis_pb2.ContextDone:
        out = synthesis_pb2.ContextDone()
        out.CopyFrom(done)
        out.last_sequence_number = self._sequence
        return out

    def _placed(self, audio: bytes) -> synthesis_pb2.AudioChunk | None:
        if not audio or self._start_ms is None:
            return None
        begin = self._sent * 1000 // self._bytes_per_s
        self._sent += len(audio)
        end = self._sent * 1000 // self._bytes_per_s
        self._sequence += 1
        return synthesis_pb2.AudioChunk(
            sequence_number=self._sequence,
            start_ms=self._start_ms + begin,
            duration_ms=end - begin,
            audio=audio,
        )


@dataclass(slots=True)
class _Out:
    """How the response is written, decided from the request and its Accept header."""

    sse: bool
    content_type: str
    header: bytes


_SSE = Form(("text/event-stream",), named=True)
_WAV = Form(("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"))
_BASIC = Form(("audio/basic",))  # RFC 2046 4.3: 8 kHz mu-law
_RAW = Form(("application/octet-stream",))
_AUDIO = (_WAV, _BASIC, _RAW)  # a request's audio is one of these (its container, encoding)


def _output(request: web.Request, req: http_pb2.SpeakRequest) -> _Out:
    """The response's form: the request's audio (its container and encoding) or events, as
    its Accept header prefers (gateway/http/accept.py); NotAcceptable when it admits neither
    (``Accept: audio/mpeg`` was answered WAV, which a client would save as an MP3)."""
    fmt = req.config.output_format
    encoding = PROTO_ENCODINGS[fmt.encoding]
    audio = _WAV
    if req.container == http_pb2.AUDIO_CONTAINER_RAW:
        mulaw_8k = fmt.encoding == audio_pb2.AUDIO_ENCODING_MULAW and fmt.sample_rate_hz == 8000
        audio = _BASIC if mulaw_8k else _RAW
    accept = request.headers.get("Accept")
    chosen = choose(accept, (audio, _SSE))
    if chosen is None:
        raise _not_acceptable(accept or "", audio.names[0])
    if chosen is _SSE:
        return _Out(True, "text/event-stream", b"")
    header = streaming_header(encoding, fmt.sample_rate_hz) if audio is _WAV else b""
    return _Out(False, audio.names[0], header)


def _not_acceptable(accept: str, audio: str) -> errors.NotAcceptable:
    # Within the error event's message limit: what was asked, what can be, how to get it.
    return errors.NotAcceptable(
        f"Accept: {accept[:60]!r} admits nothing POST /v1/tts sends: {audio} or "
        "text/event-stream (no compressed audio; container, encoding and sample_rate in the "
        "query set the audio's form)"
    )


async def speak(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    started = time.monotonic()
    try:
        admission = admit(request, gateway.auth, gateway.registry)
    except errors.VoxwireError as exc:
        gateway.metrics.refused.labels(reason=exc.reason).inc()
        return error_response(exc)
    opened = gateway.metrics.session_opened("http_tts")
    code = "aborted"  # unless a response went out: the client left, or the server stopped
    try:
        response = await _speak(request, started)
        # A cut response (its connection ending without the final chunk) counts "aborted".
        code = "aborted" if request.get(_CUT) else str(response.status)
        return response
    except ConnectionError as exc:  # the client left: counted "aborted"
        return client_left(request, exc)
    finally:
        gateway.metrics.session_closed("http_tts", code, opened)
        admission.permit.release()


# The contract names a context's config fields from its open message ("open.voice",
# inference_adapter/tts/config.py); a POST /v1/tts client set them in the query string or in
# its SpeakRequest's "config", and is told their names there.
_QUERY_FIELDS = {
    "open.model": "model",
    "open.voice": "voice",
    "open.language": "language",
    "open.word_timestamps": "word_timestamps",
    "open.output_format.encoding": "encoding",
    "open.output_format.sample_rate_hz": "sample_rate",
    "open.text_format": "Content-Type",
}


def _tts_field(field: str, query: bool) -> str | None:
    if not field.startswith("open."):
        return None
    json_name = "config." + field.removeprefix("open.")
    return _QUERY_FIELDS.get(field, json_name) if query else json_name


async def _speak(request: web.Request, started: float) -> web.StreamResponse:
    query = media_type(request) != "application/json"
    try:
        return await _synthesize(request, started)
    except _Refused as refused:
        named = errors.renamed_fields(refused.error, lambda field: _tts_field(field, query))
        return error_response(named)


class _Refused(Exception):
    """The request failed before its response began: answered with the error's status."""

    def __init__(self, error: errors.VoxwireError) -> None:
        self.error = error


_MEDIA_TYPES = ("application/json", "text/plain", "", SSML_MEDIA_TYPE)


def _unsupported(kind: str) -> errors.UnsupportedMediaType:
    return errors.UnsupportedMediaType(
        f"Content-Type {kind!r}: send application/json, text/plain or {SSML_MEDIA_TYPE}"
    )


def _expect_check(request: web.Request) -> None:
    """What refuses a request before its body is sent (``expect``): the gateway's state, the
    credentials and the key's limits, the media type, a declared length over the limit, an
    Accept header that admits no form of the response."""
    gateway = request.app[GATEWAY]
    admissible(request, gateway.auth, gateway.registry)
    declared_within(request, MAX_BODY_BYTES)
    kind = media_type(request)
    if kind not in _MEDIA_TYPES:
        raise _unsupported(kind)
    accept = request.headers.get("Accept")
    if choose(accept, (*_AUDIO, _SSE)) is None:  # none of the forms, whatever the body
        raise _not_acceptable(accept or "", ", ".join(form.names[0] for form in _AUDIO))


expect = expect_handler(_expect_check)


async def _synthesize(request: web.Request, started: float) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    try:
        kind = media_type(request)
        body = await read_body(request, MAX_BODY_BYTES, gateway.config.tts.idle_timeout_s)
        query = single_query(request)
        if kind == "application/json":
            if query:
                # A SpeakRequest carries every option itself; the query's were ignored, and
                # ?container=raw&encoding=mulaw was answered 24 kHz WAV, silently.
                raise errors.InvalidConfig.of(
                    "a SpeakRequest JSON body carries its options: set them in it",
                    [errors.Violation(n[:40], "not read with a JSON body") for n in sorted(query)],
                )
            req = decode(body, http_pb2.SpeakRequest, max_bytes=MAX_BODY_BYTES)
        elif kind in _MEDIA_TYPES:
            req = speak_request(_body_text(request, kind, body), query)
            if kind == SSML_MEDIA_TYPE:
                req.config.text_format = synthesis_pb2.TEXT_FORMAT_SSML
        else:
            raise _unsupported(kind)
        model = gateway.pool.model(capabilities_pb2.MODEL_KIND_TTS, req.config.model)
        _defaults(req, model)
        out = _output(request, req)
        converter = _fit_output(req, model)  # the request now asks what the model makes
        lease = gateway.pool.choose()
    except errors.VoxwireError as exc:
        raise _Refused(exc) from None
    call = lease.adapter.synthesis().StreamingSynthesize(metadata=upstream_metadata(request))
    upstream: UpstreamCall[Request, Response] = UpstreamCall(
        gateway.pool, lease, call, write_timeout=gateway.config.runner.write_timeout_s
    )
    edge = timings_pb2.StageTimings(edge_receive_us=round((time.monotonic() - started) * 1e6))
    # Plain text goes in pieces, as the model takes them (voxwire.text_pieces): a context
    # holds at most max_pending_text_bytes (the adapter's 16 KiB; the pool knows each
    # adapter's) of text not yet synthesized, and a body may be up to MAX_BODY_BYTES. An SSML
    # document is one unit of markup: it goes whole (a piece as long as it is).
    whole = req.config.text_format == synthesis_pb2.TEXT_FORMAT_SSML
    text_bytes = len(req.text.encode())
    size = piece_bytes(gateway.pool.max_pending_text_bytes)  # 4 KiB, or less when it must be
    feed = TextFeed(max(size, text_bytes) if whole else size, prefix=_PIECE)
    feed.append(req.text)
    feed.close()
    try:
        await upstream.write(Request(context_id=_CONTEXT, open=req.config))
        await _feed(upstream, feed)
        return await _relay(request, upstream, out, edge, started, feed, converter)
    except UpstreamError as exc:
        raise _Refused(exc.error) from None
    except _Refused as refused:
        held = gateway.pool.max_pending_text_bytes
        if whole and refused.error.reason == errors.TextTooLarge.reason and 0 < held < text_bytes:
            # The adapter's words name the request's context, 'http', which the client never
            # named: say what was too large and what to do.
            raise _Refused(
                errors.TextTooLarge(
                    f"the SSML document is {text_bytes} bytes, more than the server holds at once "
                    f"(max_pending_text_bytes {held}): an SSML document goes to the model "
                    f"whole, so split it into several requests"
                )
            ) from None
        raise
    finally:
        upstream.cancel()


# Set on a request whose response was cut (``_ClientWrites.cut``): its session counts "aborted".
_CUT = web.RequestKey("voxwire_tts_cut", bool)


class _Cut(Exception):
    """The response, begun, cannot end whole: its connection ends without the final chunk.
    ``stalled``: the client stopped reading (it is reset, not waited for)."""

    def __init__(self, reason: str, *, stalled: bool = False) -> None:
        super().__init__(reason)
        self.stalled = stalled


class _ClientWrites:
    """The response's writes, each with a deadline of ``write_timeout_s`` for the client to take
    it, counted from when the audio written before it has played at real time, as the adapter
    counts a TTS write's (docs/contract.md, "Limits and timeouts"): a player taking the audio at
    real time is never late however much its socket buffers hold (a player's took 6.7 MB, 150 s
    of audio, at once); a client that stops reading is, after the audio it was sent has played,
    and its connection ends instead of holding its key's place for as long as it stays open."""

    def __init__(self, response: web.StreamResponse, write_timeout_s: float) -> None:
        self.response = response
        self._timeout_s = write_timeout_s
        self._deadline = Watchdog(write_timeout_s)
        self._playback = PlaybackClock()
        self._bytes = 0
        self._audio_ms = 0

    async def write(self, data: bytes, audio_ms: int = 0) -> None:
        await self._within(self.response.write(data))
        self._bytes += len(data)
        if audio_ms:
            self._audio_ms += audio_ms
            self._playback.wrote(audio_ms, time.monotonic())

    async def write_eof(self) -> None:
        await self._within(self.response.write_eof())

    async def _within(self, write: Coroutine[Any, Any, None]) -> None:
        try:
            with self._deadline.after(self._playback.ahead(time.monotonic())):
                await write
        except TimeoutError:
            raise _Cut(
                f"SLOW_CONSUMER: the client took nothing for write_timeout {self._timeout_s:g} s "
                "after the audio it was sent had played",
                stalled=True,
            ) from None

    def cut(self, request: web.Request, cut: _Cut) -> web.StreamResponse:
        """End the connection without the final chunk (aiohttp's own ``write_eof`` then finds
        it closing and only logs the access): reset at once if the client stalled; else closed
        after what it was sent, and reset if that is still unread ``write_timeout_s`` after its
        audio would have played."""
        log.warning(
            "%s %s: cut after %d bytes (%.1f s of audio): %s",
            request.method,
            request.path,
            self._bytes,
            self._audio_ms / 1000,
            cut,
        )
        request[_CUT] = True
        transport = request.transport
        if cut.stalled:
            let_go.reset(transport)
        elif transport is not None:
            transport.close()  # what the asyncio transport holds goes first, then FIN
            playing = self._playback.ahead(time.monotonic())
            let_go.reset_unless_gone(transport, playing + self._timeout_s)
        return self.response

    def close(self) -> None:
        self._deadline.close()


async def _feed(upstream: UpstreamCall[Request, Response], feed: TextFeed) -> None:
    """Writes what ``feed`` lets out now; after its close, the request stream's end."""
    for op in feed.more():
        if isinstance(op, Append):
            await upstream.write(
                Request(context_id=_CONTEXT, append=synthesis_pb2.AppendText(text=op.text))
            )
        elif isinstance(op, Flush):
            flush = synthesis_pb2.Flush(flush_id=op.flush_id)
            await upstream.write(Request(context_id=_CONTEXT, flush=flush))
        else:
            await upstream.write(Request(context_id=_CONTEXT, close=synthesis_pb2.CloseContext()))
    if feed.idle:
        await upstream.done_writing()


async def _relay(
    request: web.Request,
    upstream: UpstreamCall[Request, Response],
    out: _Out,
    edge: timings_pb2.StageTimings,
    started: float,
    feed: TextFeed,
    converter: _OutputConverter | None = None,
) -> web.StreamResponse:
    """Copy the upstream context to the response as it comes; see the module docstring.
    ``converter``: the model's audio in the format the client asked (``_fit_output``)."""
    writes: _ClientWrites | None = None  # the response's, once it began
    opened_at = time.monotonic()
    # Text that does not look like its declared format (a plain body that is an SSML document):
    # the adapter says so before any audio. An SSE event; else a response header.
    notices: list[stream_pb2.StreamNotice] = []
    try:
        while True:
            try:
                msg = await upstream.read()
                kind = msg.WhichOneof("response") if msg is not None else None
                if msg is not None and kind == "flush_ack":
                    # A piece's audio is all out: the next piece (and at the end the close).
                    if feed.acked(msg.flush_ack.flush_id) and not feed.idle:
                        await _feed(upstream, feed)
                    continue
            except UpstreamError as exc:
                if writes is None:
                    raise _Refused(exc.error) from None
                if out.sse:
                    await writes.write(_sse("error", error_body(exc.error)))
                    return writes.response
                raise _Cut(f"the audio stream failed after it began: {exc.error.reason}") from exc
            if msg is None:
                if writes is None:
                    raise _Refused(errors.BackendUnavailable("the upstream stream ended early"))
                raise _Cut("the upstream stream ended without done")
            if kind == "opened":
                edge.edge_connect_us = round((time.monotonic() - opened_at) * 1e6)
                continue
            if kind == "notice":
                # Before the response: with its headers (or its first SSE events); after it, an
                # SSE event (a plain response has nowhere to say it).
                if msg.notice.kind == stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT:
                    if writes is None:
                        notices.append(msg.notice)
                    elif out.sse:
                        await writes.write(_sse("notice", encode(msg.notice)))
                continue
            if kind == "error":
                error = errors.from_proto(msg.error.error)
                if writes is None:
                    raise _Refused(error)
                if out.sse:
                    await writes.write(_sse("error", error_body(error)))
                    return writes.response
                raise _Cut(f"synthesis failed: {error.reason}: {error}")
            if writes is None:
                first = round((time.monotonic() - started) * 1e6)
                headers = {
                    "Content-Type": out.content_type,
                    "Cache-Control": "no-store",
                    "Server-Timing": f"edge-connect;dur={edge.edge_connect_us / 1000:.3f}, "
                    f"first;dur={first / 1000:.3f}",
                }
                if notices and not out.sse:
                    headers[NOTICE_HEADER] = "; ".join(n.message for n in notices)
                response = web.StreamResponse(headers=headers)
                response.enable_chunked_encoding()
                await response.prepare(request)
                writes = _ClientWrites(response, request.app[GATEWAY].config.runner.write_timeout_s)
                if out.header:
                    await writes.write(out.header)
                if out.sse:
                    for notice in notices:
                        await writes.write(_sse("notice", encode(notice)))
            t0 = time.monotonic()
            if kind == "audio":
                audio_ms = msg.audio.duration_ms
                chunk = msg.audio if converter is None else converter.chunk(msg.audio)
                if chunk is None:
                    pass  # the resampler holds all of it for now
                elif out.sse:
                    await writes.write(_sse("audio", encode(chunk)), audio_ms)
                else:
                    await writes.write(chunk.audio, audio_ms)
            elif kind == "words" and out.sse:
                await writes.write(_sse("words", encode(msg.words)))
            elif kind == "done":
                if converter is not None and (tail := converter.tail()) is not None:
                    # What the resampler held back: the last few milliseconds of the audio.
                    await writes.write(_sse("audio", encode(tail)) if out.sse else tail.audio)
                if out.sse:
                    session_id = await _summary_session_id(upstream)
                    total = add_up([msg.done.timings, edge])
                    total.total_us = round((time.monotonic() - started) * 1e6)
                    ended = msg.done if converter is None else converter.done(msg.done)
                    done = http_pb2.SpeakDone(session_id=session_id, done=ended, timings=total)
                    await writes.write(_sse("done", encode(done)))
                await writes.write_eof()
                return writes.response
            edge.edge_send_us += round((time.monotonic() - t0) * 1e6)
    except _Cut as cut:
        if writes is None:  # not raised before the response began; were it, a status says it
            raise _Refused(errors.InternalError(str(cut))) from None
        return writes.cut(request, cut)
    finally:
        if writes is not None:
            writes.close()


async def _summary_session_id(upstream: UpstreamCall[Request, Response]) -> str:
    """The session id of the upstream stream's summary, which follows the context's ``done``
    (the request was half-closed after its one context); "" if the stream ends without one."""
    with contextlib.suppress(UpstreamError):
        while (msg := await upstream.read()) is not None:
            if msg.WhichOneof("response") == "summary":
                return msg.summary.session_id
    return ""


def _sse(event: str, data: str) -> bytes:
    """One Server-Sent Event (WHATWG HTML, "Server-sent events"): the JSON is one line."""
    return f"event: {event}\ndata: {data}\n\n".encode()
