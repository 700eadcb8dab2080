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


def _drain(fd: int, into: bytearray, stop_after: int | None = None) -> None:
    with open(fd, "rb", buffering=0) as pipe:
        while block := pipe.read(65536):
            into += block
            if stop_after is not None and len(into) >= stop_after:
                return  # the reader goes away (its end closes)


async def test_stream_to_passes_the_audio_on_as_it_comes():
    import os
    import threading

    spool = AudioSpool()
    read_end, write_end = os.pipe()
    got = bytearray()
    reader = threading.Thread(target=_drain, args=(read_end, got))
    reader.start()
    out = open(write_end, "wb")  # noqa: SIM115, ASYNC230 - the pipe's end, closed below
    writer = threading.Thread(target=spool.stream_to, args=(out,))
    writer.start()
    sent = bytearray()
    await spool.add(b"first")
    sent += b"first"
    # The reader waits: the first chunk goes out at once, not after a batch fills.
    for _ in range(200):
        if bytes(got) == b"first":
            break
        await asyncio.sleep(0.01)
    assert bytes(got) == b"first"
    for n in range(2000):
        chunk = bytes([n % 251]) * 4410
        await spool.add(chunk)
        sent += chunk
    await spool.finish()
    await asyncio.to_thread(writer.join, 10)
    out.close()
    await asyncio.to_thread(reader.join, 10)
    assert not writer.is_alive() and bytes(got) == bytes(sent)
    spool.close()


async def test_a_reader_that_goes_away_ends_the_synthesis_with_one_error():
    import os
    import threading

    spool = AudioSpool()
    read_end, write_end = os.pipe()
    reader = threading.Thread(target=_drain, args=(read_end, bytearray(), 1000))
    reader.start()
    out = open(write_end, "wb")  # noqa: SIM115, ASYNC230 - the pipe's end
    writer = threading.Thread(target=spool.stream_to, args=(out, "stdout"))
    writer.start()
    with pytest.raises(CliError, match="stdout: cannot write: broken pipe"):
        for _ in range(1000):
            await spool.add(b"\0" * 4410)
            await asyncio.sleep(0.001)
    await asyncio.to_thread(writer.join, 10)
    assert not writer.is_alive()
    spool.close()


async def test_abort_ends_stream_to_at_once():
    import threading

    spool = AudioSpool()
    writer = threading.Thread(target=spool.stream_to, args=(io.BytesIO(),))
    writer.start()
    spool.abort()
    await asyncio.to_thread(writer.join, 5)
    assert not writer.is_alive()
    spool.close()
