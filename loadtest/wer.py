"""Word error rate: word-level Levenshtein distance over the reference length.

Corpus WER sums edits and reference words over sessions (not a mean of per-session rates), so a
long session weighs as much as its words.
"""

from __future__ import annotations

import re

__all__ = ["edit_distance", "normalize_words", "word_error_rate"]

# Anything that is not a letter, digit, apostrophe or whitespace is punctuation to drop.
_PUNCTUATION = re.compile(r"[^\w\s']|_")


def normalize_words(text: str) -> list[str]:
    """Lowercase, strip punctuation (keeping in-word apostrophes), split on whitespace."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Edits / reference words, after ``normalize_words``. An empty reference gives 0.0 for an
    empty hypothesis and ``inf`` otherwise."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else float("inf")
    return edit_distance(ref, hyp) / len(ref)
