"""Word error rate for speech tests: the load tester's implementation (loadtest/wer.py)."""

from __future__ import annotations

from loadtest.wer import normalize_words, word_error_rate

__all__ = ["normalize_words", "word_error_rate"]
