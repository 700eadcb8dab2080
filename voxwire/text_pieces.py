"""Long text cut into pieces a TTS context can take one at a time.

A context holds at most ``Limits.max_pending_text_bytes`` of text it has not synthesized yet
(docs/contract.md, "Limits"; 16 KiB on the reference server), so a chapter appended whole fails
with ``TEXT_TOO_LARGE``. The SDK (``SynthesisContext.append``) and ``POST /v1/tts`` append
long text in pieces instead, each followed by a flush, and append the next one when an earlier
piece's flush is acknowledged (all its audio is out): a couple of pieces are pending at a time,
so the model is never idle between them and the pending text stays under the limit.

A flush ends a synthesis unit where it falls (contract: "Flush"), so pieces end where a
sentence does, and the prosody is that of the text appended whole: at a paragraph break in the
piece's second half, else at the last sentence end, else at the last space; only a "word"
longer than a piece is cut inside. The pieces joined are the text exactly: word timestamps'
``text_offset`` counts from the context's first append either way.
"""

from __future__ import annotations

import re
from collections import deque
from typing import NamedTuple

__all__ = ["PIECE_BYTES", "Append", "Close", "Flush", "Op", "TextFeed", "piece_bytes", "pieces"]

# Two pieces pending at once stay under the reference server's 16 KiB with room to spare (a
# server advertising less gets smaller pieces: ``piece_bytes(limit)``); 4 KiB is some 700
# words, minutes of audio, so a piece's flush is far apart from the next.
PIECE_BYTES = 4096

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# A sentence end and the space after it; the abbreviations the adapter's splitter also keeps
# inside a sentence ("Dr. Smith") are skipped.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]\u201d\u2019]*\s+")
# ASCII word boundaries, as JavaScript's: voxwire.js's textPieces cuts the same pieces (of text
# without characters beyond the BMP: JavaScript counts those as two units).
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Mt|No|vs|etc|e\.g|i\.e|[A-Z])\.)$",
    re.IGNORECASE | re.ASCII,
)
_SPACE = re.compile(r"\s+")


def piece_bytes(max_pending_text_bytes: int) -> int:
    """The piece size for a server whose contexts hold at most ``max_pending_text_bytes``
    of unsynthesized text (0: not advertised): two pieces pending fit under it."""
    if max_pending_text_bytes <= 0:
        return PIECE_BYTES
    return max(1, min(PIECE_BYTES, max_pending_text_bytes // 2))


def pieces(text: str, max_bytes: int = PIECE_BYTES) -> list[str]:
    """``text`` in pieces of at most ``max_bytes`` UTF-8 bytes each, joined equal to ``text``.
    Raises ValueError for ``max_bytes`` below 4 (a code point may take four)."""
    if max_bytes < 4:
        raise ValueError("max_bytes must be at least 4")
    out: list[str] = []
    start, rest = 0, len(text.encode())
    while rest > max_bytes:
        end = _fit(text, start, max_bytes)
        out.append(text[start:end])
        rest -= len(out[-1].encode())
        start = end
    if start < len(text):
        out.append(text[start:])
    return out


def _fit(text: str, start: int, max_bytes: int) -> int:
    """Where the piece from ``start`` ends: the last good cut within ``max_bytes``."""
    # The most code points from start that fit in max_bytes (a code point is 1 to 4 bytes).
    limit = start + min(max_bytes, len(text) - start)
    while (over := len(text[start:limit].encode()) - max_bytes) > 0:
        limit -= max(1, over // 4)
    window = text[start:limit]
    ends = [m.end() for m in _PARAGRAPH.finditer(window)]
    if ends and ends[-1] > len(window) // 2:
        return start + ends[-1]
    for m in reversed(list(_SENTENCE_END.finditer(window))):
        if not _ABBREVIATION.search(window, 0, m.start() + 1):
            return start + m.end()
    spaces = [m.end() for m in _SPACE.finditer(window)]
    if spaces:
        return start + spaces[-1]
    return limit  # one "word" longer than a piece


class Append(NamedTuple):
    text: str


class Flush(NamedTuple):
    flush_id: str
    ours: bool  # a piece's flush (its ack is the feed's), or the client's own


class Close(NamedTuple):
    pass


Op = Append | Flush | Close


class TextFeed:
    """Sans-I/O: the appends, flushes and close one context's text goes out as, and when.

    What is given to it (``append``, ``flush``, ``close``) goes out in its order; text in
    pieces (``pieces``), each followed by a flush of the feed's own, and at most ``window``
    flushes waiting for their ack at a time. ``more`` says what may go out now; ``acked``
    takes a flush's ack. Text that is no whole piece and has nothing behind it goes out as it
    is, with no flush of the feed's (a client streaming words, say, must not have its units
    cut mid-sentence), so ``idle`` holds once the rest is out."""

    def __init__(self, piece_bytes: int = PIECE_BYTES, *, window: int = 2, prefix: str) -> None:
        self._piece_bytes = piece_bytes
        self._window = window
        self._prefix = prefix
        self._queue: deque[str | Flush | Close] = deque()
        self._waiting: list[str] = []  # flush ids sent, not acknowledged yet
        self._count = 0

    @property
    def idle(self) -> bool:
        """Nothing is queued: what the client gives now may go out directly."""
        return not self._queue

    @property
    def holding(self) -> bool:
        """Text or a close is queued, or a flush of the feed's waits for its ack."""
        return bool(self._queue) or any(i.startswith(self._prefix) for i in self._waiting)

    def append(self, text: str) -> None:
        if self._queue and isinstance(self._queue[-1], str):
            self._queue[-1] += text  # pieces are cut from the text as a whole
        else:
            self._queue.append(text)

    def flush(self, flush_id: str) -> None:
        self._queue.append(Flush(flush_id, ours=False))

    def close(self) -> None:
        self._queue.append(Close())

    def clear(self) -> None:
        """The context stops (cancel, truncate, failure): nothing more goes out."""
        self._queue.clear()
        self._waiting.clear()

    def more(self) -> list[Op]:
        """What may go out now, in order."""
        out: list[Op] = []
        while self._queue and len(self._waiting) < self._window:
            item = self._queue[0]
            if isinstance(item, Close):
                self._queue.popleft()
                out.append(item)
                continue
            if isinstance(item, Flush):
                self._queue.popleft()
                self._waiting.append(item.flush_id)
                out.append(item)
                continue
            if len(item.encode()) <= self._piece_bytes:
                # No more than a piece, and a flush, a close or nothing behind it (text is
                # joined in ``append``): out as it is, no flush of the feed's.
                self._queue.popleft()
                out.append(Append(item))
                continue
            end = _fit(item, 0, self._piece_bytes)  # the first piece only: no cut of the rest
            first, self._queue[0] = item[:end], item[end:]
            self._count += 1
            flush_id = f"{self._prefix}{self._count}"
            self._waiting.append(flush_id)
            out += [Append(first), Flush(flush_id, ours=True)]
        return out

    def acked(self, flush_id: str) -> bool:
        """A flush's ack came: room for more. True for a flush of the feed's own (not the
        client's: its ack is the client's to see)."""
        if flush_id in self._waiting:
            self._waiting.remove(flush_id)
        return flush_id.startswith(self._prefix)
