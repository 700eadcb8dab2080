"""Edge stack benchmark: the same small WebSocket relay on each candidate HTTP/WebSocket stack.

The gateway (``gateway/``) relays each client WebSocket to the inference adapter over gRPC. Before
choosing its stack this package measures, on one machine and interleaved, the candidates:

- ``aiohttp``: ``web.WebSocketResponse`` on uvloop;
- ``uvicorn-websockets``, ``uvicorn-websockets-sansio``, ``uvicorn-wsproto``: Starlette on
  uvicorn (uvloop + httptools) with each of uvicorn's WebSocket backends.

Each runs as its own server process (``benchmarks.edge_stack.server``) with the same routes:
``/relay`` (one grpc.aio bidi stream per WebSocket to ``benchmarks.echo_server``: binary frame
in, the same bytes to gRPC, the echoed bytes back out), ``/echo`` (WebSocket echo, no gRPC),
``/idle`` (an authenticated session that holds a small session object and waits), ``/flood``
and ``/sink`` (outbound and inbound backpressure), ``/upload`` and ``/events`` (chunked HTTP
body in, SSE out) and ``/stats`` (what the handlers saw).

``python -m benchmarks.edge_stack`` starts them, drives them from one load client (this
process), and prints the BENCHMARKS.md tables. Benchmark instruments, not components: the
servers have none of the gateway's deadlines, errors or limits.
"""
