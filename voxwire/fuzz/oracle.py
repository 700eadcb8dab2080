"""Contract oracles: what a voxwire.v1 stream's responses must look like, checked as they come.

One oracle per stream. Feed it every request the client sent (``request``) and every response
the server answered (``response``), in the order they happened, then ``end`` with whether the
stream ended OK. Each rule broken is recorded as a short violation string (``violations``);
nothing raises. The rules are the guarantees of docs/contract.md:

Transcription
- ``started`` comes first; ``summary`` comes last and nothing follows it.
- ``start_ms <= end_ms <= audio sent``; word timings of a final result are monotonic and inside it;
  ``at_ms`` never past the audio sent.
- Results of one utterance: no result for an utterance after its final one.
- ``FinalizeAck``: one per finalize, in order, echoing the client's id (when it gave one) and the
  audio offset at that finalize. ``UpdateConfigAck``: one per update, rejections carry a reason.
- The summary counts the audio sent and the final results.

Synthesis (per context id; a scope runs from ``opened`` to its ``done``/``cancelled``/``error``)
- Audio chunks are numbered 1, 2, ... and tile: ``start_ms[n+1] = start_ms[n] + duration_ms[n]``
  from 0.
- Word timestamps are monotonic and non-overlapping across the context.
- ``FlushAck`` echoes a flush the client sent and names the last chunk sent before it.
- ``ContextCancelled`` only after a cancel; ``done``/``cancelled``/``error`` name the last chunk;
  nothing of the scope follows them (a new ``opened`` starts a new scope).
- ``summary`` is last; a stream that ended OK left no scope open.

The oracle sees what the client saw, so "audio received" is bounded by the audio the client sent.
It needs nothing but the generated ``voxwire.v1`` stubs.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from voxwire.v1 import audio_pb2, errors_pb2, synthesis_pb2, transcription_pb2

_BYTES_PER_SAMPLE = {
    audio_pb2.AUDIO_ENCODING_PCM_S16LE: 2,
    audio_pb2.AUDIO_ENCODING_PCM_F32LE: 4,
    audio_pb2.AUDIO_ENCODING_MULAW: 1,
    audio_pb2.AUDIO_ENCODING_ALAW: 1,
}


def error_reason(error: errors_pb2.Error) -> str:
    """The reason name of an in-band error ('' when unspecified or unknown)."""
    if error.reason == errors_pb2.ERROR_REASON_UNSPECIFIED:
        return ""
    try:
        return errors_pb2.ErrorReason.Name(error.reason).removeprefix("ERROR_REASON_")
    except ValueError:
        return ""


@dataclass
class _Oracle:
    violations: list[str] = field(default_factory=list)
    ended: bool = False  # the summary arrived

    def _bad(self, what: str) -> None:
        self.violations.append(what)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class TranscriptionOracle(_Oracle):
    """Checks one StreamingTranscribe stream (see the module docstring)."""

    frame_bytes: int = 2
    rate_hz: int = 16000
    word_timestamps: bool = False
    frames_sent: int = 0
    responses: int = 0
    finals: int = 0
    final_utterances: set[str] = field(default_factory=set)
    finalizes: deque[tuple[str, int]] = field(default_factory=deque)  # (client id, audio ms)
    updates: int = 0
    update_acks: int = 0

    @property
    def audio_ms(self) -> int:
        return self.frames_sent * 1000 // self.rate_hz if self.rate_hz else 0

    def request(self, msg: transcription_pb2.StreamingTranscribeRequest) -> None:
        kind = msg.WhichOneof("request")
        if kind == "config":
            fmt = msg.config.audio_format
            channels = fmt.channels or 1
            self.frame_bytes = _BYTES_PER_SAMPLE.get(fmt.encoding, 2) * channels
            self.rate_hz = fmt.sample_rate_hz
            self.word_timestamps = msg.config.word_timestamps
        elif kind == "audio":
            self.frames_sent += len(msg.audio) // self.frame_bytes
        elif kind == "finalize":
            self.finalizes.append((msg.finalize.finalize_id, self.audio_ms))
        elif kind == "update_config":
            self.updates += 1

    def response(self, msg: transcription_pb2.StreamingTranscribeResponse) -> None:
        kind = msg.WhichOneof("response")
        self.responses += 1
        if self.ended:
            self._bad(f"{kind} after the summary")
            return
        if self.responses == 1 and kind != "started":
            self._bad(f"first response is {kind}, not started")
        if kind == "started" and self.responses != 1:
            self._bad("started is not the first response")
        elif kind == "result":
            self._result(msg.result)
        elif kind in ("speech_started", "utterance_end"):
            at = getattr(msg, kind).at_ms
            if at > self.audio_ms:
                self._bad(f"{kind}.at_ms {at} past the audio sent ({self.audio_ms} ms)")
        elif kind == "finalize_ack":
            self._finalize_ack(msg.finalize_ack)
        elif kind == "update_config_ack":
            self.update_acks += 1
            if self.update_acks > self.updates:
                self._bad("update_config_ack without an update")
            ack = msg.update_config_ack
            if not ack.accepted and not error_reason(ack.error):
                self._bad("rejected update_config_ack without a reason")
        elif kind == "summary":
            self.ended = True
            if msg.summary.audio_ms != self.audio_ms:
                self._bad(f"summary.audio_ms {msg.summary.audio_ms} != sent {self.audio_ms}")
            if msg.summary.utterances != self.finals:
                self._bad(f"summary.utterances {msg.summary.utterances} != finals {self.finals}")
        elif kind is None:
            self._bad("empty response")

    def _result(self, r: transcription_pb2.TranscriptResult) -> None:
        where = f"result {r.utterance_id}"
        if r.utterance_id in self.final_utterances:
            self._bad(f"{where} after its final result")
        if not r.start_ms <= r.end_ms <= self.audio_ms:
            self._bad(f"{where}: not start {r.start_ms} <= end {r.end_ms} <= sent {self.audio_ms}")
        last = r.start_ms
        for w in r.words:
            if not last <= w.start_ms <= w.end_ms <= r.end_ms:
                self._bad(f"{where}: word {w.start_ms}-{w.end_ms} not monotonic inside the result")
                break
            last = w.end_ms
        if r.is_final:
            self.finals += 1
            self.final_utterances.add(r.utterance_id)

    def _finalize_ack(self, ack: transcription_pb2.FinalizeAck) -> None:
        if not self.finalizes:
            self._bad(f"finalize_ack {ack.finalize_id!r} without a finalize")
            return
        client_id, audio_ms = self.finalizes.popleft()
        if client_id and ack.finalize_id != client_id:
            self._bad(f"finalize_ack {ack.finalize_id!r} for finalize {client_id!r}")
        if ack.audio_ms != audio_ms:
            self._bad(f"finalize_ack.audio_ms {ack.audio_ms} != {audio_ms} at the finalize")

    def end(self, ok: bool) -> None:
        """The stream ended, OK or not."""
        if ok:
            if not self.ended:
                self._bad("stream ended OK without a summary")
            if self.finalizes:
                self._bad(f"{len(self.finalizes)} finalize(s) never acknowledged")
            if self.update_acks < self.updates:
                self._bad(f"{self.updates - self.update_acks} update(s) never acknowledged")


@dataclass
class _Scope:
    """One opened context, from ``opened`` to its end."""

    last_seq: int = 0
    next_ms: int = 0
    last_word_end: int = 0


@dataclass
class SynthesisOracle(_Oracle):
    """Checks one StreamingSynthesize stream (see the module docstring)."""

    scopes: dict[str, _Scope] = field(default_factory=dict)
    flushes: dict[str, list[str]] = field(default_factory=dict)  # context id -> flush ids sent
    cancels: set[str] = field(default_factory=set)
    opens: dict[str, int] = field(default_factory=dict)  # context id -> opens not yet answered
    closed: set[str] = field(default_factory=set)  # closes sent since the context's open

    def request(self, msg: synthesis_pb2.StreamingSynthesizeRequest) -> None:
        kind = msg.WhichOneof("request")
        cid = msg.context_id
        if kind == "open":
            self.opens[cid] = self.opens.get(cid, 0) + 1
            self.closed.discard(cid)
        elif kind == "close":
            self.closed.add(cid)
        elif kind == "flush" and cid not in self.closed:
            # A flush after the context's close gets no ack: it is answered by an error after
            # the context's done (docs/contract.md, voxwire/late_messages.py).
            self.flushes.setdefault(cid, []).append(msg.flush.flush_id)
        elif kind == "cancel":
            self.cancels.add(cid)

    def response(self, msg: synthesis_pb2.StreamingSynthesizeResponse) -> None:
        kind = msg.WhichOneof("response")
        cid = msg.context_id
        if self.ended:
            self._bad(f"{kind} for {cid!r} after the summary")
            return
        if kind == "summary":
            self.ended = True
            return
        if kind is None:
            self._bad("empty response")
            return
        scope = self.scopes.get(cid)
        if kind == "opened":
            if scope is not None:
                self._bad(f"opened {cid!r} while it is open")
            if self.opens.get(cid, 0) <= 0:
                self._bad(f"opened {cid!r} without an open")
            else:
                self.opens[cid] -= 1
            self.scopes[cid] = _Scope()
            self.cancels.discard(cid)
            return
        if kind == "error":
            if not error_reason(msg.error.error):
                self._bad(f"context error for {cid!r} without a reason")
            if scope is not None:
                self._end_scope(cid, scope, msg.error.last_sequence_number, "error")
            elif self.opens.get(cid, 0) > 0:
                self.opens[cid] -= 1  # a rejected open
            return
        if scope is None:
            self._bad(f"{kind} for {cid!r} outside an opened scope")
            return
        if kind == "audio":
            self._audio(cid, scope, msg.audio)
        elif kind == "words":
            self._words(cid, scope, msg.words)
        elif kind == "flush_ack":
            ack = msg.flush_ack
            sent = self.flushes.get(cid, [])
            if ack.flush_id in sent:
                sent.remove(ack.flush_id)
            else:
                self._bad(f"flush_ack {ack.flush_id!r} for {cid!r} without that flush")
            if ack.last_sequence_number != scope.last_seq:
                self._bad(
                    f"flush_ack for {cid!r} names chunk {ack.last_sequence_number}, "
                    f"last sent {scope.last_seq}"
                )
        elif kind == "cancelled":
            if cid not in self.cancels:
                self._bad(f"cancelled {cid!r} without a cancel")
            self._end_scope(cid, scope, msg.cancelled.last_sequence_number, "cancelled")
        elif kind == "done":
            if self.flushes.get(cid):
                self._bad(f"done {cid!r} before flush acks {self.flushes[cid]}")
            if msg.done.audio_ms != scope.next_ms:
                self._bad(f"done {cid!r}: audio_ms {msg.done.audio_ms} != chunks {scope.next_ms}")
            self._end_scope(cid, scope, msg.done.last_sequence_number, "done")

    def _audio(self, cid: str, scope: _Scope, chunk: synthesis_pb2.AudioChunk) -> None:
        if chunk.sequence_number != scope.last_seq + 1:
            self._bad(f"{cid!r}: chunk {chunk.sequence_number} after {scope.last_seq}")
        if chunk.start_ms != scope.next_ms:
            self._bad(f"{cid!r}: chunk starts at {chunk.start_ms} ms, expected {scope.next_ms}")
        if not chunk.audio:
            self._bad(f"{cid!r}: empty audio chunk {chunk.sequence_number}")
        scope.last_seq = chunk.sequence_number
        scope.next_ms = chunk.start_ms + chunk.duration_ms

    def _words(self, cid: str, scope: _Scope, words: synthesis_pb2.WordTimestamps) -> None:
        for w in words.words:
            if not scope.last_word_end <= w.start_ms <= w.end_ms:
                self._bad(f"{cid!r}: word {w.start_ms}-{w.end_ms} overlaps or goes back")
                return
            scope.last_word_end = w.end_ms

    def _end_scope(self, cid: str, scope: _Scope, last: int, what: str) -> None:
        if last != scope.last_seq:
            self._bad(f"{what} for {cid!r} names chunk {last}, last sent {scope.last_seq}")
        del self.scopes[cid]
        self.flushes.pop(cid, None)

    def end(self, ok: bool) -> None:
        if ok:
            if not self.ended:
                self._bad("stream ended OK without a summary")
            if self.scopes:
                self._bad(f"stream ended OK with contexts still open: {sorted(self.scopes)}")
