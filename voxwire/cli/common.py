"""What the client subcommands share: where the gateway is, the key, errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

ENV_KEY = "VOXWIRE_API_KEY"
ENV_URL = "VOXWIRE_URL"
DEFAULT_URL = "ws://127.0.0.1:8080"


def add_connection_arguments(parser: Any) -> None:
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="URL",
        help=f"gateway ws(s)://host:port; repeat for several (the session moves to the next on "
        f"a reconnect). Default: ${ENV_URL}, else {DEFAULT_URL}",
    )
    parser.add_argument("--key", help=f"API key (default: ${ENV_KEY})")


def urls(args: argparse.Namespace) -> list[str]:
    return list(args.urls or [os.environ.get(ENV_URL) or DEFAULT_URL])


def api_key(args: argparse.Namespace, command: str) -> str | None:
    """The key from --key or the environment; None (after saying so) when there is none."""
    key = args.key or os.environ.get(ENV_KEY)
    if not key:
        print(
            f"voxwire {command}: error: no API key: pass --key or set ${ENV_KEY}", file=sys.stderr
        )
    return key


def fail(command: str, exc: BaseException) -> int:
    """Report an error on stderr; exit status 1. A voxwire error shows its stable reason."""
    reason = getattr(exc, "reason", "") or type(exc).__name__
    print(f"voxwire {command}: error: {reason}: {exc}", file=sys.stderr)
    return 1
