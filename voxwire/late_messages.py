"""Messages for a TTS context after its close, answered once it has ended.

A context that was closed speaks the rest of its text and ends with ``done`` (docs/contract.md,
"Synthesis"). A text, flush or second close sent for it after the close does not end it early:
it is counted while the context closes, and answered after the context's last message, as for
a context that is no longer open (``CONTEXT_NOT_OPEN`` for text, ``UNKNOWN_CONTEXT`` for a flush
or a close), one error per kind with the count, so what is held stays bounded whatever the
client sends. Before, the adapter failed the closing context (``INVALID_MESSAGE``) and its audio
was dropped, or not, by timing; the gateway did the same. Shared by both.
"""

from __future__ import annotations

from collections.abc import Mapping

from voxwire import errors

LATE_KINDS = ("append", "flush", "close")


def counted(late: dict[str, int] | None, kind: str) -> dict[str, int]:
    """``late`` (None: none yet) with one more ``kind``."""
    late = late or {}
    late[kind] = late.get(kind, 0) + 1
    return late


def late_errors(context_id: str, late: Mapping[str, int]) -> list[errors.VoxwireError]:
    """The errors that answer the messages counted in ``late`` (kind -> count), in kind order."""
    out: list[errors.VoxwireError] = []
    for kind in LATE_KINDS:
        if n := late.get(kind, 0):
            what = f"{n} {kind} message{'s' if n > 1 else ''} after its close"
            kind_error = errors.ContextNotOpen if kind == "append" else errors.UnknownContext
            out.append(kind_error(f"context {context_id[:64]!r} has ended: {what}"))
    return out
