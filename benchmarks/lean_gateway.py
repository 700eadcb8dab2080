"""A second floor for the gateway: the edge protocol's conversions alone, no guarantees.

The null relay (``benchmarks/null_relay.py``) is the least a gateway costs: the client sends
serialized contract messages and gets raw ones back. This instrument speaks the gateway's real
STT WebSocket protocol (docs/edge.md) to the same client as the gateway (the loadtest
``gateway`` target): the config from the query string, binary PCM frames, a JSON ``close``, and
back ``started``, ``result`` and ``summary`` as the canonical JSON of ``voxwire.edge.v1``
messages, written with the gateway's own encoder (``voxwire.edge.messages.encode``). Per audio
frame it does what any implementation of the edge must: wrap the audio in a
``StreamingTranscribeRequest`` and serialize it, parse the adapter's response, and print its
result as JSON. Nothing else: no auth (the bearer key is not looked at), no session state
machine, no acks or resume tokens, no replay window, no outboxes or byte caps, no deadlines,
idle or drain watch, no failover, no edge timings. Two plain tasks per socket.

So, in one run: *lean − null relay* is what the edge protocol's conversions cost, and
*gateway − lean* is what the gateway's guarantees (docs/design/edge.md) cost on top. It handles
only the happy path the load client drives. It is a benchmark instrument, not a component.
Run it in its own process (``python -m benchmarks.lean_gateway ADAPTER_HOST:PORT``): it binds
a free loopback port, prints it on stdout, and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import grpc
import uvloop
from aiohttp import WSMsgType, web

from benchmarks.null_relay import serve_route
from voxwire.edge.messages import encode
from voxwire.edge.v1 import session_pb2, stt_pb2
from voxwire.v1 import audio_pb2, transcription_pb2

METHOD = "/voxwire.v1.Transcription/StreamingTranscribe"
PATH = "/v1/stt/stream"
_MAX_MESSAGE_BYTES = 1024 * 1024
Request = transcription_pb2.StreamingTranscribeRequest
Response = transcription_pb2.StreamingTranscribeResponse
_CLOSE = Request(close=transcription_pb2.CloseStream()).SerializeToString()


class LeanStt:
    def __init__(self, channel: grpc.aio.Channel, heartbeat_s: float) -> None:
        self._call = channel.stream_stream(METHOD)  # serialized here: raw bytes on the call
        self._heartbeat_s = heartbeat_s

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat_s, max_msg_size=_MAX_MESSAGE_BYTES, compress=False
        )
        await ws.prepare(request)
        query = request.query
        config = transcription_pb2.TranscriptionConfig(
            model=query.get("model", ""),
            interim_results=query.get("interim_results") == "true",
            audio_format=audio_pb2.AudioFormat(
                encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE,
                sample_rate_hz=int(query.get("sample_rate", "16000")),
                channels=1,
            ),
        )
        call = self._call()
        await call.write(Request(config=config).SerializeToString())

        async def upward() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                async for message in ws:
                    if message.type is WSMsgType.BINARY:
                        await call.write(Request(audio=message.data).SerializeToString())
                    elif message.type is WSMsgType.TEXT:  # the client's close
                        await call.write(_CLOSE)
                        break
                await call.done_writing()

        writer = asyncio.create_task(upward())
        ok = False
        try:
            async for raw in call:
                response = Response.FromString(raw)
                kind = response.WhichOneof("response")
                if kind == "result":
                    out = stt_pb2.SttServerMessage(result=response.result)
                elif kind == "started":
                    out = stt_pb2.SttServerMessage(started=response.started)
                elif kind == "summary":
                    summary = session_pb2.SessionSummary(
                        timings=response.summary.timings, audio_ms=response.summary.audio_ms
                    )
                    out = stt_pb2.SttServerMessage(summary=summary)
                else:
                    continue
                await ws.send_str(encode(out))
            ok = await call.code() == grpc.StatusCode.OK
        except grpc.aio.AioRpcError:
            pass
        except ConnectionError:
            pass  # the client went away
        finally:
            writer.cancel()
            call.cancel()
            await ws.close(code=1000 if ok else 1011)
        return ws


async def serve(adapter: str) -> None:
    await serve_route(
        adapter, PATH, lambda channel, heartbeat_s: LeanStt(channel, heartbeat_s).stream
    )


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))
