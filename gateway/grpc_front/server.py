"""The gateway's gRPC front: the ``voxwire.v1`` services for server-side callers.

A grpc.aio server in the gateway process (``GatewayConfig.grpc_listen``, default
127.0.0.1:8081; empty disables it; TLS with the edge's certificate when one is configured)
serves ``voxwire.v1.Transcription``, ``Synthesis`` and ``Capabilities`` behind the same auth
as the WebSocket and HTTP endpoints, plus the standard health service and reflection.

The two streaming methods run as the WebSocket's sessions (``stt_stream.py``,
``tts_stream.py``), so an adapter's death moves a call instead of ending it; the unary ones are
relayed as raw bytes (``relay.py``; generic handlers with identity serializers, built from the
contract's descriptors, so a unary method the contract adds is relayed without a change here,
while a new streaming method needs its session). Before anything goes upstream, a call is
admitted exactly like a WebSocket session (docs/design/edge.md, "Auth and limits"):
draining -> DRAINING; credentials from the metadata (``authorization: Bearer <key>``, and an
``origin`` if a caller sends one) -> UNAUTHENTICATED / PERMISSION_DENIED; a streaming call is
a session of its key (one concurrent slot while it runs, one of the key's new sessions per
minute) -> RESOURCE_EXHAUSTED with RetryInfo (RATE_LIMITED); no adapter serving ->
BACKEND_UNAVAILABLE. ``GetCapabilities`` is authenticated but not a session, as
``GET /v1/capabilities`` is not: it takes one of the key's capabilities requests a minute
(``CatalogLimiter``; RATE_LIMITED beyond). A refused call never reaches an adapter.

Health (``grpc.health.v1``): the overall status and each voxwire service are SERVING while an
adapter serves and the gateway is not draining; a drain turns them NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gateway.auth import Principal, SessionPermit
from gateway.grpc_front import stt_stream, tts_stream
from gateway.grpc_front.call_port import CallPort
from gateway.grpc_front.relay import OPEN_TIMEOUT_S, Status, unary
from gateway.state import Gateway
from gateway.telemetry import trace_carrier, upstream_trace_metadata
from gateway.upstream.pool import Lease
from voxwire import errors
from voxwire.startup import add_grpc_port
from voxwire.v1 import capabilities_pb2, synthesis_pb2, transcription_pb2
from voxwire.wire import FIXED_WINDOW

log = logging.getLogger(__name__)

SERVICES: tuple[ServiceDescriptor, ...] = (
    transcription_pb2.DESCRIPTOR.services_by_name["Transcription"],
    synthesis_pb2.DESCRIPTOR.services_by_name["Synthesis"],
    capabilities_pb2.DESCRIPTOR.services_by_name["Capabilities"],
)
# Methods that are not sessions (authenticated, counted against the key's catalog rate, not
# its sessions).
CATALOG_METHODS = frozenset({"/voxwire.v1.Capabilities/GetCapabilities"})
# How long a refused stream waits for the client's first message (or half-close) before its
# status: a grpcio aio client whose write races the server's status reports INTERNAL instead
# of the status (grpc/grpc#36066), as the adapter found (inference_adapter/stream_runner.py).
REFUSAL_READ_S = 2.0
# The largest message the front takes (gRPC's default; the adapter's own limit is the same).
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Behavior = Callable[..., Coroutine[Any, Any, Any]]


def server_credentials(cert: str, key: str) -> grpc.ServerCredentials:
    """TLS for the front with the edge's certificate chain and key (PEM files).

    Raises OSError when a file cannot be read."""
    return grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])


class GrpcFront:
    """``await start()`` returns the bound port; the gateway's drain reaches open calls through
    its registry; ``await stop()`` ends the server."""

    def __init__(self, gateway: Gateway, listen: str) -> None:
        self._gateway = gateway
        self._listen = listen
        self.health = HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                # gRPC core sets SO_REUSEPORT unless told not to: only when the gateway is
                # configured to share its ports (GatewayConfig.reuse_port).
                ("grpc.so_reuseport", int(gateway.config.reuse_port)),
                # A fixed receive window per call, past which the session's own backpressure
                # holds the caller back (not megabytes later).
                FIXED_WINDOW,
                # A connection with no call in progress is closed (GOAWAY) after the edge's
                # keepalive timeout: gRPC core's default is never, so a client with no key
                # could hold sockets (~18 KiB each) for good by opening no stream.
                (
                    "grpc.max_connection_idle_ms",
                    round(gateway.config.keepalive_timeout_seconds * 1000),
                ),
            ]
        )
        for service in SERVICES:
            handlers = {m.name: self._handler(m) for m in service.methods}
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service.full_name, handlers),)
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                *(s.full_name for s in SERVICES),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self._health_update: asyncio.Task[None] | None = None
        self._health_dirty = False
        self.port = 0

    async def start(self) -> int:
        """Bind and serve. Raises RuntimeError when the address cannot be bound, OSError when
        the TLS files cannot be read."""
        config = self._gateway.config
        credentials = None
        if config.tls_cert:
            credentials = server_credentials(config.tls_cert, config.tls_key or config.tls_cert)
        self.port = add_grpc_port(
            self.server, self._listen, credentials, owner="the gRPC front", key="grpc_listen"
        )
        self._gateway.pool.add_listener(self.update_health)
        await self._set_health()
        await self.server.start()
        log.info("voxwire gateway gRPC front listening on port %d", self.port)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop serving; calls still open after ``grace`` are cancelled."""
        await self.drain()
        await self.server.stop(grace)
        if self._health_update is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_update

    async def drain(self) -> None:
        """The gateway drains: NOT_SERVING for good (load balancers stop sending calls)."""
        await self.health.enter_graceful_shutdown()

    def update_health(self) -> None:
        """Called (synchronously) on every change of the adapters' health: update soon. A
        change that lands while an update runs is picked up by its next turn."""
        self._health_dirty = True
        if self._health_update is None or self._health_update.done():
            self._health_update = asyncio.get_running_loop().create_task(self._health_loop())

    async def _health_loop(self) -> None:
        while self._health_dirty:
            self._health_dirty = False
            await self._set_health()

    async def _set_health(self) -> None:
        # After a drain has begun the servicer ignores this (graceful shutdown is for good).
        status = SERVING if self._gateway.pool.ready else NOT_SERVING
        for name in ("", *(s.full_name for s in SERVICES)):
            await self.health.set(name, status)

    # -- the calls -------------------------------------------------------------------------------

    def _handler(self, method: MethodDescriptor) -> grpc.RpcMethodHandler:
        path = f"/{method.containing_service.full_name}/{method.name}"
        if path in (stt_stream.METHOD, tts_stream.METHOD):

            async def stream(requests: AsyncIterator[bytes], context: Any) -> None:
                await self._stream(path, requests, context)

            return grpc.stream_stream_rpc_method_handler(stream)
        if not method.client_streaming and not method.server_streaming:

            async def call(request: bytes, context: Any) -> bytes | None:
                return await self._unary(path, request, context)

            return grpc.unary_unary_rpc_method_handler(call)
        # voxwire.v1's two bidi streams are sessions here; a new streaming method needs its own.
        raise NotImplementedError(f"{path}: the gRPC front has no session for this method")

    def _admit(
        self, path: str, context: grpc.aio.ServicerContext
    ) -> tuple[Principal, SessionPermit | None]:
        """Raises Draining, Unauthenticated, PermissionDenied, RateLimited."""
        gateway = self._gateway
        if gateway.registry.draining:
            raise errors.Draining("the gateway is shutting down: call another one")
        principal = gateway.auth.authenticator.authenticate_request(
            context.invocation_metadata() or ()
        )
        if path in CATALOG_METHODS:
            gateway.auth.catalog.admit(principal.key_id, principal.limits)
            return principal, None
        return principal, gateway.auth.limiter.admit(principal.key_id, principal.limits)

    def _admit_to_upstream(
        self, path: str, context: grpc.aio.ServicerContext, span: Any
    ) -> tuple[SessionPermit | None, Lease]:
        """Auth, the key's limits and an adapter, for one call: (its permit, its upstream
        lease). Raises the VoxwireError that refuses it (nothing is held then)."""
        permit: SessionPermit | None = None
        try:
            principal, permit = self._admit(path, context)
            span.set_attribute("voxwire.key_id", principal.key_id)
            return permit, self._gateway.pool.choose()
        except errors.VoxwireError as exc:
            if permit is not None:
                permit.release()
            span.set_attribute("voxwire.error.reason", exc.reason)
            raise

    async def _stream(
        self, path: str, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        gateway = self._gateway
        metadata = context.invocation_metadata() or ()
        with gateway.tracing.session_span(
            f"grpc {path}", trace_carrier(metadata), {"rpc.system": "grpc", "rpc.method": path}
        ) as span:
            await self._session_call(path, requests, context, span)

    async def _session_call(
        self,
        path: str,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
        span: Any,
    ) -> None:
        """StreamingTranscribe and StreamingSynthesize: the WebSocket session's core and runner
        on the contract's messages (``stt_stream.py``, ``tts_stream.py``), so an adapter's death
        moves the call, as it moves a WebSocket session, instead of ending it."""
        gateway = self._gateway
        try:
            principal, permit = self._admit(path, context)
            span.set_attribute("voxwire.key_id", principal.key_id)
        except errors.VoxwireError as exc:
            span.set_attribute("voxwire.error.reason", exc.reason)
            await self._refuse_stream(path, requests, context, exc)
            return
        assert permit is not None
        kind, limits = (
            (stt_stream.FrontSttRunner, gateway.config.stt)
            if path == stt_stream.METHOD
            else (tts_stream.FrontTtsRunner, gateway.config.tts)
        )
        port = CallPort(context)
        runner = kind(
            limits,  # type: ignore[arg-type]
            port,
            gateway.pool,
            session_id=gateway.new_session_id(),
            runner_limits=gateway.config.runner,
            metadata=upstream_trace_metadata(),
            on_failover=gateway.metrics.failovers.labels(kind="grpc").inc,
        )
        first = runner.start()
        gateway.registry.add(runner, principal.key_id)
        opened = gateway.metrics.session_opened("grpc")
        status: Status | None = None
        try:
            # Headers first, so that a status can always follow a write cancelled in flight:
            # gRPC core refuses a status batch that carries the initial metadata a second time,
            # and the call would never end (issue 8, defect 0, in the adapter).
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    await context.send_initial_metadata(())
            except TimeoutError:
                status = Status.of(
                    errors.SlowConsumer(
                        f"the client took no response headers within {OPEN_TIMEOUT_S:g} s"
                    )
                )
            else:
                await runner.run(first)  # type: ignore[arg-type]
                # None: the run ended with no decision of the session's (the client's stream
                # broke under the reader): a status for whoever still reads.
                status = runner.status or Status.of(
                    errors.InternalError("the call ended without a decision of its session")
                )
                if status.code is not grpc.StatusCode.OK:
                    await port.drain()
            span.set_attribute("rpc.grpc.status_code", status.code.value[0])
            status.apply(context)
        finally:
            permit.release()
            gateway.registry.discard(runner)
            # None: the client left (there is no status of ours).
            code = status.code.name if status is not None else "CANCELLED"
            gateway.metrics.session_closed("grpc", code, opened)

    async def _refuse_stream(
        self,
        path: str,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
        error: errors.VoxwireError,
    ) -> None:
        log.info("refused %s: %s: %s", path, error.reason, error.message)
        self._gateway.metrics.refused.labels(reason=error.reason).inc()
        # The client's first message (or half-close) is read, never passed on, before the
        # status goes out (REFUSAL_READ_S); a client that sends nothing gets it at the bound.
        # Then what it still sends is read and dropped as for a failed session (CallPort.drain,
        # voxwire.stream_write): a grpcio client that writes its config and first audio at
        # once lost the refusal to INTERNAL "Internal error from Core" (grpc/grpc#36066), 10
        # of 10 times for a missing key.
        # The response headers go first, at once, as an accepted stream's do: a client that
        # waits for them before it writes (grpc.aio's `await call.initial_metadata()`, to know
        # the call was taken) waited REFUSAL_READ_S (2 s) for a missing key's status; now it
        # writes, and its first message brings the status.
        port = CallPort(context)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REFUSAL_READ_S):
                await context.send_initial_metadata(())
                first = await port.receive()
            await port.drain(len(first.data or b""))
        Status.of(error).apply(context)

    async def _unary(
        self, path: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes | None:
        gateway = self._gateway
        metadata = context.invocation_metadata() or ()
        with gateway.tracing.session_span(
            f"grpc {path}", trace_carrier(metadata), {"rpc.system": "grpc", "rpc.method": path}
        ) as span:
            try:
                permit, lease = self._admit_to_upstream(path, context, span)
            except errors.VoxwireError as exc:
                log.info("refused %s: %s: %s", path, exc.reason, exc.message)
                gateway.metrics.refused.labels(reason=exc.reason).inc()
                Status.of(exc).apply(context)
                return None
            try:
                response, status = await unary(
                    gateway.pool, lease, path, request, context, metadata=upstream_trace_metadata()
                )
            finally:
                lease.release()
                if permit is not None:
                    permit.release()
            span.set_attribute("rpc.grpc.status_code", status.code.value[0])
            status.apply(context)
            return response
