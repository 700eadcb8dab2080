"""The measurements of one session, as pure state: feed it what was sent (with its intended
time) and the events received (with their receive time); it records samples.

Definitions (docs/design/loadtest.md, "Measurement points"): every latency runs from the
*intended* time of the input it answers (the pacing schedule's due time, or the session's
scheduled start), so a late send or a late start is part of the latency (coordinated omission).

STT, chunk i of ``chunk_ms`` covers audio [i*chunk_ms, (i+1)*chunk_ms):
- ``stt.message``: every result (interim or final) or echo, minus the intended send time of
  the chunk it answers: for a result, the chunk that holds its ``end_ms`` (the last audio it
  reflects); for an echo, the chunk it echoes.
- ``stt.message_from_send``: the same, from when the chunk was actually written (no
  correction: the difference is the generator's or the transport's delay in sending).
- ``stt.covered``: every chunk, minus its intended send time, at the first result (or echo)
  that reflects it: a server that answers several chunks with one result (it merges audio that
  waits while the model is behind, or a resampler's lag batches it) has ``stt.message`` timed
  from the newest of them, and this times each. Meant for models that answer every request
  (the benchmark models, echo); on a real model, chunks of silence wait for the next result.
- ``stt.first_result``: the first result, minus chunk 0's intended time.
- ``stt.final``: each final result, minus the intended time of the chunk holding its end_ms
  (its latency after the end of the speech it covers).
- ``session.setup``: ``started`` (STT) or the first ``opened`` (TTS), minus the intended start.
TTS, per context: ``tts.first_audio`` (first chunk minus the intended time of its text),
``tts.chunk_gap`` (between consecutive chunks), ``tts.underrun`` (each stall, see playback.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loadtest.events import Ack, Audio, ContextDone, ContextFailed, ContextOpened, Event, Result
from loadtest.events import Started as StartedEvent
from loadtest.playback import Playback
from loadtest.recorder import Recorder


@dataclass(slots=True)
class SttMeasure:
    recorder: Recorder
    intended_start: float
    chunk_ms: int
    warm_until: float = -math.inf  # inputs intended before this are not recorded
    intended: list[float] = field(default_factory=list)  # chunk i -> its due time
    actual: list[float] = field(default_factory=list)  # chunk i -> when it was written
    finals: list[str] = field(default_factory=list)
    first_result: bool = False
    acks: int = 0  # echo answers recorded (an echo target answers every chunk once)
    covered: int = -1  # the last chunk a result or an echo reflected (``stt.covered``)

    def sent(self, due: float, actual: float | None = None) -> None:
        """The next chunk was written at ``actual``; it was due at ``due``."""
        self.intended.append(due)
        self.actual.append(due if actual is None else actual)

    def _chunk_for(self, end_ms: int) -> int | None:
        if not self.intended:
            return None
        index = math.ceil(end_ms / self.chunk_ms) - 1
        return min(max(index, 0), len(self.intended) - 1)

    def _latency(self, metric: str, at: float, due: float) -> None:
        if due >= self.warm_until:
            self.recorder.record(metric, at - due)

    def _message(self, at: float, index: int) -> None:
        due = self.intended[index]
        if due >= self.warm_until:
            self.recorder.record("stt.message", at - due)
            # The same latency without the correction, to show what the correction adds.
            self.recorder.record("stt.message_from_send", at - self.actual[index])

    def _covered(self, at: float, index: int) -> None:
        for due in self.intended[self.covered + 1 : index + 1]:
            self._latency("stt.covered", at, due)
        self.covered = max(self.covered, index)

    def unanswered(self) -> int:
        """Recorded chunks an echo target never answered (the session ended or was cut first)."""
        return sum(1 for due in self.intended if due >= self.warm_until) - self.acks

    def on_event(self, event: Event) -> None:
        if isinstance(event, StartedEvent):
            self._latency("session.setup", event.at, self.intended_start)
        elif isinstance(event, Ack):
            if 0 <= event.index < len(self.intended):
                self._message(event.at, event.index)
                self._covered(event.at, event.index)
                if self.intended[event.index] >= self.warm_until:
                    self.acks += 1
        elif isinstance(event, Result):
            index = self._chunk_for(event.end_ms)
            if index is None:
                return
            self._message(event.at, index)
            self._covered(event.at, index)
            if not self.first_result:
                self.first_result = True
                self._latency("stt.first_result", event.at, self.intended[0])
            if event.is_final:
                self._latency("stt.final", event.at, self.intended[index])
                if event.text:
                    self.finals.append(event.text)


@dataclass(slots=True)
class TtsContextMeasure:
    recorder: Recorder
    text_due: float  # intended time of the context's first text
    playback: Playback
    warm_until: float = -math.inf
    last_audio_at: float | None = None
    finished: bool = False
    failed_reason: str = ""
    failed_message: str = ""

    def on_event(self, event: Event) -> None:
        if self.finished:
            # A context ends once. A server that refused it still answers each request the
            # client wrote before it heard (append, close) with an error of its own: counted,
            # those made one refusal several contexts, and their reasons could replace its own.
            return
        record = self.text_due >= self.warm_until
        if isinstance(event, Audio):
            if self.last_audio_at is None:
                if record:
                    self.recorder.record("tts.first_audio", event.at - self.text_due)
            elif record:
                self.recorder.record("tts.chunk_gap", event.at - self.last_audio_at)
            self.last_audio_at = event.at
            stall = self.playback.chunk(event.at, event.duration_ms / 1000.0)
            if stall > 0 and record:
                self.recorder.record("tts.underrun", stall)
        elif isinstance(event, ContextDone | ContextFailed):
            self.finished = True
            if isinstance(event, ContextFailed):
                self.failed_reason = event.reason
                self.failed_message = event.message
            if record:
                self.recorder.count("tts.contexts")
                self.recorder.count("tts.underruns", self.playback.underruns)
                self.recorder.count("tts.underrun_us", round(self.playback.stalled_s * 1e6))
                self.recorder.count("tts.audio_chunks", self.playback.chunks)


def setup_latency(
    recorder: Recorder, event: ContextOpened | StartedEvent, intended: float, warm_until: float
) -> None:
    if intended >= warm_until:
        recorder.record("session.setup", event.at - intended)
