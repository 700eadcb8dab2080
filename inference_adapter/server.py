"""Build, start and drain the adapter's grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from inference_adapter.boundary import add_stream_service
from inference_adapter.capabilities import CapabilitiesService
from inference_adapter.config import AdapterConfig
from inference_adapter.health import HealthReporter
from inference_adapter.runtime import Runtime
from inference_adapter.stt.service import TranscriptionService
from inference_adapter.telemetry import Telemetry
from inference_adapter.triton.replicas import ReplicaPool
from inference_adapter.tts.service import SynthesisService
from voxwire.startup import add_grpc_port, server_tls_context
from voxwire.v1 import (
    capabilities_pb2,
    capabilities_pb2_grpc,
    synthesis_pb2,
    transcription_pb2,
)
from voxwire.wire import FIXED_WINDOW

log = logging.getLogger(__name__)

# Time streams get to end with DRAINING before the server aborts what is left.
_ABORT_MARGIN_S = 0.5


def server_credentials(config: AdapterConfig) -> grpc.ServerCredentials | None:
    """TLS for the adapter's port when a certificate is configured; with a client CA, clients
    must present a certificate it signed (mTLS). Raises OSError when a file cannot be read,
    ValueError for a client CA without a certificate."""
    if not config.tls_cert:
        if config.tls_client_ca:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mTLS is TLS first)")
        return None
    cert = Path(config.tls_cert).read_bytes()  # a missing file's error names it
    key = Path(config.tls_key or config.tls_cert).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    server_tls_context(config.tls_cert, config.tls_key)  # the pair checked as the gateway's
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class AdapterServer:
    """The adapter: ``await start()`` returns the bound port; ``await stop()`` drains.

    ``interceptors`` are grpc.aio server interceptors (an embedding application's, a test's
    call counter)."""

    def __init__(
        self,
        config: AdapterConfig,
        *,
        telemetry: Telemetry | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self.config = config
        self.pool = ReplicaPool(config)
        self.telemetry = telemetry or Telemetry(config)
        self.telemetry.observe_triton_calls(self.pool)
        self.runtime = Runtime(config=config, pool=self.pool, telemetry=self.telemetry)
        self.health = HealthReporter(self.pool)
        self.server = grpc.aio.server(
            options=[
                # gRPC refuses larger messages itself, before buffering them (RESOURCE_EXHAUSTED,
                # no ErrorInfo); smaller ones over the adapter's own limit are refused with
                # CHUNK_TOO_LARGE, unparsed (boundary.ClientReader).
                ("grpc.max_receive_message_length", config.max_receive_message_bytes),
                # Clients may ping every 10 s while streams are open (keepalive), not faster.
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # Only when configured to share the port (AdapterConfig.reuse_port).
                ("grpc.so_reuseport", int(config.reuse_port)),
                # A fixed receive window per call: with probing, gRPC core took megabytes of a
                # stream's requests the servicer had not read, so a client faster than its
                # model was held back (max_inflight_requests) megabytes too late
                # (tests/inference_adapter/test_receive_window.py,
                # tests/gateway/test_stt_fast_client.py).
                FIXED_WINDOW,
            ],
            interceptors=tuple(interceptors),
        )
        self.port = 0
        self._stopped = False

    async def start(self) -> int:
        """Connect to the replicas, register the services, bind. Returns the port.

        Raises RuntimeError when the listen address cannot be bound, OSError when a TLS file
        cannot be read.
        """
        credentials = server_credentials(self.config)  # before anything is started
        await self.pool.start()
        await self.health.update()
        # Streaming methods take raw request bytes: the stream runner checks their size and
        # parses them, so a message that does not parse is INVALID_MESSAGE, not a server fault.
        add_stream_service(
            self.server,
            transcription_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name,
            TranscriptionService(self.runtime).handlers(),
        )
        add_stream_service(
            self.server,
            synthesis_pb2.DESCRIPTOR.services_by_name["Synthesis"].full_name,
            SynthesisService(self.runtime).handlers(),
        )
        capabilities_pb2_grpc.add_CapabilitiesServicer_to_server(
            CapabilitiesService(self.runtime), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection(
            (
                transcription_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name,
                synthesis_pb2.DESCRIPTOR.services_by_name["Synthesis"].full_name,
                capabilities_pb2.DESCRIPTOR.services_by_name["Capabilities"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        try:
            self.port = add_grpc_port(self.server, self.config.listen, credentials)
        except RuntimeError:
            await self.pool.close()
            raise
        await self.server.start()
        log.info("voxwire inference adapter listening on port %d", self.port)
        return self.port

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def end_drain_now(self) -> None:
        """An operator's second signal: the drain's grace ends now, every open stream is cut
        with DRAINING (its client continues on another adapter)."""
        if not self.runtime.draining or self.runtime.drain_expired.is_set():
            return
        log.warning(
            "a second signal: the drain ends now; %d open streams end with DRAINING",
            self.runtime.active_streams,
        )
        self.runtime.drain_expired.set()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new streams, let open ones finish within ``grace``,
        end the rest with DRAINING, then stop."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.drain_grace_seconds if grace is None else grace
        # The time a stream is told it has (KIND_DRAINING's ``remaining``) is the time before
        # it is cut, the margin kept for its DRAINING status: it was told the whole grace and
        # cut 0.5 s before its end.
        self.runtime.start_drain(max(0.0, grace - _ABORT_MARGIN_S))
        # No stream is admitted once the drain has begun: of these, those still open at the
        # grace's end are cut, the others ended by themselves.
        draining = self.runtime.active_streams
        log.info("drain started: %d streams open, grace %g s", draining, grace)
        await self.health.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runtime.idle.wait(), max(0.0, grace - _ABORT_MARGIN_S))
        cut = self.runtime.active_streams
        self.runtime.drain_expired.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runtime.idle.wait(), _ABORT_MARGIN_S)
        await self.server.stop(_ABORT_MARGIN_S)
        log.info(
            "drain finished: %d streams ended by themselves, %d cut at the grace",
            draining - cut,
            cut,
        )
        await self.runtime.calls.close(_ABORT_MARGIN_S)  # drained TTS calls still ending
        await self.pool.close()
        self.telemetry.shutdown()

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()
