"""Starting a candidate's server process from the load client (or a test)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from benchmarks.stack import server_process


@contextlib.asynccontextmanager
async def stack_server(
    stack: str, upstream: str, heartbeat: float, logdir: Path
) -> AsyncIterator[tuple[int, int]]:
    """A stack's server process; yields (port, pid)."""
    args = ["benchmarks.edge_stack.server", stack, upstream, "--heartbeat", str(heartbeat)]
    async with server_process(args, logdir / f"{stack}.log", True) as (proc, port):
        await wait_ready(int(port))
        yield int(port), proc.pid


async def wait_ready(port: int) -> None:
    """Until GET /stats answers. Raises TimeoutError after 30 s."""
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/stats") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
