"""The first connect of a CLI session: bounded in time, and reported as what it is.

The SDK retries a first connect that fails as it retries a reconnect (voxwire.client.link),
and when its budget is spent raises BackendUnavailable worded for a resume ("no gateway took
the session back"). A command that cannot reach any gateway says so instead: the URLs it
tried and the last error, within ``--connect-timeout`` seconds.

Two things keep that bound and the last error together:

- reconnect delays are capped at 1 s (the SDK's default cap, 5 s, lets its 8 retries of a
  refused connection take up to 16 s): refused or unresolvable URLs are given up on by the
  SDK, which then knows the last error, within 5.5 s (0.1 + 0.2 + 0.4 + 0.8 + 4 x 1 s of
  delays; a refused attempt itself takes about a millisecond);
- the whole first connect runs under ``asyncio.timeout``: what the SDK is still waiting for
  when it fires (a host that drops packets, a server that never answers the handshake) is
  reported as no answer.

The cap holds for reconnects later in the session as well (8 retries within 5.5 s); the SDK's
other bounds (10 s per attempt, 30 s in all) are its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from voxwire.cli.common import CliError, urls

if TYPE_CHECKING:
    from voxwire.client import SessionOptions

T = TypeVar("T")

RECONNECT_CAP_S = 1.0
# The detail of the SDK's budget-spent error (voxwire/client/link.py); when it no longer
# matches, the message quotes the SDK's whole text instead.
_SPENT = re.compile(r"\((?P<tries>\d+ attempts? in [\d.]+ s); last: (?P<last>.*)\)$", re.DOTALL)


def session_options() -> SessionOptions:
    from voxwire.client import Backoff, SessionOptions

    return SessionOptions(backoff=Backoff(cap_s=RECONNECT_CAP_S))


async def connect(
    open_session: Callable[[SessionOptions], Awaitable[T]],
    args: argparse.Namespace,
    spent_s: float = 0.0,
) -> T:
    """``open_session(options)`` (the SDK's ``connect``) within ``args.connect_timeout``, of
    which ``spent_s`` went already (asking the gateway's capabilities).

    Raises CliError when no gateway could be reached; the SDK's other errors as they are."""
    from voxwire import errors

    tried = ", ".join(urls(args))
    try:
        async with asyncio.timeout(max(args.connect_timeout - spent_s, 0.0)) as deadline:
            return await open_session(session_options())
    except TimeoutError:
        if not deadline.expired():
            raise
        raise CliError(
            f"no gateway could be reached at {tried}: no answer within "
            f"{args.connect_timeout:g} s (--connect-timeout)"
        ) from None
    except errors.BackendUnavailable as exc:
        spent = _SPENT.search(str(exc))
        if spent is None:
            raise CliError(f"no gateway could be reached at {tried}: {exc}") from None
        raise CliError(
            f"no gateway could be reached at {tried} ({spent['tries']}); "
            f"last error: {spent['last']}"
        ) from None
