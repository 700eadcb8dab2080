"""A page's finalizes and config updates survive its gateway's death (gateway/static/voxwire.js,
docs/design/browser-client.md): an update the gateway accepted goes again to the next gateway
(the token it resumes with holds only the session's first config), a finalize asked while the
page reconnects goes after the audio sent before it, and the page hears each answer once."""

from __future__ import annotations

import json
import signal

import pytest

from inference_adapter.server import AdapterServer
from tests.gateway.conftest import Edge
from tests.gateway.test_browser import _looped_speech
from tests.helpers.browser import async_page
from tests.helpers.browser_gateways import gateways_on_one_port, record_frames

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The page's answers as it heard them; and a finalize asked the moment the session starts to
# reconnect (from its onState), so that it is asked while no connection is there.
RECORD = """() => {
  window.got = [];
  const onMessage = session.onMessage, onState = session.onState;
  session.onMessage = (m) => { window.got.push({ ...m, resumes: session.resumes }); onMessage(m); };
  session.onState = (state, detail) => {
    if (state === "reconnecting" && !window.askedAway) {
      window.askedAway = session.keptStart + session.keptBytes;
      session.finalize("f-away");
    }
    onState(state, detail);
  };
}"""


def answers(got: list[dict], kind: str, ident: str) -> list[dict]:
    key = "finalizeId" if kind == "finalizeAck" else "updateId"
    return [m[kind] for m in got if kind in m and m[kind].get(key) == ident]


async def test_a_pages_updates_and_finalizes_go_on_to_the_next_gateway(
    edge: Edge, edge_adapter: AdapterServer, tmp_path
):
    async with (
        gateways_on_one_port(edge, edge_adapter.address, tmp_path, "controls-page") as port,
        async_page(*_looped_speech(tmp_path), timeout_ms=90_000) as browser,
    ):
        a, page = port.a, browser.page
        frames = record_frames(page)
        await port.open(page, "demo.html")
        await page.click("#start")
        await page.wait_for_function("session && session.state === 'live'", timeout=30_000)
        await page.evaluate(RECORD)
        update = await page.evaluate("session.updateConfig({endpointing: {silenceMs: 500}})")
        await page.wait_for_function("window.got.some((m) => m.updateConfigAck)", timeout=30_000)
        await page.wait_for_selector("#finals p.final", timeout=60_000)
        await page.evaluate("session.finalize('f-live')")
        await page.wait_for_function(
            "window.got.some((m) => m.finalizeAck && m.finalizeAck.finalizeId === 'f-live')",
            timeout=30_000,
        )
        refused = await page.evaluate(
            "(() => { try { session.finalize('vx-mine'); return ''; }"
            " catch (e) { return String(e); } })()"
        )
        await port.second()
        # Killed (no goingAway: the page resumes with its session's first token, which
        # holds the config the session started with and not the update).
        a.signal(signal.SIGKILL)
        assert await a.wait(15.0) == -signal.SIGKILL, a.log()
        await page.wait_for_function("session.resumes >= 1", timeout=30_000)
        await page.wait_for_function(
            "window.got.some((m) => m.finalizeAck && m.finalizeAck.finalizeId === 'f-away')",
            timeout=30_000,
        )
        # Another utterance heard after the resume: the session goes on with the update.
        finals = await page.locator("#finals p.final").count()
        await page.wait_for_selector(f"#finals p.final:nth-child({finals + 1})", timeout=60_000)
        got = await page.evaluate("window.got")
        state = await page.evaluate(
            "({state: session.state, resumes: session.resumes, away: window.askedAway,"
            " keptStart: session.keptStart, controls: session.controls.length})"
        )
        await page.click("#stop")
        await page.wait_for_function("session.state === 'ended'", timeout=15_000)

    assert state["state"] == "live" and state["resumes"] == 1, state
    assert "reserved" in refused, refused
    # Each answer reached the page once: the update's accepted ack (not its second, from the
    # next gateway), the live finalize's, the one asked while away.
    assert [ack.get("accepted") for ack in answers(got, "updateConfigAck", update)] == [True]
    assert len(answers(got, "finalizeAck", "f-live")) == 1, got
    assert len(answers(got, "finalizeAck", "f-away")) == 1, got
    # What the page sent the next gateway: start{resume}, the accepted update again, the audio
    # from the ack, and the finalize asked while away after the audio sent before it.
    resumed = frames.sent[-1]
    texts = [json.loads(f) for f in resumed if isinstance(f, str)]
    assert "resume" in texts[0]["start"], texts[0]
    assert [t["updateConfig"]["updateId"] for t in texts if "updateConfig" in t] == [update]
    assert not any(t.get("finalize", {}).get("finalizeId") == "f-live" for t in texts), texts
    away = next(i for i, f in enumerate(resumed) if isinstance(f, str) and "f-away" in f)
    audio_before = sum(len(f) for f in resumed[:away] if isinstance(f, bytes))
    acked_from = int(
        next(t for t in texts if "start" in t)["start"]["resume"]["ack"].get(
            "finalizedThroughMs", 0
        )
    )
    # The bytes replayed before f-away are those from the ack's frame up to where it was asked.
    assert audio_before == state["away"] - acked_from * 16 * 2, (audio_before, state, acked_from)
    assert state["controls"] == 1, state  # only the accepted update is still kept
    # The resumed connection said `started` again; the page had it once, before the resume.
    assert any(isinstance(f, str) and '"started"' in f for f in frames.received[-1])
    assert [m["resumes"] for m in got if "started" in m] in ([], [0]), got
    assert browser.errors == [], browser.errors
