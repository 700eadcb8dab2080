"""Live transcripts of both sides of a phone call, from a forked Twilio media stream: what an
agent-assist or call-analytics service runs (docs/design/telephony.md, "A forked call").

    .venv/bin/python examples/twilio_transcribe.py --gateway ws://127.0.0.1:8080 --port 8091 \\
        --dial +15551230000

Point a Twilio number's voice webhook at ``https://<public host>/twiml``: the call is connected
to ``--dial`` (the agent) while Twilio forks both directions to ``wss://<public host>/fork``,
where each side's finals are printed, in the order they were said.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from voxwire.client.twilio_fork import ForkEnded, ForkEvent, TrackEvent, TrackFailed, TwilioFork
from voxwire.client.twilio_stream import AiohttpSocket
from voxwire.v1 import transcription_pb2

log = logging.getLogger("twilio_transcribe")
SPEAKERS = {"inbound": "caller", "outbound": "agent"}


def make_app(
    gateways: list[str],
    api_key: str,
    *,
    dial: str = "",
    stt_model: str = "stt_pocketsphinx",
    on_event: Callable[[ForkEvent], None] | None = None,
) -> web.Application:
    async def twiml(request: web.Request) -> web.Response:
        # Fork both directions of the call to the socket below, then connect the call.
        url = f"wss://{request.host}/fork"
        then = f"<Dial>{escape(dial)}</Dial>" if dial else '<Pause length="600"/>'
        body = (
            f'<Response><Start><Stream url={quoteattr(url)} track="both_tracks"/></Start>'
            f"{then}</Response>"
        )
        return web.Response(text=body, content_type="text/xml")

    async def fork_socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        fork = await TwilioFork.accept(
            AiohttpSocket(ws), gateways, api_key=api_key, stt_model=stt_model
        )
        log.info("call %s: transcribing %s", fork.start.call_sid, ", ".join(fork.tracks))
        async for event in fork.events():
            if on_event is not None:
                on_event(event)
            if isinstance(event, TrackEvent):
                result = event.event
                if isinstance(result, transcription_pb2.TranscriptResult) and result.is_final:
                    at_s = event.stream_ms(result.start_ms) / 1000
                    who = SPEAKERS.get(event.track, event.track)
                    log.info("%7.2f s %s: %s", at_s, who, result.transcript)
            elif isinstance(event, TrackFailed):  # the other side is still transcribed
                who = SPEAKERS.get(event.track, event.track)
                log.warning("%s's side lost after %d ms: %s", who, event.at_ms, event.error)
            elif isinstance(event, ForkEnded) and any(g.count for g in event.gaps.values()):
                lost = {SPEAKERS.get(t, t): g.filled_ms for t, g in event.gaps.items() if g.count}
                log.warning("audio Twilio discarded, filled with silence (ms): %s", lost)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_post("/twiml", twiml)
    app.router.add_get("/fork", fork_socket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", action="append", default=[], help="ws://host:port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--dial", default="", help="the number the call is connected to")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    key = os.environ["VOXWIRE_API_KEY"]
    app = make_app(args.gateway or ["ws://127.0.0.1:8080"], key, dial=args.dial)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
