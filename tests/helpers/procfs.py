"""What tests read of other processes in /proc (proc(5)), Linux only."""

from __future__ import annotations

import contextlib
from pathlib import Path


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): the state
    letter first, then ppid, pgrp, ... None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie (a reaped process has no /proc entry)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> set[int]:
    """The child processes of ``pid``, over all its threads."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            found.update(int(c) for c in (task / "children").read_text().split())
    return found
