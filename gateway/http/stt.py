"""POST /v1/stt: a whole audio file in, a JSON transcript out; the body streams into the model.

Content types: ``audio/wav`` (and its aliases), ``audio/flac``, ``audio/ogg``, ``audio/mpeg``
(decoded by libsndfile, see gateway.http.upload), ``audio/basic`` (8 kHz mu-law), and raw
samples (``application/octet-stream`` or ``audio/pcm``) with ``encoding``, ``sample_rate`` and
``channels`` in the query string (given with a file, they must agree with its header: 400
INVALID_CONFIG otherwise). A body sent as ``application/octet-stream``, or with no
Content-Type, and no ``encoding`` or ``sample_rate`` is known by its first bytes: a file of a
kind libsndfile reads is decoded as it is (RFC 9110, 8.3: with no type, or a generic one, a
recipient may examine the data); else it is raw audio with no format, 400 INVALID_CONFIG.
Other query parameters: ``model``, ``language``, ``word_timestamps``. The response is a
``TranscribeFileResponse`` with every final result and the whole stage breakdown, also in
``Server-Timing``; with ``Accept: text/plain``, the transcript alone (gateway/http/accept.py:
an Accept that admits neither is 406 NOT_ACCEPTABLE).

Limits: ``max_upload_bytes`` (413 BODY_TOO_LARGE as soon as it is passed), and as much for
audio over ``max_upload_audio_seconds`` (before any is sent when a WAV or FLAC header declares
that much; else when the audio sent passes it), a body that stalls for the idle timeout (408
IDLE_TIMEOUT), at most ``max_decoders`` compressed uploads decoding at once (503 OVERLOADED
with Retry-After beyond it: each decoder is a process, gateway/http/decoder_pool.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from gateway.http.accept import Form, choose
from gateway.http.common import (
    NOTICE_HEADER,
    admissible,
    admit,
    client_left,
    declared_within,
    error_response,
    expect_handler,
    media_type,
    query_encoding,
    query_flag,
    single_query,
)
from gateway.http.decoder_pool import DecoderPool
from gateway.http.upload import AudioBudget, FrameSplitter
from gateway.state import GATEWAY, Gateway, upstream_metadata
from gateway.upstream.call import UpstreamCall, UpstreamError
from gateway.wire.messages import encode
from gateway.wire.query import STT_QUERY_FIELDS, refuse
from voxwire import errors
from voxwire.audio.codecs import Encoding, InvalidSamples, PcmFormat
from voxwire.audio.convert import FormatConverter
from voxwire.audio.format_check import UNDECODABLE, file_kind
from voxwire.audio.formats import ENCODINGS as CARRIED
from voxwire.audio.formats import PROTO_ENCODINGS, carried_rate, resolve_format
from voxwire.audio.wav import OtherWavFormat, WavHeaderReader
from voxwire.capabilities import rates_of, takes_input
from voxwire.edge.v1 import http_pb2
from voxwire.timings import add_up, server_timing
from voxwire.v1 import audio_pb2, capabilities_pb2, stream_pb2, timings_pb2, transcription_pb2

Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse

_CHUNK_BYTES = 32 * 1024
# A decoder that neither answers nor takes more of the body for this long, while it holds
# all of the body that arrived, has stalled (400 INVALID_AUDIO, the process killed):
# libsndfile decodes a block of any format in milliseconds.
_DECODER_STALL_S = 30.0
# Enough of a body to know it by its signature (file_kind) before reading it as a WAV.
_SIGNATURE_BYTES = 12
_WAV = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}
_SNDFILE = {"audio/flac", "audio/x-flac", "audio/ogg", "audio/mpeg", "audio/mp3", "audio/opus"}
_RAW = {"application/octet-stream", "audio/pcm"}
# Bodies that may be files or raw samples: with no format in the query string, their first
# bytes say which ("" is no Content-Type at all).
_UNTYPED = {"application/octet-stream", ""}
# The kind ``_head`` gives such a body: known by its first bytes (``_untyped``).
_SNIFF = "sniff"
_QUERY = {"model", "language", "word_timestamps", "encoding", "sample_rate", "channels"}

# The response's forms: the whole TranscribeFileResponse, or, asked for by name, the transcript
# alone as a line of text (`curl -H 'Accept: text/plain'`).
_JSON = Form(("application/json",))
_TEXT = Form(("text/plain",), named=True)
# A text/plain transcript's word that the body ended before its WAV or FLAC header's length.
TRUNCATED_HEADER = "Voxwire-Truncated"

# The notice a client gets in its response: its audio does not sound like its declared format.
_FORMAT_SUSPECT = stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT


def _config(query: dict[str, str]) -> transcription_pb2.TranscriptionConfig:
    bad = [
        errors.Violation(name[:40], "unknown query parameter")
        for name in sorted(set(query) - _QUERY)
    ]
    config = transcription_pb2.TranscriptionConfig(
        model=query.get("model", ""),
        language=query.get("language", ""),
        word_timestamps=query_flag(query, "word_timestamps", bad),
    )
    if (encoding := query_encoding(query, bad)) is not None:
        config.audio_format.encoding = encoding
    for name, attr in (("sample_rate", "sample_rate_hz"), ("channels", "channels")):
        if name in query:
            if query[name].isdigit():
                setattr(config.audio_format, attr, int(query[name]))
            else:
                bad.append(errors.Violation(name, "must be a positive integer"))
    refuse(bad)
    return config


async def _body(request: web.Request, idle_s: float, limit: int) -> AsyncIterator[bytes]:
    """The body in chunks as it arrives; raises BodyTooLarge and IdleTimeout."""
    total = 0
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await request.content.readany()
        except TimeoutError:
            raise errors.IdleTimeout(f"the body stalled for {idle_s:g} s") from None
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise errors.BodyTooLarge(f"body exceeds {limit} bytes")
        yield chunk


async def transcribe(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    started = time.monotonic()
    try:
        admission = admit(request, gateway.auth, gateway.registry)
    except errors.VoxwireError as exc:
        gateway.metrics.refused.labels(reason=exc.reason).inc()
        return error_response(exc)
    opened = gateway.metrics.session_opened("http_stt")
    code = "aborted"  # unless a response went out: the client left, or the server stopped
    try:
        try:
            response = await _unless_the_client_leaves(
                request, _transcribe(request, gateway, started)
            )
        except errors.VoxwireError as exc:
            response = error_response(errors.renamed_fields(exc, STT_QUERY_FIELDS.get))
        except ConnectionError as exc:  # the client left: counted "aborted"
            return client_left(request, exc)
        code = str(response.status)
        return response
    finally:
        gateway.metrics.session_closed("http_stt", code, opened)
        admission.permit.release()


# How often an upload looks whether its client is still connected.
_CLIENT_CHECK_S = 0.5


async def _unless_the_client_leaves(
    request: web.Request, work: Coroutine[Any, Any, web.Response]
) -> web.Response:
    """``work``, cancelled (its upstream stream with it) once the client's connection is gone.
    The answer comes at the end, and the body is read at the model's pace: a client that sent
    its file and left was noticed only when the model had heard all of it (a 19 MB FLAC
    abandoned after 4 s kept ``stt_pocketsphinx`` busy, and the key's concurrency taken, for
    100 s more). aiohttp tells a handler that its connection was lost only by cancelling it,
    which it does for every handler or none (``handler_cancellation``; for WebSocket sessions
    it would cut their close handshakes short), and only once it reads the socket again, so
    the upload looks for itself (``_client_gone``). Raises ConnectionResetError then."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait((task,), timeout=_CLIENT_CHECK_S)
            if not task.done() and _client_gone(request):
                raise ConnectionResetError("the connection was lost before the answer")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failed = None if task.cancelled() else task.exception()
    if failed is None:
        return task.result()
    # Raised here holding neither the task nor its failure: the failure's traceback holds this
    # frame, and a frame holding either would be a cycle, freed only by a full collection.
    del task
    try:
        raise failed
    finally:
        del failed


# Linux TCP states (include/net/tcp_states.h): the peer has closed (FIN: CLOSE_WAIT) or
# reset (CLOSE) the connection.
_TCP_PEER_CLOSED = (7, 8)


def _client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed. aiohttp notices a close only while it reads
    the socket, and it stops reading while the upload waits for the model (backpressure): a
    close that has reached the kernel waited behind the unread body. The kernel's view of the
    socket (TCP_INFO's first byte, the state) says it at once. A FIN the client sent while its
    own send buffer still held body bytes is not here yet: TCP delivers it after them, so it
    is seen once the gateway has read them (docs/edge.md, POST /v1/stt)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except (AttributeError, OSError):
        return False  # not TCP (a Unix socket), or no TCP_INFO here: the transport's word
    return state in _TCP_PEER_CLOSED


def _head(
    request: web.Request, gateway: Gateway
) -> tuple[str, transcription_pb2.TranscriptionConfig, audio_pb2.AudioFormat, Form]:
    """What the request's line and headers alone decide: its media type, its config (raw
    audio's format complete and one the contract takes; ``audio/basic``'s the media type's),
    the format its query string stated (a file's own is checked against it), its declared
    length within the limit. Raises what the request is refused for, before its body is
    read, and, for a client that sent ``Expect: 100-continue``, before it is sent
    (``expect``)."""
    kind = media_type(request)
    config = _config(single_query(request))
    stated = audio_pb2.AudioFormat()
    stated.CopyFrom(config.audio_format)
    accept = request.headers.get("Accept")
    form = choose(accept, (_JSON, _TEXT))
    if form is None:
        raise errors.NotAcceptable(
            f"Accept: {(accept or '')[:60]!r} admits nothing POST /v1/stt sends: "
            "application/json (the transcript with its results and timings), or text/plain "
            "(the transcript alone)"
        )
    if kind in _UNTYPED and not (stated.encoding or stated.sample_rate_hz):
        declared_within(request, gateway.config.max_upload_bytes)
        return _SNIFF, config, stated, form
    # No Content-Type and a format in the query: raw samples, as RFC 9110 8.3 lets a recipient
    # assume (application/octet-stream).
    kind = kind or "application/octet-stream"
    if kind not in _WAV | _SNDFILE | _RAW | {"audio/basic"}:
        raise errors.UnsupportedMediaType(
            f"Content-Type {kind or '(none)'!r}: send audio/wav, audio/flac, audio/ogg, "
            "audio/mpeg, audio/basic, or raw samples as application/octet-stream"
        )
    declared_within(request, gateway.config.max_upload_bytes)
    if kind == "audio/basic":
        # Its format is the media type's (8 kHz mu-law, RFC 2046); a query string that says
        # otherwise is caught by _basic, against ``stated``.
        config.audio_format.encoding = audio_pb2.AUDIO_ENCODING_MULAW
        config.audio_format.sample_rate_hz = 8000
    if kind in _RAW | {"audio/basic"}:
        missing = [
            errors.Violation(name, "required for raw audio")
            for name, value in (
                ("encoding", config.audio_format.encoding),
                ("sample_rate", config.audio_format.sample_rate_hz),
            )
            if not value
        ]
        if missing:
            raise errors.InvalidConfig(
                "raw audio needs encoding and sample_rate in the query string",
                violations=missing,
            )
        # The adapter's own check (inference_adapter/stt/config.py), made before the body is
        # read: a body that came whole before the adapter's refusal was judged by its frames
        # instead (channels=5: MISALIGNED_AUDIO for a body of 2-byte samples, not the channels).
        resolve_format(config.audio_format, "config.audio_format", max_channels=2)
    return kind, config, stated, form


def _expect_check(request: web.Request) -> None:
    gateway = request.app[GATEWAY]
    admissible(request, gateway.auth, gateway.registry)
    try:
        _head(request, gateway)
    except errors.VoxwireError as exc:
        raise errors.renamed_fields(exc, STT_QUERY_FIELDS.get) from None


expect = expect_handler(_expect_check)


async def _transcribe(request: web.Request, gateway: Gateway, started: float) -> web.Response:
    kind, config, stated, form = _head(request, gateway)
    body = _body(request, gateway.config.stt.idle_timeout_s, gateway.config.max_upload_bytes)
    upload = _Upload(
        AudioBudget(gateway.config.max_upload_audio_seconds),
        stated,
        model=gateway.pool.model(capabilities_pb2.MODEL_KIND_STT, config.model),
    )
    if kind == _SNIFF:
        audio = _untyped(request, body, config, gateway.decoders, upload)
    elif kind in _RAW | {"audio/basic"}:
        audio = (
            _basic(request, body, config, gateway.decoders, upload)
            if kind == "audio/basic"
            else _fitted(_raw(body, config), config, upload)
        )
    elif kind in _WAV:
        audio = _wav(request, body, config, gateway.decoders, upload)
    else:
        audio = _compressed(request, body, config, gateway.decoders, upload)
    # Closed here, whatever ends the upload: a decoder generator left open (its consumer
    # failed part way) gave its process back to the pool only when the interpreter finalized
    # it, after the error's traceback was dropped.
    async with contextlib.aclosing(audio):
        return await _run(request, gateway, config, audio, started, upload, form)


def _contradictions(
    stated: audio_pb2.AudioFormat, encoding: int, rate: int, channels: int, source: str
) -> None:
    """Raises InvalidConfig where the format a client stated in the query string (``stated``:
    its fields left 0 when not given) contradicts what the file itself says (its ``source``).

    A container's header gives its format, and it wins; a client stating another one has the
    wrong file or the wrong idea of it, and a transcript of audio it did not mean to send is
    worse than an error (this was silently ignored: a WAV of 16 kHz with sample_rate=8000 was
    transcribed at 16 kHz, with no word of it)."""
    found = [
        ("encoding", stated.encoding, encoding, _name(stated.encoding), _name(encoding)),
        ("sample_rate", stated.sample_rate_hz, rate, stated.sample_rate_hz, f"{rate} Hz"),
        ("channels", stated.channels, channels, stated.channels, channels),
    ]
    bad = [
        errors.Violation(
            name,
            f"is {shown}, but {source} says {said or 'an encoding the contract does not carry'}",
        )
        for name, given, value, shown, said in found
        if given and given != value
    ]
    if bad:
        raise errors.InvalidConfig.of(
            "the query string contradicts the audio (a file's format is its own: leave "
            "encoding, sample_rate and channels out; raw samples go as "
            "application/octet-stream)",
            bad,
        )


def _name(encoding: int) -> str | None:
    """An encoding's contract name (``pcm_s16le``, ...); None for one the contract lacks."""
    known = CARRIED.get(encoding)  # type: ignore[call-overload]
    return known.value if known is not None else None


async def _raw(
    body: AsyncIterator[bytes],
    config: transcription_pb2.TranscriptionConfig,
    cut: Callable[[], bool] = lambda: False,
) -> AsyncGenerator[bytes, None]:
    """Whole frames of ``body``. Raises MisalignedAudio when it ends inside a frame, unless
    ``cut()`` says the body was cut short (a WAV whose data chunk did not all arrive): then the
    partial frame is the cut's, and is dropped."""
    splitter = FrameSplitter(_frame_bytes(config.audio_format))
    async for chunk in body:
        frames = splitter.feed(chunk)
        if frames:
            yield frames
    if not cut():
        splitter.finish()


async def _basic(
    request: web.Request,
    body: AsyncIterator[bytes],
    config: transcription_pb2.TranscriptionConfig,
    decoders: DecoderPool,
    upload: _Upload,
) -> AsyncGenerator[bytes, None]:
    """audio/basic: 8 kHz mu-law samples (RFC 2046), or a Sun/NeXT .au file, which is often
    served as audio/basic: its header (".snd", then offset, format, rate, channels) would be
    heard as noise, so such a body goes to libsndfile."""
    first = await anext(body, b"")
    if first[:4] == b".snd":
        async for pcm in _compressed(request, _chain(first, body), config, decoders, upload):
            yield pcm
        return
    mulaw = audio_pb2.AUDIO_ENCODING_MULAW
    _contradictions(upload.stated, mulaw, 8000, 1, "audio/basic (8 kHz mu-law, one channel)")
    async for frames in _fitted(_raw(_chain(first, body), config), config, upload):
        yield frames


async def _fitted(
    audio: AsyncIterator[bytes], config: transcription_pb2.TranscriptionConfig, upload: _Upload
) -> AsyncGenerator[bytes, None]:
    """Raw samples (whole frames of ``config.audio_format``, one the contract carries: _head
    checked it) as they are when the model takes them, else mixed down to mono PCM16 at a rate
    it takes (``voxwire.audio.convert``), the config's format made that before the first
    chunk goes. A server that does not resample (16 kHz PCM16 mono only) refused 8 kHz
    mu-law (``audio/basic``: UNSUPPORTED_ENCODING of an ``encoding`` field the client never
    gave), as it did a WAV of it before it was decoded."""
    fmt = config.audio_format
    channels = max(1, fmt.channels)
    if upload.takes(fmt.encoding, fmt.sample_rate_hz, channels):
        async for frames in audio:
            yield frames
        return
    source = PcmFormat(CARRIED[fmt.encoding], fmt.sample_rate_hz, channels)
    rate = carried_rate(fmt.sample_rate_hz, upload.rates())
    converter = FormatConverter(source, PcmFormat(Encoding.PCM_S16LE, rate), "bulk")  # an upload
    fmt.encoding, fmt.sample_rate_hz, fmt.channels = audio_pb2.AUDIO_ENCODING_PCM_S16LE, rate, 1
    try:
        async for frames in audio:
            if out := converter.convert(frames):
                yield out
        if tail := converter.flush():
            yield tail
    except InvalidSamples:
        raise errors.InvalidAudio("the audio has NaN or infinite samples") from None


def _frame_bytes(fmt: audio_pb2.AudioFormat) -> int:
    """Bytes per frame of the format an upload's audio goes upstream in (the adapter checks
    the format itself: an unknown encoding counts as 16-bit here)."""
    encoding = CARRIED.get(fmt.encoding, Encoding.PCM_S16LE)
    return encoding.bytes_per_sample * max(1, fmt.channels)


@dataclass(slots=True)
class _Upload:
    """One upload's audio limit, and what the body's reading found out that the response
    reports."""

    budget: AudioBudget
    # The format the query string states (fields left 0 when not given): a file's header
    # must agree with it (_contradictions).
    stated: audio_pb2.AudioFormat
    truncated: bool = False  # the body ended before the audio its header declares
    # What the adapters said of the model (None: nothing): a file is decoded to a format it
    # takes (a server that does not resample, 16 kHz mono only, refused a 44.1 kHz or a
    # stereo WAV, with a sample_rate field an upload of a file cannot change).
    model: capabilities_pb2.ModelCapabilities | None = None

    def takes(self, encoding: audio_pb2.AudioEncoding.ValueType, rate: int, channels: int) -> bool:
        return self.model is None or takes_input(self.model, encoding, rate, channels)

    def rates(self) -> tuple[int, ...]:
        """The rates decoded audio (PCM16) may go at: the model's, or the contract's (empty)."""
        if self.model is None:
            return ()
        return rates_of(self.model.input_formats, audio_pb2.AUDIO_ENCODING_PCM_S16LE)


async def _untyped(
    request: web.Request,
    body: AsyncIterator[bytes],
    config: transcription_pb2.TranscriptionConfig,
    decoders: DecoderPool,
    upload: _Upload,
) -> AsyncGenerator[bytes, None]:
    """A body of no stated format (``application/octet-stream`` or no Content-Type, no
    ``encoding`` or ``sample_rate``): a file, by its signature, goes as the file it is (HTTP
    clients send files so: ``requests`` and ``curl -X POST -T`` name no type, many an SDK
    octet-stream); anything else is raw audio that says nothing of its format, and is refused
    as it was before any byte was read. An MPEG frame header counts here, unlike on a raw
    stream: raw samples could start so, but samples with no format can be nothing else."""
    head = await _first(body, _SIGNATURE_BYTES)
    body = _chain(head, body)
    riff = head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"
    if riff or file_kind(head) is not None or _mpeg_frame(head):
        async for pcm in _wav(request, body, config, decoders, upload):
            yield pcm
        return
    raise errors.InvalidConfig(
        "raw audio needs encoding and sample_rate in the query string (the body's first bytes "
        "are not those of an audio file: WAV, FLAC, Ogg, MP3, AU, AIFF or CAF)",
        violations=[
            errors.Violation(name, "required for raw audio") for name in ("encoding", "sample_rate")
        ],
    )


async def _first(body: AsyncIterator[bytes], size: int) -> bytes:
    """At least ``size`` bytes of ``body`` (all of it when shorter), as they came."""
    head = b""
    async for chunk in body:
        head += chunk
        if len(head) >= size:
            break
    return head


async def _wav(
    request: web.Request,
    body: AsyncIterator[bytes],
    config: transcription_pb2.TranscriptionConfig,
    decoders: DecoderPool,
    upload: _Upload,
) -> AsyncGenerator[bytes, None]:
    """WAV of a contract encoding goes through as it is; other WAV (24-bit, ...) to libsndfile,
    and so does another kind of file sent as audio/wav (FLAC, Ogg, MP3, ...: libsndfile tells
    them by their content, as it does a WAV sent as audio/flac)."""
    head = await _first(body, _SIGNATURE_BYTES)
    body = _chain(head, body)
    if file_kind(head) is not None or _mpeg_frame(head):
        async for pcm in _compressed(request, body, config, decoders, upload):
            yield pcm
        return
    reader = WavHeaderReader()
    first = b""
    fed = bytearray()  # the body up to the end of its header (bounded by the reader's limit)
    other = False  # a WAV of samples the contract does not carry (24-bit, ...)
    async for chunk in body:
        fed += chunk
        try:
            first = reader.feed(chunk)
        except OtherWavFormat:
            other = True
            break
        if reader.format is not None:
            break
    if reader.format is None and not other:
        raise errors.InvalidAudio("the WAV file ends inside its header")
    wav = reader.format
    if wav is None or not upload.takes(PROTO_ENCODINGS[wav.encoding], wav.rate, wav.channels):
        # libsndfile decodes it, mixes it down and resamples it: samples the contract does not
        # carry, or that the model does not take as they are.
        async for pcm in _compressed(
            request,
            _chain(bytes(fed), body),
            config,
            decoders,
            upload,
            expected_bytes=reader.data_end,
        ):
            yield pcm
        return
    fmt = config.audio_format
    fmt.encoding = PROTO_ENCODINGS[wav.encoding]
    fmt.sample_rate_hz = wav.rate
    fmt.channels = wav.channels
    header = "the WAV header"
    _contradictions(upload.stated, fmt.encoding, fmt.sample_rate_hz, fmt.channels, header)
    left = reader.data_bytes
    if left is not None:
        upload.budget.declared(left / (_frame_bytes(fmt) * max(1, fmt.sample_rate_hz)))

    async def samples() -> AsyncIterator[bytes]:
        """The data chunk's bytes: chunks after it (LIST, ...) are read and dropped, never
        played to the model as noise."""
        nonlocal left
        async for chunk in _chain(first, body):
            if left is None:
                yield chunk
            elif left > 0:
                yield chunk[:left]
                left -= min(left, len(chunk))
        upload.truncated = bool(left)

    # The header said float: NaN in it is the file's fault, so say so here. Passed on, the
    # adapter would refuse it with the hint for a raw stream (16-bit PCM declared as float).
    floats = fmt.encoding == audio_pb2.AUDIO_ENCODING_PCM_F32LE
    async for frames in _raw(samples(), config, cut=lambda: upload.truncated):
        if floats and not np.isfinite(np.frombuffer(frames, "<f4")).all():
            raise errors.InvalidAudio("the WAV's float samples include NaN or infinity")
        yield frames


async def _compressed(
    request: web.Request,
    body: AsyncIterator[bytes],
    config: transcription_pb2.TranscriptionConfig,
    decoders: DecoderPool,
    upload: _Upload,
    *,
    expected_bytes: int | None = None,
) -> AsyncGenerator[bytes, None]:
    """libsndfile in a decoder process of the pool (gateway/http/decoder_child.py), fed the
    body as it arrives; its blocks come back as the model side takes them (the pipes' flow
    control: the decoder waits while the model is slower).

    ``expected_bytes``: where the audio ends by its header (a WAV's data chunk), when known; a
    body that ends before it is reported truncated (libsndfile decodes what is there)."""
    head = await _first(body, _SIGNATURE_BYTES)
    body = _chain(head, body)
    what = file_kind(head)
    if what in UNDECODABLE:
        raise errors.UnsupportedMediaType(
            f"the body is {what}, which the gateway does not decode: send WAV, FLAC, Ogg "
            "(Opus or Vorbis), MP3, AU, AIFF or CAF, or raw samples as "
            "application/octet-stream with encoding and sample_rate"
        )
    decoder = await decoders.acquire()
    blocks = decoder.decode(
        body,
        request.content_length,
        upload.budget.max_seconds,
        stall_s=_DECODER_STALL_S,
        rates=upload.rates(),
    )
    try:
        configured = False
        async for decoded, pcm in blocks:
            if not configured:
                _contradictions(
                    upload.stated,
                    decoded.source_encoding,
                    decoded.source_rate,
                    decoded.source_channels,
                    "the file's header",
                )
                fmt = config.audio_format
                fmt.encoding, fmt.sample_rate_hz, fmt.channels = (
                    audio_pb2.AUDIO_ENCODING_PCM_S16LE,
                    decoded.rate,
                    1,
                )
                configured = True
            yield pcm
        short = expected_bytes is not None and decoder.received < expected_bytes
        upload.truncated = decoder.truncated or short
    finally:
        await blocks.aclose()  # its feeder stopped before the decoder is kept or killed
        await decoders.release(decoder)


async def _run(
    request: web.Request,
    gateway: Gateway,
    config: transcription_pb2.TranscriptionConfig,
    audio: AsyncIterator[bytes],
    started: float,
    upload: _Upload,
    form: Form = _JSON,
) -> web.Response:
    """The first audio fixes the format; then the stream to the adapter, the body pumped in
    while a reader collects the finals, then close and the summary."""
    first = await anext(audio, b"")
    lease = gateway.pool.choose()
    call = lease.adapter.transcription().StreamingTranscribe(metadata=upstream_metadata(request))
    upstream: UpstreamCall[Request, Response] = UpstreamCall(
        gateway.pool, lease, call, write_timeout=gateway.config.upload_write_timeout_seconds
    )
    edge = timings_pb2.StageTimings()
    finals: list[transcription_pb2.TranscriptResult] = []
    summary: list[transcription_pb2.TranscriptionSummary] = []
    notices: list[stream_pb2.StreamNotice] = []  # about the audio: the client's to know
    # The model the adapter chose: the request's, or the default one when it named none.
    model = config.model

    async def collect() -> None:
        nonlocal model
        while (msg := await upstream.read()) is not None:
            kind = msg.WhichOneof("response")
            if kind == "result" and msg.result.is_final:
                finals.append(msg.result)
            elif kind == "summary":
                summary.append(msg.summary)
            elif kind == "notice" and msg.notice.kind == _FORMAT_SUSPECT:
                notices.append(msg.notice)
            elif kind == "started":
                edge.edge_connect_us = round((time.monotonic() - t_open) * 1e6)
                model = msg.started.model or model

    t_open = time.monotonic()
    reader = asyncio.create_task(collect(), name="stt-upload-results")
    try:
        await upstream.write(Request(config=config))
        step = gateway.config.stt.max_frame_bytes
        fmt = config.audio_format
        upload.budget.start(_frame_bytes(fmt) * fmt.sample_rate_hz)
        async for chunk in _chain(first, audio):
            upload.budget.sent(len(chunk))
            for pos in range(0, len(chunk), step):
                await upstream.write(Request(audio=chunk[pos : pos + step]))
        await upstream.write(Request(close=transcription_pb2.CloseStream()))
        await upstream.done_writing()
        await reader
    except UpstreamError as exc:
        raise exc.error from None
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        upstream.cancel()
        # Its failure, raised through this frame, holds the frame in its traceback: a frame
        # holding the task would be a reference cycle.
        del reader
    if not summary:
        raise errors.BackendUnavailable("the adapter ended the stream without its summary")
    timings = add_up([summary[0].timings, edge])
    timings.total_us = round((time.monotonic() - started) * 1e6)
    reply = http_pb2.TranscribeFileResponse(
        session_id=summary[0].session_id,
        model=model,
        transcript=" ".join(r.transcript for r in finals if r.transcript),
        results=finals,
        audio_ms=summary[0].audio_ms,
        timings=timings,
        truncated=upload.truncated,
        notices=notices,
    )
    headers = {"Server-Timing": server_timing(timings)}
    if form is _TEXT:
        # The transcript alone; what the JSON would have said of the input goes in headers.
        if notices:
            headers[NOTICE_HEADER] = "; ".join(n.message for n in notices)
        if upload.truncated:
            headers[TRUNCATED_HEADER] = "true"
        return web.Response(text=reply.transcript + "\n", headers=headers)
    return web.Response(text=encode(reply), content_type="application/json", headers=headers)


def _mpeg_frame(head: bytes) -> bool:
    """Whether ``head`` starts with an MPEG audio frame header (an MP3 without an ID3 tag, as
    libsndfile writes them): 11 sync bits, then a version and a layer that are not reserved
    (ISO/IEC 11172-3, 2.4.1.3). Only for a body that claims to be a WAV: raw 16-bit samples
    start so often enough (a quiet negative sample) that a raw stream is never judged by it."""
    return (
        len(head) >= 2
        and head[0] == 0xFF
        and head[1] & 0xE0 == 0xE0
        and head[1] & 0x18 != 0x08  # version bits 01: reserved
        and head[1] & 0x06 != 0  # layer bits 00: reserved
    )


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
