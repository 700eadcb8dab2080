"""Run the inference adapter: ``python -m inference_adapter --triton-url 127.0.0.1:8001``.

SIGINT / SIGTERM start a drain (NOT_SERVING, no new streams, open streams get the grace
period), then the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from inference_adapter.config import TELEMETRY_MODES, AdapterConfig, ConfigError
from inference_adapter.server import AdapterServer
from voxwire.gc_policy import settle_after_startup
from voxwire.startup import LOG_LEVELS, StartError, drain_then_stop, run_or_exit


def parse_args(argv: list[str] | None = None) -> AdapterConfig:
    parser = argparse.ArgumentParser(prog="python -m inference_adapter", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file with AdapterConfig keys")
    parser.add_argument("--listen", help="host:port to serve on (default 127.0.0.1:50051)")
    parser.add_argument(
        "--triton-url",
        action="append",
        dest="triton_urls",
        help="Triton gRPC host:port (repeat per replica)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="share --listen with other adapter processes (SO_REUSEPORT)",
    )
    parser.add_argument("--max-streams-per-replica", type=int)
    parser.add_argument("--telemetry", choices=TELEMETRY_MODES)
    parser.add_argument("--otlp-endpoint")
    parser.add_argument("--prometheus-port", type=int)
    parser.add_argument("--drain-grace-seconds", type=float)
    parser.add_argument(
        "--tts-stop-in-flight",
        choices=["drain", "cancel"],
        help="a stopped TTS context's unit in flight: run out and dropped (default), or cancelled"
        " (only with a Triton that has the cancellation fix; see docs/contract.md)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve over TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="PEM CA of client certificates: require one (mTLS)")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = AdapterConfig.from_toml(args.config) if args.config else AdapterConfig()
    return config.with_overrides(
        listen=args.listen,
        triton_urls=tuple(args.triton_urls) if args.triton_urls else None,
        reuse_port=args.reuse_port,
        max_streams_per_replica=args.max_streams_per_replica,
        telemetry=args.telemetry,
        otlp_endpoint=args.otlp_endpoint,
        prometheus_port=args.prometheus_port,
        drain_grace_seconds=args.drain_grace_seconds,
        tts_stop_in_flight=args.tts_stop_in_flight,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )


async def serve(config: AdapterConfig) -> None:
    try:
        # Made here: it starts the Prometheus scrape server, whose port may be taken.
        server = AdapterServer(config)
        await server.start()
    except (RuntimeError, OSError) as exc:
        raise StartError.of(exc) from exc
    settle_after_startup()  # voxwire/gc_policy.py
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await drain_then_stop(server.stop, server.end_drain_now, stop)


def main(argv: list[str] | None = None) -> None:
    """Run the adapter until SIGTERM / SIGINT. A configuration that cannot be used exits with
    status 2, a start that fails (the port is taken, a TLS file is missing) with 1, each with
    one line on stderr and no traceback: an operator fixes the file or the host, there is no
    bug to debug."""
    run_or_exit("adapter", lambda: _run(parse_args(argv)), {ConfigError: ""})


def _run(config: AdapterConfig) -> None:
    try:
        import uvloop  # measured: about 10 % less CPU per message than asyncio's loop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))


if __name__ == "__main__":
    main()
