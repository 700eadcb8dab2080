"""SynthesisContext: the sans-I/O state of one TTS context (one utterance).

States and what moves them (the table ``_ACCEPTS`` lists the client messages each state
takes; any other message fails the context with INVALID_MESSAGE):

    OPEN     --append/flush-->  OPEN      (complete sentences become units at once)
    OPEN     --close-->         CLOSING   (the rest becomes the last unit)
    CLOSING  --last unit done-> DONE      (ContextDone)
    OPEN|CLOSING --cancel-->    CANCELLED (ContextCancelled; nothing after it)
    OPEN|CLOSING --error-->     FAILED    (ContextError; nothing after it)

Units are synthesized one at a time, in order. A flush is acknowledged after the audio of every
unit queued before it has been emitted (the resampler's tail included, so the ack really
follows all of that audio).

Failover (docs/contract.md, "Failover"): when the context's replica fails, ``resubmit`` gives
the unit in flight again, for a survivor. The model restarts it from its first sample, so the
context drops the samples (and word timestamps) of that unit it already passed on and goes on
from the first one it did not: the client gets every sample once, the timeline and sequence
numbers continue, and the audio joins without a seam when the model is deterministic (the
benchmark model is; eSpeak NG gives the same words and length within ~20 ms but not the same
samples twice in one process: tests/models/test_tts_espeak.py). Resubmitting only
the text after the last word sent would need no determinism but would restart mid-sentence with
other prosody, and its audio would not continue the samples already heard.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from inference_adapter.config import Limits
from inference_adapter.triton.tensors import ModelResponse
from inference_adapter.tts.config import ResolvedSynthesisConfig
from inference_adapter.tts.text import split_ready
from voxwire import errors
from voxwire.audio.codecs import Encoding, encode, int16_to_float32
from voxwire.audio.resample import StreamResampler
from voxwire.timings import Clock, StageClock
from voxwire.v1 import synthesis_pb2

Response = synthesis_pb2.StreamingSynthesizeResponse


class CtxState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


_ACCEPTS: dict[CtxState, frozenset[str]] = {
    CtxState.OPEN: frozenset({"append", "flush", "close", "cancel"}),
    CtxState.CLOSING: frozenset({"cancel"}),
}
FINISHED = frozenset({CtxState.DONE, CtxState.CANCELLED, CtxState.FAILED})


@dataclass(slots=True)
class Unit:
    index: int
    text: str
    # The Triton request id: made by the server (session, context key, unit), never from the
    # client's context id, so ids cannot collide across streams nor carry client text into logs.
    request_id: str
    flush_ids: list[str] = field(default_factory=list)
    # Where the unit starts in the context's text (code points from its first append): the
    # model's word text offsets are within the unit, the client's within the context.
    text_offset: int = 0


class SynthesisContext:
    # Messages for the context after its close (append, flush, close: kind -> count), answered
    # once it has ended (``late_errors``); a class default: most contexts have none.
    late: dict[str, int] | None = None

    def __init__(
        self,
        key: int,
        context_id: str,
        config: ResolvedSynthesisConfig,
        limits: Limits,
        *,
        replica: str = "",
        session_id: str = "",
        clock: Clock = time.monotonic,
    ) -> None:
        self.key = key
        self.context_id = context_id
        self._request_prefix = f"{session_id}.{key}"
        self.config = config
        self.state = CtxState.OPEN
        self._limits = limits
        self._clock = clock
        self.timings = StageClock(clock=clock, replica=replica)
        self._buffer = ""
        # The first text that is not blank was looked at (a plain context's SSML, session.py).
        self.text_seen = False
        self._queued: deque[Unit] = deque()
        self.inflight: Unit | None = None
        self._unit_sent_at = 0.0
        self._unit_compute_us = 0  # compute (and adapter work) of the unit in flight
        self._units = 0
        # A resumed context continues its numbering and timeline (docs/contract.md, Resuming).
        self.last_sequence = config.first_sequence_number - 1
        self._first_emitted = False
        self._timeline_ms = config.timeline_offset_ms
        self._buffer_offset = 0  # code points of the context's text before self._buffer
        self._out_frames = 0
        self._model_frames = 0
        self._unit_model_start = 0
        self._last_word_end = 0
        self._unit_done = False  # the unit in flight's `done` event arrived
        # Failover: model samples and words of the unit in flight already passed on, which its
        # resubmission repeats and the context drops.
        self._unit_words = 0
        self._skip_samples = 0
        self._skip_words = 0
        self.failovers = 0  # in a row, without new audio
        # A context reopened from the start of text partly spoken (SSML: the document resumes
        # whole) whose first skip_audio_ms the client has: the same state as a failover of a
        # unit that had passed that much on, so the same code drops it, across units if need be.
        self._skip_open = config.skip_audio_ms > 0  # until all of it is dropped
        self._skip_words_to_ms = -1
        if self._skip_open:
            self._skip_words_to_ms = config.timeline_offset_ms + config.skip_audio_ms
            self._skip_samples = config.skip_audio_ms * config.model.sample_rate_hz // 1000
            self._model_frames = self._skip_samples
            rate = config.output_format.sample_rate_hz
            self._out_frames = config.skip_audio_ms * rate // 1000
        self._new_resampler()
        # Same rate and PCM16 out: model audio goes to the client as it is.
        self._native_pcm = (
            config.output_format.encoding is Encoding.PCM_S16LE and self._resampler.is_passthrough
        )

    # -- client side --------------------------------------------------------------------------

    def accepts(self, kind: str) -> bool:
        return kind in _ACCEPTS.get(self.state, frozenset())

    @property
    def pending_text_bytes(self) -> int:
        return len(self._buffer.encode()) + sum(len(u.text.encode()) for u in self._queued)

    def append(self, text: str, now: float) -> None:
        """Raises TextTooLarge when the unsynthesized text would exceed the limit."""
        if len(text.encode()) + self.pending_text_bytes > self._limits.max_pending_text_bytes:
            raise errors.TextTooLarge(
                f"context {self.context_id!r} would hold more than max_pending_text_bytes "
                f"{self._limits.max_pending_text_bytes} of unsynthesized text"
            )
        self.timings.mark_input(now)
        self._buffer += text
        if not self.config.ssml:  # an SSML document is only complete at a flush or close
            # A unit cut for length holds at most soft_limit + 1 characters, so at most 4 x
            # that many bytes: never more than the model takes.
            soft_limit = max(1, min(400, self.config.model.limits.max_unit_text_bytes // 4 - 1))
            buffer = self._buffer
            units, self._buffer = split_ready(buffer, soft_limit)
            pos = 0
            for text_unit in units:
                found = buffer.find(text_unit, pos)  # units are pieces of the buffer, in order
                pos = found if found >= 0 else pos
                self._enqueue(text_unit, self._buffer_offset + pos)
                pos += len(text_unit)
            self._buffer_offset += len(buffer) - len(self._buffer)

    def flush(self, flush_id: str) -> list[Response]:
        self._cut_rest()
        target = self._queued[-1] if self._queued else self.inflight
        if target is not None:
            target.flush_ids.append(flush_id)
            return []
        # Nothing queued or in flight: all audio so far is out, save the resampler's tail.
        return [*self._drain_resampler(), self._flush_ack(flush_id)]

    def close(self) -> list[Response]:
        self._cut_rest()
        self.state = CtxState.CLOSING
        return self._finish_if_idle()

    def cancel(self) -> Response:
        self.state = CtxState.CANCELLED
        self._queued.clear()
        self.inflight = None
        return Response(
            context_id=self.context_id,
            cancelled=synthesis_pb2.ContextCancelled(last_sequence_number=self.last_sequence),
        )

    def fail(self, error: errors.VoxwireError) -> Response:
        self.state = CtxState.FAILED
        self._queued.clear()
        self.inflight = None
        return Response(
            context_id=self.context_id,
            error=synthesis_pb2.ContextError(
                error=error.to_proto(), last_sequence_number=self.last_sequence
            ),
        )

    def _cut_rest(self) -> None:
        if self._buffer.strip():
            self._enqueue(self._buffer, self._buffer_offset)
        self._buffer_offset += len(self._buffer)
        self._buffer = ""

    def _enqueue(self, text: str, text_offset: int) -> None:
        """Raises TextTooLarge for a unit over the model's limit (an SSML document, or text up
        to a flush): refused here, before the model, as the model would refuse it."""
        limit = self.config.model.limits.max_unit_text_bytes
        size = len(text.encode())
        if size > limit:
            raise errors.TextTooLarge(
                f"a synthesis unit of {size} bytes exceeds model {self.config.model.name}'s "
                f"limit of {limit} bytes (flush more often, or split the SSML document)"
            )
        self._units += 1
        request_id = f"{self._request_prefix}.{self._units}"
        self._queued.append(Unit(self._units, text, request_id, text_offset=text_offset))

    # -- model side ---------------------------------------------------------------------------

    def next_unit(self) -> Unit | None:
        """The unit to submit now, if none is in flight."""
        if self.inflight is not None or not self._queued or self.state in FINISHED:
            return None
        self.inflight = self._queued.popleft()
        self._unit_sent_at = self._clock()
        self._unit_compute_us = 0
        # The unit's first model sample, counting those still to skip as passed on.
        self._unit_model_start = self._model_frames - self._skip_samples
        self._unit_words = 0
        self._unit_done = False
        self.timings.model_requests += 1
        return self.inflight

    def resubmit(self) -> Unit | None:
        """The context moves to another replica: the unit in flight (None if none), to submit
        there. Its samples and words already passed on are dropped from the new answer."""
        if self.inflight is None or self.state in FINISHED:
            return None
        self.failovers += 1
        self._skip_samples = self._model_frames - self._unit_model_start
        self._skip_words = self._unit_words
        self._unit_done = False  # the survivor's answer must carry its own `done`
        self.timings.model_requests += 1
        return self.inflight

    def model_response(self, resp: ModelResponse) -> list[Response]:
        """Audio, words and acks for one model response. Raises the VoxwireError of a model
        `error` event."""
        if self.state in FINISHED or self.inflight is None:
            return []  # late response of a cancelled or failed context: dropped by design
        now = self._clock()
        self.timings.model_responses += 1
        self.timings.add_us("compute", resp.compute_us)
        self._unit_compute_us += resp.compute_us
        out = self._events(resp.events)
        if resp.final and not self._unit_done:
            # docs/contract.md: the last response of a request carries `done` (or `error`);
            # without it nothing says the unit's audio is complete, so no ack may follow.
            # Checked before any audio is numbered: the context's error names the last chunk
            # the client actually received.
            raise errors.ModelError("model ended a synthesis request without its done event")
        t0 = self._clock()
        audio = resp.audio
        if audio is not None and self._skip_samples:
            # A resubmitted unit: what the failed replica already gave is not sent again.
            skip = min(self._skip_samples, int(audio.size))
            self._skip_samples -= skip
            audio = audio[skip:]
            self._skip_open = self._skip_open and self._skip_samples > 0
        if audio is not None and audio.size:
            self._model_frames += int(audio.size)
            self.failovers = 0  # progress
            if self._native_pcm:
                # Already the requested format: no float round trip on the hot path.
                out.extend(self._emit(audio.size, audio.astype("<i2", copy=False).tobytes()))
            else:
                samples = self._resampler.process(int16_to_float32(audio))
                out.extend(
                    self._emit(samples.size, encode(samples, self.config.output_format.encoding))
                )
        encode_s = self._clock() - t0
        self.timings.add("encode", encode_s)
        if resp.final:
            unit = self.inflight
            self.inflight = None
            self._skip_words = 0
            if not self._skip_open:
                # A failover's unit spoken again shorter than before: nothing more to drop.
                # (skip_audio_ms past this unit's end is the next units' to drop: they start
                # where the frames counted as passed on, ``_model_frames``, less it.)
                self._skip_samples = 0
            # The unit's round trip is split between stages that add up to it exactly: the
            # compute the model reported for every response of the unit, the adapter's work on
            # those responses while the unit was in flight (encode), and the rest, which is
            # Triton's queueing and transport.
            rtt_us = round((now - self._unit_sent_at) * 1e6)
            self.timings.add_us("triton", rtt_us - self._unit_compute_us)
            if unit.flush_ids:
                out.extend(self._drain_resampler())
                out.extend(self._flush_ack(fid) for fid in unit.flush_ids)
            out.extend(self._finish_if_idle())
        else:
            # Encode time of a response before the last lies inside the round trip.
            self._unit_compute_us += round(encode_s * 1e6)
        return out

    def _events(self, events: tuple[Any, ...]) -> list[Response]:
        """Word timestamps of the model's events. Raises the VoxwireError of an ``error`` event,
        ModelError for a malformed event (both fail this context only)."""
        out: list[Response] = []
        try:
            for event in events:
                etype = event.get("type")
                if etype == "error":
                    raise errors.error_for_reason(
                        str(event.get("reason", "")), str(event.get("message", ""))
                    )
                if etype == "words":
                    if self.config.word_timestamps:
                        words = self._words(event.get("words", []))
                        if words is not None:
                            out.append(words)
                elif etype == "done":
                    self._unit_done = True
                else:
                    raise errors.ModelError(f"model sent an unknown event type {etype!r}")
        except (AttributeError, TypeError, ValueError, OverflowError, KeyError) as exc:
            raise errors.ModelError(f"model sent a malformed event ({type(exc).__name__})") from exc
        return out

    def _words(self, words: list[dict[str, Any]]) -> Response | None:
        rate = self.config.model.sample_rate_hz
        base_ms = self._timeline_ms + self._unit_model_start * 1000 // rate
        unit_offset = self.inflight.text_offset if self.inflight is not None else 0
        msg = synthesis_pb2.WordTimestamps()
        for w in words:
            if base_ms + int(w.get("end_ms", 0)) <= self._skip_words_to_ms:
                # The client has it (skip_audio_ms). Before the failover count: a failover
                # counts only the words passed on (``_unit_words``), never these.
                continue
            if self._skip_words:
                self._skip_words -= 1  # sent before the failover
                continue
            self._unit_words += 1
            start = base_ms + int(w.get("start_ms", 0))
            end = base_ms + int(w.get("end_ms", 0))
            # Monotonic across units even if a model's estimate overlaps the previous word.
            start = max(start, self._last_word_end)
            end = max(end, start)
            self._last_word_end = end
            word = msg.words.add(word=str(w.get("word", "")), start_ms=start, end_ms=end)
            length = int(w.get("text_length", 0))
            if length > 0:
                word.text_offset = unit_offset + max(0, int(w.get("text_offset", 0)))
                word.text_length = length
        if not msg.words:
            return None
        return Response(context_id=self.context_id, words=msg)

    def _emit(self, frames: int, payload: bytes) -> list[Response]:
        if not frames:
            return []
        rate = self.config.output_format.sample_rate_hz
        start_ms = self._timeline_ms + self._out_frames * 1000 // rate
        self._out_frames += frames
        end_ms = self._timeline_ms + self._out_frames * 1000 // rate
        self.last_sequence += 1
        if not self._first_emitted:
            self._first_emitted = True
            self.timings.mark_first_response(self._clock())
        return [
            Response(
                context_id=self.context_id,
                audio=synthesis_pb2.AudioChunk(
                    sequence_number=self.last_sequence,
                    audio=payload,
                    start_ms=start_ms,
                    duration_ms=end_ms - start_ms,
                ),
            )
        ]

    def _drain_resampler(self) -> list[Response]:
        if self._resampler.is_passthrough:
            return []
        tail = self._resampler.flush()
        self._new_resampler()
        return self._emit(tail.size, encode(tail, self.config.output_format.encoding))

    def _new_resampler(self) -> None:
        self._resampler = StreamResampler(
            self.config.model.sample_rate_hz, self.config.output_format.sample_rate_hz
        )

    def _flush_ack(self, flush_id: str) -> Response:
        return Response(
            context_id=self.context_id,
            flush_ack=synthesis_pb2.FlushAck(
                flush_id=flush_id, last_sequence_number=self.last_sequence
            ),
        )

    def _finish_if_idle(self) -> list[Response]:
        if self.state is not CtxState.CLOSING or self.inflight is not None or self._queued:
            return []
        out = self._drain_resampler()
        self.state = CtxState.DONE
        rate = self.config.output_format.sample_rate_hz
        out.append(
            Response(
                context_id=self.context_id,
                done=synthesis_pb2.ContextDone(
                    last_sequence_number=self.last_sequence,
                    audio_ms=self._timeline_ms + self._out_frames * 1000 // rate,
                    timings=self.timings.to_proto(),
                ),
            )
        )
        return out

    @property
    def audio_ms(self) -> int:
        return self._out_frames * 1000 // self.config.output_format.sample_rate_hz

    @property
    def busy(self) -> bool:
        return self.inflight is not None or bool(self._queued)
