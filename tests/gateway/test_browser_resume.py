"""A real Chromium page's session survives its gateway's restart: the page streams a speech
file through a fake microphone with gateway/static/voxwire.js; the gateway process it is on is
drained (SIGTERM) or killed (SIGKILL) while a second one takes over the port, and the page
resumes on the second with a fresh token from its application (docs/design/browser-client.md).
The words go on, none lost or repeated, in the same session."""

from __future__ import annotations

import datetime
import signal

import aiohttp
import pytest

from gateway.auth.keys import create_key
from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.gateway.test_browser import NAME, _looped_speech
from tests.helpers.browser import async_page
from tests.helpers.browser_gateways import Backend, gateways_on_one_port
from tests.helpers.speech_fixtures import TRANSCRIPTS
from tests.helpers.wer import word_error_rate

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("fault", [signal.SIGTERM, signal.SIGKILL], ids=["drain", "kill"])
async def test_a_page_resumes_on_the_next_gateway_when_its_own_goes(
    edge: Edge, edge_adapter: AdapterServer, tmp_path, fault: signal.Signals
):
    # SIGTERM: the gateway drains (goingAway, then close 1012); SIGKILL: the socket just
    # breaks (close 1006), and the page resumes from the last ack with the token of its
    # session's start.
    async with (
        gateways_on_one_port(edge, edge_adapter.address, tmp_path, "resuming-page") as port,
        async_page(*_looped_speech(tmp_path), timeout_ms=90_000) as browser,
    ):
        a, mint, page = port.a, port.mint, browser.page
        await port.open(page, "demo.html")
        await page.click("#start")
        await page.wait_for_selector("#finals p.final", timeout=60_000)
        first_id = await page.evaluate("session.sessionId")
        # The second gateway shares the port; the first drains: its goingAway sends the
        # page over, and its listener is closed, so the page's next connection is B's.
        await port.second()
        # Mid-utterance (the next loop's words are being recognized): the audio since the
        # last final is what the page must send again.
        await page.evaluate("document.querySelector('#interim').textContent = ''")
        await page.wait_for_function(
            "document.querySelector('#interim').textContent.length > 0", timeout=30_000
        )
        a.signal(fault)
        assert await a.wait(15.0) == (0 if fault == signal.SIGTERM else -fault), a.log()
        await page.wait_for_function("session.resumes >= 1", timeout=30_000)
        await page.wait_for_selector("#finals p.final:nth-child(3)", timeout=60_000)
        finals = await page.locator("#finals p.final").all_inner_texts()
        state = await page.evaluate(
            "({id: session.sessionId, resumes: session.resumes, state: session.state,"
            " replayed: session.replayedMs, ack: session.ack})"
        )
        await page.click("#stop")
        await page.wait_for_function("session.state === 'ended'", timeout=15_000)
        status = await page.inner_text("#status")
    assert state["id"] == first_id and state["state"] == "live", state
    assert state["resumes"] == 1, state
    # The drain fell mid-utterance: the audio after the last final went again (measured
    # 2,460 ms; with the page sending nothing again, the utterance came out "and tomorrow
    # morning at nine").
    assert state["replayed"] > 0, state
    assert len(mint.minted) == 2, mint.minted  # one token per connection
    # Every loop of the sentence is heard whole, the one the drain fell in included: its
    # audio after the last ack went again to the second gateway (a lost piece would cut it
    # short, a repeated one lengthen it). One confusion of three words allowed, as in
    # test_browser.py (pocketsphinx drifts over loops of the same sentence).
    for text in finals[:3]:
        assert word_error_rate(TRANSCRIPTS[NAME], text) <= 0.375, finals
    assert "done:" in status and "1000" in status, status
    assert browser.errors == [], browser.errors


async def test_a_page_refused_for_its_keys_limit_starts_once_a_session_ends(edge: Edge, tmp_path):
    # The key allows one session at a time and a server holds it: the page's first connection
    # is refused RATE_LIMITED (retryable, close 1013). Nothing to resume yet, so the page tries
    # again with a fresh token, as its retry delay says, and starts its session, with what the
    # microphone heard meanwhile, once the other ends.
    origin = edge.server.url
    key, _ = create_key(
        edge.keys_file,
        name="one-at-a-time",
        now=datetime.datetime.now(datetime.UTC),
        max_concurrent_sessions=1,
        allowed_origins=[origin],
    )
    edge.server.auth.keys.reload_if_changed()
    mint = Backend(origin, key)

    query = "model=stt_pocketsphinx&encoding=pcm_s16le&sample_rate=16000"
    async with (
        aiohttp.ClientSession() as http,
        async_page(*_looped_speech(tmp_path), timeout_ms=60_000) as browser,
    ):
        holder = await http.ws_connect(
            f"{edge.ws}/v1/stt/stream?{query}", headers={"Authorization": f"Bearer {key}"}
        )
        assert "session" in await holder.receive_json(timeout=10)
        page = browser.page
        await page.expose_function("voxwireToken", mint)
        await page.goto(f"{origin}/demo/demo.html#token={await mint()}")
        await page.click("#start")
        await page.wait_for_function("session && session.state === 'reconnecting'", timeout=15_000)
        refused = await page.evaluate("session.lastClose")
        await holder.send_str('{"close": {}}')
        async for _ in holder:  # its summary, then close 1000: the key's slot is free
            pass
        await page.wait_for_selector("#finals p.final", timeout=60_000)
        first = (await page.locator("#finals p.final").all_inner_texts())[0]
        state = await page.evaluate("({state: session.state, resumes: session.resumes})")
        await page.click("#stop")
    assert "RATE_LIMITED" in refused and "1013" in refused, refused
    assert state == {"state": "live", "resumes": 0}, state
    assert len(mint.minted) >= 2, mint.minted  # the page's first, and one per connection after it
    # What the microphone heard while the page waited went first: the sentence is whole.
    assert word_error_rate(TRANSCRIPTS[NAME], first) <= 0.375, first
    assert browser.errors == [], browser.errors
