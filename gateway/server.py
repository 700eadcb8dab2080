"""Start, drain and stop the gateway process's servers.

Drain (docs/design/edge.md, "Lifecycle"): ``/readyz`` fails at once, the gRPC front's health
turns NOT_SERVING, and new sessions and calls are refused with DRAINING; every open session gets
``going_away`` with its resume token; sessions and calls that end within the grace end normally;
the sessions left are closed with 1012 at its end and the gRPC calls left end with DRAINING
(each closes itself when its drain deadline passes); then the listeners stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.app import AccessLogger, build_app, build_metrics_app
from gateway.auth import AuthServices
from gateway.auth.keys import ReloadResult
from gateway.auth.redaction import install_redaction
from gateway.config import GatewayConfig
from gateway.grpc_front.server import GrpcFront
from gateway.sessions import Registry
from gateway.state import Gateway
from gateway.telemetry import GatewayTracing
from gateway.upstream.pool import AdapterPool
from voxwire import errors
from voxwire.startup import server_tls_context

log = logging.getLogger(__name__)


class _BadRequestLines(logging.Filter):
    """aiohttp's request handler logs a request its parser refused (a header with a NUL, a
    line over its limit, a Content-Length that is not a number: what scanners send a public
    port) with ``log_exception``, an ERROR and a traceback per request, though it answered it
    400 as it should. The client's fault, and the gateway's log is not theirs to fill: such a
    record becomes one INFO line. Every other error the handler logs stays as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno >= logging.WARNING:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            why = (exc.message.splitlines() or [""])[0].rstrip(":")[:200]
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "bad HTTP request from %s: %s (400)", (remote, why)
            record.exc_info, record.exc_text = None, None
        return True


# The logger of aiohttp's request handler for the gateway's server (aiohttp's own is
# "aiohttp.server"): its errors, less the bad requests' tracebacks.
_REQUEST_LOG = logging.getLogger("gateway.http.server")
_REQUEST_LOG.addFilter(_BadRequestLines())


# What the gRPC front's calls get to end once the drain's grace is over.
_GRPC_STOP_GRACE_S = 1.0
# How long after the grace the drain waits for sessions still closing (they close themselves at
# their drain deadline: this is a backstop).
_DRAIN_BACKSTOP_S = 2.0


def adapter_credentials(config: GatewayConfig) -> grpc.ChannelCredentials | None:
    """TLS (optionally mTLS: with a client certificate) to the adapters, when configured.

    Raises OSError when a file cannot be read."""
    if not config.adapter_ca:
        return None

    def read(name: str, path: str) -> bytes | None:
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:  # its own message names the path but not the setting
            raise OSError(f"{name} {path}: {exc.strerror or exc}") from None

    ca = read("adapter_ca", config.adapter_ca)
    cert = read("adapter_cert", config.adapter_cert)
    key = read("adapter_key", config.adapter_key)
    return grpc.ssl_channel_credentials(ca, key, cert)


class GatewayServer:
    """``await start()`` returns the bound port; ``await stop()`` drains.

    ``tracer_provider`` (a test's, an embedding application's) wins over ``config.telemetry``.
    """

    def __init__(self, config: GatewayConfig, *, tracer_provider: Any = None) -> None:
        if config.auth is None:
            raise ValueError("the gateway needs an [auth] configuration (keys file, signing keys)")
        self.config = config
        self.auth = AuthServices.from_config(config.auth)
        self.pool = AdapterPool(
            config.adapters,
            channels_per_adapter=config.channels_per_adapter,
            credentials=adapter_credentials(config),
        )
        self.registry = Registry()
        self.tracing = GatewayTracing(config.telemetry, config.otlp_endpoint, tracer_provider)
        self.gateway = Gateway(config, self.pool, self.auth, self.registry, tracing=self.tracing)
        self.app = build_app(self.gateway)
        self.front = GrpcFront(self.gateway, config.grpc_listen) if config.grpc_listen else None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_port = 0
        self._reload: asyncio.Task[None] | None = None
        self.port = 0
        self._stopped = False
        # A second SIGTERM / SIGINT during the drain (``end_drain_now``): the grace ends now.
        self._hurry = asyncio.Event()

    async def start(self) -> int:
        """Connect to the adapters, wait for one to serve, listen. Returns the port.

        Raises RuntimeError when no adapter serves within the start-up wait or the gRPC front
        cannot bind, OSError when a TLS file cannot be read."""
        install_redaction()
        await self.pool.start()
        # Said before the wait, so that a gateway started before its adapters does not look
        # hung: it listens only once an adapter serves.
        log.info(
            "waiting up to %g s for an adapter of %s to serve",
            self.config.startup_wait_seconds,
            ", ".join(self.config.adapters),
        )
        if not await self.pool.wait_ready(self.config.startup_wait_seconds):
            # Each adapter's last failure in gRPC's words: a TLS mistake (a plain gateway to a
            # TLS adapter, a wrong CA, no client certificate for mTLS) said nothing else.
            why = "; ".join(f"{a.address}: {a.why_not}" for a in self.pool.adapters)
            await self.pool.close()
            raise RuntimeError(
                f"no adapter of {', '.join(self.config.adapters)} served within "
                f"{self.config.startup_wait_seconds:g} s (startup_wait_seconds); last: {why}"
            )
        host, _, port = self.config.listen.rpartition(":")
        self._runner = web.AppRunner(
            self.app,
            access_log_class=AccessLogger,
            handle_signals=False,
            shutdown_timeout=1.0,
            logger=_REQUEST_LOG,
            keepalive_timeout=self.config.keepalive_timeout_seconds,
        )
        await self._runner.setup()
        try:
            site = web.TCPSite(
                self._runner,
                host or "127.0.0.1",
                int(port),
                ssl_context=self._tls(),
                reuse_port=self.config.reuse_port or None,
            )
            await site.start()
            self._site = site
            self.port = self._runner.addresses[0][1]
            if self.config.metrics_listen:
                self.metrics_port = await self._start_metrics()
            if self.front is not None:
                await self.front.start()
        except (RuntimeError, OSError):
            for runner in (self._runner, self._metrics_runner):
                if runner is not None:
                    await runner.cleanup()
            await self.pool.close()
            raise
        # Once every listener is up: a start that fails leaves no decoder process behind.
        self.gateway.decoders.start()  # the spare upload decoders, in the background
        self._reload = asyncio.create_task(self._reload_keys(), name="keys-reload")
        log.info("voxwire gateway listening on %s:%d", host, self.port)
        return self.port

    async def _start_metrics(self) -> int:
        """The operators' listener (``metrics_listen``): /metrics and the probes, no TLS, no
        access log line per scrape."""
        runner = web.AppRunner(
            build_metrics_app(self.gateway),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        host, _, port = self.config.metrics_listen.rpartition(":")
        try:
            await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                f"metrics cannot listen on {self.config.metrics_listen} (metrics_listen): "
                f"{exc.strerror or exc}"
            ) from exc
        self._metrics_runner = runner
        return int(runner.addresses[0][1])

    @property
    def metrics_url(self) -> str:
        """Where GET /metrics is served."""
        if not self.config.metrics_listen:
            return f"{self.url}/metrics"
        host = self.config.metrics_listen.rpartition(":")[0] or "127.0.0.1"
        return f"http://{host}:{self.metrics_port}/metrics"

    @property
    def grpc_address(self) -> str:
        """host:port of the gRPC front ("" when it is disabled)."""
        if self.front is None:
            return ""
        host = self.config.grpc_listen.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.front.port}"

    @property
    def url(self) -> str:
        host = self.config.listen.rpartition(":")[0] or "127.0.0.1"
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    def _tls(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        return server_tls_context(self.config.tls_cert, self.config.tls_key)

    async def _reload_keys(self) -> None:
        assert self.config.auth is not None
        while True:
            await asyncio.sleep(self.config.auth.keys_reload_interval_s)
            result = await asyncio.to_thread(self.auth.keys.reload_if_changed)
            if result is ReloadResult.RELOADED:
                log.info("keys file reloaded")
            # At every poll, not only after this loop's own reload: whoever reloaded the keys
            # (reload_if_changed is public), the sessions follow them.
            self._end_revoked_sessions()

    def _end_revoked_sessions(self) -> None:
        """Sessions open on a key the file now revokes (or no longer holds) end at once: a
        leaked key's holder would otherwise keep them up to their maximum duration, and
        revocation takes effect within one reload interval (docs/design/edge-auth.md)."""
        keys = self.auth.keys

        def revoked(key_id: str) -> bool:
            record = keys.get(key_id)
            return record is None or record.revoked

        ended = self.registry.end_sessions_of(revoked)
        if ended:
            log.info("ended the open sessions of revoked API keys %s", ", ".join(sorted(ended)))

    async def drain(self, grace: float | None = None) -> None:
        """Refuse new sessions, send going_away, wait for sessions within ``grace``."""
        grace = self.config.drain_grace_seconds if grace is None else grace
        self.registry.draining = True
        # What an operator watching a rollout wants to read (the adapter logs the same pair).
        opened = len(self.registry)
        log.info("drain started: %d sessions open, grace %g s", opened, grace)
        if self.config.reuse_port and self._site is not None:
            # Processes share the port: stop taking connections, so that new sessions and the
            # resumes of this process's own sessions reach the others at once (its open
            # connections stay). A lone process keeps listening and answers DRAINING instead.
            site, self._site = self._site, None
            await site.stop()
        if self.front is not None:
            await self.front.drain()
        ends = time.monotonic() + grace
        await self._send_going_aways(grace, ends)
        await self._within_grace(self.registry.wait_empty(), ends - time.monotonic())
        at_grace = len(self.registry)
        # Sessions close themselves at their drain deadline; this wait is only a backstop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_BACKSTOP_S):
                await self.registry.wait_empty()
        left = len(self.registry)
        log.info(
            "drain finished: %d sessions ended by themselves, %d closed at the grace "
            "(DRAINING: their clients resume elsewhere)",
            max(0, opened - at_grace),
            at_grace - left,
        )
        if left:
            log.warning(
                "drain: %d sessions still open %g s after the grace", left, _DRAIN_BACKSTOP_S
            )

    async def _within_grace(self, waited: Coroutine[Any, Any, None], seconds: float) -> None:
        """Wait for ``waited`` at most ``seconds``, and no longer than until
        ``end_drain_now``."""
        task = asyncio.ensure_future(waited)
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                {task, hurry}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for pending in (task, hurry):
                pending.cancel()
            await asyncio.gather(task, hurry, return_exceptions=True)

    def end_drain_now(self) -> None:
        """An operator's second signal: the drain's grace ends now. Every open session closes
        with DRAINING (1012; its client resumes on another gateway) instead of at the grace's
        end, and the process exits once they have (within the drain's backstop)."""
        if not self.registry.draining or self._hurry.is_set():
            return
        self._hurry.set()
        open_now = list(self.registry.runners)
        log.warning(
            "a second signal: the drain ends now; %d open sessions close with DRAINING (1012) "
            "and resume elsewhere",
            len(open_now),
        )
        for runner in open_now:
            runner.end(errors.Draining("the gateway is shutting down now: resume on another one"))

    async def _send_going_aways(self, grace: float, ends: float) -> None:
        """Every open session's going_away, paced (``drain_pace_per_s``): the clients then
        reconnect at once (``reconnect_now``) instead of each waiting a random jitter, so a
        session keeps streaming here until its turn and its downtime is the dial and the
        resume alone, while the other gateways take the resumes at a bounded rate. All are
        sent within half the grace; each session still closes at the drain's end (``ends``)."""
        runners = list(self.registry.runners)
        pace = self.config.drain_pace_per_s if grace > 0 else 0.0
        interval = going_away_interval(len(runners), pace, grace)
        started = ends - grace
        for index, runner in enumerate(runners):
            wait = started + index * interval - time.monotonic()
            if wait > 0:
                await self._within_grace(asyncio.sleep(wait), wait)
            if self._hurry.is_set():
                return  # end_drain_now ended every session
            runner.drain(max(0.0, ends - time.monotonic()), reconnect_now=pace > 0)
        if runners:
            log.info(
                "drain: %d going_aways sent in %.3f s", len(runners), time.monotonic() - started
            )

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.drain(grace)
        if self._reload is not None:
            self._reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload
        if self.front is not None:
            await self.front.stop(_GRPC_STOP_GRACE_S)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.pool.close()
        await self.gateway.decoders.close()
        self.tracing.shutdown()


def going_away_interval(sessions: int, pace_per_s: float, grace_s: float) -> float:
    """Seconds between two sessions' going_aways in a drain: at most ``pace_per_s`` a second,
    all of them sent within half the grace (0: all at once)."""
    if sessions <= 1 or pace_per_s <= 0 or grace_s <= 0:
        return 0.0
    return min(1.0 / pace_per_s, grace_s / 2 / (sessions - 1))
