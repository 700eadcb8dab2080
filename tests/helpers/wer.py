"""Word error rate for speech tests: Levenshtein distance over words / reference length."""

from __future__ import annotations

import re

__all__ = ["normalize_words", "word_error_rate"]

# Anything that is not a letter, digit, apostrophe or whitespace is punctuation to drop.
_PUNCTUATION = re.compile(r"[^\w\s']|_")


def normalize_words(text: str) -> list[str]:
    """Lowercase, strip punctuation (keeping in-word apostrophes), split on whitespace."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / number of reference words.

    Both strings are normalized with ``normalize_words``. An empty reference gives 0.0 for an
    empty hypothesis and ``inf`` otherwise (every word is an insertion against nothing).
    """
    ref = normalize_words(reference)
    hyp = normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else float("inf")
    # One row of the edit-distance table at a time: previous[j] = distance(ref[:i-1], hyp[:j]).
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1] / len(ref)
