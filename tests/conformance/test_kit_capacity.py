"""The kit holds no more streams of a model than the model admits, and skips a case it could
not wait out within the run's deadline.

Found with ``--slow`` against ``make run``'s gateway front (2026-12-05): the four cases that
sit out the idle timeout (30 and 45 s) took no slot of the kit's while holding a stream of the
server's, so beside the four streams of ``--parallel`` ``stt_pocketsphinx`` (it admits four)
refused 19 cases OVERLOADED, and they failed; the case waiting out the adapter's hour of
``max_stream_duration`` was cut by the run's 300 s deadline, failed, and with it the case that
runs after every other. The server here is the example's, with an STT model that admits two
streams (OVERLOADED beyond, as the adapter answers) and an idle timeout of a few seconds."""

from __future__ import annotations

import datetime
from typing import Any

import grpc

from examples import minimal_server as ex
from voxwire import errors
from voxwire.conformance import Options, load_cases, run_kit
from voxwire.conformance.casefile import select
from voxwire.conformance.runner import PASS, SKIP
from voxwire.wire import FIXED_WINDOW

ADMITS = 2  # streams of the STT model at once
IDLE_S = 3.0


class _Admitting(ex.Transcription):
    """The example's transcription with a stream limit, as the adapter's admission has."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(idle_s)
        self.open = self.peak = 0

    async def stream(self, requests: Any, context: Any) -> None:
        if self.open >= ADMITS:
            error = errors.Overloaded(
                f"the model admits {ADMITS} streams", retry_delay=datetime.timedelta(seconds=1)
            )
            details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
            await context.abort(error.code, error.message, trailing_metadata=(details,))
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await super().stream(requests, context)
        finally:
            self.open -= 1


async def _serve() -> tuple[grpc.aio.Server, int, _Admitting]:
    server = grpc.aio.server(options=[FIXED_WINDOW])
    transcription = _Admitting(IDLE_S)
    capabilities = ex.Capabilities(IDLE_S)
    capabilities.response.models[0].capacity.max_streams = ADMITS
    ex.add_services(server, transcription, ex.Synthesis(IDLE_S), capabilities)
    await ex.add_health_and_reflection(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, transcription


async def test_the_kit_holds_no_more_streams_of_a_model_than_it_admits():
    server, port, transcription = await _serve()
    assert ex.Capabilities(IDLE_S).response.models[0].name == ex.STT_MODEL.name
    cases = select(load_cases(), ["stt.*"])
    try:
        # --slow: the cases that sit out the idle timeout hold their streams meanwhile.
        options = Options(target=f"127.0.0.1:{port}", slow=True, parallel=4, deadline_s=120)
        report = await run_kit(options, cases)
    finally:
        await server.stop(0.5)
    failed = {r.case.id: r.evidence for r in report.results if r.result not in (PASS, SKIP)}
    assert not failed, failed
    waited = [r for r in report.results if r.case.waits and r.result == PASS]
    assert len(waited) >= 2, [(r.case.id, r.result, r.evidence) for r in report.results]
    assert transcription.peak == ADMITS


async def test_a_case_that_would_outlast_the_run_is_skipped_and_says_why():
    server, port, _ = await _serve()
    cases = select(load_cases(), ["stt.limits.idle-timeout", "stt.limits.keep-alive-resets-idle"])
    try:
        options = Options(target=f"127.0.0.1:{port}", slow=True, deadline_s=10, case_timeout_s=8)
        report = await run_kit(options, cases)
    finally:
        await server.stop(0.5)
    for result in report.results:
        assert result.result == SKIP, (result.case.id, result.result, result.evidence)
        assert "would outlast the run's --deadline 10 s" in result.evidence, result.evidence
    assert report.ok
