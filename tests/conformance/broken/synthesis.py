"""Synthesis variants: each SynthesisStream subclass breaks one promise of the contract's
"Streaming synthesis" section."""

from __future__ import annotations

from typing import Any

from examples import minimal_server as ex
from tests.conformance.broken.server import IDLE_S
from voxwire import errors
from voxwire.v1 import capabilities_pb2
from voxwire.v1 import synthesis_pb2 as tts

Resp = tts.StreamingSynthesizeResponse


class AudioAfterCancel(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        ctx = self.contexts.get(msg.context_id)
        out = super().handle(msg)
        if msg.WhichOneof("request") == "cancel" and ctx is not None:
            ctx["seq"] += 1
            chunk = tts.AudioChunk(
                sequence_number=ctx["seq"],
                audio=bytes(2 * ex.RATE // 5),  # 200 ms of PCM_S16LE
                start_ms=ctx["ms"],
                duration_ms=200,
            )
            out.append(Resp(context_id=msg.context_id, audio=chunk))
        return out


class IgnoresOffsets(ex.SynthesisStream):
    """Claims ServerFeatures.synthesis_offsets, and starts every context at 0 ms and 1."""

    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        plain = tts.SynthesisContextConfig()
        plain.CopyFrom(config)
        for name in ("timeline_offset_ms", "first_sequence_number", "skip_audio_ms"):
            plain.ClearField(name)
        return super().open(cid, plain)


class ResendsSkippedAudio(ex.SynthesisStream):
    """Claims ServerFeatures.synthesis_skip_audio, and sends the audio the client has again."""

    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        plain = tts.SynthesisContextConfig()
        plain.CopyFrom(config)
        plain.ClearField("skip_audio_ms")
        return super().open(cid, plain)


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


class WaitsForTheClose(ex.SynthesisStream):
    """Keeps appended text until a flush or the close, complete sentences too."""

    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        ctx = self.contexts.get(msg.context_id)
        if ctx is not None and msg.WhichOneof("request") == "append":
            size = len(msg.append.text.encode()) + len(ctx["text"].encode())
            if size <= ex.LIMITS.max_pending_text_bytes:
                ctx["text"] += msg.append.text
                return self.text_notice(msg.context_id, ctx, msg.append.text)
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


class LateMessageInvalid(ex.SynthesisStream):
    """Answers text, a flush or a close after a context's close with INVALID_MESSAGE, as the
    reference adapter did (it failed the closing context so: its audio lost or not, by
    timing)."""

    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        closed: set[str] = self.__dict__.setdefault("closed_ids", set())
        cid, kind = msg.context_id, msg.WhichOneof("request")
        if cid in closed and kind in ("append", "flush", "close"):
            raise errors.InvalidMessage(f"{kind} after the context's close")
        if kind == "close":
            closed.add(cid)
        elif kind == "open":
            closed.discard(cid)
        return super().handle(msg)


def with_ssml() -> capabilities_pb2.GetCapabilitiesResponse:
    caps = ex.Capabilities(IDLE_S).response
    caps.models[1].features.ssml = True
    return caps


class SpeaksSsmlAsText(ex.SynthesisStream):
    """Takes an SSML context and speaks its document as text, all of it."""

    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        config.text_format = tts.TEXT_FORMAT_PLAIN
        return super().open(cid, config)


def states_unit_audio() -> capabilities_pb2.GetCapabilitiesResponse:
    """SSML with <break>, and a unit's audio bounded at 3 s, which the model does not enforce."""
    caps = with_ssml()
    caps.models[1].features.ssml_elements.extend(["speak", "break"])
    caps.models[1].limits.max_unit_audio_ms = 3000
    return caps


async def context_error_ends_stream(
    self: ex.Synthesis, context: Any, session: ex.SynthesisStream, msg: Any
) -> None:
    for response in session.handle(msg):  # a context's error escapes: the stream fails
        await context.write(response)


class SpeaksPartialText(ex.SynthesisStream):
    """Speaks every append at once, sentence end or not."""

    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        out = super().handle(msg)
        ctx = self.contexts.get(msg.context_id)
        if ctx is not None and msg.WhichOneof("request") == "append" and ctx["text"]:
            out += self.speak(msg.context_id, ctx, ctx["text"])
            ctx["text"] = ""
        return out


class SsmlUnnoticed(ex.SynthesisStream):
    """Speaks plain text that opens an SSML document without telling the client."""

    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        return [r for r in super().handle(msg) if not r.HasField("notice")]
