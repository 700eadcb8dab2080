"""grpc.health.v1 statuses derived from the replicas.

A streaming service is SERVING only while some replica has a ready model of its kind; the
overall status ("") is SERVING while either is. Capabilities is SERVING while the process
runs. A drain turns everything NOT_SERVING for good (grpc_health's graceful shutdown), so load
balancers stop sending streams before the grace period starts to run out.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from inference_adapter.triton.catalog import ModelKind
from inference_adapter.triton.replicas import ReplicaPool

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SERVICES = {
    ModelKind.STT: "voxwire.v1.Transcription",
    ModelKind.TTS: "voxwire.v1.Synthesis",
}
CAPABILITIES = "voxwire.v1.Capabilities"


class HealthReporter:
    def __init__(self, pool: ReplicaPool) -> None:
        self.servicer = HealthServicer()
        self._pool = pool
        self._pending: asyncio.Task[None] | None = None
        self._dirty = False
        pool.add_listener(self.schedule)

    def statuses(self) -> dict[str, int]:
        catalog = self._pool.catalog()
        out: dict[str, int] = {}
        for kind, service in SERVICES.items():
            ready = any(
                self._pool.ready_replicas(name)
                for name, info in catalog.items()
                if info.kind is kind
            )
            out[service] = SERVING if ready else NOT_SERVING
        out[""] = SERVING if SERVING in out.values() else NOT_SERVING
        out[CAPABILITIES] = SERVING
        return out

    async def update(self) -> None:
        for service, status in self.statuses().items():
            await self.servicer.set(service, status)

    def schedule(self) -> None:
        """Called by the pool on every readiness change (synchronously): update soon."""
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._update_while_dirty())

    async def _update_while_dirty(self) -> None:
        # A change that lands while an update is being written is picked up by the next turn.
        while self._dirty:
            self._dirty = False
            await self.update()

    async def drain(self) -> None:
        await self.servicer.enter_graceful_shutdown()
