"""Running the ``voxwire`` console script as a subprocess, with stdin a pipe, a file or
/dev/null (the three cases its stdin reader must handle)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VOXWIRE = str(Path(sys.executable).with_name("voxwire"))


@dataclass(frozen=True)
class Outcome:
    status: int
    out: str
    err: str
    seconds: float
    stdout: bytes = b""  # as written (``out`` is it decoded, for text)


async def run_voxwire(
    *args: str,
    key: str | None,
    stdin: bytes | Path | None = None,
    timeout_s: float = 60.0,
    command: tuple[str, ...] = (VOXWIRE,),
) -> Outcome:
    """Run the console script. ``stdin``: bytes through a pipe, a Path opened as the process's
    stdin (a regular file, or /dev/null), None for /dev/null. A run that outlives
    ``timeout_s`` is killed and fails the test (TimeoutError): the script must never hang.
    ``command``: what runs the script (the console script itself by default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VOXWIRE_API_KEY", "VOXWIRE_URL")}
    if key is not None:
        env["VOXWIRE_API_KEY"] = key
    handle = await asyncio.to_thread(open, stdin, "rb") if isinstance(stdin, Path) else None
    try:
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *command,
            *args,
            stdin=handle
            if handle is not None
            else asyncio.subprocess.PIPE
            if stdin is not None
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    finally:
        if handle is not None:
            handle.close()  # the child has its own descriptor
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate(stdin if isinstance(stdin, bytes) else None)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Outcome(
        process.returncode,
        out.decode(errors="replace"),
        err.decode(),
        time.monotonic() - began,
        out,
    )


async def voxwire(
    *args: str, key: str | None, stdin: bytes | None = None, timeout_s: float = 60.0
) -> tuple[int, str, str]:
    """Run the console script; (status, stdout, stderr)."""
    outcome = await run_voxwire(*args, key=key, stdin=stdin, timeout_s=timeout_s)
    return outcome.status, outcome.out, outcome.err
