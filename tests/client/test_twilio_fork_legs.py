"""voxwire.client.twilio_fork: one leg of a forked call fails mid-call, the other goes on.

The gateway here stands in front of a relay of the test's own: a real gRPC server that passes
each STT stream through to the session's real adapter, except that it fails the leg whose audio
came second (the dialled agent's) half a second into it, with a non-retryable rich status, as a
model server that rejects a stream's audio would. No real adapter can be made to fail one
stream on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2_grpc

from gateway.server import GatewayServer
from inference_adapter.server import AdapterServer
from loadtest.wer import word_error_rate
from tests.client.test_twilio_fork import TRANSCRIPTS, finals, mulaw, silence
from tests.helpers.edge import Edge, gateway_of_its_own
from tests.helpers.fake_twilio import run_fork
from tests.helpers.front import wait_until
from voxwire import errors
from voxwire.client.twilio_fork import ForkEnded, TrackFailed
from voxwire.v1 import capabilities_pb2_grpc, transcription_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAIL_AFTER = 25  # audio messages of the doomed leg relayed: 0.5 s of Twilio's 20 ms frames


class _FailsTheSecondLeg(
    transcription_pb2_grpc.TranscriptionServicer, capabilities_pb2_grpc.CapabilitiesServicer
):
    def __init__(self, adapter: str) -> None:
        self.channel = grpc.aio.insecure_channel(adapter)
        self.first_audio: list[int] = []  # streams in the order their audio began
        self.streams = 0

    async def GetCapabilities(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await capabilities_pb2_grpc.CapabilitiesStub(self.channel).GetCapabilities(request)

    async def StreamingTranscribe(self, requests: Any, context: Any) -> None:  # noqa: N802
        number, self.streams = self.streams, self.streams + 1
        call = transcription_pb2_grpc.TranscriptionStub(self.channel).StreamingTranscribe()
        doomed = asyncio.Event()

        async def up() -> None:
            relayed = 0
            async for request in requests:
                if request.WhichOneof("request") == "audio":
                    if not relayed:
                        self.first_audio.append(number)
                    relayed += 1
                    if self.first_audio[1:2] == [number] and relayed > FAIL_AFTER:
                        doomed.set()
                        return
                await call.write(request)
            await call.done_writing()

        async def down() -> None:
            async for response in call:
                await context.write(response)

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        fault = asyncio.ensure_future(doomed.wait())
        try:
            await asyncio.wait([tasks[1], fault], return_when=asyncio.FIRST_COMPLETED)
            if fault.done():
                error = errors.InvalidAudio("the relay's fault: this leg's audio is refused")
                details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
                await context.abort(error.code, error.message, trailing_metadata=(details,))
            await tasks[1]
            context.set_trailing_metadata(await call.trailing_metadata())
        finally:
            for task in (*tasks, fault):
                task.cancel()
            call.cancel()


@pytest_asyncio.fixture(loop_scope="session")
async def failing_leg(edge: Edge, edge_adapter: AdapterServer) -> AsyncIterator[GatewayServer]:
    relay = _FailsTheSecondLeg(edge_adapter.address)
    server = grpc.aio.server()
    transcription_pb2_grpc.add_TranscriptionServicer_to_server(relay, server)
    capabilities_pb2_grpc.add_CapabilitiesServicer_to_server(relay, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with gateway_of_its_own(f"127.0.0.1:{port}", edge.auth) as gateway:
            assert await wait_until(lambda: all(a.serving for a in gateway.pool.adapters), 5)
            yield gateway
    finally:
        await server.stop(0)
        await relay.channel.close()


def ws_of(gateway: GatewayServer) -> str:
    return gateway.url.replace("http", "ws", 1)


async def test_the_callers_leg_goes_on_when_the_agents_fails(
    edge: Edge, failing_leg: GatewayServer
):
    limiter = edge.server.auth.limiter
    key_id = edge.key.split("_")[1]
    # The caller speaks at 0 s and again at 3.5 s; the agent's leg starts at 1 s and fails
    # half a second into its audio, before its own words.
    caller = (
        mulaw("pay_bill") + silence(3.5 - len(mulaw("pay_bill")) / 8000) + mulaw("call_me_back")
    )
    agent = silence(1.5) + mulaw("account_balance")
    events, failures = await run_fork(ws_of(failing_leg), edge.key, caller, agent)
    assert not failures, failures
    (failed,) = [e for e in events if isinstance(e, TrackFailed)]
    assert failed.track == "outbound" and isinstance(failed.error, errors.InvalidAudio), failed
    assert abs(failed.at_ms - FAIL_AFTER * 20) <= 100, failed
    said = " ".join(TRANSCRIPTS[f"{n}.wav"] for n in ("pay_bill", "call_me_back"))
    heard = " ".join(text for _, text in finals(events, "inbound"))
    assert word_error_rate(said, heard) <= 0.3, heard  # both sentences: the second after the fault
    assert not finals(events, "outbound")
    ended = events[-1]
    assert isinstance(ended, ForkEnded) and ended.reason == "stop", ended
    assert abs(ended.untranscribed_ms["outbound"] - (len(agent) // 8 - failed.at_ms)) <= 100
    assert "inbound" not in ended.untranscribed_ms
    assert await wait_until(lambda: limiter.active_sessions(key_id) == 0, 3)


async def test_without_isolation_one_legs_failure_ends_the_fork(
    edge: Edge, failing_leg: GatewayServer
):
    events, failures = await run_fork(
        ws_of(failing_leg), edge.key, silence(3.0), silence(1.5), isolate_legs=False
    )
    assert len(failures) == 1 and isinstance(failures[0], errors.InvalidAudio), failures
    assert not [e for e in events if isinstance(e, (TrackFailed, ForkEnded))], events
