"""``make run`` proves the gateway's gRPC front with its development key: its ``demo_front``
against the session's gateway (``edge``, whose front is in front of ``edge_adapter``)."""

from __future__ import annotations

import pytest

from localstack.__main__ import demo_front
from tests.helpers.edge import Edge

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_demo_transcribes_through_the_front(edge: Edge, capsys):
    await demo_front(edge.server.grpc_address, edge.key)
    out = capsys.readouterr().out
    assert f"[grpc] call_me_back.wav via {edge.server.grpc_address}: '" in out, out
    assert "call me back" in out, out
    # The adapter's stages and the edge's, as a WebSocket session's summary has them.
    assert "compute;dur=" in out and "edge-connect;dur=" in out, out


async def test_the_demo_says_what_the_front_answered(edge: Edge):
    with pytest.raises(RuntimeError, match="UNAUTHENTICATED"):
        await demo_front(edge.server.grpc_address, "vx_not_a_key")
