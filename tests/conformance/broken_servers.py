"""Servers that each break one promise of the contract: the example server (examples/
minimal_server.py) with exactly one change, and the kit's cases that must fail because of it.

Each variant overrides one small method of the example's classes; the servers are real
grpc.aio servers on loopback, assembled as the example assembles itself.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from examples import minimal_server as ex
from voxwire import errors
from voxwire.timings import SERVER_TIMING_TRAILER, StageClock, trailers
from voxwire.v1 import capabilities_pb2
from voxwire.v1 import synthesis_pb2 as tts
from voxwire.v1 import transcription_pb2 as stt

IDLE_S = 2.0  # short, so the idle cases run in the tests (and long enough under load)
Resp = tts.StreamingSynthesizeResponse


@dataclass(frozen=True)
class Variant:
    name: str
    breaks: str  # the promise it breaks
    expected: frozenset[str]  # the case ids that must fail, and no others
    transcription: type[ex.Transcription] = ex.Transcription
    session: type[ex.SynthesisStream] = ex.SynthesisStream
    capabilities: Callable[[], capabilities_pb2.GetCapabilitiesResponse] | None = None
    extras: Callable[[grpc.aio.Server], Awaitable[None]] = ex.add_health_and_reflection
    idle_s: float = IDLE_S  # what the services enforce (Capabilities always says IDLE_S)
    synthesis_overrides: dict[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] = ()  # run only these cases (a variant that would disturb the rest)

    @property
    def scope(self) -> tuple[str, ...]:
        """Case id patterns worth running: a variant that changes only one streaming service's
        classes cannot change the other's behaviour (that code is the example's, which passes
        every case), so only its own cases and the service-wide ones are run."""
        if self.only:
            return self.only
        stt_changed = self.transcription is not ex.Transcription
        tts_changed = self.session is not ex.SynthesisStream or bool(self.synthesis_overrides)
        shared = (
            self.capabilities is not None
            or self.extras is not ex.add_health_and_reflection
            or self.idle_s != IDLE_S
        )
        if shared or stt_changed == tts_changed:
            return ()
        return ("stt.*" if stt_changed else "tts.*", "capabilities.*", "health.*", "reflection.*")


async def serve(variant: Variant) -> tuple[grpc.aio.Server, int]:
    """The variant as a started server on a free loopback port."""
    server = grpc.aio.server()
    synthesis_class = type(
        "BrokenSynthesis",
        (ex.Synthesis,),
        {"session_class": variant.session, **variant.synthesis_overrides},
    )
    caps = ex.Capabilities(IDLE_S)
    if variant.capabilities is not None:
        caps.response = variant.capabilities()
    ex.add_services(
        server, variant.transcription(variant.idle_s), synthesis_class(variant.idle_s), caps
    )
    await variant.extras(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


# -- Synthesis --------------------------------------------------------------------------------


class AudioAfterCancel(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        ctx = self.contexts.get(msg.context_id)
        out = super().handle(msg)
        if msg.WhichOneof("request") == "cancel" and ctx is not None:
            ctx["seq"] += 1
            chunk = tts.AudioChunk(
                sequence_number=ctx["seq"],
                audio=ex.ToneVoice.PCM_BYTES,
                start_ms=ctx["ms"],
                duration_ms=200,
            )
            out.append(Resp(context_id=msg.context_id, audio=chunk))
        return out


class OpenedTwice(ex.SynthesisStream):
    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        out = super().open(cid, config)
        return [*out, *out]


class TilingGap(ex.SynthesisStream):
    def speak(self, cid: str, ctx: dict[str, Any], text: str) -> list[Any]:
        out = []
        for word in text.split():
            out += super().speak(cid, ctx, word)
            ctx["ms"] += 1  # the next chunk starts 1 ms after this one ended
        return out


class SequenceFromTwo(ex.SynthesisStream):
    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        out = super().open(cid, config)
        self.contexts[cid]["seq"] = 1
        return out


class WordsOverlap(ex.SynthesisStream):
    def speak(self, cid: str, ctx: dict[str, Any], text: str) -> list[Any]:
        out = super().speak(cid, ctx, text)
        for r in out:
            if r.HasField("words"):
                for w in r.words.words:
                    w.start_ms = max(0, w.start_ms - 100)  # before the previous word ended
        return out


class FlushAckBeforeAudio(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        ctx = self.contexts.get(msg.context_id)
        before = ctx["seq"] if ctx else 0
        out = super().handle(msg)
        acks = [r for r in out if r.HasField("flush_ack")]
        for ack in acks:
            ack.flush_ack.last_sequence_number = before
        return [*acks, *(r for r in out if not r.HasField("flush_ack"))]


class DoneAudioWrong(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        out = super().handle(msg)
        for r in out:
            if r.HasField("done"):
                r.done.audio_ms += 100
        return out


class ManyContexts(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        if msg.WhichOneof("request") == "open" and msg.context_id not in self.contexts:
            return self.open(msg.context_id, msg.open)  # no max_contexts_per_stream check
        return super().handle(msg)


class DropsLongText(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        if msg.WhichOneof("request") == "append":
            size = len(msg.append.text.encode())
            if ex.LIMITS.max_pending_text_bytes < size <= ex.LIMITS.max_chunk_bytes:
                return []  # silently dropped instead of TEXT_TOO_LARGE
        return super().handle(msg)


class SpeaksInvalidSsml(ex.SynthesisStream):
    """Advertises SSML; speaks the markup, then reports it invalid (audio for invalid SSML)."""

    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        ssml = config.text_format == tts.TEXT_FORMAT_SSML
        config.text_format = tts.TEXT_FORMAT_PLAIN
        out = super().open(cid, config)
        self.contexts[cid]["ssml"] = ssml
        return out

    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        cid, ctx = msg.context_id, self.contexts.get(msg.context_id)
        if ctx is not None and ctx["ssml"] and msg.WhichOneof("request") == "append":
            spoken = self.speak(cid, ctx, msg.append.text)
            del self.contexts[cid]
            error = tts.ContextError(error=errors.SsmlInvalid("unsupported markup").to_proto())
            return [*spoken, Resp(context_id=cid, error=error)]
        return super().handle(msg)


def with_ssml() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    caps.models[1].features.ssml = True
    return caps


async def _context_error_ends_stream(
    self: ex.Synthesis, context: Any, session: ex.SynthesisStream, msg: Any
) -> None:
    for response in session.handle(msg):  # a context's error escapes: the stream fails
        await context.write(response)


# -- Transcription ----------------------------------------------------------------------------


class StartedTwice(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        model = super().start(config)
        model.config = config  # type: ignore[attr-defined]
        return model

    def handle(self, msg: stt.StreamingTranscribeRequest, model: ex.BeepDetector) -> list[Any]:
        out = super().handle(msg, model)
        if msg.WhichOneof("request") == "audio" and not getattr(model, "restarted", False):
            model.restarted = True  # type: ignore[attr-defined]
            out.insert(0, self.started(model.config))  # type: ignore[attr-defined]
        return out


class _PoisonableReader(ex.Reader):
    poison: errors.VoxwireError | None = None

    async def next(self) -> Any:
        msg = await super().next()
        if self.poison is not None:
            raise self.poison
        return msg


class SpillsErrors(ex.Transcription):
    """A stream's failure ends every other open stream too (at its next message)."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(idle_s)
        self.readers: weakref.WeakSet[_PoisonableReader] = weakref.WeakSet()

    def reader(self, requests: AsyncIterator[bytes]) -> ex.Reader:
        reader = _PoisonableReader(requests, self.request, self.idle_s)
        self.readers.add(reader)
        return reader

    async def fail(self, context: Any, error: errors.VoxwireError, clock: StageClock) -> None:
        for reader in self.readers:
            reader.poison = errors.InternalError("another stream failed")
        await super().fail(context, error, clock)


class FinalizeAckFirst(ex.Transcription):
    def handle(self, msg: stt.StreamingTranscribeRequest, model: ex.BeepDetector) -> list[Any]:
        out = super().handle(msg, model)
        acks = [r for r in out if r.HasField("finalize_ack")]
        return [*acks, *(r for r in out if not r.HasField("finalize_ack"))]


class _LateEnds(ex.BeepDetector):
    def flush(self, forced: bool) -> list[stt.TranscriptResult]:
        results = super().flush(forced)
        for r in results:
            r.end_ms += 5000  # beyond any audio received
        return results


class ResultBeyondAudio(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        super().start(config)
        return _LateEnds(config.word_timestamps)


class _WordPastResult(ex.BeepDetector):
    def flush(self, forced: bool) -> list[stt.TranscriptResult]:
        results = super().flush(forced)
        for r in results:
            for w in r.words:
                w.end_ms = r.end_ms + 50
        return results


class WordOutsideResult(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        super().start(config)
        return _WordPastResult(config.word_timestamps)


class _CountsOneMore(ex.BeepDetector):
    def __init__(self, word_timestamps: bool) -> None:
        super().__init__(word_timestamps)
        self.utterances = 1


class UtterancesMiscounted(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        super().start(config)
        return _CountsOneMore(config.word_timestamps)


class _InterimAfterFinal(ex.BeepDetector):
    def flush(self, forced: bool) -> list[stt.TranscriptResult]:
        results = super().flush(forced)
        return [*results, *(stt.TranscriptResult(utterance_id=r.utterance_id) for r in results)]


class InterimAfterFinal(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        interim = config.interim_results
        config.interim_results = False
        super().start(config)
        return (_InterimAfterFinal if interim else ex.BeepDetector)(config.word_timestamps)


def with_interim() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    caps.models[0].features.interim_results = True
    return caps


class DropsInterimRequest(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        config.interim_results = False  # silently dropped instead of refused
        return super().start(config)


class AnyRate(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        config.audio_format.sample_rate_hz = ex.RATE
        return super().start(config)


class AnyRateSession(ex.SynthesisStream):
    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        config.output_format.sample_rate_hz = ex.RATE
        return super().open(cid, config)


class NoChunkLimit(ex.Transcription):
    def handle(self, msg: stt.StreamingTranscribeRequest, model: ex.BeepDetector) -> list[Any]:
        if msg.WhichOneof("request") == "audio" and not len(msg.audio) % 2:
            return [stt.StreamingTranscribeResponse(result=r) for r in model.feed(msg.audio)]
        return super().handle(msg, model)


class MisalignedAccepted(ex.Transcription):
    def handle(self, msg: stt.StreamingTranscribeRequest, model: ex.BeepDetector) -> list[Any]:
        if msg.WhichOneof("request") == "audio" and len(msg.audio) % 2:
            return []  # silently dropped instead of MISALIGNED_AUDIO
        return super().handle(msg, model)


class UpdatesIgnored(ex.Transcription):
    def handle(self, msg: stt.StreamingTranscribeRequest, model: ex.BeepDetector) -> list[Any]:
        if msg.WhichOneof("request") == "update_config":
            ack = stt.UpdateConfigAck(update_id=msg.update_config.update_id, accepted=True)
            return [stt.StreamingTranscribeResponse(update_config_ack=ack)]
        return super().handle(msg, model)


class WrongNativeRate(ex.Transcription):
    def started(self, config: stt.TranscriptionConfig) -> stt.StreamingTranscribeResponse:
        out = super().started(config)
        out.started.model_sample_rate_hz = 8000
        return out


class WrongNativeRateSession(ex.SynthesisStream):
    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        out = super().open(cid, config)
        out[0].opened.model_sample_rate_hz = 8000
        return out


def no_default_stt() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    caps.models[0].is_default = False
    return caps


def tts_without_voices() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    del caps.models[1].voices[:]
    return caps


def overclaims_rates() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    caps.models[0].input_formats[0].sample_rates_hz.append(8000)
    return caps


# -- how streams end (both services) ----------------------------------------------------------


class _RetryableConfigRequired(errors.ConfigRequired):
    retryable = True


class _ConfigAlreadySetWrongCode(errors.ConfigAlreadySet):
    code = grpc.StatusCode.INVALID_ARGUMENT


async def _fail_without_details(self: Any, context: Any, error: Any, clock: StageClock) -> None:
    await context.abort(error.code, error.message, trailing_metadata=trailers(clock.to_proto()))


async def _fail_with(self: Any, context: Any, error: Any, clock: StageClock) -> None:
    """The example's fail, after one change to the error."""
    swap = {
        errors.ConfigRequired: _RetryableConfigRequired,
        errors.ConfigAlreadySet: _ConfigAlreadySetWrongCode,
    }
    if type(error) in swap and getattr(self, "swap_errors", False):
        error = swap[type(error)](error.message, violations=error.violations)
    if getattr(self, "strip_violations", False):
        error = type(error)(error.message)
    await ex.StreamService.fail(self, context, error, clock)


def _finish_without_binary_timings(self: Any, context: Any, clock: StageClock) -> None:
    context.set_trailing_metadata(
        tuple(t for t in trailers(clock.to_proto()) if t[0] == SERVER_TIMING_TRAILER)
    )


async def _fail_with_disagreeing_timings(
    self: Any, context: Any, error: Any, clock: StageClock
) -> None:
    timings = clock.to_proto()
    details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
    wrong = f"total;dur={timings.total_us / 1000 + 5:.3f}"  # 5 ms more than the binary form says
    metadata = (
        details,
        ("voxwire-timings-bin", timings.SerializeToString()),
        (SERVER_TIMING_TRAILER, wrong),
    )
    await context.abort(error.code, error.message, trailing_metadata=metadata)


def both(name: str, attrs: dict[str, Any]) -> tuple[type[ex.Transcription], dict[str, Any]]:
    """A Transcription subclass and Synthesis overrides that share ``attrs``."""
    return type(name, (ex.Transcription,), attrs), attrs


class _RaisingReader(ex.Reader):
    async def next(self) -> Any:
        try:
            return await super().next()
        except errors.InvalidMessage as exc:
            if "parse" in exc.message:
                raise ValueError("cannot parse") from exc  # escapes as a bare gRPC UNKNOWN
            raise


def _raising_reader(self: Any, requests: AsyncIterator[bytes]) -> ex.Reader:
    return _RaisingReader(requests, self.request, self.idle_s)


class _SilentViolations(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        try:
            return super().handle(msg)
        except errors.VoxwireError as exc:
            raise type(exc)(exc.message) from exc  # the same error without its violations


async def _health_without_synthesis(server: grpc.aio.Server) -> None:
    checker = health.aio.HealthServicer()
    for name in ("", "voxwire.v1.Transcription", "voxwire.v1.Capabilities"):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection((*ex.SERVICES, "grpc.health.v1.Health"), server)


async def _no_reflection(server: grpc.aio.Server) -> None:
    checker = health.aio.HealthServicer()
    for name in ("", *ex.SERVICES):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)


# -- the catalogue ------------------------------------------------------------------------------

_NO_DETAILS, _NO_DETAILS_TTS = both("NoDetails", {"fail": _fail_without_details})
_NO_TIMINGS, _NO_TIMINGS_TTS = both("NoTimings", {"finish": _finish_without_binary_timings})
_BAD_TIMINGS, _BAD_TIMINGS_TTS = both("BadTimings", {"fail": _fail_with_disagreeing_timings})
_UNPARSED, _UNPARSED_TTS = both("Unparsed", {"reader": _raising_reader})
_SWAPPED = type("Swapped", (ex.Transcription,), {"fail": _fail_with, "swap_errors": True})
_SILENT, _SILENT_TTS = both("Silent", {"fail": _fail_with, "strip_violations": True})

STREAM_ERRORS = frozenset(
    {
        "stt.config.required",
        "stt.config.already-set",
        "stt.config.unknown-model",
        "stt.config.model-of-other-kind",
        "stt.config.unsupported-encoding",
        "stt.config.unadvertised-rate",
        "stt.config.too-many-channels",
        "stt.config.unknown-language",
        "stt.config.lacking-interim-results",
        "stt.config.lacking-endpointing",
        "stt.config.lacking-vocabulary",
        "stt.audio.misaligned",
        "stt.message.empty",
        "stt.message.undecodable",
        "stt.limits.chunk-too-large",
        "stt.limits.idle-timeout",
        "stt.trailers.on-error",
        "tts.message.empty",
        "tts.message.no-context-id",
        "tts.message.undecodable",
        "tts.limits.idle-timeout",
        "tts.trailers.on-error",
    }
)
CONTEXT_ERRORS = frozenset(
    {
        "tts.context.unknown-context",
        "tts.context.not-open",
        "tts.context.already-open",
        "tts.context.error-leaves-others",
        "tts.context.reopen-after-error",
        "tts.config.unknown-model",
        "tts.config.model-of-other-kind",
        "tts.config.unsupported-encoding",
        "tts.config.unadvertised-rate",
        "tts.config.too-many-channels",
        "tts.config.unknown-voice",
        "tts.config.unknown-language",
        "tts.config.lacking-ssml",
        "tts.config.lacking-pronunciation",
        "tts.limits.too-many-contexts",
        "tts.limits.chunk-too-large",
        "tts.limits.pending-text",
    }
)
VIOLATIONS = frozenset(
    {
        "stt.config.unadvertised-rate",
        "stt.config.too-many-channels",
        "stt.config.unknown-language",
        "stt.config.lacking-interim-results",
        "stt.config.lacking-endpointing",
        "stt.config.lacking-vocabulary",
        "tts.config.unadvertised-rate",
        "tts.config.too-many-channels",
        "tts.config.unknown-voice",
        "tts.config.unknown-language",
        "tts.config.lacking-ssml",
        "tts.config.lacking-pronunciation",
    }
)

VARIANTS = [
    Variant(
        "audio-after-cancel",
        "nothing for a context follows its cancel ack",
        frozenset({"tts.cancel.nothing-after", "tts.cancel.before-text"}),
        session=AudioAfterCancel,
    ),
    Variant(
        "opened-twice",
        "a context is opened once, first",
        frozenset({"tts.order.opened-first-done-last", "tts.context.reopen-after-error"}),
        session=OpenedTwice,
    ),
    Variant(
        "tiling-gap",
        "chunks tile exactly",
        frozenset({"tts.audio.tiling", "tts.contexts.interleave", "tts.formats.every-advertised"}),
        session=TilingGap,
    ),
    Variant(
        "sequence-from-two",
        "sequence numbers start at 1",
        frozenset(
            {
                "tts.audio.sequence-numbers",
                "tts.contexts.interleave",
                "tts.cancel.before-text",
                "tts.flush.without-text",
            }
        ),
        session=SequenceFromTwo,
    ),
    Variant(
        "tts-words-overlap",
        "TTS word timestamps do not overlap",
        frozenset({"tts.words.monotonic"}),
        session=WordsOverlap,
    ),
    Variant(
        "flush-ack-before-audio",
        "a FlushAck follows the audio of the text before it",
        frozenset({"tts.flush.ack-after-audio"}),
        session=FlushAckBeforeAudio,
    ),
    Variant(
        "done-audio-wrong",
        "ContextDone names the audio sent",
        frozenset({"tts.close.done-names-the-audio", "tts.half-close.closes-every-context"}),
        session=DoneAudioWrong,
    ),
    Variant(
        "no-context-limit",
        "max_contexts_per_stream is enforced",
        frozenset({"tts.limits.too-many-contexts"}),
        session=ManyContexts,
    ),
    Variant(
        "no-pending-text-limit",
        "max_pending_text_bytes is enforced",
        frozenset({"tts.limits.pending-text"}),
        session=DropsLongText,
    ),
    Variant(
        "speaks-invalid-ssml",
        "invalid SSML is never spoken",
        frozenset({"tts.context.ssml-invalid", "tts.context.ssml-unsupported-element"}),
        session=SpeaksInvalidSsml,
        capabilities=with_ssml,
    ),
    Variant(
        "context-error-ends-stream",
        "a context error ends only that context",
        CONTEXT_ERRORS,
        synthesis_overrides={"write_all": _context_error_ends_stream},
    ),
    Variant(
        "started-twice",
        "started comes once, first",
        frozenset({"stt.order.started-first-summary-last", "stt.order.close-ends-the-stream"}),
        transcription=StartedTwice,
    ),
    Variant(
        "errors-spill-over",
        "a failing stream never affects another",
        frozenset({"stt.errors.isolated"}),
        transcription=SpillsErrors,
        only=("stt.errors.isolated",),
    ),
    Variant(
        "finalize-ack-first",
        "a FinalizeAck follows the results of the audio before it",
        frozenset({"stt.finalize.ack-after-results"}),
        transcription=FinalizeAckFirst,
    ),
    Variant(
        "result-beyond-audio",
        "results never go beyond the audio received",
        frozenset(
            {
                "stt.results.within-audio-sent",
                "stt.order.close-ends-the-stream",
                "stt.finalize.ack-after-results",
            }
        ),
        transcription=ResultBeyondAudio,
    ),
    Variant(
        "word-outside-result",
        "STT words are inside their result",
        frozenset({"stt.results.word-timings"}),
        transcription=WordOutsideResult,
    ),
    Variant(
        "utterances-miscounted",
        "the summary counts the utterances",
        frozenset(
            {
                "stt.results.summary-counts-audio",
                "stt.limits.chunk-at-limit",
                "stt.formats.every-advertised",
            }
        ),
        transcription=UtterancesMiscounted,
    ),
    Variant(
        "interim-after-final",
        "interim results precede their final",
        frozenset({"stt.results.interim-before-final"}),
        transcription=InterimAfterFinal,
        capabilities=with_interim,
    ),
    Variant(
        "drops-interim-request",
        "a feature the model lacks is refused, never dropped",
        frozenset({"stt.config.lacking-interim-results"}),
        transcription=DropsInterimRequest,
    ),
    Variant(
        "accepts-unadvertised-rate",
        "a rate the model does not advertise is refused",
        frozenset({"stt.config.unadvertised-rate", "tts.config.unadvertised-rate"}),
        transcription=AnyRate,
        session=AnyRateSession,
    ),
    Variant(
        "overclaims-rates",
        "every advertised format is accepted",
        frozenset({"stt.formats.every-advertised"}),
        capabilities=overclaims_rates,
    ),
    Variant(
        "no-chunk-limit",
        "max_chunk_bytes is enforced",
        frozenset({"stt.limits.chunk-too-large"}),
        transcription=NoChunkLimit,
    ),
    Variant(
        "misaligned-accepted",
        "misaligned audio is MISALIGNED_AUDIO",
        frozenset({"stt.audio.misaligned"}),
        transcription=MisalignedAccepted,
    ),
    Variant(
        "updates-ignored",
        "an update is never silently ignored",
        frozenset(
            {"stt.update-config.lacking-vocabulary", "stt.update-config.lacking-endpointing"}
        ),
        transcription=UpdatesIgnored,
    ),
    Variant(
        "wrong-native-rate",
        "started/opened name the advertised native rate",
        frozenset(
            {
                "stt.started.names-model",
                "stt.started.default-model",
                "tts.opened.names-model",
                "tts.opened.default-model",
            }
        ),
        transcription=WrongNativeRate,
        session=WrongNativeRateSession,
    ),
    Variant(
        "tts-model-without-voices",
        "Capabilities lists a TTS model's voices",
        frozenset({"capabilities.well-formed"}),
        capabilities=tts_without_voices,
    ),
    Variant(
        "no-default-model",
        "Capabilities marks the model an empty name selects",
        frozenset({"stt.started.default-model"}),
        capabilities=no_default_stt,
    ),
    Variant(
        "no-error-details",
        "every error status carries ErrorInfo",
        STREAM_ERRORS,
        transcription=_NO_DETAILS,
        synthesis_overrides=_NO_DETAILS_TTS,
    ),
    Variant(
        "wrong-code-and-retryability",
        "each reason has the table's code and retryability",
        frozenset({"stt.config.required", "stt.config.already-set"}),
        transcription=_SWAPPED,
    ),
    Variant(
        "no-violations",
        "configuration errors name their fields",
        VIOLATIONS,
        transcription=_SILENT,
        synthesis_overrides=_SILENT_TTS,
        session=_SilentViolations,
    ),
    Variant(
        "no-binary-timings",
        "OK streams end with voxwire-timings-bin",
        frozenset({"stt.trailers.on-ok", "tts.trailers.on-ok"}),
        transcription=_NO_TIMINGS,
        synthesis_overrides=_NO_TIMINGS_TTS,
    ),
    Variant(
        "disagreeing-timings",
        "server-timing says what voxwire-timings-bin says",
        frozenset({"stt.trailers.on-error", "tts.trailers.on-error"}),
        transcription=_BAD_TIMINGS,
        synthesis_overrides=_BAD_TIMINGS_TTS,
    ),
    Variant(
        "undecodable-unhandled",
        "undecodable bytes are INVALID_MESSAGE",
        frozenset({"stt.message.undecodable", "tts.message.undecodable"}),
        transcription=_UNPARSED,
        synthesis_overrides=_UNPARSED_TTS,
    ),
    Variant(
        "never-idle",
        "idle_timeout is enforced as advertised",
        frozenset({"stt.limits.idle-timeout", "tts.limits.idle-timeout"}),
        idle_s=3600.0,
    ),
    Variant(
        "no-synthesis-health",
        "health per service name",
        frozenset({"health.check-per-service", "health.watch"}),
        extras=_health_without_synthesis,
    ),
    Variant(
        "no-reflection",
        "reflection lists the services",
        frozenset({"reflection.lists-services"}),
        extras=_no_reflection,
    ),
]
