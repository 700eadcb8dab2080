"""Cutting appended text into synthesis units.

Streaming TTS starts speaking before the utterance is complete: as soon as a sentence is
complete it becomes a unit. Text without sentence ends is cut at a word boundary once it grows
past ``soft_limit`` characters, so a client that never sends punctuation still hears audio
(and no unit exceeds what a model accepts).
"""

from __future__ import annotations

import re

# A sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace;
# or a line break.
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*\s+|\n+""")
# The word a single period follows, when that period is part of the word.
_WORD_BEFORE = re.compile(r"""[\w.'-]+$""")
# Common English abbreviations that end in a period but do not end a sentence ("Dr. Smith").
# Lower case, without their final period.
ABBREVIATIONS = frozenset(
    """mr mrs ms mx dr prof st jr sr rev hon gen col lt sgt capt cmdr adm gov sen rep pres
    mt ft ave rd blvd vol vols fig figs ch pp approx dept univ assn bros inc ltd
    co corp vs etc al cf ca jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e a.m p.m
    u.s u.k""".split()
)


def _is_abbreviation(buffer: str, period_at: int) -> bool:
    """Whether the single period at ``period_at`` belongs to an abbreviation or an initial."""
    match = _WORD_BEFORE.search(buffer, 0, period_at)
    if match is None:
        return False
    word = match.group(0).lower().lstrip("'-")
    # "J. R. R. Tolkien": one letter is an initial; "e.g." and "U.S.": a period inside.
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or "." in word


def split_ready(buffer: str, soft_limit: int = 400) -> tuple[list[str], str]:
    """Split ``buffer`` into complete units and the rest that must wait for more text."""
    units: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        if (
            buffer[match.start()] == "."
            and not buffer.startswith("..", match.start())
            and _is_abbreviation(buffer, match.start())
        ):
            continue  # "Dr. Smith": the sentence goes on
        unit = buffer[start : match.end()]
        if unit.strip():
            units += _cut(unit, soft_limit, keep_rest=False)[0]
        start = match.end()
    more, rest = _cut(buffer[start:], soft_limit, keep_rest=True)
    return units + more, rest


def _cut(text: str, soft_limit: int, *, keep_rest: bool) -> tuple[list[str], str]:
    """Cut ``text`` at word boundaries into pieces of at most ``soft_limit + 1`` characters;
    with ``keep_rest`` the last piece (at most ``soft_limit``) is returned apart."""
    pieces: list[str] = []
    while len(text) > soft_limit:
        cut = text.rfind(" ", 0, soft_limit)
        if cut <= 0:
            cut = soft_limit  # one enormous "word": cut it anyway rather than grow forever
        pieces.append(text[: cut + 1])
        text = text[cut + 1 :]
    if keep_rest:
        return pieces, text
    if text.strip():
        pieces.append(text)
    return pieces, ""
