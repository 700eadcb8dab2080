"""Transcription variants (and the Capabilities they pair with): each breaks one promise of
the contract's "Streaming transcription" section, or one thing Capabilities says."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from examples import minimal_server as ex
from tests.conformance.broken.server import IDLE_S
from voxwire import errors
from voxwire.audio.codecs import Encoding, PcmFormat, decode
from voxwire.audio.format_check import FormatCheck
from voxwire.timings import StageClock
from voxwire.v1 import audio_pb2, capabilities_pb2
from voxwire.v1 import synthesis_pb2 as tts
from voxwire.v1 import transcription_pb2 as stt


class StartedTwice(ex.Transcription):
    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        model = super().start(config)
        model.config = config  # type: ignore[attr-defined]
        return model

    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: ex.BeepDetector,
        fmt: PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        out = super().handle(msg, model, fmt, check)
        if msg.WhichOneof("request") == "audio" and not getattr(model, "restarted", False):
            model.restarted = True  # type: ignore[attr-defined]
            out.insert(0, self.started(model.config, "again"))  # type: ignore[attr-defined]
        return out


class _PoisonableReader(ex.Reader):
    poison: errors.VoxwireError | None = None

    async def next(self) -> Any:
        msg = await super().next()
        if self.poison is not None:
            raise self.poison
        return msg


class _RefusingReader(ex.Reader):
    async def next(self) -> Any:
        msg = await super().next()
        if msg is not None and msg.WhichOneof("request") == "close":
            # Reads on for a moment after the close, and refuses what follows it: the
            # contract discards it unread, whatever it is.
            try:
                async with asyncio.timeout(0.3):
                    late = await super().next()
            except TimeoutError:
                return msg
            if late is not None:
                raise errors.InvalidMessage(f"{late.WhichOneof('request')} after close")
        return msg


class RefusesAfterClose(ex.Transcription):
    """Fails the stream (INVALID_MESSAGE) when a message follows the close."""

    def reader(self, requests: AsyncIterator[bytes]) -> ex.Reader:
        return _RefusingReader(requests, self.request, self.idle_s)


class SpillsErrors(ex.Transcription):
    """A stream's failure ends every other open stream too (at its next message)."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(idle_s)
        self.readers: weakref.WeakSet[_PoisonableReader] = weakref.WeakSet()

    def reader(self, requests: AsyncIterator[bytes]) -> ex.Reader:
        reader = _PoisonableReader(requests, self.request, self.idle_s)
        self.readers.add(reader)
        return reader

    async def fail(
        self, context: Any, error: errors.VoxwireError, clock: StageClock, reader: ex.Reader
    ) -> None:
        for other in self.readers:
            other.poison = errors.InternalError("another stream failed")
        await super().fail(context, error, clock, reader)


class FinalizeAckFirst(ex.Transcription):
    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: ex.BeepDetector,
        fmt: PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        out = super().handle(msg, model, fmt, check)
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
    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: ex.BeepDetector,
        fmt: PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        if msg.WhichOneof("request") == "audio" and not len(msg.audio) % 2:
            samples = decode(msg.audio, fmt)  # any size: no CHUNK_TOO_LARGE
            said = check.audio(msg.audio, samples) if check.listening else None
            Resp = stt.StreamingTranscribeResponse
            notice = [] if said is None else [Resp(notice=ex.suspect_notice(said))]
            return [*notice, *(Resp(result=r) for r in model.feed(samples))]
        return super().handle(msg, model, fmt, check)


class MisalignedAccepted(ex.Transcription):
    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: ex.BeepDetector,
        fmt: PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        if msg.WhichOneof("request") == "audio" and len(msg.audio) % 2:
            return []  # silently dropped instead of MISALIGNED_AUDIO
        return super().handle(msg, model, fmt, check)


class UpdatesIgnored(ex.Transcription):
    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: ex.BeepDetector,
        fmt: PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        if msg.WhichOneof("request") == "update_config":
            ack = stt.UpdateConfigAck(update_id=msg.update_config.update_id, accepted=True)
            return [stt.StreamingTranscribeResponse(update_config_ack=ack)]
        return super().handle(msg, model, fmt, check)


class WrongNativeRate(ex.Transcription):
    def started(
        self, config: stt.TranscriptionConfig, session_id: str
    ) -> stt.StreamingTranscribeResponse:
        out = super().started(config, session_id)
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


class InfinityAccepted(ex.Transcription):
    """Takes PCM_F32LE too (with_float_audio); refuses NaN samples but takes infinite ones (as
    silence)."""

    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        checked = stt.TranscriptionConfig()
        checked.CopyFrom(config)
        if checked.audio_format.encoding == audio_pb2.AUDIO_ENCODING_PCM_F32LE:
            checked.audio_format.encoding = ex.PCM16  # the example checks its own formats
        return super().start(checked)

    def handle(
        self,
        msg: stt.StreamingTranscribeRequest,
        model: ex.BeepDetector,
        fmt: PcmFormat,
        check: FormatCheck,
    ) -> list[Any]:
        if msg.WhichOneof("request") == "audio" and fmt.encoding is Encoding.PCM_F32LE:
            samples = np.frombuffer(msg.audio, dtype="<f4")
            if not np.isnan(samples).any():
                samples = np.where(np.isinf(samples), 0.0, samples).astype(np.float32)
                return [stt.StreamingTranscribeResponse(result=r) for r in model.feed(samples)]
        return super().handle(msg, model, fmt, check)


def with_float_audio() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    caps.models[0].input_formats.append(
        capabilities_pb2.FormatSupport(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_F32LE, sample_rates_hz=[ex.RATE], max_channels=1
        )
    )
    return caps


class IgnoresStreamOffsets(ex.Transcription):
    """Claims ServerFeatures.stream_offsets, and starts every stream at 0 ms and u0."""

    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        model = super().start(config)
        model.continues = lambda config: None  # type: ignore[method-assign]
        return model


class _NoFileCheck(FormatCheck):
    def head(self, data: bytes) -> None:
        pass  # takes any file's bytes for samples


class NoFileCheck(ex.Transcription):
    """Plays a file sent on the stream as if its bytes were samples."""

    format_check = _NoFileCheck


class _RefusesEveryWav(FormatCheck):
    def head(self, data: bytes) -> None:
        if data[:4] == b"RIFF":
            raise errors.InvalidAudio("the audio starts with a WAV header")
        super().head(data)


class RefusesEveryWav(ex.Transcription):
    """Refuses a stream that starts with a WAV header even when it names the declared format."""

    format_check = _RefusesEveryWav


class _NeverSuspects(FormatCheck):
    def audio(self, data: bytes, samples: Any) -> str | None:
        super().audio(data, samples)
        return None  # listens, and never tells


class NoFormatCheck(ex.Transcription):
    format_check = _NeverSuspects


class _SuspectsEverything(FormatCheck):
    def audio(self, data: bytes, samples: Any) -> str | None:
        super().audio(data, samples)  # a file on the stream is still refused
        self.listening = False  # one notice, as the real check would give
        return "noise"


class SuspectsEverything(ex.Transcription):
    """Calls the first audio of every stream suspect."""

    format_check = _SuspectsEverything
