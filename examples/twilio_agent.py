"""A phone agent on Twilio Media Streams and voxwire: it answers every sentence it hears with
"You said ...", and stops talking when the caller talks over it (docs/design/telephony.md).

    .venv/bin/python examples/twilio_agent.py --gateway ws://127.0.0.1:8080 --port 8090

Point a Twilio number's voice webhook at ``https://<public host>/twiml`` (a tunnel to the
port); Twilio then opens the media socket ``wss://<public host>/media``. The calls to
``TwilioCall`` are the whole integration; ``answer`` is where an agent's logic goes.
``tests/client/test_twilio_call.py`` runs this app against a stand-in for Twilio.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from xml.sax.saxutils import quoteattr

from aiohttp import web

from voxwire import errors
from voxwire.client import SessionClosed
from voxwire.client.twilio import (
    AiohttpSocket,
    CallEnded,
    CallEvent,
    ReplyInterrupted,
    TwilioCall,
)
from voxwire.v1 import transcription_pb2

log = logging.getLogger("twilio_agent")


def answer(transcript: str) -> str:
    return f"You said {transcript}."


async def speak(call: TwilioCall, text: str, token_gap_s: float) -> None:
    """Say ``text``; with ``token_gap_s`` word by word, as an LLM streams its answer."""
    if not token_gap_s:
        await call.say(text)
        return
    reply = await call.open_reply()
    for word in text.split(" "):
        await reply.append(word + " ")  # after a barge-in, dropped: nothing to handle here
        await asyncio.sleep(token_gap_s)
    await reply.close()


def make_app(
    gateways: list[str],
    api_key: str,
    *,
    stt_model: str = "stt_pocketsphinx",
    tts_model: str = "tts_espeak",
    token_gap_s: float = 0.0,
    inbound_batch_ms: int = 20,
    on_event: Callable[[CallEvent], None] | None = None,
) -> web.Application:
    async def twiml(request: web.Request) -> web.Response:
        # Twilio's voice webhook: connect the call's audio to the media socket, both ways.
        url = f"wss://{request.host}/media"
        body = f"<Response><Connect><Stream url={quoteattr(url)}/></Connect></Response>"
        return web.Response(text=body, content_type="text/xml")

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            call = await TwilioCall.accept(
                AiohttpSocket(ws),
                gateways,
                api_key=api_key,
                stt_model=stt_model,
                tts_model=tts_model,
                inbound_batch_ms=inbound_batch_ms,
            )
        except (TimeoutError, SessionClosed, errors.VoxwireError) as exc:
            # No call to serve (the caller hung up first, Twilio sent no start, the gateway
            # refused the sessions): one line saying why, and Twilio's socket closed.
            log.warning("no call: %s: %s", type(exc).__name__, exc)
            await ws.close()
            return ws
        sid = call.start.call_sid
        log.info("call %s: streaming", sid)
        answers: set[asyncio.Task[None]] = set()
        async for event in call.events():
            if on_event is not None:
                on_event(event)
            if isinstance(event, transcription_pb2.TranscriptResult) and event.is_final:
                log.info("call %s: caller: %s", sid, event.transcript)
                task = asyncio.create_task(speak(call, answer(event.transcript), token_gap_s))
                answers.add(task)
                task.add_done_callback(answers.discard)
            elif isinstance(event, ReplyInterrupted):
                heard = " ".join(w.word for w in event.heard)
                log.info(
                    "call %s: interrupted after %d ms; the caller heard %r",
                    sid,
                    event.played_ms,
                    heard,
                )
            elif isinstance(event, CallEnded) and event.inbound_gaps.count:
                lost_ms = event.inbound_gaps.filled_ms + event.inbound_gaps.unfilled_ms
                log.warning("call %s: Twilio discarded %d ms of the caller's audio", sid, lost_ms)
        await asyncio.gather(*answers)  # an answer that failed fails here, not silently
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_post("/twiml", twiml)
    app.router.add_get("/media", media)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", action="append", default=[], help="ws://host:port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    key = os.environ["VOXWIRE_API_KEY"]
    app = make_app(args.gateway or ["ws://127.0.0.1:8080"], key)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
