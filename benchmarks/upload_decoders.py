"""What decoding POST /v1/stt's compressed uploads in child processes costs, against its floors.

Per file (FLAC and MP3 of real speech, ``--seconds`` long), interleaved over ``--rounds``:

    floor      libsndfile alone: ``soundfile.read`` of the whole file from memory
    in-process the decoder's own work in this process: ``BodyPipe`` fed 32 KiB pieces,
               ``decode_blocks`` in a thread (mono PCM16 at a carried rate), as the gateway
               did before its decoders were processes (1,600-frame blocks)
    in-proc 8k the same with the child's 8,000-frame blocks (what the block size alone buys)
    child      the gateway's path now: a ``DecoderPool`` decoder (kept between rounds, as the
               pool keeps it), the body written in 32 KiB pieces; CPU of both processes

CPU is process time (this process) plus the child's utime + stime from /proc (10 ms ticks:
use files of minutes). Prints milliseconds of CPU per minute of audio, median and spread,
and the cost of starting a decoder (its imports) once.

Then, interleaved over the same rounds, how long a short upload (a 3 s FLAC) waits for its
first block of audio: with no decoder idle (the pool starts one for it: the first upload
after the gateway's start, or of a burst, with ``spare_decoders = 0``), with a spare ready
(``spare_decoders = 1``), and the floor, libsndfile decoding that block in this process.

    python -m benchmarks.upload_decoders --seconds 300 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import soundfile

from gateway.http.decoder_pool import DecoderPool
from gateway.http.upload import BodyPipe, decode_blocks

SPEECH = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech"
_PIECE = 32 * 1024
_TICK = os.sysconf("SC_CLK_TCK")


def _speech(seconds: float) -> tuple[np.ndarray, int]:
    pieces = []
    rate = 16000
    for wav in sorted(SPEECH.glob("*.wav")):
        data, rate = soundfile.read(wav, dtype="int16")
        pieces.append(data)
    audio = np.concatenate(pieces)
    return np.resize(audio, int(seconds * rate)), rate


def _encode(pcm: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, pcm, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def _child_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def floor(data: bytes) -> tuple[float, int]:
    start = time.process_time()
    audio, _ = soundfile.read(io.BytesIO(data), dtype="float32")
    return time.process_time() - start, len(audio)


def in_process(data: bytes, block_frames: int = 1600) -> tuple[float, int]:
    start = time.process_time()
    pipe = BodyPipe(len(data))
    frames = [0]

    def decode() -> None:
        for _, pcm in decode_blocks(pipe, block_frames):
            frames[0] += len(pcm) // 2

    worker = threading.Thread(target=decode)
    worker.start()
    for pos in range(0, len(data), _PIECE):
        pipe.put(data[pos : pos + _PIECE])
        while not pipe.room():
            time.sleep(0.0005)
    pipe.end()
    worker.join()
    pipe.close()
    return time.process_time() - start, frames[0]


async def _body(data: bytes) -> AsyncIterator[bytes]:
    for pos in range(0, len(data), _PIECE):
        yield data[pos : pos + _PIECE]


async def child(pool: DecoderPool, data: bytes) -> tuple[float, int]:
    decoder = await pool.acquire()
    pid = decoder.process.pid
    start, start_child = time.process_time(), _child_cpu(pid)
    frames = 0
    blocks = decoder.decode(_body(data), len(data), 24 * 3600.0, 30.0)
    async for _, pcm in blocks:
        frames += len(pcm) // 2
    await blocks.aclose()
    cpu = time.process_time() - start + _child_cpu(pid) - start_child
    await pool.release(decoder)
    return cpu, frames


async def first_block(pool: DecoderPool, data: bytes) -> float:
    """Seconds from the upload's arrival (it asks the pool for a decoder) to its first block
    of audio."""
    started = time.monotonic()
    decoder = await pool.acquire()
    blocks = decoder.decode(_body(data), len(data), 24 * 3600.0, 30.0)
    async for _ in blocks:
        waited = time.monotonic() - started
        break
    await blocks.aclose()
    await pool.release(decoder)
    return waited


def first_block_floor(data: bytes) -> float:
    started = time.monotonic()
    with soundfile.SoundFile(io.BytesIO(data)) as f:
        f.read(8000, dtype="int16")
    return time.monotonic() - started


async def first_blocks(rounds: int) -> None:
    pcm, rate = _speech(3.0)
    data = _encode(pcm, rate, "FLAC", "PCM_16")
    runs: dict[str, list[float]] = {"floor": [], "none idle": [], "spare ready": []}
    for _ in range(rounds):
        runs["floor"].append(first_block_floor(data))
        cold = DecoderPool(1)
        runs["none idle"].append(await first_block(cold, data))
        await cold.close()
        warm = DecoderPool(1, spare=1)
        warm.start()
        await warm.settle()
        runs["spare ready"].append(await first_block(warm, data))
        await warm.close()
    print(f"a 3 s FLAC upload's first block of audio, {rounds} rounds (ms):")
    for kind, values in runs.items():
        print(
            f"  {kind:11} median {statistics.median(values) * 1e3:7.1f}"
            f"  range {min(values) * 1e3:7.1f}-{max(values) * 1e3:7.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pcm, rate = _speech(args.seconds)
    files = {
        "FLAC": _encode(pcm, rate, "FLAC", "PCM_16"),
        "MP3": _encode(pcm, rate, "MP3", "MPEG_LAYER_III"),
    }
    pool = DecoderPool(1)
    started = time.monotonic()
    warm = await pool.acquire()
    spawn_wall = time.monotonic() - started
    spawn_cpu = _child_cpu(warm.process.pid)
    await pool.release(warm)
    print(
        f"decoder start: {spawn_wall * 1e3:.0f} ms wall, {spawn_cpu * 1e3:.0f} ms CPU "
        f"(its imports; once per decoder)"
    )
    minutes = args.seconds / 60
    for name, data in files.items():
        runs: dict[str, list[float]] = {
            "floor": [],
            "in-process": [],
            "in-proc 8k": [],
            "child": [],
        }
        counts: dict[str, set[int]] = {k: set() for k in runs}
        for _ in range(args.rounds):  # interleaved: ABC ABC ...
            for kind in runs:
                if kind == "floor":
                    cpu, n = floor(data)
                elif kind == "in-process":
                    cpu, n = in_process(data)
                elif kind == "in-proc 8k":
                    cpu, n = in_process(data, 8000)
                else:
                    cpu, n = await child(pool, data)
                runs[kind].append(cpu * 1e3 / minutes)
                counts[kind].add(n)
        base = statistics.median(runs["floor"])
        print(
            f"{name}, {len(data) / 2**20:.1f} MiB, {args.seconds:.0f} s of audio, "
            f"{args.rounds} rounds (ms of CPU per minute of audio):"
        )
        for kind, values in runs.items():
            med = statistics.median(values)
            print(
                f"  {kind:11} median {med:7.1f}  range {min(values):7.1f}-{max(values):7.1f}"
                f"  x{med / base:4.2f} of the floor  frames {sorted(counts[kind])}"
            )
    await pool.close()
    await first_blocks(args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
