"""What the client subcommands share: where the gateway is, the key, errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

ENV_KEY = "VOXWIRE_API_KEY"
ENV_URL = "VOXWIRE_URL"
DEFAULT_URL = "ws://127.0.0.1:8080"
CONNECT_TIMEOUT_S = 10.0


def os_reason(exc: OSError) -> str:
    """An OS error's reason as the CLI's messages say it: "no space left on device"."""
    return (exc.strerror or str(exc)).lower()


class CliError(Exception):
    """A failure the command explains in its own words (a path, a flag): printed as it is, with
    no class name, and exit status ``status`` (2: the command line is wrong, as argparse)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_connection_arguments(parser: Any) -> None:
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        type=_gateway_url,
        metavar="URL",
        help=f"gateway ws(s)://host:port; repeat for several (the session moves to the next on "
        f"a reconnect). Default: ${ENV_URL}, else {DEFAULT_URL}",
    )
    parser.add_argument("--key", help=f"API key (default: ${ENV_KEY})")
    parser.add_argument(
        "--connect-timeout",
        type=_positive_seconds,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help="give up when no gateway has taken the session after S seconds (default "
        f"{CONNECT_TIMEOUT_S:g}); a refused connection is retried, all URLs in turn, for "
        "6 s at most",
    )


def urls(args: argparse.Namespace) -> list[str]:
    return list(args.urls or [os.environ.get(ENV_URL) or DEFAULT_URL])


def closed_stream(command: str, stdin: bool = False, stdout: bool = False) -> int | None:
    """2, after saying so, when a stream the command needs was closed when it started (``<&-``,
    ``>&-``: Python sets it to None, and ``print`` to None writes nothing: a transcript was
    lost with status 0, and ``speak`` ended in a traceback); else None."""
    for needed, stream, name, what in (
        (stdin, sys.stdin, "stdin", "nothing to read"),
        (stdout, sys.stdout, "stdout", "nowhere to write"),
    ):
        if needed and stream is None:
            print(f"voxwire {command}: error: {name} is closed: {what}", file=sys.stderr)
            return 2
    return None


def api_key(args: argparse.Namespace, command: str) -> str | None:
    """The key from --key or the environment; None (after saying so) when there is none. An
    empty one is none: ``export VOXWIRE_API_KEY=$(cat out/dev.key)`` from another directory
    sets it empty, and it went on to the gateway, a second error line and status 1."""
    key = (args.key or os.environ.get(ENV_KEY) or "").strip()
    if not key:
        print(
            f"voxwire {command}: error: no API key: pass --key or set ${ENV_KEY}", file=sys.stderr
        )
        return None
    return key


# The flags that set the contract's config fields, by command.
_FLAGS = {
    "transcribe": {
        "config.model": "--model",
        "config.language": "--language",
        "config.audio_format.encoding": "--encoding",
        "config.audio_format.sample_rate_hz": "--rate",
        "config.audio_format.channels": "--channels",
    },
    "speak": {
        "open.model": "--model",
        "open.voice": "--voice",
        "open.output_format.sample_rate_hz": "--rate",
    },
}


def fail(command: str, exc: BaseException) -> int:
    """Report an error on stderr; return the exit status (1, or a CliError's own). A voxwire
    error shows its stable reason; any other exception its class name."""
    if isinstance(exc, BrokenPipeError):
        # Whoever read our output has gone (``voxwire transcribe --json | head``): not an
        # error to report. stdout goes to /dev/null so the interpreter's own flush at exit
        # does not fail again (Python docs, signal module, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    if isinstance(exc, CliError):
        print(f"voxwire {command}: error: {exc}", file=sys.stderr)
        return exc.status
    from voxwire.errors import VoxwireError, renamed_fields  # light --help: imported here

    if isinstance(exc, VoxwireError):
        # The contract names a config's fields from its own messages (open.voice); the user
        # set them as flags (--voice).
        exc = renamed_fields(exc, _FLAGS.get(command, {}).get)
    reason = getattr(exc, "reason", "") or type(exc).__name__
    text = str(exc)
    # The fields a server named but its message does not ("rates [16000] only", from a
    # server that does not resample, said nothing of --rate).
    named = [
        f"{v.field}: {v.description}"
        for v in getattr(exc, "violations", ())
        if v.field and v.field not in text
    ]
    if named:
        text += f" ({'; '.join(named)})"
    print(f"voxwire {command}: error: {reason}: {text}", file=sys.stderr)
    return 1


def _gateway_url(text: str) -> str:
    """A command line's gateway URL: ws(s)://, or status 2 with argparse's usage line (an
    http:// URL was "error: ValueError: ..." and status 1, as if the gateway had failed)."""
    from voxwire.client.connection import Endpoints

    try:
        Endpoints(text, "")  # the SDK's own check of a gateway URL
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (ws://127.0.0.1:8080)") from None
    return text


def positive_hz(text: str) -> int:
    """A sample rate on the command line: a positive whole number (0 or -8000 was sent to the
    gateway and refused there, status 1, as if the gateway had failed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of Hz: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value
