"""A minimal voxwire.v1 server on toy models: the starting point for serving a model of your own.

It keeps every promise of docs/contract.md that applies to what it advertises, without Triton:
- STT, ``BeepDetector``: each burst of sound (10 ms frames above an RMS threshold) becomes one
  word, "beep", with honest timings; a burst ends after 300 ms of quiet, or at a finalize/close.
- TTS, ``ToneVoice``: each word of text becomes 150 ms of a 440 Hz tone and 50 ms of silence.
Both take and give PCM_S16LE, 16 kHz, mono only, and Capabilities says exactly that: what
STT_MODEL and TTS_MODEL list is what the server accepts. Swap the two toy classes for your model,
keep the rest, and check it with the conformance kit:

    python examples/minimal_server.py --port 50071   # 50051 is make run's adapter
    python -m voxwire.conformance --target 127.0.0.1:50071
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from voxwire import errors
from voxwire.audio import codecs
from voxwire.audio.format_check import FormatCheck
from voxwire.audio.formats import ENCODINGS
from voxwire.errors import Violation
from voxwire.ssml import looks_like_ssml
from voxwire.stream_write import drop_until_pause
from voxwire.timings import StageClock, trailers
from voxwire.v1 import audio_pb2, capabilities_pb2, capabilities_pb2_grpc, stream_pb2
from voxwire.v1 import synthesis_pb2 as tts
from voxwire.v1 import transcription_pb2 as stt
from voxwire.wire import FIXED_WINDOW

# -- what the server offers: Capabilities must say exactly what the code below does ------------
RATE = 16000
PCM16 = audio_pb2.AUDIO_ENCODING_PCM_S16LE
ONE_FORMAT = capabilities_pb2.FormatSupport(encoding=PCM16, sample_rates_hz=[RATE], max_channels=1)
STT_MODEL = capabilities_pb2.ModelCapabilities(
    name="toy_beep",
    kind=capabilities_pb2.MODEL_KIND_STT,
    languages=["en-US"],
    input_formats=[ONE_FORMAT],
    features=capabilities_pb2.Features(word_timestamps=True),
    native_sample_rate_hz=RATE,
    is_default=True,
    ready_replicas=1,
)
TTS_MODEL = capabilities_pb2.ModelCapabilities(
    name="toy_tone",
    kind=capabilities_pb2.MODEL_KIND_TTS,
    languages=["en-US"],
    voices=["tone"],
    output_formats=[ONE_FORMAT],
    features=capabilities_pb2.Features(word_timestamps=True),
    native_sample_rate_hz=RATE,
    is_default=True,
    ready_replicas=1,
)
SERVICES = ("voxwire.v1.Transcription", "voxwire.v1.Synthesis", "voxwire.v1.Capabilities")
LIMITS = capabilities_pb2.Limits(
    max_chunk_bytes=65536, max_contexts_per_stream=8, max_pending_text_bytes=16384
)
# The largest serialized message read: max_chunk_bytes + 64 KiB for the rest of the message (a
# config); a larger one is refused unparsed, so parsing never costs more (contract: Limits).
MAX_MESSAGE_BYTES = LIMITS.max_chunk_bytes + 64 * 1024


# -- the toy models: replace these two classes with yours ----------------------------------------
class BeepDetector:
    """Toy STT. ``feed`` takes mono float samples at ``rate``; ``feed`` and ``flush`` return
    final results; offsets are ms of audio received."""

    LOUD, GAP_MS = 0.02, 300

    def __init__(self, word_timestamps: bool, rate: int = RATE) -> None:
        self.word_timestamps = word_timestamps
        self.rate, self.frame = rate, rate // 100  # 10 ms frames
        self.received = 0  # samples received
        self.pending = np.zeros(0)  # samples not yet in a whole 10 ms frame
        self.ms = 0  # audio analysed (whole frames)
        self.start: int | None = None  # where the open burst began
        self.last_loud = 0  # where its last loud frame ended
        self.utterances = 0
        # A stream continuing an earlier one (docs/contract.md, "Resuming"; this server claims
        # ServerFeatures.stream_offsets): positions shifted by the offset, ids going on.
        self.offset_ms = 0
        self.first_index = 0

    def continues(self, config: stt.TranscriptionConfig) -> None:
        self.offset_ms, self.first_index = config.stream_offset_ms, config.first_utterance_index

    @property
    def position_ms(self) -> int:
        """The position of the end of the audio received, in the stream's positions."""
        return self.offset_ms + self.received * 1000 // self.rate

    def feed(self, samples: np.ndarray) -> list[stt.TranscriptResult]:
        self.received += len(samples)
        self.pending = np.concatenate([self.pending, samples])
        results = []
        while len(self.pending) >= self.frame:
            frame, self.pending = self.pending[: self.frame], self.pending[self.frame :]
            self.ms += 10
            if np.sqrt(np.mean(frame**2)) > self.LOUD:
                self.start = self.ms - 10 if self.start is None else self.start
                self.last_loud = self.ms
            elif self.start is not None and self.ms - self.last_loud >= self.GAP_MS:
                results += self.flush(forced=False)
        return results

    def flush(self, forced: bool) -> list[stt.TranscriptResult]:
        """The open burst as a final result (``forced``: by a finalize or the close)."""
        if self.start is None:
            return []
        start, end, self.start = self.start, self.last_loud, None
        start, end = start + self.offset_ms, end + self.offset_ms
        index = self.first_index + self.utterances
        self.utterances += 1
        word = stt.Word(word="beep", start_ms=start, end_ms=end, confidence=1.0)
        return [
            stt.TranscriptResult(
                utterance_id=f"u{index}",
                is_final=True,
                transcript="beep",
                confidence=1.0,
                start_ms=start,
                end_ms=end,
                from_finalize=forced,
                words=[word] if self.word_timestamps else [],
            )
        ]


class ToneVoice:
    """Toy TTS: one 200 ms chunk (a 150 ms tone, then 50 ms of silence) per word, as mono
    float samples at ``rate`` (the toy makes any rate; a model with one native rate lists only
    that rate, or resamples with ``voxwire.audio.resample.StreamResampler``).

    ``speak`` returns, per word, ``(word, samples)`` or ``(word, samples, voiced)``: ``voiced``
    is how many of the samples are the word itself (the rest is the pause after it), which is
    where its word timestamp ends; without it the word spans its whole chunk."""

    TONE_MS = 150

    def speak(self, text: str, rate: int = RATE) -> list[tuple[str, np.ndarray, int]]:
        t = np.arange(rate * self.TONE_MS // 1000) / rate
        word = np.concatenate([0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(rate // 20)])
        return [(w, word, len(t)) for w in text.split()]


# -- the contract around them ---------------------------------------------------------------------
class Reader:
    """Client messages, size-checked and parsed here (so undecodable bytes are INVALID_MESSAGE,
    not a gRPC INTERNAL); every wait is bounded by the idle timeout."""

    def __init__(self, raw: AsyncIterator[bytes], message: Any, idle_s: float) -> None:
        self.raw, self.message, self.idle_s = aiter(raw), message, idle_s

    async def next(self) -> Any:
        """The next message, or None at half-close. Raises IdleTimeout, ChunkTooLarge,
        InvalidMessage."""
        try:
            async with asyncio.timeout(self.idle_s):
                data = await anext(self.raw)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise errors.IdleTimeout(f"no message for {self.idle_s:g} s") from None
        return self.parse(data)

    async def drop(self) -> None:
        """Read and drop what the client still sends, up to its half-close, a pause in its
        messages or 0.5 s (voxwire.stream_write; contract: a failed stream's status waits
        while the client still sends). A grpc.aio client whose write is under way when the
        status arrives loses the status to INTERNAL (grpc/grpc#36066); one that sends a file
        as fast as the stream takes it is always writing."""
        await drop_until_pause(self._next_size)

    async def _next_size(self) -> int | None:
        try:
            return len(await anext(self.raw))
        except StopAsyncIteration:
            return None

    def parse(self, data: bytes) -> Any:
        """One message: refused unparsed when over MAX_MESSAGE_BYTES, then parsed."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise errors.ChunkTooLarge(f"a message of {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
        try:
            msg = self.message.FromString(data)
        except DecodeError:
            raise errors.InvalidMessage("the message does not parse") from None
        if msg.WhichOneof("request") is None:
            raise errors.InvalidMessage("empty message")
        return msg


def check_config(
    name: str,
    fmt: audio_pb2.AudioFormat,
    language: str,
    field: str,
    model: capabilities_pb2.ModelCapabilities,
    asked: dict[str, tuple[bool, str]],
    voice: str = "",
) -> codecs.PcmFormat:
    """The stream's audio format, checked against what ``model`` advertises (Capabilities is
    the one source: list a format there and it is accepted here). ``asked`` maps a config
    field to (whether the client asked for it, the ``Features`` field that offers it). Raises
    UnknownModel, UnsupportedEncoding, UnsupportedSampleRate or InvalidConfig (every bad field
    at once; asking for a feature the model does not advertise is one, never silently
    dropped)."""
    if name not in ("", model.name):
        raise errors.UnknownModel(
            f"no model {name!r}", violations=[Violation(f"{field}.model", model.name)]
        )
    where = f"{field}.{'audio' if field == 'config' else 'output'}_format"
    offered = [
        f
        for f in (model.input_formats if field == "config" else model.output_formats)
        if f.encoding == fmt.encoding and f.encoding in ENCODINGS
    ]
    if not offered:
        raise errors.UnsupportedEncoding(
            f"{model.name} does not take this encoding",
            violations=[Violation(f"{where}.encoding", "not advertised")],
        )
    rates = sorted({rate for f in offered for rate in f.sample_rates_hz})
    if fmt.sample_rate_hz not in rates:
        raise errors.UnsupportedSampleRate(
            f"rates {rates} only", violations=[Violation(f"{where}.sample_rate_hz", str(rates))]
        )
    channels = max(f.max_channels or 1 for f in offered)
    if fmt.channels > channels:
        raise errors.UnsupportedSampleRate(
            f"at most {channels} channel(s)",
            violations=[Violation(f"{where}.channels", f"at most {channels}")],
        )
    bad = [
        Violation(f"{field}.{name}", f"{model.name} does not advertise {feature}")
        for name, (on, feature) in asked.items()
        if on and not getattr(model.features, feature)
    ]
    if language not in ("", *model.languages):
        bad.append(Violation(f"{field}.language", f"one of {list(model.languages)}"))
    if voice not in ("", *model.voices):
        bad.append(Violation(f"{field}.voice", f"one of {list(model.voices)}"))
    if bad:
        raise errors.InvalidConfig.of("invalid config", bad)
    return codecs.PcmFormat(ENCODINGS[fmt.encoding], fmt.sample_rate_hz, fmt.channels or 1)


class StreamService:
    """What both streaming services share: reading with the idle timeout, and how a stream ends
    (OK or not, with the timing trailers; contract: Errors, Timings)."""

    request: Any = None  # the request message class

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s

    def reader(self, requests: AsyncIterator[bytes]) -> Reader:
        return Reader(requests, self.request, self.idle_s)

    def finish(self, context: Any, clock: StageClock) -> None:
        context.set_trailing_metadata(trailers(clock.to_proto()))

    async def fail(
        self, context: Any, error: errors.VoxwireError, clock: StageClock, reader: Reader
    ) -> None:
        """End the stream with the error's rich status and the timing trailers, once what the
        client still sends is read (``Reader.drop``)."""
        await reader.drop()
        details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
        metadata = (details, *trailers(clock.to_proto()))
        await context.abort(error.code, error.message, trailing_metadata=metadata)


class Transcription(StreamService):
    """voxwire.v1.Transcription: config, then audio and controls, then close (contract order)."""

    request = stt.StreamingTranscribeRequest
    format_check = FormatCheck  # a stream's check of its audio against its declared format

    async def stream(self, requests: AsyncIterator[bytes], context: Any) -> None:
        clock, reader = StageClock(), self.reader(requests)
        try:
            first = await reader.next()
            if first is None or first.WhichOneof("request") != "config":
                raise errors.ConfigRequired("the first message must be the config")
            model = self.start(first.config)
            model.continues(first.config)
            session_id = uuid.uuid4().hex  # in started and the summary (logs, support)
            await context.write(self.started(first.config, session_id))
            fmt = codecs.PcmFormat(
                ENCODINGS[first.config.audio_format.encoding],
                first.config.audio_format.sample_rate_hz,
                first.config.audio_format.channels or 1,
            )
            # Audio that does not sound like its declared format (a file, G.711 declared as PCM,
            # ...) is told to the client, not transcribed as static in silence (docs/contract.md,
            # "Input that does not match its declared format").
            check = self.format_check(fmt)
            while (msg := await reader.next()) is not None and msg.WhichOneof("request") != "close":
                for response in self.handle(msg, model, fmt, check):
                    await context.write(response)
            # close or half-close: pending audio becomes a final result, then the summary.
            for result in model.flush(forced=True):
                await context.write(stt.StreamingTranscribeResponse(result=result))
            summary = stt.TranscriptionSummary(
                session_id=session_id,
                audio_ms=model.position_ms,
                utterances=model.utterances,
                timings=clock.to_proto(),
            )
            await context.write(stt.StreamingTranscribeResponse(summary=summary))
            self.finish(context, clock)
        except errors.VoxwireError as exc:
            await self.fail(context, exc, clock, reader)

    def start(self, config: stt.TranscriptionConfig) -> BeepDetector:
        asked = {  # config field: (asked for, the feature that Capabilities advertises)
            "interim_results": (config.interim_results, "interim_results"),
            "word_timestamps": (config.word_timestamps, "word_timestamps"),
            "endpointing": (config.HasField("endpointing"), "endpointing"),
            "vocabulary": (bool(config.vocabulary), "vocabulary"),
        }
        fmt = check_config(
            config.model, config.audio_format, config.language, "config", STT_MODEL, asked
        )
        return BeepDetector(config.word_timestamps, fmt.sample_rate_hz)

    def started(
        self, config: stt.TranscriptionConfig, session_id: str
    ) -> stt.StreamingTranscribeResponse:
        started = stt.TranscriptionStarted(
            session_id=session_id,
            # The client's request_id, or one of the server's (the proto: "or a generated one").
            request_id=config.request_id or f"req-{uuid.uuid4().hex[:16]}",
            model=STT_MODEL.name,
            model_sample_rate_hz=STT_MODEL.native_sample_rate_hz,
        )
        return stt.StreamingTranscribeResponse(started=started)

    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: BeepDetector,
        fmt: codecs.PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        """Responses for one message; ``fmt`` is the stream's audio format, ``check`` its
        format check."""
        Resp, kind = stt.StreamingTranscribeResponse, msg.WhichOneof("request")
        if kind == "config":
            raise errors.ConfigAlreadySet("config was already sent")
        if kind == "audio":
            if len(msg.audio) > LIMITS.max_chunk_bytes:
                raise errors.ChunkTooLarge(f"over {LIMITS.max_chunk_bytes} bytes")
            if len(msg.audio) % fmt.bytes_per_frame:
                raise errors.MisalignedAudio(f"not whole {fmt.bytes_per_frame}-byte frames")
            try:  # any advertised encoding to mono float samples (contract: Audio)
                samples = codecs.decode(msg.audio, fmt)
            except codecs.InvalidSamples as exc:
                raise errors.InvalidAudio(str(exc)) from None
            suspect = check.audio(msg.audio, samples) if check.listening else None
            notice = [] if suspect is None else [Resp(notice=suspect_notice(suspect))]
            return [*notice, *(Resp(result=r) for r in model.feed(samples))]
        if kind == "finalize":  # results for every byte so far, then the ack
            done = stt.FinalizeAck(finalize_id=msg.finalize.finalize_id, audio_ms=model.position_ms)
            return [*(Resp(result=r) for r in model.flush(forced=True)), Resp(finalize_ack=done)]
        if kind == "update_config":  # the toy has nothing to update: refuse, never ignore
            update = msg.update_config
            asked = {
                "endpointing": update.HasField("endpointing"),
                "vocabulary": bool(update.vocabulary),
            }
            bad = [
                Violation(f"update_config.{name}", "not supported")
                for name, on in asked.items()
                if on
            ]
            ack = stt.UpdateConfigAck(update_id=update.update_id, accepted=not bad)
            if bad:
                ack.error.CopyFrom(errors.InvalidConfig.of("update rejected", bad).to_proto())
            return [Resp(update_config_ack=ack)]
        return []  # keep_alive: reading it reset the idle timer


def suspect_notice(message: str) -> stream_pb2.StreamNotice:
    return stream_pb2.StreamNotice(
        kind=stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT, message=message
    )


class SynthesisStream:
    """One StreamingSynthesize stream: its contexts, each {text not yet spoken, seq, samples,
    ms}."""

    def __init__(self, voice: ToneVoice) -> None:
        self.voice = voice
        self.contexts: dict[str, dict[str, Any]] = {}
        self.opened = 0
        self.session_id = uuid.uuid4().hex
        self.audio_ms = 0  # sent on the stream, every context's

    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        """Responses for one message. Raises the VoxwireError that ends its context."""
        cid, kind, ctx = (
            msg.context_id,
            msg.WhichOneof("request"),
            self.contexts.get(msg.context_id),
        )
        Resp = tts.StreamingSynthesizeResponse
        if kind == "open":
            if ctx is not None:
                raise errors.ContextAlreadyOpen(f"{cid!r} is already open")
            if len(self.contexts) >= LIMITS.max_contexts_per_stream:
                raise errors.TooManyContexts(f"at most {LIMITS.max_contexts_per_stream} contexts")
            return self.open(cid, msg.open)
        if ctx is None:
            error = errors.ContextNotOpen if kind == "append" else errors.UnknownContext
            raise error(f"{cid!r} is not open")
        if kind == "append":
            size = len(msg.append.text.encode())
            if size > LIMITS.max_chunk_bytes:
                raise errors.ChunkTooLarge(f"over {LIMITS.max_chunk_bytes} bytes")
            if size + len(ctx["text"].encode()) > LIMITS.max_pending_text_bytes:
                raise errors.TextTooLarge(f"over {LIMITS.max_pending_text_bytes} unspoken bytes")
            # Complete sentences (up to ., ! or ? and a space, or a line break) are spoken at
            # once; the rest waits for more text, a flush or the close.
            notice = self.text_notice(cid, ctx, msg.append.text)
            text = ctx["text"] + msg.append.text
            match = re.match(r"(.*(?:[.!?]\s|\n))?(.*)", text, re.S)
            ready, ctx["text"] = match.groups("") if match else ("", text)
            return [*notice, *self.speak(cid, ctx, ready)]
        if kind == "cancel":  # nothing for the context follows the ack
            del self.contexts[cid]
            return [
                Resp(
                    context_id=cid, cancelled=tts.ContextCancelled(last_sequence_number=ctx["seq"])
                )
            ]
        out = self.speak(cid, ctx, ctx["text"])  # flush or close: speak what is left
        ctx["text"] = ""
        if kind == "flush":
            ack = tts.FlushAck(flush_id=msg.flush.flush_id, last_sequence_number=ctx["seq"])
            return [*out, Resp(context_id=cid, flush_ack=ack)]
        del self.contexts[cid]  # close
        done = tts.ContextDone(last_sequence_number=ctx["seq"], audio_ms=ctx["ms"])
        return [*out, Resp(context_id=cid, done=done)]

    def text_notice(self, cid: str, ctx: dict[str, Any], text: str) -> list[Any]:
        """Plain text that opens an SSML document is spoken as declared, markup and all: the
        client is told why, once, before the context's audio (docs/contract.md, "Input that
        does not match its declared format")."""
        if ctx["text_seen"] or not text.strip():
            return []
        ctx["text_seen"] = True
        if ctx["ssml"] or not looks_like_ssml(text):
            return []
        said = "the text opens an SSML document but the context is plain text"
        return [tts.StreamingSynthesizeResponse(context_id=cid, notice=suspect_notice(said))]

    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        asked = {  # config field: (asked for, the feature that Capabilities advertises)
            "text_format": (config.text_format == tts.TEXT_FORMAT_SSML, "ssml"),
            "pronunciations": (bool(config.pronunciations), "pronunciation"),
            "word_timestamps": (config.word_timestamps, "word_timestamps"),
        }
        fmt = check_config(
            config.model,
            config.output_format,
            config.language,
            "open",
            TTS_MODEL,
            asked,
            voice=config.voice,
        )
        # A context continuing an earlier one (docs/contract.md, "Resuming"; this server
        # claims ServerFeatures.synthesis_offsets and synthesis_skip_audio): its timeline
        # starts at timeline_offset_ms, its numbering at first_sequence_number, and the first
        # skip_audio_ms of its audio, which the client has, is not sent.
        skip = config.skip_audio_ms * fmt.sample_rate_hz // 1000
        self.contexts[cid] = {
            "text": "",
            "seq": max(1, config.first_sequence_number) - 1,
            "offset": config.timeline_offset_ms,
            "samples": 0,  # audio made (skipped included), in samples: the timeline's source
            "skip": skip,  # samples still to skip
            "ms": config.timeline_offset_ms + skip * 1000 // fmt.sample_rate_hz,  # sent to
            "words": config.word_timestamps,
            "format": fmt,
            "ssml": config.text_format == tts.TEXT_FORMAT_SSML,
            "text_seen": False,
        }
        self.opened += 1
        opened = tts.ContextOpened(
            model=TTS_MODEL.name,
            voice=config.voice or TTS_MODEL.voices[0],
            model_sample_rate_hz=TTS_MODEL.native_sample_rate_hz,
        )
        return [tts.StreamingSynthesizeResponse(context_id=cid, opened=opened)]

    def speak(self, cid: str, ctx: dict[str, Any], text: str) -> list[Any]:
        out = []
        fmt = ctx["format"]
        rate = fmt.sample_rate_hz
        for spoken in self.voice.speak(text, rate):
            word, samples = spoken[0], spoken[1]
            voiced = spoken[2] if len(spoken) > 2 else len(samples)
            # The timeline counts samples, not rounded chunk durations: a chunk of 1001 samples
            # is 62.5625 ms, and adding up 62s would fall behind the audio. Each chunk starts
            # where the one before ended (they tile) and ends at its last sample's ms.
            start = ctx["ms"]
            word_end = ctx["offset"] + (ctx["samples"] + voiced) * 1000 // rate
            ctx["samples"] += len(samples)
            end = ctx["offset"] + ctx["samples"] * 1000 // rate
            if ctx["skip"]:  # the client has this audio (skip_audio_ms)
                drop = min(ctx["skip"], len(samples))
                ctx["skip"] -= drop
                samples = samples[drop:]
                if not len(samples):
                    continue  # neither the audio nor the word's timestamp: it has them
            if ctx["words"] and word_end > start:
                stamp = tts.WordTimestamp(word=word, start_ms=start, end_ms=min(word_end, end))
                out.append(
                    tts.StreamingSynthesizeResponse(
                        context_id=cid, words=tts.WordTimestamps(words=[stamp])
                    )
                )
            ctx["seq"] += 1
            chunk = tts.AudioChunk(
                sequence_number=ctx["seq"],
                audio=codecs.encode(samples, fmt.encoding),  # the context's encoding
                start_ms=start,
                duration_ms=end - start,
            )
            out.append(tts.StreamingSynthesizeResponse(context_id=cid, audio=chunk))
            self.audio_ms += end - start
            ctx["ms"] = end
        return out


class Synthesis(StreamService):
    """voxwire.v1.Synthesis: many contexts on one stream; a context error ends that context only."""

    request = tts.StreamingSynthesizeRequest
    session_class = SynthesisStream
    voice_class = ToneVoice  # your synthesizer: one instance per stream

    async def stream(self, requests: AsyncIterator[bytes], context: Any) -> None:
        clock, session, reader = (
            StageClock(),
            self.session_class(self.voice_class()),
            self.reader(requests),
        )
        try:
            while (msg := await reader.next()) is not None:
                if msg.WhichOneof("request") == "keep_alive":
                    continue
                if not 1 <= len(msg.context_id.encode()) <= 128:
                    raise errors.InvalidMessage("context_id must be 1..128 bytes")
                await self.write_all(context, session, msg)
            for cid in list(session.contexts):  # half-close: close every open context
                await self.write_all(
                    context,
                    session,
                    tts.StreamingSynthesizeRequest(context_id=cid, close=tts.CloseContext()),
                )
            summary = tts.SynthesisSummary(
                session_id=session.session_id,
                contexts=session.opened,
                audio_ms=session.audio_ms,  # "audio sent on the stream"
                timings=clock.to_proto(),
            )
            await context.write(tts.StreamingSynthesizeResponse(summary=summary))
            self.finish(context, clock)
        except errors.VoxwireError as exc:
            await self.fail(context, exc, clock, reader)

    async def write_all(self, context: Any, session: SynthesisStream, msg: Any) -> None:
        try:
            out = session.handle(msg)
        except errors.VoxwireError as exc:  # a ContextError naming the context; the stream goes on
            session.contexts.pop(msg.context_id, None)
            out = [
                tts.StreamingSynthesizeResponse(
                    context_id=msg.context_id, error=tts.ContextError(error=exc.to_proto())
                )
            ]
        for response in out:
            await context.write(response)


class Capabilities(capabilities_pb2_grpc.CapabilitiesServicer):
    def __init__(self, idle_s: float) -> None:
        self.response = capabilities_pb2.GetCapabilitiesResponse(
            models=[STT_MODEL, TTS_MODEL],
            limits=LIMITS,
            server_features=capabilities_pb2.ServerFeatures(
                stream_offsets=True, synthesis_offsets=True, synthesis_skip_audio=True
            ),
        )
        self.response.limits.idle_timeout.FromMilliseconds(round(idle_s * 1000))

    async def GetCapabilities(
        self, request: Any, context: Any
    ) -> capabilities_pb2.GetCapabilitiesResponse:
        return self.response


def streaming(service: str, method: str, handler: Any, response: Any) -> grpc.GenericRpcHandler:
    # No request deserializer: the servicer parses (see Reader).
    rpc = grpc.stream_stream_rpc_method_handler(
        handler, response_serializer=response.SerializeToString
    )
    return grpc.method_handlers_generic_handler(service, {method: rpc})


def add_services(
    server: grpc.aio.Server,
    transcription: Transcription,
    synthesis: Synthesis,
    capabilities: Capabilities,
) -> None:
    server.add_generic_rpc_handlers(
        (
            streaming(
                "voxwire.v1.Transcription",
                "StreamingTranscribe",
                transcription.stream,
                stt.StreamingTranscribeResponse,
            ),
            streaming(
                "voxwire.v1.Synthesis",
                "StreamingSynthesize",
                synthesis.stream,
                tts.StreamingSynthesizeResponse,
            ),
        )
    )
    capabilities_pb2_grpc.add_CapabilitiesServicer_to_server(capabilities, server)


async def add_health_and_reflection(server: grpc.aio.Server) -> None:
    checker = health.aio.HealthServicer()  # SERVING: the toy models are always ready
    for name in ("", *SERVICES):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (*SERVICES, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
    )


async def build_server(port: int = 0, *, idle_s: float = 30.0) -> tuple[grpc.aio.Server, int]:
    """Start the server on 127.0.0.1:``port`` (0: a free port); returns it and its port."""
    # gRPC's fixed 64 KiB receive window (voxwire.wire): with bandwidth-delay probing gRPC core
    # grows it until megabytes of a stream's unread requests sit in the server, so a client
    # faster than the model is held back that late and each stream can park that much memory.
    server = grpc.aio.server(options=[FIXED_WINDOW])
    add_services(server, Transcription(idle_s), Synthesis(idle_s), Capabilities(idle_s))
    await add_health_and_reflection(server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


async def main() -> None:
    parser = argparse.ArgumentParser(description="A minimal voxwire.v1 server on toy models.")
    parser.add_argument(
        "--port", type=int, default=50071, help="0 picks a free port (50051 is make run's adapter)"
    )
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="seconds")
    args = parser.parse_args()
    server, port = await build_server(args.port, idle_s=args.idle_timeout)
    print(f"voxwire.v1 toy server on 127.0.0.1:{port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(1.0)


if __name__ == "__main__":
    asyncio.run(main())
