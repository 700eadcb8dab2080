"""The broken servers' frame: a variant (what it changes, which cases must fail) and how it
is served: a real grpc.aio server on loopback, assembled as the example assembles itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from examples import minimal_server as ex
from voxwire.v1 import capabilities_pb2
from voxwire.wire import FIXED_WINDOW

IDLE_S = 2.0  # short, so the idle cases run in the tests (and long enough under load)


@dataclass(frozen=True)
class Variant:
    name: str
    breaks: str  # the promise it breaks
    expected: frozenset[str]  # the case ids that must fail, and no others
    transcription: type[ex.Transcription] = ex.Transcription
    session: type[ex.SynthesisStream] = ex.SynthesisStream
    capabilities: Callable[[], capabilities_pb2.GetCapabilitiesResponse] | None = None
    extras: Callable[[grpc.aio.Server], Awaitable[None]] = ex.add_health_and_reflection
    idle_s: float = IDLE_S  # what the services enforce (Capabilities always says IDLE_S)
    synthesis_overrides: dict[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] = ()  # run only these cases (a variant that would disturb the rest)

    @property
    def scope(self) -> tuple[str, ...]:
        """Case id patterns worth running: a variant that changes only one streaming service's
        classes cannot change the other's behaviour (that code is the example's, which passes
        every case), so only its own cases and the service-wide ones are run."""
        if self.only:
            return self.only
        stt_changed = self.transcription is not ex.Transcription
        tts_changed = self.session is not ex.SynthesisStream or bool(self.synthesis_overrides)
        shared = (
            self.capabilities is not None
            or self.extras is not ex.add_health_and_reflection
            or self.idle_s != IDLE_S
        )
        if shared or stt_changed == tts_changed:
            return ()
        return ("stt.*" if stt_changed else "tts.*", "capabilities.*", "health.*", "reflection.*")


async def serve(variant: Variant) -> tuple[grpc.aio.Server, int]:
    """The variant as a started server on a free loopback port."""
    server = grpc.aio.server(options=[FIXED_WINDOW])  # as the example's build_server
    synthesis_class = type(
        "BrokenSynthesis",
        (ex.Synthesis,),
        {"session_class": variant.session, **variant.synthesis_overrides},
    )
    caps = ex.Capabilities(IDLE_S)
    if variant.capabilities is not None:
        caps.response = variant.capabilities()
    ex.add_services(
        server, variant.transcription(variant.idle_s), synthesis_class(variant.idle_s), caps
    )
    await variant.extras(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
