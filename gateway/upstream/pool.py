"""The inference adapters behind the gateway: long-lived channels, health, least-loaded choice.

Per adapter one grpc.aio channel (``channels_per_adapter``), opened once and shared by every
session (many streams multiplexed per channel, never a channel per session). Health comes from the
standard health service: one ``Watch`` stream per adapter on the overall service ("") keeps
``serving`` up to date; a broken watch (the adapter died or restarts) counts as not serving and is
re-opened with a capped backoff. A session asks ``choose`` for the serving adapter with the fewest
of this gateway's open streams; an adapter a session just failed on can be excluded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxwire.capabilities import find_model, fitted_input, fitted_output
from voxwire.errors import BackendUnavailable
from voxwire.v1 import (
    audio_pb2,
    capabilities_pb2,
    capabilities_pb2_grpc,
    synthesis_pb2,
    synthesis_pb2_grpc,
    transcription_pb2,
    transcription_pb2_grpc,
)
from voxwire.wire import FIXED_WINDOW

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
_WATCH_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)
_CAPABILITIES_TIMEOUT_S = 2.0
# How often a serving adapter's capabilities are asked again: a model its Triton loads later,
# or a replica's limits changed, is seen within this (it was seen only at a restart).
CAPABILITIES_EVERY_S = 30.0
# Sent with the pool's own calls (no client's): an adapter, its logs and its tests tell them
# from a client's request, as they tell health probes by their service.
POOL_CALL_METADATA = (("voxwire-caller", "gateway-pool"),)
# How long a client should wait before retrying when no adapter serves.
NO_ADAPTER_RETRY = datetime.timedelta(seconds=1)

STREAMING_TRANSCRIBE = "/voxwire.v1.Transcription/StreamingTranscribe"
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # Separate subchannels per channel, so streams really spread over the connections.
    ("grpc.use_local_subchannel_pool", 1),
    # Notice a dead adapter under an idle stream (the adapter allows pings every 10 s).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A fixed HTTP/2 window per call (gRPC's 64 KiB lookahead), not one grown by
    # bandwidth-delay probing: a paced TTS context is read only as playback goes, and with
    # probing the transport took megabytes of its audio the session never counted, then
    # reopened the spent window only after megabytes were read, so the adapter's write waited
    # past its write_timeout: a 12-minute text failed SLOW_CONSUMER 13 s after it opened
    # (tests/gateway/test_tts_flow.py). The gateway's own read-ahead is the bound instead
    # (docs/design/edge.md, "Flow control"). Not larger: a paced call's window reopens only
    # once most of it is read, and the adapter's write waits that long: 2.4 s at most for
    # 8 kHz audio with 64 KiB, 9.8 s with 256 KiB, against its 10 s write_timeout. The price
    # is 5-9 % more gateway CPU per TTS request read unpaced; STT's is unchanged (BENCHMARKS.md,
    # "TTS flow control through the gateway").
    FIXED_WINDOW,
)


@dataclass(eq=False)
class Adapter:
    address: str
    channels: list[grpc.aio.Channel]
    serving: bool = False
    active: int = 0  # this gateway's open streams on it
    # Its capabilities, asked each time it starts serving and every CAPABILITIES_EVERY_S while
    # it serves (None: not known): the limits a TTS client is told in EdgeLimits, the models'
    # formats that the edge's defaults fit.
    reported: capabilities_pb2.GetCapabilitiesResponse | None = None
    _rr: itertools.count = field(default_factory=itertools.count)
    _watch: asyncio.Task[None] | None = None
    _refresh: asyncio.Task[None] | None = None
    _unanswered: grpc.StatusCode | None = None  # why its capabilities were last not given
    # Why it last was not serving (its health watch's end, with gRPC's words: a refused
    # connection, a TLS handshake that failed), for the start-up error that gives up on it.
    why_not: str = "its health was never answered"

    def channel(self) -> grpc.aio.Channel:
        return self.channels[next(self._rr) % len(self.channels)]

    @property
    def max_pending_text_bytes(self) -> int:
        """Its capabilities' Limits.max_pending_text_bytes (0: not known)."""
        known = self.reported
        return known.limits.max_pending_text_bytes if known is not None else 0

    def transcription(self) -> transcription_pb2_grpc.TranscriptionStub:
        return transcription_pb2_grpc.TranscriptionStub(self.channel())

    def streaming_transcribe_serialized(self) -> grpc.aio.StreamStreamMultiCallable:
        """``StreamingTranscribe`` taking requests the caller serialized: a session's outbox
        holds the bytes, so its size bound is their length and nothing is encoded twice."""
        return self.channel().stream_stream(
            STREAMING_TRANSCRIBE,
            request_serializer=None,
            response_deserializer=transcription_pb2.StreamingTranscribeResponse.FromString,
        )

    def synthesis(self) -> synthesis_pb2_grpc.SynthesisStub:
        return synthesis_pb2_grpc.SynthesisStub(self.channel())

    def capabilities(self) -> capabilities_pb2_grpc.CapabilitiesStub:
        return capabilities_pb2_grpc.CapabilitiesStub(self.channel())


class Lease:
    """A session's stream on one adapter; ``release`` exactly once (idempotent)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._released = False
        adapter.active += 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.adapter.active -= 1


class AdapterPool:
    def __init__(
        self,
        addresses: Sequence[str],
        *,
        channels_per_adapter: int = 1,
        credentials: grpc.ChannelCredentials | None = None,
        capabilities_every_s: float = CAPABILITIES_EVERY_S,
    ) -> None:
        if not addresses:
            raise ValueError("at least one adapter address is needed")
        self._addresses = tuple(addresses)
        self._channels_per_adapter = max(1, channels_per_adapter)
        self._credentials = credentials
        self._capabilities_every_s = capabilities_every_s
        self.adapters: list[Adapter] = []
        self._listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        for address in self._addresses:
            channels = [self._open(address) for _ in range(self._channels_per_adapter)]
            adapter = Adapter(address, channels)
            adapter._watch = asyncio.create_task(self._watch(adapter), name=f"watch {address}")
            adapter._refresh = asyncio.create_task(
                self._refresh(adapter), name=f"capabilities of {address}"
            )
            self.adapters.append(adapter)

    async def wait_ready(self, within_s: float) -> bool:
        """Wait until some adapter serves, up to ``within_s``; True if one does."""
        deadline = asyncio.get_running_loop().time() + within_s
        while not self.ready:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _open(self, address: str) -> grpc.aio.Channel:
        if self._credentials is not None:
            return grpc.aio.secure_channel(address, self._credentials, options=_CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)

    async def close(self) -> None:
        for adapter in self.adapters:
            for task in (adapter._watch, adapter._refresh):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for channel in adapter.channels:
                await channel.close()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called whenever an adapter starts or stops serving."""
        self._listeners.append(callback)

    @property
    def ready(self) -> bool:
        return any(a.serving for a in self.adapters)

    @property
    def max_pending_text_bytes(self) -> int:
        """The least unsynthesized text a TTS context holds on any adapter (a session may move
        to any of them); 0 when none has said."""
        return min(
            (a.max_pending_text_bytes for a in self.adapters if a.max_pending_text_bytes), default=0
        )

    def model(
        self, kind: capabilities_pb2.ModelKind.ValueType, name: str
    ) -> capabilities_pb2.ModelCapabilities | None:
        """What an adapter says of model ``name`` of ``kind`` (its default of that kind for
        ""), a serving adapter's word first; None when none has said."""
        adapters = sorted(self.adapters, key=lambda a: not a.serving)
        for known in (a.reported for a in adapters if a.reported is not None):
            if (model := find_model(known, kind, name)) is not None:
                return model
        return None

    def stt_input(
        self, config: transcription_pb2.TranscriptionConfig
    ) -> audio_pb2.AudioFormat | None:
        """The format ``config``'s audio goes to its model in when the model does not take it
        as it is (``voxwire.capabilities.fitted_input``); None: as it is."""
        fmt = config.audio_format
        model = self.model(capabilities_pb2.MODEL_KIND_STT, config.model)
        return fitted_input(model, fmt.encoding, fmt.sample_rate_hz, max(1, fmt.channels))

    def tts_output(
        self, config: synthesis_pb2.SynthesisContextConfig
    ) -> audio_pb2.AudioFormat | None:
        """The format to ask ``config``'s model for when it does not make the one asked
        (``voxwire.capabilities.fitted_output``); None: the one asked."""
        fmt = config.output_format
        model = self.model(capabilities_pb2.MODEL_KIND_TTS, config.model)
        return fitted_output(model, fmt.encoding, fmt.sample_rate_hz)

    def choose(self, exclude: Iterable[Adapter] = ()) -> Lease:
        """A lease on the serving adapter with the fewest of our streams.

        Raises BackendUnavailable (retryable, with a retry delay) when none serves."""
        excluded = set(exclude)
        serving = [a for a in self.adapters if a.serving and a not in excluded]
        if not serving:
            raise BackendUnavailable(
                "no inference adapter is available", retry_delay=NO_ADAPTER_RETRY
            )
        return Lease(min(serving, key=lambda a: a.active))

    def report_failure(self, adapter: Adapter, why: str) -> None:
        """A stream saw its adapter's transport fail: stop choosing it until health says so."""
        self._set(adapter, False, f"a stream failed: {why}")

    def _set(self, adapter: Adapter, serving: bool, why: str = "") -> None:
        """Each change is logged once: the line that explains a /readyz 503, and its end."""
        if adapter.serving != serving:
            adapter.serving = serving
            if serving:
                log.info("adapter %s is serving", adapter.address)
            else:
                log.warning("adapter %s is not serving: %s", adapter.address, why)
            for callback in self._listeners:
                callback()

    @staticmethod
    async def _learn_capabilities(adapter: Adapter) -> None:
        """Its capabilities, which a restart may have changed. One that does not answer (in
        time) keeps what was known: every session works without them."""
        try:
            reply = await adapter.capabilities().GetCapabilities(
                capabilities_pb2.GetCapabilitiesRequest(),
                timeout=_CAPABILITIES_TIMEOUT_S,
                metadata=POOL_CALL_METADATA,
            )
        except grpc.aio.AioRpcError as exc:
            # Said once per cause, not at every refresh (a server without the service).
            level = logging.DEBUG if adapter._unanswered == exc.code() else logging.INFO
            adapter._unanswered = exc.code()
            log.log(
                level,
                "adapter %s did not give its capabilities: %s",
                adapter.address,
                exc.code().name,
            )
            return
        adapter._unanswered = None
        adapter.reported = reply

    async def _refresh(self, adapter: Adapter) -> None:
        """Asks a serving adapter's capabilities again, every ``capabilities_every_s``."""
        while True:
            await asyncio.sleep(self._capabilities_every_s)
            if adapter.serving:
                await self._learn_capabilities(adapter)

    async def _watch(self, adapter: Adapter) -> None:
        failures = 0  # consecutive watches that ended without an answer
        while True:
            stub = health_pb2_grpc.HealthStub(adapter.channels[0])
            call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            ended = "its health watch ended"
            try:
                async for response in call:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                    if response.status != SERVING:
                        adapter.why_not = f"its health says {status}"
                    elif not adapter.serving:
                        await self._learn_capabilities(adapter)  # before the first session on it
                    self._set(adapter, response.status == SERVING, f"its health says {status}")
                    failures = 0
            except grpc.aio.AioRpcError as exc:
                log.debug("health watch of %s ended: %s", adapter.address, exc.code().name)
                ended = f"its health watch ended: {exc.code().name}"
                adapter.why_not = f"{exc.code().name}: {(exc.details() or '')[:300]}"
            finally:
                call.cancel()
            self._set(adapter, False, ended)
            await asyncio.sleep(_WATCH_BACKOFF_S[min(failures, len(_WATCH_BACKOFF_S) - 1)])
            failures += 1
