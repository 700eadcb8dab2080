"""A real Chromium page's speech goes on when its gateway goes (gateway/static/speak.html with
voxwire.js's TtsSession): mid-turn, the gateway process the page is on is drained (SIGTERM) or
killed (SIGKILL) while a second one takes over the port; the page reopens its context on the
second where its audio stopped, with the text after the last word it received whole and a
fresh token from its application (docs/edge.md, "Resume"; docs/design/browser-client.md); an
SSML document from its start, with the audio the page has skipped. Every word is shown once,
the sequence numbers and the timeline run on without a gap or a repeat, and the turn plays to
its end."""

from __future__ import annotations

import json
import re
import signal
import struct

import aiohttp
import pytest

from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.gateway.test_browser_speak import LONG, PLAY
from tests.helpers.browser import async_page
from tests.helpers.browser_gateways import gateways_on_one_port, record_frames
from tests.helpers.long_text import long_text

pytestmark = pytest.mark.asyncio(loop_scope="session")

BYTES_PER_MS = 24_000 * 2 / 1000  # speak.js asks for PCM16 at 24 kHz
SSML = f"<speak>{LONG}</speak>"  # speak.js sends a text that opens <speak> as SSML


class Received:
    """What a socket brought the page, up to a goingAway (after it the page reads nothing
    more of that socket): audio chunks (sequence number, start ms, duration ms) and words
    (text offset, text length, end ms)."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.chunks: list[tuple[int, int, int]] = []
        self.words: list[tuple[int, int, int]] = []
        self.going_away = False
        for frame in frames:
            if isinstance(frame, bytes):
                _version, _flags, _handle, seq, start = struct.unpack(">BBHII", frame[:12])
                self.chunks.append((seq, start, round((len(frame) - 12) / BYTES_PER_MS)))
                continue
            msg = json.loads(frame)
            if "goingAway" in msg:
                self.going_away = True
                return
            for word in msg.get("words", {}).get("words", ()):
                offset, length = int(word.get("textOffset", 0)), int(word["textLength"])
                self.words.append((offset, length, int(word["endMs"])))

    @property
    def audio_end_ms(self) -> int:
        return self.chunks[-1][1] + self.chunks[-1][2]

    def spoken_to(self) -> int:
        """The end (code points) of the last word whose audio all came."""
        ends = [o + n for o, n, end in self.words if end <= self.audio_end_ms]
        return max(ends, default=0)


Chunk = tuple[int, int, int]  # sequence number, start ms, duration ms


def _as_passed_on(chunks: list[Chunk], first: Received) -> list[Chunk]:
    """A reopened SSML document's chunks as the page passes them on: the server skips only as
    far as the page's words reach and sends the rest of what the page has again, which the
    page drops (cutting a chunk across the first socket's audio end) and numbers on."""
    end, out, shift = first.audio_end_ms, [], None
    for seq, start, duration in chunks:
        if start + duration <= end:
            continue
        cut = max(0, end - start)
        shift = seq - (first.chunks[-1][0] + 1) if shift is None else shift
        out.append((seq - shift, start + cut, duration - cut))
    return out


async def _spoken_ms(origin: str, key: str, text: str) -> int:
    ssml = text.startswith("<speak")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{origin}/v1/tts?model=tts_espeak&sample_rate=24000&container=raw",
            data=text.encode(),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/ssml+xml" if ssml else "text/plain",
            },
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return round(len(await resp.read()) / BYTES_PER_MS)


@pytest.mark.parametrize(
    ("fault", "text"),
    [(signal.SIGTERM, LONG), (signal.SIGKILL, LONG), (signal.SIGKILL, SSML)],
    ids=["drain", "kill", "kill-ssml"],
)
async def test_a_pages_speech_goes_on_on_the_next_gateway_when_its_own_goes(
    edge: Edge, edge_adapter: AdapterServer, tmp_path, fault: signal.Signals, text: str
):
    async with (
        gateways_on_one_port(edge, edge_adapter.address, tmp_path, "speaking-page") as port,
        async_page(*PLAY, timeout_ms=90_000) as browser,
    ):
        a, page = port.a, browser.page
        frames = record_frames(page)
        await port.open(page, "speak.html")
        await page.fill("#text", text)
        await page.click("#speak")
        await page.wait_for_selector("#words span.heard:nth-child(3)", timeout=60_000)
        await port.second()
        a.signal(fault)
        assert await a.wait(15.0) == (0 if fault == signal.SIGTERM else -fault), a.log()
        await page.wait_for_function("tts.resumes >= 1", timeout=30_000)
        await page.wait_for_function(
            "document.querySelector('#status').textContent.startsWith('spoke turn-1')",
            timeout=60_000,
        )
        shown = await page.locator("#words span").all_inner_texts()
        heard = await page.locator("#words span.heard").count()
        state = await page.evaluate(
            "({state: tts.state, resumes: tts.resumes, contexts: tts.contexts.size})"
        )
        spoke = await page.inner_text("#status")
        # The same text spoken with no fault, for its length (eSpeak gives the same within
        # ms: tests/models/test_tts_espeak.py).
        whole_ms = await _spoken_ms(port.origin, port.mint.key, text)

    # The audio and words the page took: from the first socket up to its end (or its
    # goingAway), then the second's.
    first, second = Received(frames.received[0]), Received(frames.received[1])
    # What each socket brought and what the page sent the second: a failure says where a
    # word went.
    seen = {
        "first": (first.words, first.chunks[-4:]),
        "second": (second.words, second.chunks[:4]),
        "sent": [f for f in frames.sent[1] if isinstance(f, str)],
    }
    assert state == {"state": "live", "resumes": 1, "contexts": 0}, state
    # Each word once, in order: none lost with the first gateway, none shown again when the
    # second spoke the cut word from its start.
    assert shown == re.sub(r"[.,]", "", LONG).split(), (shown, seen)
    assert heard == len(shown), (heard, shown)
    assert len(port.mint.minted) == 2, port.mint.minted  # one token per connection
    # The audio is numbered on and continuous on the context's timeline.
    assert first.going_away == (fault == signal.SIGTERM)
    assert first.chunks and second.chunks, (len(first.chunks), len(second.chunks))
    chunks = first.chunks + _as_passed_on(second.chunks, first)
    assert [seq for seq, _, _ in chunks] == list(range(1, len(chunks) + 1)), chunks
    # (A chunk's start is whole ms of an exact timeline, its duration rounded: 1 ms apart.)
    for (_, start, duration), (_, following, _) in zip(chunks, chunks[1:], strict=False):
        assert abs(following - (start + duration)) <= 1, chunks
    played = int(re.fullmatch(r"spoke turn-1: (\d+) ms", spoke).group(1))  # type: ignore[union-attr]
    end = chunks[-1][1] + chunks[-1][2]
    assert abs(played - end) <= 100, (played, end)
    # What the page sent the second gateway: the context reopened where the first one's audio
    # ended, with the text after the last word whose audio came whole (code points), closed;
    # SSML, the document again from its start, saying how much of its audio came.
    start, opened, *rest = (json.loads(f) for f in frames.sent[1] if isinstance(f, str))
    assert "resume" in start["start"], start
    config = opened["open"]
    assert config["firstSequenceNumber"] == len(first.chunks) + 1, config
    if text == SSML:
        # Spoken again from its start, with the audio the page had skipped: as long as the
        # document spoken once (a document spoken again whole would add the first socket's).
        assert abs(end - whole_ms) <= 50, (end, whole_ms, first.audio_end_ms)
        assert config["textFormat"] == "TEXT_FORMAT_SSML", config
        assert config["timelineOffsetMs"] == 0, config
        # What came of it, as far as the words received reach (a word's timestamp may come
        # after audio past its end: a word the page had no timestamp of is spoken again).
        words_to = max((end for _, _, end in first.words), default=0)
        have = min(first.audio_end_ms, words_to)
        assert config.get("skipAudioMs", 0) == have, (config, first.chunks[-3:], first.words)
        assert rest == [
            {"contextId": "turn-1", "append": {"text": SSML}},
            {"contextId": "turn-1", "close": {}},
        ], rest
        assert browser.errors == [], browser.errors
        return
    assert config["timelineOffsetMs"] == first.audio_end_ms, (config, first.chunks[-3:])
    assert rest == [
        {"contextId": "turn-1", "append": {"text": LONG[first.spoken_to() :]}},
        {"contextId": "turn-1", "close": {}},
    ], (rest, first.words)
    assert 0 < first.spoken_to() < len(LONG), first.words
    assert browser.errors == [], browser.errors


# The page's module: one context of long text on bench_tts, fed in pieces (textPieces) as it
# is spoken; its words and end kept on window.T for the test to read.
_LONG_FEED_SCRIPT = """async (text) => {
  const vx = await import("/demo/voxwire.js");
  const url = location.origin.replace(/^http/, "ws");
  const T = window.T = { words: [], last: null, acks: [] };
  const tts = new vx.TtsSession({ url, getToken: () => window.voxwireToken(), leadMs: 0,
    onEvent: (id, e) => {
      if (!id) return;
      if (e.words) T.words.push(...e.words.words.map((w) => [Number(w.textOffset || 0),
                                                           Number(w.textLength || 0)]));
      if (e.flushAck) T.acks.push(e.flushAck.flushId);
      const end = e.done || e.contextError || e.cancelled;
      if (end) T.last = Object.keys(e).filter((k) => k !== "contextId");
    } });
  window.feed = tts;
  tts.start();
  tts.open("long", { model: "bench_tts", wordTimestamps: true,
                     outputFormat: { encoding: "AUDIO_ENCODING_PCM_S16LE", sampleRateHz: 16000 } });
  tts.append("long", text);
  tts.flush("long", "mine");
  tts.closeContext("long");
}"""


async def test_a_pages_long_text_goes_on_in_pieces_on_the_next_gateway(
    edge: Edge, edge_adapter: AdapterServer, tmp_path
):
    # voxwire.js's feed of long text (pieces, each with a flush of its own, two unacknowledged
    # at a time) across a SIGKILL of its gateway: the unacknowledged pieces' text and flushes
    # are sent again to the next one at their places, the rest follows as they are spoken.
    text = long_text(12)
    async with (
        gateways_on_one_port(edge, edge_adapter.address, tmp_path, "long-feed-page") as port,
        async_page(timeout_ms=90_000) as browser,
    ):
        a, page = port.a, browser.page
        frames = record_frames(page)
        await port.open(page, "speak.html")
        await page.evaluate(_LONG_FEED_SCRIPT, text)
        await page.wait_for_function("window.T.words.length >= 2", timeout=30_000)
        fed = await page.evaluate("[...window.feed.contexts.get('long').waiting]")
        await port.second()
        a.signal(signal.SIGKILL)
        assert await a.wait(15.0) == -signal.SIGKILL, a.log()
        await page.wait_for_function("window.T.last !== null", timeout=60_000)
        got = await page.evaluate("({T: window.T, resumes: window.feed.resumes})")
    assert fed and all(i.startswith("voxwire-piece-") for i in fed), fed  # mid-feed at the kill
    assert got["resumes"] == 1 and got["T"]["last"] == ["done"], got
    spoken = [text[o : o + n].rstrip(".") for o, n in got["T"]["words"]]
    assert spoken == [part.rstrip(".") for part in text.split()]
    assert got["T"]["acks"] == ["mine"]
    # The second socket carried the text again from its last word heard, with its pieces'
    # flushes: the feed went on there.
    sent = [json.loads(f) for f in frames.sent[1] if isinstance(f, str)]
    assert any("flush" in m and m["flush"]["flushId"].startswith("voxwire-piece-") for m in sent)
    assert browser.errors == [], browser.errors
