"""The committed speech fixtures: where they are and what they say (tests/fixtures/speech)."""

from __future__ import annotations

import json
from pathlib import Path

SPEECH_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "speech"
# file name -> its text (lowercase, no punctuation); written by make_fixtures.py
TRANSCRIPTS: dict[str, str] = json.loads((SPEECH_DIR / "transcripts.json").read_text())
# file name -> why the stock model is not expected to decode it (left out of accuracy tests)
WER_EXEMPT: dict[str, str] = json.loads((SPEECH_DIR / "wer_exempt.json").read_text())
