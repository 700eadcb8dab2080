"""What every handler of one gateway process shares, and how a handler finds it."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

from aiohttp import web

from gateway.auth import AuthServices
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.sessions import Registry
from gateway.upstream.pool import AdapterPool

# Trace context headers passed upstream (W3C Trace Context), so one trace spans the hops.
_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass(eq=False)
class Gateway:
    config: GatewayConfig
    pool: AdapterPool
    auth: AuthServices
    registry: Registry
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    # Compressed uploads decoding now (POST /v1/stt; libsndfile threads are bounded).
    decoders: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.decoders = threading.BoundedSemaphore(self.config.max_decoders)

    def new_session_id(self) -> str:
        return secrets.token_hex(8)


GATEWAY = web.AppKey("gateway", Gateway)


def upstream_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The request's W3C trace context, for the upstream call's metadata."""
    return tuple((k, request.headers[k]) for k in _TRACE_HEADERS if k in request.headers)
