"""A real headless Chromium page streams a speech file through a fake microphone to the
gateway with a short-lived token, and shows the words (gateway/static/demo.html); a page whose
token is refused says why and lets go of the microphone."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest

from tests.gateway.conftest import Edge
from tests.helpers.browser import async_page
from tests.helpers.edge import page_token
from tests.helpers.speech_fixtures import SPEECH_DIR, TRANSCRIPTS
from tests.helpers.wavio import read_wav, write_wav
from tests.helpers.wer import word_error_rate

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "call_me_back.wav"


def _looped_speech(tmp_path, lead_in_s: float | None = None):
    """The sentence with 1.5 s of silence after it: Chromium loops the capture file, and the
    silence lets the endpointer end each utterance (else the loops run together into one).
    ``lead_in_s``: the silence before the speech, cut to that."""
    pcm, rate = read_wav(SPEECH_DIR / NAME)
    if lead_in_s is not None:
        voiced = int(np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)[0])
        pcm = pcm[max(0, voiced - int(lead_in_s * rate)) :]
    speech = tmp_path / "speech.wav"
    write_wav(speech, np.concatenate([pcm, np.zeros(rate * 3 // 2, dtype=np.int16)]), rate)
    return (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}",
        "--autoplay-policy=no-user-gesture-required",
    )


async def test_a_page_transcribes_its_microphone_with_a_browser_token(edge: Edge, tmp_path):
    token = await page_token(edge, "page")
    async with async_page(*_looped_speech(tmp_path), timeout_ms=60_000) as browser:
        page = browser.page
        await page.goto(f"{edge.server.url}/demo/demo.html#token={token}")
        await page.click("#start")
        await page.wait_for_selector("#finals p.final:nth-child(2)", timeout=60_000)
        finals = await page.locator("#finals p.final").all_inner_texts()
        await page.click("#stop")
        status = await page.inner_text("#status")
    assert all(text.strip() for text in finals), finals
    # The page's path (48 kHz capture, the browser's resampling, the gateway) carries the
    # sentence. The first is heard as the CLI hears the file. Before, the page left the
    # browser's noise suppression and gain control on: "call me back" came out "call me dad"
    # or "calm event" (the gain control ramps up over the first seconds). Later loops of the
    # same sentence drift that way whatever the page does (pocketsphinx's live cepstral mean,
    # BENCHMARKS.md, "Telephony audio"): one confusion of three words is allowed there.
    assert finals[0] == TRANSCRIPTS[NAME], finals
    assert word_error_rate(TRANSCRIPTS[NAME], finals[1]) <= 0.375, finals
    assert "tomorrow morning at nine" in finals[1], finals
    assert browser.errors == [], browser.errors
    assert "error" not in status.lower()


async def test_a_slow_handshake_loses_no_word_the_microphone_heard(edge: Edge, tmp_path):
    # Before, the page sent only once its socket was open and dropped what the microphone
    # heard meanwhile: with 700 ms of network latency the first words were gone ("back
    # tomorrow morning at nine"), the vendors' "first word lost" (docs/edge.md).
    token = await page_token(edge, "slow-page")
    async with async_page(*_looped_speech(tmp_path, lead_in_s=0.05), timeout_ms=60_000) as browser:
        page = browser.page
        network = await page.context.new_cdp_session(page)
        await network.send("Network.enable")
        conditions = {"offline": False, "latency": 700, "downloadThroughput": -1}
        await network.send(
            "Network.emulateNetworkConditions", conditions | {"uploadThroughput": -1}
        )
        await page.goto(f"{edge.server.url}/demo/demo.html#token={token}")
        await page.click("#start")
        await page.wait_for_selector("#finals p.final", timeout=60_000)
        first = (await page.locator("#finals p.final").all_inner_texts())[0]
        await page.click("#stop")
    assert first.split()[:2] == ["please", "call"], first
    assert "tomorrow morning at nine" in first, first
    assert browser.errors == [], browser.errors


async def test_a_refused_page_says_why_and_releases_its_microphone(edge: Edge, tmp_path):
    origin = edge.server.url
    token = await page_token(edge, "refused-page")
    async with aiohttp.ClientSession() as http:
        # Someone else redeems the token first (a second tab, a replay): the page's is refused.
        async with http.ws_connect(
            f"{edge.ws}/v1/tts/stream",
            protocols=("voxwire.v1", f"voxwire.token.{token}"),
            headers={"Origin": origin},
        ) as ws:
            await ws.send_str('{"keepAlive": {}}')
            assert "session" in (await ws.receive_json(timeout=10))
    microphone = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={SPEECH_DIR / NAME}",
    )
    async with async_page(*microphone, timeout_ms=30_000) as browser:
        page = browser.page
        await page.goto(f"{origin}/demo/demo.html#token={token}")
        await page.click("#start")
        await page.wait_for_function(
            "document.querySelector('#status').textContent.includes('4001')"
        )
        status = await page.inner_text("#status")
        tracks = await page.evaluate("stream.getTracks().map((t) => t.readyState)")
        audio = await page.evaluate("context.state")
    # The error event comes before the close (docs/edge.md): shown, not hidden by the code.
    assert "UNAUTHENTICATED" in status and "already used" in status, status
    assert tracks == ["ended"] and audio == "closed", (tracks, audio)
    assert browser.errors == [], browser.errors
