"""A real headless Chromium page speaks text through the gateway with a browser token
(gateway/static/speak.html): audio played as it arrives, words marked as they are heard, and a
barge-in whose `truncated` names the same words the page marked."""

from __future__ import annotations

import re

import pytest

from tests.gateway.conftest import Edge
from tests.helpers.browser import async_page
from tests.helpers.edge import page_token
from tests.helpers.long_text import long_text
from voxwire.text_pieces import piece_bytes, pieces

pytestmark = pytest.mark.asyncio(loop_scope="session")

PLAY = ("--autoplay-policy=no-user-gesture-required",)
LONG = (
    "Please call me back tomorrow morning at nine. I would like to pay my bill. "
    "Turn off the lights in the kitchen, and send me a text message with the details."
)
SHORT = "Please call me back tomorrow morning at nine."


async def test_a_page_speaks_marks_words_heard_and_barges_in(edge: Edge):
    token = await page_token(edge, "speak-page")
    async with async_page(*PLAY, timeout_ms=60_000) as browser:
        page = browser.page
        await page.goto(f"{edge.server.url}/demo/speak.html#token={token}")
        await page.fill("#text", LONG)
        await page.click("#speak")
        # Stop once three words have played: a barge-in in the middle of the context.
        await page.wait_for_selector("#words span.heard:nth-child(3)", timeout=60_000)
        await page.click("#stop")
        marked = await page.locator("#words span.heard").all_inner_texts()
        shown = await page.locator("#words span").all_inner_texts()
        await page.wait_for_function("document.querySelector('#heard').textContent !== ''")
        heard = await page.inner_text("#heard")
        stopped = await page.inner_text("#status")

        # The next turn, on the same session, plays to its end.
        await page.fill("#text", SHORT)
        await page.click("#speak")
        await page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('spoke turn-2')"
        )
        spoken = await page.locator("#words span").all_inner_texts()
        all_heard = await page.locator("#words span.heard").count()

        # A stop late in a short turn: its audio has usually all come (its `done` too), so
        # there is nothing left to stop and the gateway answers UNKNOWN_CONTEXT; the page then
        # takes the words heard from those it received (docs/edge.md). Either way, the same.
        await page.click("#speak")
        await page.wait_for_selector("#words span.heard:nth-child(5)", timeout=60_000)
        await page.click("#stop")
        late_marked = await page.locator("#words span.heard").all_inner_texts()
        await page.wait_for_function("document.querySelector('#heard').textContent !== ''")
        late_heard = await page.inner_text("#heard")
        await page.wait_for_timeout(300)  # a contextError shown as an error would come now
        late_status = await page.inner_text("#status")
    found = re.fullmatch(r"heard \((\d+) ms\): (.*)", heard)
    assert found, heard
    played_ms, words = int(found.group(1)), found.group(2).split()
    assert stopped == f"stopped turn-1 at {played_ms} ms", stopped
    # The gateway's `truncated.heard` (words whose audio ended by playedMs) is what the page
    # had marked from its own playback clock at that moment, and a prefix of the text.
    assert words == marked, (words, marked)
    assert 3 <= len(words) < len(shown) and shown[: len(words)] == words, (words, shown)
    assert words == LONG.replace(".", "").split()[: len(words)]
    assert 300 < played_ms < 8000, played_ms
    assert spoken == SHORT.rstrip(".").split() and all_heard == len(spoken), spoken
    late = re.fullmatch(r"heard \((\d+) ms\): (.*)", late_heard)
    assert late and late.group(2).split() == late_marked, (late_heard, late_marked)
    assert late_status.startswith("stopped turn-3 at "), late_status
    assert browser.errors == [], browser.errors


# The page's module, given a token: one context of long text on bench_tts, read to its end.
_LONG_TEXT_SCRIPT = """async ([token, text, cases]) => {
  const vx = await import("/demo/voxwire.js");
  const pieces = cases.map(([t, n]) => vx.textPieces(t, n));
  const url = location.origin.replace(/^http/, "ws");
  const events = [];
  const tts = new vx.TtsSession({ url, getToken: vx.pageTokens(token), leadMs: 0,
                                  onEvent: (id, e) => { if (id) events.push(e); } });
  tts.start();
  tts.open("long", { model: "bench_tts", wordTimestamps: true,
                     outputFormat: { encoding: "AUDIO_ENCODING_PCM_S16LE", sampleRateHz: 16000 } });
  tts.append("long", text);
  tts.flush("long", "mine");
  tts.closeContext("long");
  let refused = "";
  try { tts.append("long", "more"); } catch (e) { refused = String(e.message); }
  const ended = (e) => e.done || e.contextError || e.cancelled;
  for (let i = 0; i < 600 && !events.some(ended); i++) await new Promise((r) => setTimeout(r, 50));
  tts.close();
  const words = events.flatMap((e) => (e.words ? e.words.words : []))
    .map((w) => [Number(w.textOffset || 0), Number(w.textLength || 0)]);
  const acks = events.filter((e) => e.flushAck).map((e) => e.flushAck.flushId);
  const last = events[events.length - 1];
  const sizes = [0, 4096, 100000, 1].map(vx.pieceBytes);
  return { pieces, words, acks, refused, last: Object.keys(last).filter((k) => k !== "contextId"),
           limit: tts.maxPendingTextBytes, sizes };
}"""


async def test_a_page_speaks_text_longer_than_a_context_holds_in_pieces(edge: Edge):
    # voxwire.js's TtsSession.append of more than the 16 KiB a context holds unspoken ended
    # the context with TEXT_TOO_LARGE; it now goes in pieces (textPieces, cut as the Python
    # SDK's voxwire.text_pieces cuts: the same pieces for the same text), as it is spoken.
    text = long_text(24)
    cases = [
        ["One two. Three four five six.", 20],
        ["Dr. Smith went home. He slept.", 25],
        ["Aaa bbb ccc.\n\nDdd. Eee fff ggg.", 22],
        ["aaaa bbbb cccc", 10],
        ["éééé éé", 6],
        ["Wait\u2026 what?\u201d she said. Then: \u201cgo!\u201d and they went on a while.", 24],
        [text, 4096],
    ]
    token = await page_token(edge, "long-text-page")
    async with async_page(timeout_ms=60_000) as browser:
        page = browser.page
        await page.goto(f"{edge.server.url}/demo/speak.html")
        got = await page.evaluate(_LONG_TEXT_SCRIPT, [token, text, cases])
    assert got["pieces"] == [pieces(t, n) for t, n in cases]
    assert got["last"] == ["done"], got["last"]
    assert got["refused"].endswith("is closed: no more text"), got["refused"]
    spoken = [text[o : o + n].rstrip(".") for o, n in got["words"]]
    assert spoken == [part.rstrip(".") for part in text.split()]
    assert got["acks"] == ["mine"]  # the pieces' own flushes are not the page's news
    # The session's limits say what a context holds; pieces are sized as the Python SDK's.
    assert got["limit"] == 16 * 1024
    assert got["sizes"] == [piece_bytes(n) for n in (0, 4096, 100000, 1)]
    assert browser.errors == [], browser.errors
