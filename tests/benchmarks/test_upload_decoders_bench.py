"""benchmarks/upload_decoders.py on a few seconds of speech: its three paths decode the same
frames (the figures in BENCHMARKS.md compare like with like)."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.upload_decoders import _encode, _speech, child, first_block, floor, in_process
from gateway.http.decoder_pool import DecoderPool

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
async def test_the_three_paths_decode_the_same_audio(fmt: str, subtype: str) -> None:
    pcm, rate = _speech(6.0)
    data = _encode(pcm, rate, fmt, subtype)
    pool = DecoderPool(1)
    try:
        counts = {floor(data)[1], in_process(data)[1], (await child(pool, data))[1]}
    finally:
        await pool.close()
    assert counts == {len(pcm)}, counts


async def test_a_spare_decoder_is_the_one_the_upload_gets() -> None:
    pcm, rate = _speech(3.0)
    data = _encode(pcm, rate, "FLAC", "PCM_16")
    pool = DecoderPool(1, spare=1)
    try:
        pool.start()
        await asyncio.wait_for(pool.settle(), 20)
        assert (pool.idle, pool.spawned) == (1, 1)
        assert await first_block(pool, data) > 0
        assert (pool.idle, pool.spawned) == (1, 1)  # no second process: size 1
    finally:
        await pool.close()
