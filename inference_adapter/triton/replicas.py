"""Triton replicas: readiness polling, least-loaded routing and admission control.

Each replica is one Triton server reached over a small pool of grpc.aio channels. A poller asks
every replica ``RepositoryIndex(ready=True)`` each ``health_interval`` (with a deadline; each
model's own readiness, not ``ServerReady``, which one unloaded model turns false), so a
replica that dies or hangs stops receiving streams within one interval and the streams it
holds fail with a retryable BACKEND_UNAVAILABLE at once (their leases are failed); a replica
that becomes ready again is used again.

Only a failed probe takes a replica out. A stream that sees its transport fail asks for a probe
at once (``probe_soon``); a stream whose request times out or is refused fails alone. One bad
request (a START queued behind exhausted sequence slots, a model error) must not fail every
stream of a healthy replica, nor make it flap.

Admission is a count, never a queue: a replica holds at most ``max_streams_per_replica`` model
streams (an STT stream or a TTS context), and each model at most what it can really serve, read
from its config (``ModelInfo.streams_per_replica``: sequence slots for STT; instances x
concurrency x ``tts_oversubscription`` for TTS; never past instances x the model's declared
``voxwire.max_streams_per_instance``); when no ready replica has room, ``acquire``
raises Overloaded with a retry delay.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import itertools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inference_adapter.config import AdapterConfig
from inference_adapter.triton.catalog import ModelInfo, model_info
from voxwire.errors import BackendUnavailable, Overloaded, UnknownModel
from voxwire.wire import serialized

log = logging.getLogger(__name__)

# Large enough for a long TTS unit's audio in one response.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Separate subchannels per channel, so the pool really spreads streams over connections.
    ("grpc.use_local_subchannel_pool", 1),
]


# Probes in a row that must time out before a replica that answered before is taken out (a
# refused or broken connection takes it out at once). With the default interval and deadline a
# hung server is out within health_interval + 2 x health_timeout.
_SILENT_PROBES_TO_FAIL = 2
_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


def _silent(exc: BaseException) -> bool:
    """The probe got no answer in time (as opposed to a refused or broken connection)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    return isinstance(exc, TimeoutError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


class Lease:
    """A stream's hold on one replica slot. Release exactly once (``release`` is idempotent)."""

    def __init__(self, replica: Replica, model: ModelInfo) -> None:
        self.replica = replica
        self.model = model
        self.failed = asyncio.Event()
        self.error: BackendUnavailable | None = None
        self._released = False

    def fail(self, error: BackendUnavailable) -> None:
        if self.error is None:
            self.error = error
            self.failed.set()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.replica.release(self)

    async def wait_failed(self) -> BackendUnavailable:
        await self.failed.wait()
        assert self.error is not None
        return self.error


@dataclass(eq=False)
class Replica:
    index: int
    url: str
    channels: list[grpc.aio.Channel]
    stubs: list[service_pb2_grpc.GRPCInferenceServiceStub]
    ready: bool = False
    ready_models: frozenset[str] = frozenset()
    models: dict[str, ModelInfo] = field(default_factory=dict)
    # Model names whose config was read (voxwire or not), so it is read once while the
    # replica and the model stay ready (cleared when either goes: read again on return).
    seen: set[str] = field(default_factory=set)
    # "not ready yet" was logged for a replica never ready since the start (once).
    said_not_ready: bool = False
    leases: set[Lease] = field(default_factory=set)
    per_model: dict[str, int] = field(default_factory=dict)
    # Readiness probes in a row that got no answer within their deadline.
    silent_probes: int = 0
    # How this replica's ModelStreamInfer calls ended: half-closed and answered to the end
    # ("finished"), cancelled (an RST_STREAM to Triton), or broken under a half-close
    # ("failed": the replica or the way to it failed). See ModelStream.finish.
    calls_ended: collections.Counter[str] = field(default_factory=collections.Counter)
    # Why the cancelled ones were cancelled (ModelStream.cancel's ``why``): which path to make
    # end its calls without a cancel next (Triton 2.51 crashes under many, defect 9).
    calls_cancelled: collections.Counter[str] = field(default_factory=collections.Counter)
    # TTS calls of stopped contexts whose unit is running out (their leases are back), by model:
    # bounded by ``ReplicaPool.may_drain``.
    draining: collections.Counter[str] = field(default_factory=collections.Counter)
    # ModelStreamInfer per channel, taking requests serialized already (``SequenceRequests``)
    # or as messages (TTS units): made once, as one per call cost 1-2 % CPU.
    stream_calls: list[grpc.aio.StreamStreamMultiCallable] = field(default_factory=list)
    _rr: itertools.count = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return f"r{self.index}@{self.url}"

    @property
    def active(self) -> int:
        return len(self.leases)

    def stub(self) -> service_pb2_grpc.GRPCInferenceServiceStub:
        return self.stubs[next(self._rr) % len(self.stubs)]

    def stream_infer(self, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.StreamStreamCall:
        """A new ModelStreamInfer call on the next of the replica's channels."""
        return self.stream_calls[next(self._rr) % len(self.stream_calls)](metadata=metadata)

    def channel_states(self) -> str:
        """Each channel's connectivity: a channel stuck connecting (to a server that stopped,
        say) reads differently from a connected one whose server keeps a request waiting."""
        return ", ".join(ch.get_state(try_to_connect=False).name for ch in self.channels)

    def warn_silent(self, what: str, within_s: float) -> None:
        """Log a request of ``what`` that this replica left unanswered for ``within_s``, with
        what its channels were doing. Rare, and unexplained where it was seen (a START
        unanswered in a CI run, once per several: tests/inference_adapter/test_failover.py):
        the line tells the next one apart."""
        log.warning(
            "%s: %s: no answer within %g s (%d streams held; channels: %s)",
            self.name,
            what,
            within_s,
            self.active,
            self.channel_states(),
        )

    def release(self, lease: Lease) -> None:
        if lease in self.leases:
            self.leases.discard(lease)
            self.per_model[lease.model.name] -= 1

    def fail_all(self, why: str, retry_delay: datetime.timedelta | None = None) -> None:
        """Fail every lease, retryable after ``retry_delay`` when given (a replica that comes
        back, or another one, takes the stream then)."""
        for lease in list(self.leases):
            error = BackendUnavailable(
                f"model server {self.name} failed: {why}", retry_delay=retry_delay
            )
            lease.fail(error)


class ReplicaPool:
    """All replicas, their readiness and their load."""

    def __init__(self, config: AdapterConfig) -> None:
        self._config = config
        self.replicas: list[Replica] = []
        self._poller: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._wake = asyncio.Event()

    async def start(self) -> None:
        for i, url in enumerate(self._config.triton_urls):
            channels = [
                grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS)
                for _ in range(max(1, self._config.channels_per_replica))
            ]
            stubs = [service_pb2_grpc.GRPCInferenceServiceStub(ch) for ch in channels]
            calls = [
                ch.stream_stream(
                    _STREAM_INFER,
                    request_serializer=serialized,
                    response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
                    _registered_method=True,
                )
                for ch in channels
            ]
            self.replicas.append(
                Replica(index=i, url=url, channels=channels, stubs=stubs, stream_calls=calls)
            )
        await self.poll_once()
        self._poller = asyncio.create_task(self._poll_forever(), name="replica-poller")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for replica in self.replicas:
            replica.fail_all("adapter shutting down")
            for ch in replica.channels:
                await ch.close()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (synchronously) whenever a replica's readiness or model set changes."""
        self._listeners.append(callback)

    # -- routing ----------------------------------------------------------------------------

    def catalog(self) -> dict[str, ModelInfo]:
        """Every voxwire model known on any replica (ready or not)."""
        out: dict[str, ModelInfo] = {}
        for replica in self.replicas:
            for name, info in replica.models.items():
                out.setdefault(name, info)
        return out

    def ready_replicas(self, model: str) -> list[Replica]:
        return [r for r in self.replicas if r.ready and model in r.ready_models]

    def acquire(self, model: str, *, exclude: Collection[Replica] = ()) -> Lease:
        """Take a slot for one model stream on the least-loaded ready replica, other than
        ``exclude`` (a failover leaves out the replica that just failed).

        Raises UnknownModel (no replica knows it), BackendUnavailable (none has it ready) or
        Overloaded (all that have it are full).
        """
        info = self.catalog().get(model)
        if info is None:
            raise UnknownModel(f"no model named {model!r}")
        candidates = [r for r in self.ready_replicas(model) if r not in exclude]
        if not candidates:
            raise BackendUnavailable(f"model {model!r} is not ready on any model server")
        limit = self._config.max_streams_per_replica
        open_ = [
            r
            for r in candidates
            if r.active < limit
            and r.per_model.get(model, 0) < self.streams_per_replica(r.models.get(model, info))
        ]
        if not open_:
            raise Overloaded(
                f"all {len(candidates)} model server(s) for {model!r} are at their stream limit",
                retry_delay=datetime.timedelta(seconds=self._config.overload_retry_seconds),
            )
        replica = min(open_, key=lambda r: (r.active, r.index))
        lease = Lease(replica, replica.models.get(model, info))
        replica.leases.add(lease)
        replica.per_model[model] = replica.per_model.get(model, 0) + 1
        return lease

    def may_drain(self, lease: Lease) -> bool:
        """Whether the call of ``lease``'s stopped TTS context may run its unit out with the
        lease given back (``inference_adapter/triton/reaper.py``): at most as many such calls
        per replica and model as contexts are admitted, so Triton's queue holds at most twice
        what admission allows, whatever a client cancels."""
        draining = lease.replica.draining[lease.model.name]
        return draining < self.streams_per_replica(lease.model)

    def count_drain(self, lease: Lease, ending: asyncio.Future[Any]) -> None:
        """Count ``lease``'s call in ``may_drain``'s bound until ``ending`` is done."""
        draining, model = lease.replica.draining, lease.model.name
        draining[model] += 1
        ending.add_done_callback(lambda _: draining.subtract((model,)))

    def streams_per_replica(self, info: ModelInfo) -> int:
        """Streams (STT) or contexts (TTS) of ``info`` one replica admits."""
        return info.streams_per_replica(
            self._config.max_streams_per_replica, self._config.tts_oversubscription
        )

    def probe_soon(self, replica: Replica, why: str) -> None:
        """A stream saw the transport to ``replica`` fail: probe every replica now. The probe,
        not the stream, decides whether the replica is out (a dead server refuses at once)."""
        log.info("replica %s: a stream failed (%s); probing now", replica.name, why)
        self._wake.set()

    # -- readiness --------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: no task per poll.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.health_interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception:  # the poller must outlive any single bad answer
                log.exception("replica poll failed")

    async def poll_once(self) -> None:
        results = await asyncio.gather(
            *(self._probe(r) for r in self.replicas), return_exceptions=True
        )
        changed = False
        for replica, result in zip(self.replicas, results, strict=True):
            if isinstance(result, BaseException):
                replica.silent_probes = replica.silent_probes + 1 if _silent(result) else 0
                if 0 < replica.silent_probes < _SILENT_PROBES_TO_FAIL and replica.ready:
                    # One probe past its deadline may be a loaded server, not a dead one:
                    # probe again at once; a second silent probe in a row takes it out.
                    log.info("replica %s: readiness probe timed out; probing again", replica.name)
                    self._wake.set()
                    continue
                ready, models = False, frozenset[str]()
                why = f"readiness probe failed: {_describe(result)}"
            else:
                replica.silent_probes = 0
                ready, models = result
                why = "not ready"
            if not ready:
                # Its models' configs are read again when it is back: a restarted or reloaded
                # Triton may serve them with other instances, slots or rates (capacity and
                # formats come from the config). They were read once for the process's life.
                replica.seen.clear()
                if not replica.said_not_ready and not replica.ready:
                    # Never ready since the start: said once, or an unreachable or mistyped
                    # Triton went unmentioned while the adapter served nothing.
                    log.warning("replica %s is not ready yet: %s", replica.name, why)
                    replica.said_not_ready = True
            else:
                replica.seen -= replica.ready_models - models  # unloaded: read again on reload
            if ready and models:
                await self._learn_models(replica, models)
            if ready != replica.ready or models != replica.ready_models:
                changed = True
                if replica.ready and not ready:
                    log.warning("replica %s is not ready: %s", replica.name, why)
                    replica.said_not_ready = True
                    replica.fail_all(
                        why, datetime.timedelta(seconds=self._config.overload_retry_seconds)
                    )
                elif ready and not replica.ready:
                    # At start, and after a loss: the line that ends the "not ready" one.
                    log.info("replica %s is ready: %s", replica.name, ", ".join(sorted(models)))
                    replica.said_not_ready = False
                replica.ready, replica.ready_models = ready, models
                # A model that went away on a live replica fails its streams too.
                for lease in list(replica.leases):
                    if lease.model.name not in models:
                        lease.fail(BackendUnavailable(f"model {lease.model.name} unloaded"))
        if changed:
            self._notify()

    async def _probe(self, replica: Replica) -> tuple[bool, frozenset[str]]:
        """(ready, ready models). Raises what the probe's RPCs raise."""
        timeout = self._config.health_timeout_seconds
        stub = replica.stubs[0]
        # Each model's own readiness, not ServerReady: with Triton's strict readiness (its
        # default) one model unloaded or failed makes the whole server not ready, and every
        # stream of its other, ready models failed with it. A server that answers the index
        # is up; it is ready for the models the index says are.
        index = await stub.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(ready=True), timeout=timeout
        )
        models = frozenset(m.name for m in index.models if m.state == "READY")
        return bool(models), models

    async def _learn_models(self, replica: Replica, ready: frozenset[str]) -> None:
        for name in ready - replica.seen:
            try:
                resp = await replica.stubs[0].ModelConfig(
                    service_pb2.ModelConfigRequest(name=name),
                    timeout=self._config.health_timeout_seconds * 4,
                )
                info = model_info(resp.config)
            except (grpc.aio.AioRpcError, ValueError) as exc:
                log.warning("cannot read config of %s on %s: %s", name, replica.name, exc)
                continue
            replica.seen.add(name)
            if info is not None:
                replica.models[name] = info

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()
