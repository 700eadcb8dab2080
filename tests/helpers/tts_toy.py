"""A toy TTS upstream for the property tests of the TTS sessions: a fake of one adapter
``StreamingSynthesize`` call, written for those tests and named so.

It speaks the text it was sent word by word (a word is complete when a space follows it, or a
flush or close covers it): for each word a ``words`` message (its text offset in this call's
text, its length, the end of its audio), then ``PARTS`` audio chunks of ``PART_MS`` whose bytes
say which word and part they carry (``heard``), numbered and timed from the call's
``first_sequence_number`` and ``timeline_offset_ms``. A flush is acknowledged once the text
before it is spoken; after ``close`` and the last word, ``done``. Responses wait in ``out``
until the test delivers them (the gateway reads a call only while it has room).

SSML (``text_format``): the text up to each flush or the close must be one document, here
``<speak> w1 w2 </speak>`` (the tags are tokens of their own and are not spoken), or the
context fails with SSML_INVALID, as a real model's would; words are spoken only once their
document is complete. ``skip_audio_ms`` is honoured (its audio and the words ending in it are
not sent) unless the toy is made with ``honours_skip`` False, as a server without
``ServerFeatures.synthesis_skip_audio`` would be.
"""

from __future__ import annotations

from collections import deque

from voxwire import errors
from voxwire.v1 import synthesis_pb2

Request = synthesis_pb2.StreamingSynthesizeRequest
Response = synthesis_pb2.StreamingSynthesizeResponse
RATE = 8000  # PCM16 mono: 16 bytes per ms
PART_MS = 50
PARTS = 2
PART_BYTES = PART_MS * RATE * 2 // 1000


def part_audio(word: str, part: int) -> bytes:
    label = f"{word}#{part}".encode()
    return label + bytes(PART_BYTES - len(label))


def heard(audio: bytes) -> tuple[str, int]:
    """(word, part) of a chunk the toy made."""
    word, part = audio.rstrip(b"\0").decode().split("#")
    return word, int(part)


class ToySynth:
    def __init__(
        self, requests: tuple[Request, ...] | list[Request], *, honours_skip: bool = True
    ) -> None:
        first = requests[0]
        assert first.WhichOneof("request") == "open", first
        config = first.open
        self.context_id = first.context_id
        self.next_seq = max(1, config.first_sequence_number)
        self.at_ms = config.timeline_offset_ms
        self.ssml = config.text_format == synthesis_pb2.TEXT_FORMAT_SSML
        self.skip_to_ms = config.timeline_offset_ms + (config.skip_audio_ms if honours_skip else 0)
        self.documents_end = 0  # SSML: characters of ``text`` in complete documents
        self.failed = False
        self.text = ""
        self.spoken_to = 0  # characters of ``text`` spoken (or skipped: spaces)
        self.flushes: list[tuple[str, int]] = []  # (id, text length when it came)
        self.closed = False
        self.done = False
        self.out: deque[Response] = deque(
            [Response(context_id=self.context_id, opened=synthesis_pb2.ContextOpened())]
        )
        for request in requests[1:]:
            self.write(request)

    def write(self, request: Request) -> None:
        kind = request.WhichOneof("request")
        assert not self.closed or kind == "keep_alive", f"{kind} after close"
        if self.failed:
            return
        if kind == "append":
            self.text += request.append.text
        elif kind == "flush":
            self.flushes.append((request.flush.flush_id, len(self.text)))
            self._document_ends()
        elif kind == "close":
            self.closed = True
            self._document_ends()
        else:
            assert kind == "keep_alive", kind
        if not self.failed:
            self._answer()

    def _document_ends(self) -> None:
        """SSML: the text since the last flush is a document (or nothing), or the context
        fails."""
        if not self.ssml:
            return
        tokens = self.text[self.documents_end :].split()
        if tokens and (tokens[0] != "<speak>" or tokens[-1] != "</speak>"):
            self.failed = self.done = True
            error = errors.SsmlInvalid(f"not a document: {' '.join(tokens)[:60]}").to_proto()
            self.out.append(
                Response(
                    context_id=self.context_id,
                    error=synthesis_pb2.ContextError(
                        error=error, last_sequence_number=self.next_seq - 1
                    ),
                )
            )
        self.documents_end = len(self.text)

    def speak(self) -> bool:
        """Speak the next complete word; False when there is none."""
        if self.done:
            return False
        start = self.spoken_to
        while start < len(self.text) and self.text[start] == " ":
            start += 1
        end = self.text.find(" ", start)
        covered = max([n for _, n in self.flushes] + [len(self.text) if self.closed else 0])
        if end < 0:
            if start >= len(self.text) or covered < len(self.text):
                self.spoken_to = start
                self._answer()
                return False
            end = len(self.text)
        if self.ssml:
            if end > self.documents_end:
                return False  # its document is not complete yet
            if self.text[start] == "<":  # a tag: not spoken
                self.spoken_to = end
                self._answer()
                return True
        word = self.text[start:end]
        timestamp = synthesis_pb2.WordTimestamp(
            word=word,
            text_offset=start,
            text_length=end - start,
            start_ms=self.at_ms,
            end_ms=self.at_ms + PARTS * PART_MS,
        )
        if timestamp.end_ms > self.skip_to_ms:
            self.out.append(
                Response(
                    context_id=self.context_id,
                    words=synthesis_pb2.WordTimestamps(words=[timestamp]),
                )
            )
        for part in range(PARTS):
            if self.at_ms + PART_MS > self.skip_to_ms:  # skip_audio_ms: the client has it
                chunk = synthesis_pb2.AudioChunk(
                    sequence_number=self.next_seq,
                    audio=part_audio(word, part),
                    start_ms=self.at_ms,
                    duration_ms=PART_MS,
                )
                self.out.append(Response(context_id=self.context_id, audio=chunk))
                self.next_seq += 1
            self.at_ms += PART_MS
        self.spoken_to = end
        self._answer()
        return True

    def _answer(self) -> None:
        rest = self.text[self.spoken_to :]
        while self.flushes and (self.flushes[0][1] <= self.spoken_to or not rest.strip()):
            flush_id, _ = self.flushes.pop(0)
            ack = synthesis_pb2.FlushAck(flush_id=flush_id, last_sequence_number=self.next_seq - 1)
            self.out.append(Response(context_id=self.context_id, flush_ack=ack))
        if self.closed and not rest.strip() and not self.flushes and not self.done:
            self.done = True
            done = synthesis_pb2.ContextDone(last_sequence_number=self.next_seq - 1)
            self.out.append(Response(context_id=self.context_id, done=done))
