"""The gateway's aiohttp application: routes, admission, the WebSocket handlers.

Handlers are thin: they admit the request (credentials and per-key limits, the same for every
endpoint), build a session and its runner, and wait. Errors found at a WebSocket upgrade are
sent after the upgrade, as an ``error`` event and a close code, so that browsers (which cannot
read a refused handshake's status) see them too; HTTP endpoints answer with the status and the
same JSON error event (docs/design/edge.md, "Auth and limits").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from opentelemetry import trace

from gateway import let_go
from gateway.aiohttp_port import AiohttpPort, heartbeat_limits, tts_limits
from gateway.auth.authenticate import select_subprotocol
from gateway.http import misc
from gateway.http import stt as http_stt
from gateway.http import tts as http_tts
from gateway.http.common import error_response
from gateway.http.openapi import ALIVE, DRAINING, NO_ADAPTER, READY
from gateway.metrics import close_code_label
from gateway.sessions import Admission, stt_start, tts_start
from gateway.state import GATEWAY, UPSTREAM_TRACE, Gateway, upstream_metadata
from gateway.stt.runner import SttRunner
from gateway.stt.session import Actions as SttActions
from gateway.stt.session import SttEdgeSession
from gateway.telemetry import trace_carrier, upstream_trace_metadata
from gateway.tts.runner import TtsRunner
from gateway.tts.session import TtsEdgeSession
from gateway.wire import query
from gateway.wire.messages import encode
from voxwire import errors
from voxwire.edge.v1 import stt_pb2, tts_pb2

log = logging.getLogger(__name__)
# aiohttp's wait for a client's close frame; AiohttpPort.close bounds it far sooner.
_CLOSE_TIMEOUT_S = 3600.0

SUBPROTOCOL = "voxwire.v1"


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: it may carry what a client should not have put
    there), status, time. Credentials never reach it (docs/design/edge.md)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3f',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A span per API request (a whole WebSocket session, an HTTP request), continuing the
    client's ``traceparent``; its context goes upstream (``upstream_metadata``)."""
    if not request.path.startswith("/v1/"):
        return await handler(request)  # health, readiness, metrics: no trace
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    with request.app[GATEWAY].tracing.session_span(
        f"{request.method} {route}",
        trace_carrier(request.headers.items()),
        {"http.request.method": request.method, "http.route": route},
    ) as span:
        request[UPSTREAM_TRACE] = upstream_trace_metadata()
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        return response


@web.middleware
async def routing_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path the gateway does not serve, or a method its path does not take, answered like
    every other error (``{"error": <ErrorEvent>}`` with a stable reason), not aiohttp's
    "404: Not Found" text."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(
            errors.MethodNotAllowed(
                f"{request.method} is not allowed on {request.path[:200]}; allowed: {allowed}"
            )
        )
        response.headers["Allow"] = allowed
        return response
    except web.HTTPNotFound:
        return error_response(
            errors.UnknownEndpoint(
                f"no endpoint {request.method} {request.path[:200]}; the HTTP endpoints are "
                "described at /v1/openapi.json"
            )
        )


def build_app(
    gateway: Gateway, *, extra: Callable[[web.Application], None] | None = None
) -> web.Application:
    app = web.Application(
        client_max_size=gateway.config.max_upload_bytes, middlewares=[routing_errors, traced]
    )
    app[GATEWAY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/stt/stream", stt_stream)
    app.router.add_get("/v1/tts/stream", tts_stream)
    app.router.add_post("/v1/tts", http_tts.speak, expect_handler=http_tts.expect)
    app.router.add_post("/v1/stt", http_stt.transcribe, expect_handler=http_stt.expect)
    app.router.add_post("/v1/auth/token", misc.token, expect_handler=misc.token_expect)
    app.router.add_get("/v1/capabilities", misc.capabilities)
    app.router.add_get("/v1/openapi.json", misc.openapi)
    if not gateway.config.metrics_listen:
        app.router.add_get("/metrics", misc.metrics)
    if gateway.config.demo_page:
        app.router.add_static("/demo/", Path(__file__).parent / "static")
    if extra is not None:
        extra(app)
    return app


def build_metrics_app(gateway: Gateway) -> web.Application:
    """What ``metrics_listen`` serves: the metrics and the probes, nothing a client uses."""
    app = web.Application(middlewares=[routing_errors])
    app[GATEWAY] = gateway
    app.router.add_get("/metrics", misc.metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _port(request: web.Request, ws: web.WebSocketResponse) -> AiohttpPort:
    """The session's port on its WebSocket: the gateway's keepalive interval, its connection
    to reset, and the close's wait."""
    config = _gateway(request).config
    return AiohttpPort(
        ws, request.transport, config.ping_interval_seconds, config.runner.close_flush_s
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": ALIVE})


async def readyz(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    if gateway.registry.draining:
        return web.json_response({"status": DRAINING}, status=503)
    if not gateway.pool.ready:
        return web.json_response({"status": NO_ADAPTER}, status=503)
    return web.json_response({"status": READY, "sessions": len(gateway.registry)})


async def _websocket(
    request: web.Request,
    kind: str,
    serve: Callable[[web.WebSocketResponse, Admission], Awaitable[tuple[int, float]]],
    error_message: Callable[[errors.VoxwireError], str],
) -> web.StreamResponse:
    """Upgrade, admit, serve; an admission error goes out as an event and a close code.

    An admitted session of ``kind`` is counted in the metrics while it runs, then by the close
    code ``serve`` returns (the one sent, or the client's)."""
    gateway = _gateway(request)
    offered = [
        p.strip()
        for h in request.headers.getall("Sec-WebSocket-Protocol", [])
        for p in h.split(",")
    ]
    chosen = select_subprotocol(offered)
    ws = web.WebSocketResponse(
        protocols=(chosen,) if chosen else (),
        # The port keeps the connection alive and answers pings itself (gateway/keepalive.py):
        # aiohttp's heartbeat counted a pong's deadline from the ping's write, and closed a
        # player that reads at playback pace, its ping behind seconds of audio.
        heartbeat=None,
        autoping=False,
        # The port bounds the wait for the client's close itself (AiohttpPort.close).
        timeout=_CLOSE_TIMEOUT_S,
        compress=gateway.config.websocket_compression,
        max_msg_size=gateway.config.hard_max_message_bytes,
        # Text frames as bytes: the message decoder checks UTF-8 itself and answers a frame
        # that is not with an error event and close 1007. aiohttp's own check closed the
        # socket at once, with no event and without reading what the client sent after it,
        # so a client still writing could lose the 1007 to a reset (the edge fuzzer's
        # reset_after_1007, docs/fuzzing.md).
        decode_text=False,
    )
    version = request.headers.get("Sec-WebSocket-Version")
    if version is not None and version != "13":
        # RFC 6455 section 4.4: a version the server does not speak aborts the handshake, with
        # the versions it does in Sec-WebSocket-Version. aiohttp also took the drafts' 7 and 8.
        refused = error_response(
            errors.InvalidMessage(
                f"Sec-WebSocket-Version {version[:20]!r}: this endpoint speaks RFC 6455, version 13"
            )
        )
        refused.headers["Sec-WebSocket-Version"] = "13"
        return refused
    if not ws.can_prepare(request).ok:
        # Not a WebSocket handshake (a plain GET, a missing key): the error event as JSON, as
        # every other HTTP error is; aiohttp answered 400 in plain text ("No WebSocket UPGRADE
        # hdr").
        return error_response(
            errors.InvalidMessage(
                f"{request.path} is a WebSocket endpoint: open it with an RFC 6455 handshake "
                "(Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Key, "
                "Sec-WebSocket-Version: 13)"
            )
        )
    try:
        await ws.prepare(request)
    except ConnectionError:
        # The client left before the upgrade's answer was written: nobody to serve, and no
        # fault of the gateway's (aiohttp logged it as an error with its traceback). The
        # half-prepared WebSocket cannot be returned (aiohttp would close it: "Call
        # .prepare() first", another traceback); a plain response is, and its write to the
        # closed connection is a ConnectionError aiohttp takes quietly. 499: the client
        # closed the request (nginx's code), as the access log will show.
        log.info("the client left during the upgrade of %s", request.path)
        return web.Response(status=499, reason="Client Closed Request")
    admission: Admission | None = None
    try:
        if gateway.registry.draining:
            raise errors.Draining("the gateway is shutting down: connect to another one")
        auth = gateway.auth.authenticator.authenticate_websocket(
            list(request.headers.items()), offered
        )
        permit = gateway.auth.limiter.admit(
            auth.principal.key_id, auth.principal.limits, new_session=False
        )
        admission = Admission(gateway.auth, auth.principal, permit)
        trace.get_current_span().set_attribute("voxwire.key_id", auth.principal.key_id)
    except errors.VoxwireError as exc:
        # Why, in the client-facing words (no credential in them): revoked, expired, reused.
        log.info("refused %s: %s: %s", request.path, exc.reason, exc.message)
        gateway.metrics.refused.labels(reason=exc.reason).inc()
        trace.get_current_span().set_attribute("voxwire.error.reason", exc.reason)
        await ws.send_str(error_message(exc))
        await ws.close(code=exc.ws_close_code, message=exc.reason.encode())
        return ws
    opened = gateway.metrics.session_opened(kind)
    # 1006 (no close frame) unless the run returns: a run cancelled as the server stops sent none.
    code, linger_s = 1006, 0.0
    transport = request.transport  # aiohttp lets go of it when it closes it
    try:
        code, linger_s = await serve(ws, admission)
    finally:
        admission.permit.release()
        # A client that stopped reading cannot take the close frame: the graceful close that
        # follows would keep its socket, and the audio it holds, as long as the client keeps it.
        # One that plays the audio as it reads it (a player) of a session that ended well has
        # the audio it had still to play, and one write's deadline, more: it was reset with
        # seconds of its audio unread (tests/gateway/test_keepalive.py).
        runner_limits = gateway.config.runner
        grace_s = runner_limits.close_flush_s
        if linger_s:
            grace_s += linger_s + runner_limits.write_timeout_s
        let_go.reset_unless_gone(transport, grace_s)
        let_go.forget_tracebacks(ws.exception())
        if admission.refused:
            log.info("refused %s: %s", request.path, admission.refused)
            gateway.metrics.session_refused(kind, admission.refused)
        else:
            gateway.metrics.session_closed(kind, close_code_label(code), opened)
    return ws


def _stt_first(
    request: web.Request, session: SttEdgeSession, admission: Admission
) -> SttActions | None:
    """The session's start from a config in the query string, if there is one."""
    try:
        config = query.stt_config(request.query.items())
        if config is None:
            return None
        admission.count_new()
        return session.start(config, from_query=True)
    except errors.VoxwireError as exc:
        let_go.forget_tracebacks(exc)  # the actions hold it: no cycle through its frames
        return session.fail(exc)


async def stt_stream(request: web.Request) -> web.StreamResponse:
    gateway = _gateway(request)

    async def serve(ws: web.WebSocketResponse, admission: Admission) -> tuple[int, float]:
        session = SttEdgeSession(
            gateway.config.stt,
            session_id=gateway.new_session_id(),
            issue_token=admission.issuer("stt", gateway.config.stt.max_session_s),
            transport_limits=heartbeat_limits(gateway.config.ping_interval_seconds),
            fit=gateway.pool.stt_input,
        )
        runner = SttRunner(
            session,
            _port(request, ws),
            gateway.pool,
            on_start=stt_start(admission),
            limits=gateway.config.runner,
            metadata=upstream_metadata(request),
            on_failover=gateway.metrics.failovers.labels(kind="stt").inc,
        )
        gateway.registry.add(runner, admission.principal.key_id)
        try:
            # The first decisions go straight into the run, which drops them once executed: no
            # frame keeps them (or the config) for the session's life.
            code = await runner.run(_stt_first(request, session, admission))
            return code, runner.linger_s
        finally:
            gateway.registry.discard(runner)

    return await _websocket(
        request, "stt", serve, lambda e: encode(stt_pb2.SttServerMessage(error=errors.to_event(e)))
    )


async def tts_stream(request: web.Request) -> web.StreamResponse:
    gateway = _gateway(request)

    async def serve(ws: web.WebSocketResponse, admission: Admission) -> tuple[int, float]:
        session = TtsEdgeSession(
            gateway.config.tts,
            session_id=gateway.new_session_id(),
            issue_token=admission.issuer("tts", gateway.config.tts.max_session_s),
            transport_limits=tts_limits(
                gateway.config.ping_interval_seconds, gateway.pool.max_pending_text_bytes
            ),
            fit=gateway.pool.tts_output,
        )
        first = None
        defaults = None
        try:
            defaults = query.tts_start(request.query.items())
            if defaults is not None:
                try:
                    session.check_options(defaults)
                except errors.VoxwireError as exc:
                    # Named as the client set it: the query's lead_ms (docs/edge.md).
                    raise errors.renamed_fields(exc, {"lead": "lead_ms"}.get) from None
        except errors.VoxwireError as exc:
            let_go.forget_tracebacks(exc)  # ``first`` holds it: no cycle through this frame
            first = session.fail(exc)
        runner = TtsRunner(
            session,
            _port(request, ws),
            gateway.pool,
            on_start=tts_start(admission, defaults),
            limits=gateway.config.runner,
            metadata=upstream_metadata(request),
            on_failover=gateway.metrics.failovers.labels(kind="tts").inc,
        )
        gateway.registry.add(runner, admission.principal.key_id)
        try:
            code = await runner.run(first)
            return code, runner.linger_s
        finally:
            gateway.registry.discard(runner)

    return await _websocket(
        request, "tts", serve, lambda e: encode(tts_pb2.TtsServerMessage(error=errors.to_event(e)))
    )
