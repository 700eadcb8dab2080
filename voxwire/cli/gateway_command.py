"""``voxwire gateway ...``: run the gateway process (the same as ``python -m gateway``).

Every argument after ``gateway`` is the gateway's own (``voxwire gateway --help`` shows them).
The gateway is imported only here, when the subcommand runs: the ``voxwire`` package never
imports ``gateway`` at import time.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the gateway (WebSocket/HTTP edge); voxwire gateway --help lists its options",
        add_help=False,
        prefix_chars="\0",  # pass every argument, --help included, to the gateway's parser
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from gateway.__main__ import main

    main(list(args.arguments), prog="voxwire gateway")
    return 0
