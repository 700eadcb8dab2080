"""The ``voxwire`` console script.

Subcommands live in modules named in ``SUBCOMMANDS``; each module has ``add_parser(subparsers)``
which adds its parser and sets ``run`` (a function of the parsed arguments returning the exit
status). A subcommand imports what it needs (the gateway, the SDK) inside ``run``, so that
``voxwire --help`` and every other subcommand stay light, and the ``voxwire`` package never
imports ``gateway`` at import time.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
from collections.abc import Sequence

SUBCOMMANDS: tuple[str, ...] = (
    "voxwire.cli.transcribe",
    "voxwire.cli.speak",
    "voxwire.cli.keys",
    "voxwire.cli.gateway_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxwire", description="voxwire: real-time speech APIs on Triton."
    )
    parser.add_argument("--version", action="version", version=f"voxwire {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _version() -> str:
    """The installed distribution's version (pyproject.toml's), or "unknown" outside one."""
    try:
        return importlib.metadata.version("voxwire")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status
