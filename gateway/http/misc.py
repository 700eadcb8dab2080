"""The small endpoints: browser tokens, capabilities, the OpenAPI document, metrics."""

from __future__ import annotations

import json

from aiohttp import web
from google.protobuf import json_format

from gateway.auth import Principal
from gateway.http.common import (
    authenticate,
    declared_within,
    error_response,
    expect_handler,
    no_query,
    not_draining,
    read_body,
)
from gateway.http.openapi import document
from gateway.state import GATEWAY
from gateway.wire.messages import decode, encode
from voxwire import errors
from voxwire.edge.v1 import http_pb2
from voxwire.v1 import capabilities_pb2

_CAPABILITIES_TIMEOUT_S = 2.0


_TOKEN_BODY_BYTES = 4096


def _token_principal(request: web.Request) -> Principal:
    principal = authenticate(request, request.app[GATEWAY].auth)
    if principal.credential != "api_key":
        raise errors.PermissionDenied("a token can only be exchanged for an API key's token")
    return principal


def _token_expect_check(request: web.Request) -> None:
    _token_principal(request)
    no_query(request)
    declared_within(request, _TOKEN_BODY_BYTES)


token_expect = expect_handler(_token_expect_check)


async def token(request: web.Request) -> web.Response:
    """POST /v1/auth/token: an API key (server side) -> a short-lived token for a page."""
    gateway = request.app[GATEWAY]
    try:
        principal = _token_principal(request)
        no_query(request)
        body = await read_body(
            request, _TOKEN_BODY_BYTES, gateway.config.token_body_timeout_seconds
        )
        asked = (
            decode(body, http_pb2.TokenRequest, max_bytes=_TOKEN_BODY_BYTES)
            if body.strip()
            else None
        )
        issued = gateway.auth.authenticator.issue_browser_token(
            principal, asked.ttl_seconds or None if asked is not None else None
        )
    except errors.VoxwireError as exc:
        gateway.metrics.refused.labels(reason=exc.reason).inc()
        return error_response(exc)
    reply = http_pb2.TokenResponse(token=issued.token)
    reply.expires_at.FromSeconds(int(issued.expires_at))
    return web.Response(text=encode(reply), content_type="application/json")


async def capabilities(request: web.Request) -> web.Response:
    """GET /v1/capabilities: what the adapters serve (asked of one that serves)."""
    gateway = request.app[GATEWAY]
    try:
        # A draining gateway refuses it as it refuses sessions (and as the gRPC front refuses
        # GetCapabilities): a client that asks before its session should ask where it will
        # open it.
        not_draining(gateway.registry)
        principal = authenticate(request, gateway.auth)
        no_query(request)
        # Not a session (it holds nothing), but each request reaches an adapter: a bucket of
        # its own per key (CatalogLimiter), as for gRPC GetCapabilities.
        gateway.auth.catalog.admit(principal.key_id, principal.limits)
        lease = gateway.pool.choose()
    except errors.VoxwireError as exc:
        # Refused before reaching an adapter (draining, a bad key, over the key's rate, none
        # serving): counted as every other endpoint counts its refusals (gRPC
        # GetCapabilities' among them).
        gateway.metrics.refused.labels(reason=exc.reason).inc()
        return error_response(exc)
    try:
        reply = await lease.adapter.capabilities().GetCapabilities(
            capabilities_pb2.GetCapabilitiesRequest(), timeout=_CAPABILITIES_TIMEOUT_S
        )
    except Exception as exc:  # the adapter did not answer: the same as none serving
        return error_response(errors.BackendUnavailable(f"capabilities: {type(exc).__name__}"))
    finally:
        lease.release()
    return web.Response(
        text=json.dumps(json_format.MessageToDict(reply)), content_type="application/json"
    )


async def openapi(request: web.Request) -> web.Response:
    try:
        no_query(request)
    except errors.VoxwireError as exc:
        return error_response(exc)
    return web.json_response(document())


async def metrics(request: web.Request) -> web.Response:
    body = request.app[GATEWAY].metrics.render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")
