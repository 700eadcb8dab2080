"""``voxwire speak``'s audio spool: the audio waits in a temporary file, not in memory."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from voxwire.cli.audio_spool import BATCH_BYTES, AudioSpool
from voxwire.cli.common import CliError

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_spool_gives_back_every_byte_holding_at_most_a_batch():
    spool = AudioSpool(io.BytesIO())
    sent = bytearray()
    held = 0
    for n in range(3000):  # 3000 chunks of 4,410 bytes: about 12.6 MiB, 12 batches
        chunk = bytes([n % 251]) * 4410
        await spool.add(chunk)
        sent += chunk
        held = max(held, spool.held_bytes)
    await spool.finish()
    assert spool.held_bytes == 0 and spool.size == len(sent)
    assert held < BATCH_BYTES  # written once a batch is full, never more kept
    assert b"".join(spool.blocks()) == sent


async def test_reading_an_unfinished_spool_is_refused():
    spool = AudioSpool(io.BytesIO())
    await spool.add(b"\0\0")
    with pytest.raises(RuntimeError):
        list(spool.blocks())


async def test_a_disk_that_is_full_is_one_clear_error():
    full = await asyncio.to_thread(Path("/dev/full").open, "wb", 0)
    spool = AudioSpool(full)
    try:
        with pytest.raises(CliError, match="temporary file for the audio: cannot write: no space"):
            for _ in range(3):
                await spool.add(b"\0" * BATCH_BYTES)
    finally:
        spool.close()
