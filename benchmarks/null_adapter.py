"""A stand-in adapter that holds STT streams open, for the gateway's idle-session benchmark.

10,000 open sessions mean 10,000 open upstream streams, and the real stack cannot hold that
many here (the adapter takes 256 streams per Triton replica, ``bench_stt`` 256 sequences).
This process is a named fake for that one measurement: it serves ``voxwire.v1.Transcription/
StreamingTranscribe`` (answers the config with ``started``, reads and drops audio and
keepalives, answers ``close`` with a summary) and the standard health service (SERVING), on a
free loopback port that it prints on stdout, until SIGTERM. Only the gateway's memory and CPU
are measured; this process's are not.

    python -m benchmarks.null_adapter
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from voxwire.v1 import transcription_pb2 as stt_pb2
from voxwire.v1 import transcription_pb2_grpc as stt_grpc


class HoldingTranscription(stt_grpc.TranscriptionServicer):
    async def StreamingTranscribe(
        self,
        request_iterator: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.StreamingTranscribeResponse]:
        async for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "config":
                started = stt_pb2.TranscriptionStarted(model=request.config.model)
                yield stt_pb2.StreamingTranscribeResponse(started=started)
            elif kind == "close":
                break
        yield stt_pb2.StreamingTranscribeResponse(summary=stt_pb2.TranscriptionSummary())


async def serve() -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_concurrent_streams", 100_000),
            # The gateway's keepalive, as the real adapter allows it (inference_adapter/server.py);
            # without these, gRPC core answers its pings with GOAWAY too_many_pings.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    )
    stt_grpc.add_TranscriptionServicer_to_server(HoldingTranscription(), server)
    status = health.aio.HealthServicer()
    await status.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    uvloop.run(serve())
