"""``voxwire transcribe`` on a terminal (rich): what the server said is printed as it came."""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from voxwire.cli.transcribe import _print
from voxwire.client import Resumed
from voxwire.v1 import transcription_pb2


async def _events(*events: Any) -> AsyncIterator[Any]:
    for event in events:
        yield event


async def test_a_terminal_shows_bracketed_words_of_a_transcript_as_they_came():
    # Transcripts carry tags such as "[laughter]" (and a server may send any text): rich took
    # them for markup, dropped "[laughter]" from the line and raised a MarkupError on "[/x]".
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    final = "so [laughter] that is it [/x] [bold]"
    resumed = Resumed(url="ws://127.0.0.1:1/[/y]", downtime_s=0.1, attempts=1, cause="close 1006")
    await _print(
        _events(
            transcription_pb2.TranscriptResult(transcript="so [laugh", is_final=False),
            transcription_pb2.TranscriptResult(transcript=final, is_final=True, end_ms=900),
            resumed,
        ),
        console,
        argparse.Namespace(json=False),
        SimpleNamespace(seconds=None),  # type: ignore[arg-type]
    )
    printed = out.getvalue()
    assert final in printed, printed
    assert "resumed on ws://127.0.0.1:1/[/y] (close 1006)" in printed, printed
