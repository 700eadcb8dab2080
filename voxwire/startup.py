"""How a voxwire server process (the gateway, the adapter) ends when it cannot run.

Status 2 for a configuration that cannot be used (argparse's own status for a bad command
line), 1 for a start that failed (a port taken, a TLS file missing, no adapter serving), each
with one line on stderr and no traceback: an operator fixes the file or the host, there is no
bug to debug.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

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
