"""Run the gateway: ``python -m gateway --config gateway.toml`` (or ``voxwire gateway``).

SIGTERM / SIGINT start a drain: /readyz fails, new sessions are refused, open sessions get
going_away with their resume token and the grace period, then the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from gateway.auth.keys_file import KeysFileError
from gateway.config import ConfigError, GatewayConfig
from gateway.server import GatewayServer
from voxwire.gc_policy import settle_after_startup
from voxwire.startup import LOG_LEVELS, StartError, drain_then_stop, run_or_exit


def parse_args(argv: list[str] | None = None, prog: str = "python -m gateway") -> GatewayConfig:
    """The configuration from the command line and its --config file. ``prog`` is the command
    as the user typed it, for usage and --help (``voxwire gateway`` passes its own).

    Raises:
        ConfigError: the file cannot be used, a value is invalid, or [auth] is missing.
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file with GatewayConfig keys")
    parser.add_argument("--listen", help="host:port for WebSocket/HTTP (default 127.0.0.1:8080)")
    parser.add_argument(
        "--adapter", action="append", dest="adapters", help="adapter host:port (repeat)"
    )
    parser.add_argument(
        "--grpc-listen", help="host:port of the gRPC front (default 127.0.0.1:8081; '' disables)"
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="share the ports with other gateway processes (SO_REUSEPORT)",
    )
    parser.add_argument("--drain-grace-seconds", type=float)
    parser.add_argument("--tls-cert", help="PEM certificate chain for the edge (HTTP, WS, gRPC)")
    parser.add_argument("--tls-key", help="PEM private key for the edge")
    parser.add_argument("--adapter-ca", help="PEM CA that signed the adapters' certificates (TLS)")
    parser.add_argument("--adapter-cert", help="PEM client certificate for the adapters (mTLS)")
    parser.add_argument("--adapter-key", help="PEM private key of --adapter-cert")
    parser.add_argument("--telemetry", choices=["none", "console", "otlp"], help="tracing")
    parser.add_argument("--otlp-endpoint")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.config is None:
        raise ConfigError(
            "no --config: the gateway needs a TOML file with an [auth] table (keys_file, "
            "token_signing_keys, token_current_kid; see gateway/auth/config.py)"
        )
    config = GatewayConfig.from_toml(args.config)
    if config.auth is None:
        raise ConfigError(
            f"{args.config}: [auth]: missing (keys_file, token_signing_keys, token_current_kid; "
            "see gateway/auth/config.py)"
        )
    return config.with_overrides(
        listen=args.listen,
        adapters=tuple(args.adapters) if args.adapters else None,
        grpc_listen=args.grpc_listen,
        reuse_port=args.reuse_port,
        drain_grace_seconds=args.drain_grace_seconds,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        adapter_ca=args.adapter_ca,
        adapter_cert=args.adapter_cert,
        adapter_key=args.adapter_key,
        telemetry=args.telemetry,
        otlp_endpoint=args.otlp_endpoint,
    )


async def serve(config: GatewayConfig) -> None:
    try:
        server = GatewayServer(config)  # reads the adapters' TLS files
        await server.start()
    except (RuntimeError, OSError) as exc:
        raise StartError.of(exc) from exc
    settle_after_startup()  # voxwire/gc_policy.py
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    grpc_front = f" (gRPC {server.grpc_address})" if server.grpc_address else ""
    # Where an operator finds it too, when it is on a listener of its own.
    metrics = f", metrics {server.metrics_url}" if server.config.metrics_listen else ""
    print(f"gateway ready on {server.url}{grpc_front}{metrics}", flush=True)
    try:
        await stop.wait()
    finally:
        await drain_then_stop(server.stop, server.end_drain_now, stop)


def main(argv: list[str] | None = None, prog: str = "python -m gateway") -> None:
    """Run the gateway until SIGTERM / SIGINT. A configuration that cannot be used (the file,
    a value, the keys file it names) exits with status 2, a start that fails (no adapter
    serving within startup_wait_seconds, a port taken, a TLS file missing) with 1, each with
    one line on stderr and no traceback: an operator fixes the file or the host, there is no
    bug to debug."""
    # The keys file is loaded at start: missing, unreadable or invalid, it is the config's fault.
    errors = {ConfigError: "", KeysFileError: "[auth] keys_file: "}
    run_or_exit("gateway", lambda: _run(parse_args(argv, prog)), errors)


def _run(config: GatewayConfig) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))


if __name__ == "__main__":
    main()
