"""What eSpeak NG is asked to speak, and how its positions map back to the request text.

Two inputs, one output. Plain text with pronunciation entries, or a strict SSML subset, is
rewritten into the text eSpeak gets (``[[phonemes]]`` for pronunciations, eSpeak-flavoured SSML
for SSML). eSpeak reports word events as character positions in *that* text; ``MappedText``
keeps, for every piece it emitted, the span of the original request text it came from, so word
offsets always refer to what the client sent.

Positions are Python string indices (Unicode code points) into the original text.
Failures raise ``TextError`` with a voxwire reason; nothing is spoken then.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

SSML_NAMESPACE = "http://www.w3.org/2001/10/synthesis"
# eSpeak phoneme mnemonics are printable ASCII; brackets would end [[...]] early and <, >, &
# would be read as markup in SSML mode.
_PHONEMES = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_PHONEME_FORBIDDEN = set("[]<>&")
ESPEAK_FLAG_SSML = 0x10
ESPEAK_FLAG_PHONEMES = 0x100


class TextError(Exception):
    """Input that cannot be spoken; ``reason`` is a voxwire error reason string."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class _Piece:
    out_start: int
    out_end: int
    orig_start: int
    orig_end: int
    exact: bool  # one output char per original char (else: the whole piece maps to the span)


class MappedText:
    """Text built from pieces, each remembering the original span it stands for."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pieces: list[_Piece] = []
        self._starts: list[int] = []
        self._length = 0
        self.flags = 0

    def markup(self, text: str) -> None:
        """Output with no original counterpart (SSML tags, separators)."""
        self._append(text, None, None, exact=False)

    def exact(self, text: str, orig_start: int) -> None:
        self._append(text, orig_start, orig_start + len(text), exact=True)

    def block(self, text: str, orig_start: int, orig_end: int) -> None:
        """Output that stands for original[orig_start:orig_end] as a whole."""
        self._append(text, orig_start, orig_end, exact=False)

    def _append(self, text: str, orig_start: int | None, orig_end: int | None, exact: bool) -> None:
        if not text:
            return
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        if orig_start is not None and orig_end is not None:
            self._pieces.append(_Piece(start, self._length, orig_start, orig_end, exact))
            self._starts.append(start)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def to_original(self, out_start: int, out_length: int) -> tuple[int, int] | None:
        """The original span covered by output[out_start:out_start+out_length], if any."""
        out_end = out_start + max(out_length, 1)
        index = max(bisect.bisect_right(self._starts, out_start) - 1, 0)
        spans = []
        for piece in self._pieces[index:]:
            if piece.out_start >= out_end:
                break
            if piece.out_end <= out_start:
                continue
            if piece.exact:
                lo = piece.orig_start + max(out_start, piece.out_start) - piece.out_start
                hi = piece.orig_start + min(out_end, piece.out_end) - piece.out_start
                spans.append((lo, hi))
            else:
                spans.append((piece.orig_start, piece.orig_end))
        if not spans:
            return None
        return min(s for s, _ in spans), max(e for _, e in spans)


# -- pronunciations ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pronunciation:
    grapheme: str
    phonemes: str


def check_phonemes(phonemes: Any, where: str) -> str:
    if (
        not isinstance(phonemes, str)
        or not _PHONEMES.fullmatch(phonemes)
        or _PHONEME_FORBIDDEN & set(phonemes)
    ):
        raise TextError(
            "INVALID_PRONUNCIATION",
            f"{where}: phonemes must be eSpeak mnemonics (printable ASCII without [ ] < > &)",
        )
    return phonemes


def parse_pronunciations(entries: Any) -> tuple[Pronunciation, ...]:
    """Validate CONFIG.pronunciations; only eSpeak's own phoneme alphabet is accepted."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise TextError("INVALID_PRONUNCIATION", "pronunciations must be a list")
    result = []
    for index, entry in enumerate(entries):
        where = f"pronunciations[{index}]"
        if not isinstance(entry, dict):
            raise TextError("INVALID_PRONUNCIATION", f"{where} must be an object")
        alphabet = entry.get("alphabet", "espeak")
        if alphabet != "espeak":
            raise TextError(
                "INVALID_PRONUNCIATION",
                f"{where}: alphabet {alphabet!r} is not supported (use 'espeak')",
            )
        grapheme = entry.get("grapheme")
        if not isinstance(grapheme, str) or not grapheme.strip():
            raise TextError(
                "INVALID_PRONUNCIATION", f"{where}: grapheme must be a non-empty string"
            )
        result.append(Pronunciation(grapheme.strip(), check_phonemes(entry.get("phonemes"), where)))
    return tuple(result)


def _pronunciation_pattern(entries: tuple[Pronunciation, ...]) -> re.Pattern[str] | None:
    if not entries:
        return None
    # Longest first, so "New York" wins over "New"; whole words only, case-insensitive.
    graphemes = sorted({e.grapheme for e in entries}, key=len, reverse=True)
    alternatives = "|".join(re.escape(g) for g in graphemes)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class TextEmitter:
    """Writes request text into a MappedText, applying pronunciations on the way."""

    def __init__(self, out: MappedText, entries: tuple[Pronunciation, ...], ssml: bool) -> None:
        self._out = out
        self._pattern = _pronunciation_pattern(entries)
        self._phonemes = {e.grapheme.lower(): e.phonemes for e in entries}
        self._ssml = ssml

    def text(self, text: str, orig_start: int) -> None:
        """``text`` equals original[orig_start:orig_start+len(text)] character for character."""
        position = 0
        for match in self._pattern.finditer(text) if self._pattern else ():
            self._plain(text[position : match.start()], orig_start + position)
            phonemes = self._phonemes[match.group(0).lower()]
            self._out.block(
                f" [[{phonemes}]] ", orig_start + match.start(), orig_start + match.end()
            )
            self._out.flags |= ESPEAK_FLAG_PHONEMES
            position = match.end()
        self._plain(text[position:], orig_start + position)

    def block(self, text: str, orig_start: int, orig_end: int) -> None:
        """Replacement text (an SSML alias) that stands for original[orig_start:orig_end]."""
        self._out.block(
            self._neutral(text) if not self._ssml else _escape(self._neutral(text)),
            orig_start,
            orig_end,
        )

    def _plain(self, text: str, orig_start: int) -> None:
        text = self._neutral(text)
        if not self._ssml:
            self._out.exact(text, orig_start)
            return
        # Escaping changes lengths: escaped characters become one-character blocks.
        run_start = 0
        for index, char in enumerate(text):
            if char in _ESCAPES:
                self._out.exact(text[run_start:index], orig_start + run_start)
                self._out.block(_ESCAPES[char], orig_start + index, orig_start + index + 1)
                run_start = index + 1
        self._out.exact(text[run_start:], orig_start + run_start)

    @staticmethod
    def _neutral(text: str) -> str:
        # With phoneme input on, "[[" in the client's text would start phoneme mode: blank the
        # brackets (same length, so positions stay exact). eSpeak does not speak them anyway.
        return text.replace("[[", "  ").replace("]]", "  ")


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


def plain_text(text: str, pronunciations: tuple[Pronunciation, ...]) -> MappedText:
    out = MappedText()
    TextEmitter(out, pronunciations, ssml=False).text(text, 0)
    return out
