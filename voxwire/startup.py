"""How a voxwire server process (the gateway, the adapter) ends when it cannot run.

Status 2 for a configuration that cannot be used (argparse's own status for a bad command
line), 1 for a start that failed (a port taken, a TLS file missing, no adapter serving), each
with one line on stderr and no traceback: an operator fixes the file or the host, there is no
bug to debug.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping

import grpc

CONFIG_ERROR = 2
START_ERROR = 1


class StartError(Exception):
    """The process could not start; the message says why, on one line."""

    @classmethod
    def of(cls, exc: BaseException) -> StartError:
        """From what the start raised (an OSError names its file, if it has one)."""
        if isinstance(exc, OSError) and exc.filename:
            return cls(f"{exc.filename}: {exc.strerror or exc}")
        text = str(exc)
        return cls(text.splitlines()[0] if text else type(exc).__name__)


def run_or_exit(
    who: str, body: Callable[[], None], config_errors: Mapping[type[Exception], str]
) -> None:
    """Run ``body`` (parse the configuration, serve until a signal); a configuration error
    (``config_errors``: each type with the prefix its line gets) or a StartError exits with its
    status and one line on stderr."""
    try:
        body()
    except StartError as exc:
        print(f"the {who} cannot start: {exc}", file=sys.stderr)
        sys.exit(START_ERROR)
    except tuple(config_errors) as exc:
        prefix = next(p for kind, p in config_errors.items() if isinstance(exc, kind))
        print(f"{prefix}{exc}", file=sys.stderr)
        sys.exit(CONFIG_ERROR)


def add_grpc_port(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    *,
    owner: str = "",
    key: str = "",
) -> int:
    """Bind ``server`` to ``address`` (TLS with ``credentials``); returns the port. Raises
    RuntimeError saying what is wrong, naming ``owner`` (who binds: "the gRPC front") and the
    config ``key`` when given: gRPC's own error only says to turn on its debug log."""
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        who = f"{owner} " if owner else ""
        which = f" ({key})" if key else ""
        tls = (
            ", or the TLS certificate and key are not a PEM pair that match"
            if credentials is not None
            else ""
        )
        # gRPC's failure is the same for each, and says nothing (a key that does not match its
        # certificate read as a port problem): the possible causes, the TLS one included.
        raise RuntimeError(
            f"{who}cannot listen on {address}{which}: the port is taken (reuse_port shares one "
            f"on purpose) or the host is not an address of this machine{tls}"
        )
    return port


# --log-level's choices (logging's levels): an unknown one was a traceback.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server's TLS context from a PEM certificate chain and its private key (``key`` "":
    in ``cert``). Raises OSError naming the files: a missing one (ssl's own error names none),
    or a pair that is not PEM or does not match (ssl says "[SSL] PEM lib", and gRPC's bind
    fails for it as for a port taken, saying neither)."""
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if path and not os.access(path, os.R_OK):
            raise OSError(f"{name} {path}: no such file, or not readable")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        key_name = key or "none given: the key must then be in tls_cert"
        raise OSError(
            f"tls_cert {cert} / tls_key {key_name}: not a PEM certificate chain and its private "
            f"key ({exc.reason or exc})"
        ) from None
    return context


async def drain_then_stop(
    stop: Callable[[], Awaitable[None]], end_drain_now: Callable[[], None], signalled: asyncio.Event
) -> None:
    """A server's stop after its first SIGTERM / SIGINT (``signalled`` set by both): drain and
    stop; a second signal meanwhile (an operator's second Ctrl-C) ends the drain's grace now.
    The gateway and the adapter said nothing of a second signal and waited out the grace."""
    signalled.clear()
    stopping = asyncio.ensure_future(stop())
    again = asyncio.ensure_future(signalled.wait())
    try:
        await asyncio.wait({stopping, again}, return_when=asyncio.FIRST_COMPLETED)
        if again.done() and not stopping.done():
            end_drain_now()
        await stopping
    finally:
        again.cancel()
