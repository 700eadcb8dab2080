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


def split_ready(buffer: str, soft_limit: int = 400) -> tuple[list[str], str]:
    """Split ``buffer`` into complete units and the rest that must wait for more text."""
    units: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        unit = buffer[start : match.end()]
        if unit.strip():
            units.append(unit)
        start = match.end()
    rest = buffer[start:]
    while len(rest) > soft_limit:
        cut = rest.rfind(" ", 0, soft_limit)
        if cut <= 0:
            cut = soft_limit  # one enormous "word": cut it anyway rather than grow forever
        units.append(rest[: cut + 1])
        rest = rest[cut + 1 :]
    return units, rest
