"""TranscriptionSession: the sans-I/O core of one StreamingTranscribe stream.

Rules (docs/contract.md, docs/design/spine.md):
- The servicer resolves the first message (the config) and creates the session; from then on
  every client message goes through ``receive`` and every model response through
  ``model_response``. Neither does I/O: they return what to send, or raise a VoxwireError.
- States and the client messages each accepts are the table ``_ACCEPTS``; anything else is an
  error (a second config is CONFIG_ALREADY_SET, the rest INVALID_MESSAGE).
- Requests to the model are answered in order (one Triton sequence); the session keeps their
  kinds in a FIFO, so the final response of the END request is known to end the stream.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference_adapter.config import Limits
from inference_adapter.stt.config import (
    ResolvedTranscriptionConfig,
    endpointing_dict,
    vocabulary_list,
)
from inference_adapter.triton.tensors import ModelResponse
from voxwire import errors
from voxwire.audio.codecs import (
    AudioDecodeError,
    Encoding,
    InvalidSamples,
    decode,
    float32_to_int16,
)
from voxwire.audio.resample import StreamResampler
from voxwire.timings import Clock, StageClock
from voxwire.v1 import errors_pb2, transcription_pb2

Response = transcription_pb2.StreamingTranscribeResponse
_EMPTY = np.zeros(0, dtype=np.int16)


class State(enum.Enum):
    STREAMING = "streaming"  # audio and controls flow
    CLOSING = "closing"  # END sent; waiting for its answer (the client's input is over)
    CANCELLING = "cancelling"  # END + cancel sent (the stream is failing or the client left)
    DONE = "done"  # the sequence ended (summary produced, unless cancelled)


# A close (or half-close) ends the client's input: the servicer reads nothing after it, so what a
# client sends after its close never changes the outcome (docs/contract.md).
_ACCEPTS: dict[State, frozenset[str]] = {
    State.STREAMING: frozenset({"audio", "finalize", "keep_alive", "update_config", "close"}),
    State.CLOSING: frozenset(),
    State.CANCELLING: frozenset(),
    State.DONE: frozenset(),
}


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One request of the stream's Triton sequence (the servicer adds the sequence id)."""

    audio: np.ndarray
    control: dict[str, Any] | None = None
    start: bool = False
    end: bool = False


@dataclass(slots=True)
class Actions:
    to_model: list[ModelRequest] = field(default_factory=list)
    to_client: list[Response] = field(default_factory=list)


def _outcomes(items: list[dict[str, Any]]) -> list[transcription_pb2.VocabularyOutcome]:
    status = {
        "added": transcription_pb2.VocabularyOutcome.STATUS_ADDED,
        "known": transcription_pb2.VocabularyOutcome.STATUS_KNOWN,
        "rejected": transcription_pb2.VocabularyOutcome.STATUS_REJECTED,
    }
    return [
        transcription_pb2.VocabularyOutcome(
            phrase=str(item.get("phrase", "")),
            status=status.get(
                item.get("status", ""), transcription_pb2.VocabularyOutcome.STATUS_UNSPECIFIED
            ),
            detail=str(item.get("detail", "")),
        )
        for item in items
    ]


class TranscriptionSession:
    def __init__(
        self,
        config: ResolvedTranscriptionConfig,
        limits: Limits,
        *,
        session_id: str,
        replica: str = "",
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.session_id = session_id
        self.state = State.STREAMING
        self._limits = limits
        self._clock = clock
        self._fmt = config.input_format
        self._resampler = StreamResampler(self._fmt.sample_rate_hz, config.model.sample_rate_hz)
        self._native_pcm = (
            self._fmt.encoding is Encoding.PCM_S16LE
            and self._fmt.channels == 1
            and self._resampler.is_passthrough
        )
        self.timings = StageClock(clock=clock, replica=replica)
        self._utterance = StageClock(clock=clock, replica=replica)
        self._frames_in = 0  # client frames received
        self._pending: deque[tuple[str, float]] = deque()  # (kind, sent_at) per request
        self._finalize_ids: dict[str, tuple[str, int]] = {}  # internal id -> (client id, audio ms)
        self._update_ids: dict[str, str] = {}
        self._next_id = 0
        self._last_answer_at = 0.0
        self._request_compute_us = 0  # compute reported for the oldest unanswered request
        self._last_sent_at = clock()
        self.utterances = 0
        # Continuing an earlier stream (docs/contract.md, "Resuming"): every reported position
        # is shifted by the offset, utterance ids continue from the index.
        self._offset_ms = config.stream_offset_ms
        self._first_utterance = config.first_utterance_index
        self._started = False  # `started` was emitted (nothing of the session's goes before it)
        self._held: list[Response] = []  # decided before `started`, sent right after it
        self._finalized: set[str] = set()  # utterance ids with a final result

    # -- properties ---------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Model requests not yet fully answered."""
        return len(self._pending)

    def unanswered_since(self) -> float | None:
        """When the oldest unanswered model request began to wait for its answer (it was sent,
        or the one before it was answered, whichever is later); None when none is pending."""
        if not self._pending:
            return None
        return max(self._pending[0][1], self._last_answer_at)

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    @property
    def audio_ms(self) -> int:
        """Audio received on this stream, in ms (positions add the stream offset)."""
        return self._frames_in * 1000 // self._fmt.sample_rate_hz

    @property
    def position_ms(self) -> int:
        """The session position of the audio received so far: offset + audio_ms."""
        return self._offset_ms + self.audio_ms

    # -- client side --------------------------------------------------------------------------

    def start(self) -> ModelRequest:
        """The START request: the config, no audio."""
        return self._request(_EMPTY, self.config.model_control(), kind="start", start=True)

    def receive(self, msg: transcription_pb2.StreamingTranscribeRequest) -> Actions:
        """Handle one client message. Raises a VoxwireError for a protocol or input error."""
        t0 = self._clock()
        kind = msg.WhichOneof("request")
        if kind is None:
            raise errors.InvalidMessage(
                "empty StreamingTranscribeRequest (no field of the oneof set)"
            )
        if kind not in _ACCEPTS[self.state]:
            if kind == "config":
                raise errors.ConfigAlreadySet("config may only be the first message of a stream")
            raise errors.InvalidMessage(
                f"{kind} is not accepted while the stream is {self.state.value}"
            )
        actions = Actions()
        decode_s = 0.0
        if kind == "audio":
            decode_s = self._audio(msg.audio, t0, actions)
        elif kind == "finalize":
            self._next_id += 1
            internal = f"f{self._next_id}"
            client_id = msg.finalize.finalize_id or internal
            self._finalize_ids[internal] = (client_id, self.position_ms)
            # The resampler holds back a few ms; the finalize covers them too.
            actions.to_model.append(
                self._request(self._drain_resampler(), {"finalize": internal}, kind="finalize")
            )
        elif kind == "update_config":
            self._update(msg.update_config, actions)
        elif kind == "keep_alive" and self.state is State.STREAMING:
            # A client that only sends KeepAlive must not lose its Triton sequence to
            # max_sequence_idle_microseconds: touch the sequence well before that.
            if t0 - self._last_sent_at > self.config.model.sequence_idle_s / 4:
                actions.to_model.append(self._request(_EMPTY, None, kind="keepalive"))
        elif kind == "close":
            actions.to_model.append(self._close())
        self._charge("decode", decode_s)
        self._charge("receive", self._clock() - t0 - decode_s)
        return actions

    def half_close(self) -> Actions:
        """The client half-closed: same as an explicit close (once)."""
        if self.state is State.STREAMING:
            return Actions(to_model=[self._close()])
        return Actions()

    def unsent(self, requests: list[ModelRequest]) -> None:
        """The servicer could not send ``requests``, the last ones this session decided (the
        stream is ending): they will never be answered, so they are no longer awaited."""
        for _ in requests:
            kind, _sent_at = self._pending.pop()
            if kind == "end" and self.state is State.CLOSING:
                self.state = State.STREAMING  # the sequence was not ended after all

    def cancel(self) -> ModelRequest | None:
        """END + cancel: frees the model's sequence slot without producing results. None when
        the sequence already ended or its END is on the way (that END frees the slot)."""
        if self.state is not State.STREAMING:
            return None
        self.state = State.CANCELLING
        return self._request(_EMPTY, {"cancel": True}, kind="cancel", end=True)

    def _audio(self, data: bytes, now: float, actions: Actions) -> float:
        if len(data) > self._limits.max_chunk_bytes:
            raise errors.ChunkTooLarge(
                f"audio chunk of {len(data)} bytes exceeds max_chunk_bytes "
                f"{self._limits.max_chunk_bytes}"
            )
        if not data:
            return 0.0
        t0 = self._clock()
        try:
            frames = self._fmt.frames_in(len(data))
            if self._native_pcm:
                # Already the model's format: no float round trip on the hot path.
                pcm = np.frombuffer(data, dtype="<i2")
            else:
                pcm = float32_to_int16(self._resampler.process(decode(data, self._fmt)))
        except InvalidSamples as exc:
            raise errors.InvalidAudio(str(exc)) from exc
        except AudioDecodeError as exc:
            raise errors.MisalignedAudio(str(exc)) from exc
        decode_s = self._clock() - t0
        self._frames_in += frames
        self.timings.mark_input(now)
        self._utterance.mark_input(now)
        if pcm.size:
            actions.to_model.append(self._request(pcm, None, kind="audio"))
        return decode_s

    def _update(
        self, update: transcription_pb2.UpdateTranscriptionConfig, actions: Actions
    ) -> None:
        self._next_id += 1
        internal = f"c{self._next_id}"
        client_id = update.update_id or internal
        model = self.config.model
        endpointing, bad = endpointing_dict(update.endpointing, "update_config.endpointing", model)
        vocabulary, more = vocabulary_list(update.vocabulary, "update_config.vocabulary", model)
        bad += more
        if bad:
            # Rejected here, before the model: the client learns why at once (right after
            # `started` when the model has not answered the START yet).
            error = errors.InvalidConfig.of("update rejected", bad)
            (actions.to_client if self._started else self._held).append(
                Response(
                    update_config_ack=transcription_pb2.UpdateConfigAck(
                        update_id=client_id, accepted=False, error=error.to_proto()
                    )
                )
            )
            return
        self._update_ids[internal] = client_id
        control = {
            "update_config": {
                "id": internal,
                "endpointing": endpointing,
                "vocabulary": list(vocabulary),
            }
        }
        actions.to_model.append(self._request(_EMPTY, control, kind="update"))

    def _close(self) -> ModelRequest:
        self.state = State.CLOSING
        return self._request(self._drain_resampler(), None, kind="end", end=True)

    def _drain_resampler(self) -> np.ndarray:
        """The resampler's held-back tail; a fresh resampler continues after it."""
        if self._resampler.is_passthrough:
            return _EMPTY
        tail = float32_to_int16(self._resampler.flush())
        self._resampler = StreamResampler(
            self._fmt.sample_rate_hz, self.config.model.sample_rate_hz
        )
        return tail

    def _request(
        self,
        audio: np.ndarray,
        control: dict[str, Any] | None,
        *,
        kind: str,
        start: bool = False,
        end: bool = False,
    ) -> ModelRequest:
        self._last_sent_at = self._clock()
        self._pending.append((kind, self._last_sent_at))
        self.timings.model_requests += 1
        self._utterance.model_requests += 1
        return ModelRequest(audio, control, start=start, end=end)

    # -- model side ---------------------------------------------------------------------------

    def model_response(self, resp: ModelResponse) -> list[Response]:
        """Translate one model response. Raises the VoxwireError a model `error` event names,
        or ModelError when the model answers more requests than were sent."""
        now = self._clock()
        self._charge_us("compute", resp.compute_us)
        self._request_compute_us += resp.compute_us
        self.timings.model_responses += 1
        self._utterance.model_responses += 1
        out: list[Response] = []
        error: errors.VoxwireError | None = None
        # A cancelled sequence's events go nowhere; nothing follows the summary.
        live = self.state not in (State.CANCELLING, State.DONE)
        if live:
            try:
                for event in resp.events:
                    if not isinstance(event, dict):
                        raise errors.ModelError(f"model sent a {type(event).__name__} event")
                    msg = self._event(event, now)
                    if msg is not None:
                        out.append(msg)
                        if msg.HasField("started") and self._held:
                            out += self._held  # what was decided while the START was pending
                            self._held = []
            except errors.VoxwireError as exc:
                error = exc  # raised once the request's answer is counted
            except (AttributeError, TypeError, ValueError, OverflowError, KeyError) as exc:
                error = errors.ModelError(f"model sent a malformed event ({type(exc).__name__})")
        if resp.final:
            if not self._pending:
                raise errors.ModelError("model answered a request that was never sent")
            kind, sent_at = self._pending.popleft()
            if kind == "start" and live and not self._started and error is None:
                error = errors.ModelError("model answered the START without its ready event")
            # Queueing + transport = the request's time at Triton minus the compute the model
            # reported for it (every response of the request, so triton + compute is the round
            # trip, never more). Requests of a sequence are served in order, so a request's time
            # starts when it was sent or when the one before it was answered, whichever is later
            # (pipelined requests are not counted twice).
            began = max(sent_at, self._last_answer_at)
            self._last_answer_at = now
            self._charge_us("triton", round((now - began) * 1e6) - self._request_compute_us)
            self._request_compute_us = 0
            if kind == "end":
                self.state = State.DONE
                out.append(self.summary(now))
            elif kind == "cancel":
                self.state = State.DONE
        self._charge("encode", self._clock() - now)
        if error is not None:
            raise error
        return out

    def _event(self, event: dict[str, Any], now: float) -> Response | None:
        etype = event.get("type")
        utterance_id = f"u{self._first_utterance + _index(event.get('utterance', 0))}"
        if etype != "ready" and not self._started:
            raise errors.ModelError(f"model sent {etype!r} before answering the START")
        if etype == "ready":
            if self._started:
                raise errors.ModelError("model answered the START twice")
            self._started = True
            return Response(
                started=transcription_pb2.TranscriptionStarted(
                    session_id=self.session_id,
                    request_id=self.config.request_id,
                    model=self.config.model.name,
                    model_sample_rate_hz=self.config.model.sample_rate_hz,
                    vocabulary=_outcomes(event.get("vocabulary", [])),
                )
            )
        if etype == "speech_started":
            return Response(
                speech_started=transcription_pb2.SpeechStarted(
                    utterance_id=utterance_id, at_ms=self._ms(event.get("at_ms"))
                )
            )
        if etype in ("interim", "final") and utterance_id in self._finalized:
            raise errors.ModelError(f"model sent a result for {utterance_id} after its final")
        if etype == "interim":
            if not self.config.interim_results:
                return None
            self._first_response(now)
            return Response(result=self._result(event, utterance_id, final=False))
        if etype == "final":
            self._first_response(now)
            self._finalized.add(utterance_id)
            result = self._result(event, utterance_id, final=True)
            result.timings.CopyFrom(self._utterance.to_proto(now))
            self.utterances += 1
            self._utterance = StageClock(clock=self._clock, replica=self.timings.replica)
            return Response(result=result)
        if etype == "utterance_end":
            return Response(
                utterance_end=transcription_pb2.UtteranceEnd(
                    utterance_id=utterance_id, at_ms=self._ms(event.get("at_ms"))
                )
            )
        if etype == "finalize_ack":
            if str(event.get("id")) not in self._finalize_ids:
                raise errors.ModelError("model acknowledged a finalize that was never sent")
            client_id, audio_ms = self._finalize_ids.pop(str(event.get("id")))
            return Response(
                finalize_ack=transcription_pb2.FinalizeAck(finalize_id=client_id, audio_ms=audio_ms)
            )
        if etype == "config_ack":
            return self._config_ack(event)
        if etype == "error":
            raise errors.error_for_reason(
                str(event.get("reason", "")), str(event.get("message", ""))
            )
        raise errors.ModelError(f"model sent an unknown event type {etype!r}")

    def _config_ack(self, event: dict[str, Any]) -> Response:
        if str(event.get("id")) not in self._update_ids:
            raise errors.ModelError("model acknowledged an update that was never sent")
        client_id = self._update_ids.pop(str(event.get("id")))
        ack = transcription_pb2.UpdateConfigAck(
            update_id=client_id,
            accepted=bool(event.get("accepted")),
            vocabulary=_outcomes(event.get("vocabulary", [])),
        )
        if not ack.accepted:
            reason = str(event.get("reason") or "INVALID_CONFIG")
            if f"ERROR_REASON_{reason}" not in errors_pb2.ErrorReason.keys():
                reason = "INVALID_CONFIG"
            ack.error.CopyFrom(
                errors.error_for_reason(reason, str(event.get("message", ""))).to_proto()
            )
        return Response(update_config_ack=ack)

    def _result(
        self, event: dict[str, Any], utterance_id: str, *, final: bool
    ) -> transcription_pb2.TranscriptResult:
        end = self._ms(event.get("end_ms"))
        start = min(self._ms(event.get("start_ms")), end)
        result = transcription_pb2.TranscriptResult(
            utterance_id=utterance_id,
            is_final=final,
            transcript=str(event.get("text", "")),
            start_ms=start,
            end_ms=end,
        )
        if final:
            result.confidence = _unit(event.get("confidence", 0.0))
            result.from_finalize = bool(event.get("from_finalize", False))
            if self.config.word_timestamps:
                last = start
                for w in event.get("words", []):
                    # The contract: word timings are monotonic and inside the result; a model
                    # that overlaps or overshoots is clamped, never passed on.
                    w_start = min(max(self._ms(w.get("start_ms")), last), end)
                    w_end = min(max(self._ms(w.get("end_ms")), w_start), end)
                    result.words.add(
                        word=str(w.get("word", "")),
                        start_ms=w_start,
                        end_ms=w_end,
                        confidence=_unit(w.get("confidence", 0.0)),
                    )
                    last = w_end
        return result

    def _ms(self, value: Any) -> int:
        """A model time as a session position: clamped to the audio actually received (never
        past it), then shifted by the stream offset."""
        try:
            ms = int(value)
        except (TypeError, ValueError, OverflowError):
            return self._offset_ms
        return self._offset_ms + max(0, min(ms, self.audio_ms))

    def summary(self, now: float | None = None) -> Response:
        return Response(
            summary=transcription_pb2.TranscriptionSummary(
                session_id=self.session_id,
                audio_ms=self.position_ms,
                utterances=self.utterances,
                timings=self.timings.to_proto(now),
            )
        )

    # -- timings ------------------------------------------------------------------------------

    def charge_send(self, seconds: float) -> None:
        self._charge("send", seconds)

    def _first_response(self, now: float) -> None:
        self.timings.mark_first_response(now)
        self._utterance.mark_first_response(now)

    def _charge(self, stage: str, seconds: float) -> None:
        self.timings.add(stage, seconds)
        self._utterance.add(stage, seconds)

    def _charge_us(self, stage: str, micros: int) -> None:
        self.timings.add_us(stage, micros)
        self._utterance.add_us(stage, micros)


def _index(value: Any) -> int:
    """A model's utterance number (a non-negative int). Raises ModelError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise errors.ModelError(f"model sent utterance {value!r}")
    return value


def _unit(value: Any) -> float:
    """A confidence in [0, 1] (a model's NaN, infinity or junk becomes 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(1.0, max(0.0, number)) if number == number else 0.0
