"""TranscriptionSession: the sans-I/O core of one StreamingTranscribe stream.

Rules (docs/contract.md, docs/design/spine.md):
- The servicer resolves the first message (the config) and creates the session; from then on
  every client message goes through ``receive`` and every model response through
  ``model_response``. Neither does I/O: they return what to send, or raise a VoxwireError.
- States and the client messages each accepts are the table ``_ACCEPTS``; anything else is an
  error (a second config is CONFIG_ALREADY_SET, the rest INVALID_MESSAGE).
- Requests to the model are answered in order (one Triton sequence); the session keeps their
  kinds in a FIFO, so the final response of the END request is known to end the stream.
- When the stream's replica fails, ``fail_over`` gives the requests that continue it on a new
  sequence elsewhere (``stt/replay.py``): the START with the current configuration, the model
  input since the acknowledged position, the controls not yet answered. Positions and utterance
  ids go on; the new sequence's ``ready`` becomes a StreamNotice FAILOVER, not a second
  ``started``. Results of the utterance that was under way may repeat (speech_started,
  interims); final results never do, as none covers audio before the acknowledged position.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from inference_adapter.config import Limits
from inference_adapter.stt import results
from inference_adapter.stt.config import (
    ResolvedTranscriptionConfig,
    endpointing_dict,
    vocabulary_list,
)
from inference_adapter.stt.replay import NO_FAILOVER, Control, ReplayPolicy, StreamReplay
from inference_adapter.triton.tensors import PCM16, ModelResponse
from voxwire import errors
from voxwire.audio.codecs import (
    AudioDecodeError,
    Encoding,
    InvalidSamples,
    decode,
    float32_to_int16,
)
from voxwire.audio.format_check import FormatCheck
from voxwire.audio.resample import StreamResampler
from voxwire.timings import Clock, StageClock
from voxwire.v1 import stream_pb2, transcription_pb2

Response = transcription_pb2.StreamingTranscribeResponse
_EMPTY = np.zeros(0, dtype=np.int16)


class State(enum.Enum):
    STREAMING = "streaming"  # audio and controls flow
    CLOSING = "closing"  # END sent; waiting for its answer (the client's input is over)
    CANCELLING = "cancelling"  # END + cancel sent (the stream is failing or the client left)
    DONE = "done"  # the sequence ended (summary produced, unless cancelled)

    # Looked up in the state table once per message: identity hashing (members are singletons)
    # in C, where Enum's own __hash__ is a Python call (hash of the name), twice as slow.
    __hash__ = object.__hash__


# A close (or half-close) ends the client's input: the servicer reads nothing after it, so what a
# client sends after its close never changes the outcome (docs/contract.md).
_ACCEPTS: dict[State, frozenset[str]] = {
    State.STREAMING: frozenset({"audio", "finalize", "keep_alive", "update_config", "close"}),
    State.CLOSING: frozenset(),
    State.CANCELLING: frozenset(),
    State.DONE: frozenset(),
}


class ModelRequest(NamedTuple):
    """One request of the stream's Triton sequence (the servicer adds the sequence id). A
    NamedTuple: one is made per audio chunk, and a frozen dataclass's ``__init__`` costs
    several times as much."""

    audio: np.ndarray
    control: dict[str, Any] | None = None
    start: bool = False
    end: bool = False


@dataclass(slots=True)
class Actions:
    to_model: list[ModelRequest] = field(default_factory=list)
    to_client: list[Response] = field(default_factory=list)


class TranscriptionSession:
    def __init__(
        self,
        config: ResolvedTranscriptionConfig,
        limits: Limits,
        *,
        session_id: str,
        replica: str = "",
        replay: ReplayPolicy = NO_FAILOVER,
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
        # Whether the audio sounds like its declared format (a notice once, or INVALID_AUDIO
        # for a file sent on the stream); it stops listening after the first loud 0.5 s.
        self._check = FormatCheck(self._fmt)
        self.timings = StageClock(clock=clock, replica=replica)
        self._utterance = StageClock(clock=clock, replica=replica)
        self._frames_in = 0  # client frames received
        # (kind, sent_at, finalize id or "") per request in flight, in order.
        self._pending: deque[tuple[str, float, str]] = deque()
        # internal id -> (client id, or None for a forced final; client audio ms; model audio ms)
        self._finalize_ids: dict[str, tuple[str | None, int, int]] = {}
        # internal id -> (client id, endpointing, vocabulary): folded into the config if accepted
        self._update_ids: dict[str, tuple[str, dict[str, Any], tuple[dict[str, Any], ...]]] = {}
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
        # Failover (stt/replay.py): model times of the current sequence start at
        # ``_model_base_ms`` of this stream's audio; ``_moved_to`` names the replica whose
        # START is not answered yet.
        self._replay = StreamReplay(
            config.model.sample_rate_hz,
            replay,
            first_utterance=config.first_utterance_index,
        )
        self._model_base_ms = 0
        self._moved_to = ""
        self.failovers = 0

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
            # Echoed as the client gave it, "" too (the contract's Finalize): an invented
            # "f<n>" could be an id the client uses for another finalize, and its ack then
            # settled that one early.
            client_id = msg.finalize.finalize_id
            # The resampler holds back a few ms; the finalize covers them too.
            tail = self._drain_resampler()
            actions.to_model.append(self._finalize(internal, client_id, tail))
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
            kind, _sent_at, _tag = self._pending.pop()
            if kind == "end" and self.state is State.CLOSING:
                self.state = State.STREAMING  # the sequence was not ended after all

    def fail_over(self, replica: str) -> list[ModelRequest]:
        """The stream's replica failed: the requests that continue the stream on a new
        sequence on ``replica``. Those of the old sequence are no longer awaited.

        Raises BackendUnavailable when the stream cannot move (failover off, the stream is
        ending, too many failovers without progress, the window overflowed)."""
        why = self._replay.why_not()
        if self.state not in (State.STREAMING, State.CLOSING):
            why = f"the stream is {self.state.value}"
        if why:
            raise errors.BackendUnavailable(
                f"model server failed and the stream cannot move: {why}",
                retry_delay=self._replay.policy.retry_after,
            )
        self._pending.clear()
        self._request_compute_us = 0
        self._last_answer_at = self._clock()
        self._model_base_ms = self._replay.base_ms
        self._first_utterance = self._replay.next_utterance
        self._moved_to = replica
        self.failovers += 1
        self.timings.replica = self._utterance.replica = replica
        start = self._request(_EMPTY, self.config.model_control(), kind="start", start=True)
        return [start, *self._replay.replay(self._replayed_audio, self._replayed_control)]

    def _replayed_audio(self, pcm16: bytes) -> ModelRequest:
        return self._request(np.frombuffer(pcm16, dtype=PCM16), None, kind="audio")

    def _replayed_control(self, control: Control) -> ModelRequest:
        body = control.control or {}
        kind = "end" if control.end else "finalize" if "finalize" in body else "update"
        tag = str(body["finalize"]) if kind == "finalize" else ""
        return self._request(_EMPTY, control.control, kind=kind, end=control.end, tag=tag)

    def notice(self, notice: stream_pb2.StreamNotice) -> Response | None:
        """A notice for the client now, or None when it is held: nothing of the session's goes
        before `started` (it follows it)."""
        response = Response(notice=notice)
        if not self._started:
            self._held.append(response)
            return None
        return response

    def _moved(self) -> Response:
        """The new sequence answered its START: tell the client the stream moved."""
        replica, self._moved_to = self._moved_to, ""
        return Response(
            notice=stream_pb2.StreamNotice(
                kind=stream_pb2.StreamNotice.KIND_FAILOVER,
                message="the model server failed; the stream moved to another one and its "
                f"audio from {self._offset_ms + self._model_base_ms} ms was replayed",
                replica=replica,
            )
        )

    def cancel(self) -> ModelRequest | None:
        """END + cancel: frees the model's sequence slot without producing results. None when
        the sequence already ended or its END is on the way (that END frees the slot)."""
        if self.state is not State.STREAMING:
            return None
        self.state = State.CANCELLING
        return self._request(_EMPTY, {"cancel": True}, kind="cancel", end=True)

    def _finalize(self, internal: str, client_id: str | None, tail: np.ndarray) -> ModelRequest:
        """A finalize request (``client_id`` None: a final forced by the replay window)."""
        self._replay.audio(tail.tobytes())
        self._finalize_ids[internal] = (client_id, self.position_ms, self._replay.position_ms)
        self._replay.control(internal, Control({"finalize": internal}))
        return self._request(tail, {"finalize": internal}, kind="finalize", tag=internal)

    def _audio(self, data: bytes, now: float, actions: Actions) -> float:
        if len(data) > self._limits.max_chunk_bytes:
            raise errors.ChunkTooLarge(
                f"audio chunk of {len(data)} bytes exceeds max_chunk_bytes "
                f"{self._limits.max_chunk_bytes}"
            )
        if not data:
            return 0.0
        t0 = self._clock()
        suspect = None
        try:
            frames = self._fmt.frames_in(len(data))
            if self._native_pcm:
                # Already the model's format: no float round trip on the hot path.
                pcm = np.frombuffer(data, dtype=PCM16)
                if self._check.listening:
                    suspect = self._check.audio(data, pcm)
            else:
                decoded = decode(data, self._fmt)
                if self._check.listening:
                    suspect = self._check.audio(data, decoded)
                pcm = float32_to_int16(self._resampler.process(decoded))
        except InvalidSamples as exc:
            raise errors.InvalidAudio(
                f"{exc} (16-bit PCM declared as PCM_F32LE reads as such values)"
            ) from exc
        except AudioDecodeError as exc:
            raise errors.MisalignedAudio(str(exc)) from exc
        if suspect is not None:
            notice = self.notice(
                stream_pb2.StreamNotice(
                    kind=stream_pb2.StreamNotice.KIND_FORMAT_SUSPECT, message=suspect
                )
            )
            if notice is not None:
                actions.to_client.append(notice)
        decode_s = self._clock() - t0
        self._frames_in += frames
        self.timings.mark_input(now)
        self._utterance.mark_input(now)
        if pcm.size:
            self._replay.audio(data if self._native_pcm else pcm.tobytes())
            actions.to_model.append(self._request(pcm, None, kind="audio"))
            if self._replay.force_final_due():
                # Unacknowledged audio nears the replay window: a final now keeps it bounded
                # (its ack is the session's own, never sent to the client).
                self._replay.forced_pending = True
                self._next_id += 1
                actions.to_model.append(self._finalize(f"x{self._next_id}", None, _EMPTY))
        return decode_s

    def _update(
        self, update: transcription_pb2.UpdateTranscriptionConfig, actions: Actions
    ) -> None:
        self._next_id += 1
        internal = f"c{self._next_id}"
        client_id = update.update_id  # echoed as given, as a finalize's
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
        self._update_ids[internal] = (client_id, endpointing, vocabulary)
        control = {
            "update_config": {
                "id": internal,
                "endpointing": endpointing,
                "vocabulary": list(vocabulary),
            }
        }
        self._replay.control(internal, Control(control))
        actions.to_model.append(self._request(_EMPTY, control, kind="update"))

    def _close(self) -> ModelRequest:
        self.state = State.CLOSING
        tail = self._drain_resampler()
        self._replay.audio(tail.tobytes())
        self._replay.control("end", Control(None, end=True))
        return self._request(tail, None, kind="end", end=True)

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
        tag: str = "",
    ) -> ModelRequest:
        self._last_sent_at = self._clock()
        self._pending.append((kind, self._last_sent_at, tag))
        self.timings.model_requests += 1
        self._utterance.model_requests += 1
        return ModelRequest(audio, control, start=start, end=end)

    # -- model side ---------------------------------------------------------------------------

    def model_response(self, resp: ModelResponse) -> list[Response]:
        """Translate one model response. Raises the VoxwireError a model `error` event names,
        or ModelError when the model answers more requests than were sent."""
        now = self._clock()
        compute_us = resp.compute_us
        if self._pending:
            # The stages partition the wall time (docs/contract.md, "Timings"): a request's
            # compute is at most its window here (from when it was sent, or the answer before
            # it came, to now). The model's own clock may count more (it started on a request
            # while the answer before it was in transit): the triton stage then got 0 and the
            # stages summed to 13 % over the wall time on stt_pocketsphinx.
            began = max(self._pending[0][1], self._last_answer_at)
            room = round((now - began) * 1e6) - self._request_compute_us
            compute_us = max(0, min(compute_us, room))
        self._charge_us("compute", compute_us)
        self._request_compute_us += compute_us
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
            kind, sent_at, tag = self._pending.popleft()
            if kind == "start" and live and not self._started and error is None:
                error = errors.ModelError("model answered the START without its ready event")
            if kind == "finalize" and live and error is None and tag in self._finalize_ids:
                # docs/contract.md (model protocol): the answer to {"finalize": id} carries its
                # finalize_ack; without it the client's finalize would never be acknowledged.
                error = errors.ModelError("model answered a finalize without its finalize_ack")
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
        index = self._first_utterance + results.utterance_index(event.get("utterance", 0))
        utterance_id = f"u{index}"
        if etype != "ready" and not self._started:
            raise errors.ModelError(f"model sent {etype!r} before answering the START")
        if etype == "ready":
            if self._moved_to and self._started:
                return self._moved()  # the START of a failover: the stream goes on
            if self._started:
                raise errors.ModelError("model answered the START twice")
            self._started = True
            if self._moved_to:
                # Moved before the first START was answered: `started` now, the notice after.
                self._held.append(self._moved())
            return Response(
                started=transcription_pb2.TranscriptionStarted(
                    session_id=self.session_id,
                    request_id=self.config.request_id,
                    model=self.config.model.name,
                    model_sample_rate_hz=self.config.model.sample_rate_hz,
                    vocabulary=results.outcomes(event.get("vocabulary", [])),
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
            response = Response()
            self._result(event, utterance_id, final=False, into=response.result)
            return response
        if etype == "final":
            self._first_response(now)
            self._finalized.add(utterance_id)
            response = Response()
            result = self._result(event, utterance_id, final=True, into=response.result)
            result.timings.CopyFrom(self._utterance.to_proto(now))
            # Everything before its end is in this final or an earlier one: the replay after a
            # failover starts there.
            self._replay.advance(
                result.end_ms - self._offset_ms,
                index + 1,
            )
            self.utterances += 1
            self._utterance = StageClock(clock=self._clock, replica=self.timings.replica)
            return response
        if etype == "utterance_end":
            return Response(
                utterance_end=transcription_pb2.UtteranceEnd(
                    utterance_id=utterance_id, at_ms=self._ms(event.get("at_ms"))
                )
            )
        if etype == "finalize_ack":
            if str(event.get("id")) not in self._finalize_ids:
                raise errors.ModelError("model acknowledged a finalize that was never sent")
            internal = str(event.get("id"))
            client_id, audio_ms, model_ms = self._finalize_ids.pop(internal)
            self._replay.settle(internal)
            self._replay.advance(model_ms)
            if client_id is None:  # a forced final's ack is the session's own
                self._replay.forced_pending = False
                return None
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
        internal = str(event.get("id"))
        client_id, endpointing, vocabulary = self._update_ids.pop(internal)
        self._replay.settle(internal)
        if event.get("accepted"):
            # Part of the configuration from now on: a failover's START carries it (an update
            # adds vocabulary and replaces the endpointing fields it sets).
            self.config = replace(
                self.config,
                endpointing={**self.config.endpointing, **endpointing},
                vocabulary=self.config.vocabulary + vocabulary,
            )
        return Response(update_config_ack=results.update_ack(event, client_id))

    def _result(
        self,
        event: dict[str, Any],
        utterance_id: str,
        *,
        final: bool,
        into: transcription_pb2.TranscriptResult,
    ) -> transcription_pb2.TranscriptResult:
        words = self.config.word_timestamps
        return results.transcript_result(
            event, utterance_id, self._ms, final=final, words=words, into=into
        )

    def _ms(self, value: Any) -> int:
        """A model time as a session position: clamped to the audio actually received (never
        past it), then shifted by the stream offset."""
        try:
            ms = int(value)
        except (TypeError, ValueError, OverflowError):
            return self._offset_ms + self._model_base_ms
        return self._offset_ms + max(0, min(self._model_base_ms + ms, self.audio_ms))

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

    # These run several times per audio chunk: the clocks' totals are updated in place (the
    # method calls and max() of StageClock.add cost more than the additions).

    def _first_response(self, now: float) -> None:
        if self._utterance.first_response_us is None:
            self._utterance.mark_first_response(now)
            self.timings.mark_first_response(now)

    def _charge(self, stage: str, seconds: float) -> None:
        micros = round(seconds * 1e6)
        if micros > 0:
            self.timings.stages_us[stage] += micros
            self._utterance.stages_us[stage] += micros

    def _charge_us(self, stage: str, micros: int) -> None:
        if micros > 0:
            self.timings.stages_us[stage] += micros
            self._utterance.stages_us[stage] += micros
