"""The conformance kit through the gateway's gRPC front (the session's ``edge``, in front of the
session's ``edge_adapter``), with the caller's key in ``authorization`` (``--header``).

The front runs both streaming methods on the WebSocket sessions' cores (so that an adapter's
death moves the call), which means the gateway, not the adapter, now answers much of a bad
stream itself: this proves it answers as the contract says, with the adapter's own known
failures and nothing more.
"""

from __future__ import annotations

import pytest

from tests.conformance.test_adapter import KNOWN_FAILING, KNOWN_FLAKY, MODELS
from tests.helpers.edge import Edge
from voxwire.call_headers import parse_header
from voxwire.conformance import Options, run_kit
from voxwire.conformance.runner import BAD, PASS, read_case_list


async def test_the_gateways_grpc_front_keeps_the_contract(edge: Edge):
    options = Options(
        target=edge.server.grpc_address,
        models=MODELS,
        known_failing=read_case_list(KNOWN_FAILING),
        known_flaky=read_case_list(KNOWN_FLAKY),
        case_timeout_s=10.0,
        headers=(("authorization", f"Bearer {edge.key}"),),
    )
    report = await run_kit(options)
    bad = {r.case.id: f"{r.result}: {r.evidence}" for r in report.results if r.result in BAD}
    assert not bad
    # The cases ran through the front's sessions (not skipped for a missing feature).
    for kind in ("stt", "tts"):
        ran = [r for r in report.results if r.case.kind == kind]
        assert sum(r.result == PASS for r in ran) >= 30, [(r.case.id, r.result) for r in ran]


def test_a_header_is_name_colon_value() -> None:
    assert parse_header(" Authorization: Bearer vx_1:2 ") == ("authorization", "Bearer vx_1:2")
    for bad in ("authorization", ": x"):
        with pytest.raises(ValueError):
            parse_header(bad)
