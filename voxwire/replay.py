"""Replay windows: what a session must keep to continue elsewhere without losing or repeating.

Shared by the three places that resume a stream (docs/design/edge.md, "Sessions that survive
restarts"): the client SDK (after a disconnect, a drain or the maximum duration), the gateway
(when an adapter fails) and the inference adapter (when a Triton replica fails).

STT, ``AudioReplayWindow``: the audio sent since the acknowledged position. The position
``finalized_through_ms`` says that all audio before it is reflected in final results the client
has received, so a new upstream stream that starts there (with ``stream_offset_ms`` set to it)
repeats nothing and loses nothing. Positions are milliseconds of session audio; audio is cut
at frame ``floor(ms * rate / 1000)``, the frame that contains that millisecond, so at rates
that do not divide evenly into milliseconds (11 025 Hz, ...) a replay starts up to one frame
early, never late.

TTS, ``TextReplay``: per context, the text appended and the words and audio received, so a
context can be reopened with its timeline and sequence numbers continuing and the text after
the last word whose audio was received completely.

Both are pure (no I/O, no clock) and bounded: audio beyond ``max_ms`` unacknowledged, and text
already spoken, is dropped; a window that had to drop unacknowledged audio says so
(``lossless`` False), and ``audio_since`` raises ResumeRejected rather than replay with a gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from voxwire.audio.formats import sample_bytes
from voxwire.errors import ResumeRejected, Violation
from voxwire.v1 import audio_pb2, synthesis_pb2

Control = TypeVar("Control")

# The most a continuing stream's starting point may be (its offset in ms, its first sequence
# number or utterance index): a day short of uint32's end, so that what the stream adds (its
# hour at most, max_stream_seconds) always fits the contract's uint32 fields. 2**32 - 1 was
# "INTERNAL (ValueError)" at the first result, after its audio was taken.
MAX_CONTINUED_FROM = 2**32 - 1 - 86_400_000


def heard(
    words: Iterable[synthesis_pb2.WordTimestamp], played_ms: int
) -> list[synthesis_pb2.WordTimestamp]:
    """The rule of Truncated.heard (protos/voxwire/edge/v1/tts.proto): the words whose audio
    ended at or before ``played_ms`` of the context's timeline, in order. One place for the
    gateway's answer and the SDK's own (a resumed context, a stop the connection lost)."""
    return [w for w in words if w.end_ms <= played_ms]


def continued_from_violations(**starts: tuple[str, int]) -> list[Violation]:
    """Violations for the starting points (name: (field as the client set it, value)) past
    MAX_CONTINUED_FROM."""
    return [
        Violation(field, f"at most {MAX_CONTINUED_FROM} (room for the stream after it)")
        for field, value in starts.values()
        if value > MAX_CONTINUED_FROM
    ]


class AudioReplayWindow:
    """Audio of one STT session from its acknowledged position on.

    ``frame_bytes`` is bytes per frame (bytes per sample x channels) and ``rate_hz`` frames per
    second of the session's audio format; ``base_ms`` is the session position of the first
    byte appended (non-zero after a resume).

    Raises ValueError for a non-positive frame size or rate, or a negative ``max_ms``.
    """

    __slots__ = (
        "_chunks",
        "_end_frame",
        "_max_frames",
        "_start_frame",
        "frame_bytes",
        "lossless",
        "rate_hz",
    )

    def __init__(self, frame_bytes: int, rate_hz: int, *, max_ms: int, base_ms: int = 0) -> None:
        if frame_bytes <= 0 or rate_hz <= 0 or max_ms < 0:
            raise ValueError("frame_bytes and rate_hz must be positive, max_ms not negative")
        self.frame_bytes = frame_bytes
        self.rate_hz = rate_hz
        self._max_frames = self.frame_at(max_ms)
        self._start_frame = self.frame_at(base_ms)  # first frame still held
        self._end_frame = self._start_frame  # one past the last frame received
        # (first frame, whole frames), oldest first. None while nothing is held: an empty deque
        # is ~0.7 KiB, and the gateway holds thousands of idle sessions (BENCHMARKS.md, "Memory
        # per idle WebSocket").
        self._chunks: deque[tuple[int, bytes]] | None = None
        self.lossless = True

    # -- positions -------------------------------------------------------------------------

    def frame_at(self, ms: int) -> int:
        """The frame that contains millisecond ``ms`` of session audio."""
        return ms * self.rate_hz // 1000

    def ms_at(self, frame: int) -> int:
        return frame * 1000 // self.rate_hz

    @property
    def received_ms(self) -> int:
        """Session audio received so far, in ms (the position of the next byte)."""
        return self.ms_at(self._end_frame)

    @property
    def start_ms(self) -> int:
        """The earliest position a replay can start from."""
        return self.ms_at(self._start_frame)

    @property
    def unacked_ms(self) -> int:
        return self.ms_at(self._end_frame - self._start_frame)

    @property
    def held_bytes(self) -> int:
        return (self._end_frame - self._start_frame) * self.frame_bytes

    @property
    def max_bytes(self) -> int:
        """The most it holds: beyond, the oldest unacknowledged audio goes (``lossless``)."""
        return self._max_frames * self.frame_bytes

    # -- changes -----------------------------------------------------------------------------

    def append(self, audio: bytes) -> None:
        """Keep ``audio`` (a whole number of frames). Raises ValueError otherwise."""
        if len(audio) % self.frame_bytes:
            raise ValueError(
                f"{len(audio)} bytes is not a whole number of {self.frame_bytes}-byte frames"
            )
        if not audio:
            return
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append((self._end_frame, bytes(audio)))
        self._end_frame += len(audio) // self.frame_bytes
        if self._end_frame - self._start_frame > self._max_frames:
            # Over the bound: the oldest unacknowledged audio goes, and a later replay from
            # before the new start is refused instead of silently leaving a gap.
            self.lossless = False
            self._trim(self._end_frame - self._max_frames)

    def ack(self, finalized_through_ms: int) -> None:
        """Drop audio before the acknowledged position (a stale or repeated ack is a no-op)."""
        self._trim(min(self.frame_at(finalized_through_ms), self._end_frame))
        if self._start_frame >= self.frame_at(finalized_through_ms):
            self.lossless = True  # everything unacknowledged is held again

    def audio_since(self, ms: int) -> bytes:
        """The audio from position ``ms`` to the end, for a replay.

        Raises ResumeRejected when that audio is no longer held (before the window's start or
        after its end)."""
        return b"".join(self.pieces_since(ms))

    def pieces_since(self, ms: int) -> list[bytes]:
        """The same audio as ``audio_since``, cut where it was cut when appended (the first
        piece starts at ``ms``), so a replay can repeat the original messages.

        Raises ResumeRejected when that audio is no longer held."""
        frame = self.frame_at(ms)
        if frame < self._start_frame or frame > self._end_frame:
            raise ResumeRejected(
                f"cannot replay from {ms} ms: audio from {self.start_ms} to {self.received_ms} ms "
                "is held"
            )
        parts = []
        for first, data in self._chunks or ():
            last = first + len(data) // self.frame_bytes
            if last <= frame:
                continue
            skip = max(0, frame - first) * self.frame_bytes
            parts.append(data[skip:] if skip else data)
        return parts

    def replay_since(
        self, ms: int, controls: Iterable[tuple[int, Control]]
    ) -> list[bytes | Control]:
        """What a new stream that starts at position ``ms`` must be sent, in order: the audio
        from ``ms`` in its original pieces, and each control (a finalize, an update, the end)
        placed after every byte before its frame. Controls at a frame before ``ms`` (their
        audio is acknowledged already) come first, in their order; a piece is split where a
        control falls inside it. Controls must not be ``bytes``.

        Raises ResumeRejected when the audio from ``ms`` is no longer held."""
        frame = self.frame_at(ms)
        if frame < self._start_frame or frame > self._end_frame:
            raise ResumeRejected(
                f"cannot replay from {ms} ms: audio from {self.start_ms} to {self.received_ms} ms "
                "is held"
            )
        ordered = sorted(controls, key=lambda c: c[0])  # stable: equal frames keep their order
        out: list[bytes | Control] = []
        i = 0
        for first, data in self._chunks or ():
            last = first + len(data) // self.frame_bytes
            if last <= frame:
                continue
            cut = max(first, frame)
            while i < len(ordered) and ordered[i][0] < last:
                at = max(ordered[i][0], cut)
                if at > cut:
                    out.append(
                        data[(cut - first) * self.frame_bytes : (at - first) * self.frame_bytes]
                    )
                    cut = at
                out.append(ordered[i][1])
                i += 1
            out.append(data[(cut - first) * self.frame_bytes :] if cut > first else data)
        out += [control for _, control in ordered[i:]]
        return out

    def _trim(self, frame: int) -> None:
        if frame <= self._start_frame:
            return
        chunks = self._chunks
        while chunks:
            first, data = chunks[0]
            last = first + len(data) // self.frame_bytes
            if last <= frame:
                chunks.popleft()
            elif first < frame:
                chunks[0] = (frame, data[(frame - first) * self.frame_bytes :])
                break
            else:
                break
        if chunks is not None and not chunks:
            self._chunks = None
        self._start_frame = frame


@dataclass(frozen=True, slots=True)
class WordMark:
    """Where a word is in the context's text (code points) and its audio (ms)."""

    text_offset: int
    text_length: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """How to reopen a TTS context: the text still to speak and where its timeline goes on."""

    text: str
    # Position of ``text[0]`` in the context's whole text (for word text offsets).
    text_offset: int
    timeline_offset_ms: int
    first_sequence_number: int
    # SSML: how much of the audio of ``text``, from ``timeline_offset_ms`` on, was received
    # (``SynthesisContextConfig.skip_audio_ms``; the first new chunk is ``first_sequence_number``).
    skip_audio_ms: int = 0
    # Where in ``text`` each flush not yet acknowledged goes, in order (the reopened context
    # is asked again for each, at its place: SSML needs it, each flush ending a document).
    flushes_at: tuple[int, ...] = ()

    def requests(self, flush_ids: Iterable[str]) -> list[tuple[str, str]]:
        """The text and the flushes to send after the reopening ``open``, in order, as
        ("append", text) and ("flush", id) pairs; ``flush_ids`` are the flushes not yet
        acknowledged, oldest first (one per ``flushes_at``; extra ones go last)."""
        out: list[tuple[str, str]] = []
        at = 0
        ids = list(flush_ids)
        for place, flush_id in zip(self.flushes_at, ids, strict=False):
            if place > at:
                out.append(("append", self.text[at:place]))
                at = place
            out.append(("flush", flush_id))
        if at < len(self.text):
            out.append(("append", self.text[at:]))
        out += [("flush", flush_id) for flush_id in ids[len(self.flushes_at) :]]
        return out

    def messages(
        self,
        message: type[Any],
        context_id: str,
        config: synthesis_pb2.SynthesisContextConfig,
        flush_ids: Iterable[str],
    ) -> list[Any]:
        """The context reopened from here: ``open`` (``config`` with this point's offsets),
        then ``requests``, as ``message``s (the contract's request or the edge's client
        message: both have ``context_id``, ``open``, ``append`` and ``flush``)."""
        reopened = synthesis_pb2.SynthesisContextConfig()
        reopened.CopyFrom(config)
        reopened.timeline_offset_ms = self.timeline_offset_ms
        reopened.first_sequence_number = self.first_sequence_number
        reopened.skip_audio_ms = self.skip_audio_ms
        out = [message(context_id=context_id, open=reopened)]
        for kind, value in self.requests(flush_ids):
            if kind == "append":
                out.append(
                    message(context_id=context_id, append=synthesis_pb2.AppendText(text=value))
                )
            else:
                out.append(
                    message(context_id=context_id, flush=synthesis_pb2.Flush(flush_id=value))
                )
        return out


class TakenAudio(NamedTuple):
    """A chunk of a reopened context as it is passed on: its number and place in the
    context, and how much of its start (ms) was received already and is cut."""

    sequence_number: int
    start_ms: int
    cut_ms: int


@dataclass(slots=True)
class TextReplay:
    """The resumable state of one TTS context, as seen by whoever receives its audio.

    Text offsets are Unicode code points from the first character of the context's first append
    (the contract's ``WordTimestamp.text_offset``). Only text not yet spoken (after the last
    complete word) is kept, so memory follows the unspoken text, not the context's length.

    SSML (``ssml`` True): the text up to each flush (or the close) is one ``<speak>`` document
    (docs/contract.md, "Text format"), which cannot be cut after a word: a document is kept
    whole until its flush is acknowledged (its audio is all in), a reopened context speaks the
    first unacknowledged document again from its start, telling the server how much of its
    audio was received (``skip_audio_ms``); a server that sends it again anyway (one without
    ``ServerFeatures.synthesis_skip_audio``) has it dropped by ``take``, which numbers the rest
    on from the last chunk received.
    """

    ssml: bool = False
    # The context asked for word timestamps (SSML: what a resume may skip, resume_point).
    timestamps: bool = False
    # Position of ``_text[0]`` in the whole context text.
    _base: int = 0
    _text: str = ""
    # The end (code points) of the last word whose audio was received completely.
    _spoken_to: int = 0
    _pending: list[WordMark] = field(default_factory=list)  # words whose audio is not all in
    audio_end_ms: int = 0  # end of the audio received, in the context's timeline
    last_sequence_number: int = 0
    # Word text offsets of the current stream count from here (non-zero after a resume, whose
    # stream only saw the text from the resume point on).
    _word_base: int = 0
    # Whole-text positions of the flushes not yet acknowledged, oldest first.
    _flushes: list[int] = field(default_factory=list)
    # SSML: where the first unacknowledged document starts on the timeline.
    _document_ms: int = 0
    # SSML, after a reopening: audio of the new stream before this point was received already.
    _skip_to_ms: int | None = None
    _seq_shift: int = 0  # the new stream's numbers less the numbers passed on
    # The end of the last word timestamp received (timeline ms): every word that ends by
    # then came. A word's timestamp can come after audio past its end (eSpeak knows a word's
    # end when the next one starts), so audio received does not say its words came.
    _words_to_ms: int = 0

    def opened(self, config: synthesis_pb2.SynthesisContextConfig) -> None:
        """The context was opened with ``config``: its text format, whether it has word
        timestamps, and where it continues an earlier one (its offsets, ``continues``)."""
        self.ssml = config.text_format == synthesis_pb2.TEXT_FORMAT_SSML
        self.timestamps = config.word_timestamps
        self.continues(
            config.timeline_offset_ms,
            max(0, config.first_sequence_number - 1),
            config.skip_audio_ms,
        )

    def continues(
        self, timeline_offset_ms: int, last_sequence_number: int, skip_audio_ms: int = 0
    ) -> None:
        """The context continues an earlier one: its ``open`` had these fields."""
        self._document_ms = timeline_offset_ms
        self.audio_end_ms = timeline_offset_ms + skip_audio_ms
        self._words_to_ms = self.audio_end_ms  # what was skipped, its words too, the client has
        self.last_sequence_number = last_sequence_number
        self._skip_to_ms = self.audio_end_ms if skip_audio_ms else None
        self._seq_shift = 0

    def append(self, text: str) -> None:
        self._text += text

    def flushed(self) -> None:
        """A flush was sent: the text so far ends a document (SSML)."""
        self._flushes.append(self._base + len(self._text))

    def flush_acked(self) -> None:
        """The oldest flush was acknowledged: the audio of all text before it is in."""
        if not self._flushes:
            return
        end = self._flushes.pop(0)
        self._words_to_ms = max(self._words_to_ms, self.audio_end_ms)  # its words came first
        if self.ssml:
            cut = min(max(0, end - self._base), len(self._text))
            self._text = self._text[cut:]
            self._base += cut
            self._document_ms = self.audio_end_ms

    def word(self, mark: WordMark) -> None:
        """A word of the current stream (``text_offset`` as that stream reported it)."""
        if self._word_base:
            mark = WordMark(mark.text_offset + self._word_base, mark.text_length, mark.end_ms)
        self._words_to_ms = max(self._words_to_ms, mark.end_ms)
        self._pending.append(mark)
        self._advance()

    def resumed(self, point: ResumePoint) -> None:
        """The context was reopened from ``point``: its new stream numbers text from there."""
        self._word_base = point.text_offset
        self._pending.clear()
        self._seq_shift = 0
        received = self.audio_end_ms > point.timeline_offset_ms
        self._skip_to_ms = self.audio_end_ms if received else None

    @property
    def rewrites(self) -> bool:
        """Whether ``take`` may change a chunk: only after an SSML reopening (the common
        path, every chunk of every context, asks this and nothing more)."""
        return self._skip_to_ms is not None or self._seq_shift != 0

    def take(self, sequence_number: int, start_ms: int, duration_ms: int) -> TakenAudio | None:
        """A chunk of the current stream, before ``audio``: None when all of it was received
        before the reopening (an SSML document spoken again from its start by a server that
        does not honour ``skip_audio_ms``), else its number and place as passed on and how much
        of its start to cut."""
        skip_to = self._skip_to_ms
        if skip_to is not None:
            if start_ms < skip_to and start_ms + duration_ms <= skip_to:
                return None
            self._skip_to_ms = None
            self._seq_shift = sequence_number - (self.last_sequence_number + 1)
            cut = max(0, skip_to - start_ms)
            return TakenAudio(sequence_number - self._seq_shift, start_ms + cut, cut)
        return TakenAudio(sequence_number - self._seq_shift, start_ms, 0)

    def number(self, sequence_number: int) -> int:
        """A sequence number of the current stream named by a flush ack, ``done`` or an end,
        as passed on: shifted as ``take`` shifts the chunks' (while it still drops audio sent
        again, the last chunk received)."""
        if self._skip_to_ms is not None:
            return min(sequence_number, self.last_sequence_number)
        return max(0, sequence_number - self._seq_shift)

    def audio(self, sequence_number: int, start_ms: int, duration_ms: int) -> None:
        """A chunk arrived (or was sent to the listener)."""
        self.last_sequence_number = max(self.last_sequence_number, sequence_number)
        self.audio_end_ms = max(self.audio_end_ms, start_ms + duration_ms)
        self._advance()

    def _advance(self) -> None:
        done = [w for w in self._pending if w.end_ms <= self.audio_end_ms]
        if not done:
            return
        self._pending = [w for w in self._pending if w.end_ms > self.audio_end_ms]
        if self.ssml:
            return  # a document is cut whole, when its flush is acknowledged
        self._spoken_to = max(self._spoken_to, *(w.text_offset + w.text_length for w in done))
        cut = min(max(0, self._spoken_to - self._base), len(self._text))
        self._text = self._text[cut:]
        self._base += cut

    def resume_point(self) -> ResumePoint:
        """Reopen with this: the text after the last completely received word (SSML: from the
        start of the first unacknowledged document), the timeline where that text's audio
        goes, and the next sequence number there."""
        flushes_at = tuple(max(0, end - self._base) for end in self._flushes)
        if self.ssml:
            # The server skips the audio and the word timestamps that end within the skip:
            # with timestamps, only as far as the words received reach (the audio after it is
            # sent again and dropped by ``take``, which drops up to ``audio_end_ms``); a word
            # whose timestamp was still on its way was lost otherwise.
            have = self.audio_end_ms
            if self.timestamps:
                have = min(have, max(self._document_ms, self._words_to_ms))
            return ResumePoint(
                text=self._text,
                text_offset=self._base,
                timeline_offset_ms=self._document_ms,
                first_sequence_number=self.last_sequence_number + 1,
                skip_audio_ms=have - self._document_ms,
                flushes_at=flushes_at,
            )
        return ResumePoint(
            text=self._text,
            text_offset=self._base,
            timeline_offset_ms=self.audio_end_ms,
            first_sequence_number=self.last_sequence_number + 1,
            flushes_at=flushes_at,
        )


def cut_audio(audio: bytes, cut_ms: int, fmt: audio_pb2.AudioFormat) -> bytes:
    """``audio`` (mono, in ``fmt``) without its first ``cut_ms``, in whole samples."""
    if cut_ms <= 0:
        return audio
    return audio[(cut_ms * fmt.sample_rate_hz // 1000) * sample_bytes(fmt.encoding) :]
