"""Long TTS text for the tests of its pieces (voxwire.text_pieces), and ``POST /v1/tts`` as
Server-Sent Events read whole."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


def long_text(sentences: int) -> str:
    """Text of long "words" (few words per byte: bench_tts takes a while per word), sentences
    of four: 24 of them are over the 16 KiB a context holds unsynthesized."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join(
        " ".join(letters[(i + w) % 26] * 190 for w in range(4)) + "." for i in range(sentences)
    )


async def speak_events(
    base_url: str, headers: dict[str, str], request: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """``POST /v1/tts`` with ``request`` (a SpeakRequest's JSON), asking for events: (name,
    data) of each, in order; the response must be 200."""
    sse = {**headers, "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/v1/tts", json=request, headers=sse) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.text()
    return [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
        for block in body.strip().split("\n\n")
    ]
