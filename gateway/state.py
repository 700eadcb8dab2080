"""What every handler of one gateway process shares, and how a handler finds it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiohttp import web

from gateway.auth import AuthServices
from gateway.config import GatewayConfig
from gateway.http.decoder_pool import DecoderPool
from gateway.metrics import GatewayMetrics
from gateway.sessions import Registry
from gateway.telemetry import GatewayTracing, trace_carrier
from gateway.upstream.pool import AdapterPool


@dataclass(eq=False)
class Gateway:
    config: GatewayConfig
    pool: AdapterPool
    auth: AuthServices
    registry: Registry
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    tracing: GatewayTracing = field(default_factory=GatewayTracing)
    # Compressed uploads decoding now (POST /v1/stt): libsndfile in child processes, bounded.
    decoders: DecoderPool = field(init=False)

    def __post_init__(self) -> None:
        self.decoders = DecoderPool(self.config.max_decoders, spare=self.config.spare_decoders)
        self.metrics.watch_decoders(self.decoders)

    def new_session_id(self) -> str:
        return secrets.token_hex(8)


GATEWAY = web.AppKey("gateway", Gateway)
# The W3C trace context of the request's session span (set by the tracing middleware).
UPSTREAM_TRACE = web.RequestKey("upstream_trace", tuple[tuple[str, str], ...])


def upstream_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The metadata of the request's upstream calls: the W3C trace context of its session
    span, so the adapter's span is its child (or the client's own context, passed on as it
    came, on a route the middleware does not trace)."""
    traced = request.get(UPSTREAM_TRACE)
    if traced is not None:
        return traced
    return tuple(trace_carrier(request.headers.items()).items())
