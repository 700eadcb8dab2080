"""Targets the load tester drives (docs/design/loadtest.md, "Targets").

- ``grpc``: any ``voxwire.v1`` server (the adapter, an example server), grpc.aio.
- ``triton``: Triton's KServe v2 ``ModelStreamInfer``, raw stubs on grpc.aio (also the null
  proxy, which serves the same method).
- ``tritonclient``: Triton through tritonclient's own thread-per-stream client (a comparison
  path for the performance record).
- ``echo``: a raw-bytes grpc.aio bidi echo, the floor of one Python gRPC hop.
- ``gateway``: the gateway's WebSockets (``/v1/stt/stream``, ``/v1/tts/stream``), aiohttp.
- ``null-relay``: the gateway's floor (benchmarks/null_relay.py): protobuf frames over a
  WebSocket, relayed as raw bytes to an adapter.
"""

from __future__ import annotations

from loadtest.scenario import ScenarioError, TargetSpec
from loadtest.targets.base import Target


def make_target(spec: TargetSpec, *, stt_model: str, tts_model: str) -> Target:
    """The target of ``spec``. Raises ScenarioError for an unknown kind."""
    if spec.kind == "grpc":
        from loadtest.targets.voxwire_grpc import VoxwireTarget

        return VoxwireTarget(spec.address, spec.api_key)
    if spec.kind == "triton":
        from loadtest.targets.triton import TritonTarget

        return TritonTarget(
            spec.address, stt_model=stt_model, tts_model=tts_model, models_from=spec.models_from
        )
    if spec.kind == "tritonclient":
        from loadtest.targets.tritonclient_stream import TritonClientTarget

        return TritonClientTarget(spec.address, stt_model=stt_model, models_from=spec.models_from)
    if spec.kind == "echo":
        from loadtest.targets.echo import EchoTarget

        return EchoTarget(spec.address)
    if spec.kind == "gateway":
        from loadtest.targets.gateway import GatewayTarget

        return GatewayTarget(spec.address, spec.api_key, lead_ms=spec.lead_ms)
    if spec.kind == "null-relay":
        from loadtest.targets.null_relay import NullRelayTarget

        return NullRelayTarget(spec.address)
    raise ScenarioError(f"unknown target {spec.kind!r}")
