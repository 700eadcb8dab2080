"""What permessage-deflate (RFC 7692) would cost the gateway on speech: CPU, ratio, memory.

The gateway declines the extension unless ``websocket_compression`` is on (gateway/config.py).
This measures why, with the same zlib settings aiohttp uses for it (raw deflate, 15 window
bits, the default level, a sync flush after every message and the context kept between
messages): every 16 kHz speech fixture cut into 20 and 100 ms PCM16 frames, deflated and
inflated frame by frame, CPU time per frame (``time.process_time``, all frames of all
fixtures, ``--repeats`` passes); and the resident memory of ``--connections`` compressors and
decompressors that each carried one conversation's first seconds (RSS from /proc before and
after, per connection), which is what one compressing WebSocket holds for its lifetime.

    python -m benchmarks.ws_compression [--repeats 20] [--connections 500]
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np

from tests.helpers.wavio import read_wav

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech"
WBITS = -15  # raw deflate, the largest window: what aiohttp negotiates by default


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _frames(ms: int) -> list[bytes]:
    frames: list[bytes] = []
    for path in sorted(FIXTURES.glob("*.wav")):
        pcm, rate = read_wav(path)
        audio = pcm.astype(np.int16).tobytes()
        step = rate * ms // 1000 * 2
        frames += [audio[i : i + step] for i in range(0, len(audio) - step + 1, step)]
    return frames


def cpu_and_ratio(frames: list[bytes], repeats: int) -> dict[str, float]:
    deflated = 0
    t0 = time.process_time()
    for _ in range(repeats):
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, WBITS)
        for frame in frames:
            deflated += len(compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH))
    deflate_s = time.process_time() - t0
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, WBITS)
    packed = [compressor.compress(f) + compressor.flush(zlib.Z_SYNC_FLUSH) for f in frames]
    t0 = time.process_time()
    for _ in range(repeats):
        decompressor = zlib.decompressobj(WBITS)
        for frame in packed:
            decompressor.decompress(frame)
    inflate_s = time.process_time() - t0
    n = len(frames) * repeats
    return {
        "frames": n,
        "deflate_us": deflate_s / n * 1e6,
        "inflate_us": inflate_s / n * 1e6,
        "size_ratio": deflated / (sum(map(len, frames)) * repeats),
    }


def memory_per_connection(frames: list[bytes], connections: int) -> dict[str, float]:
    """Both directions of a connection: the gateway inflates what the client sent and
    deflates what it sends."""
    first_seconds = frames[:30]
    before = _rss_kib()
    held = []
    for _ in range(connections):
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, WBITS)
        decompressor = zlib.decompressobj(WBITS)
        for frame in first_seconds:
            decompressor.decompress(
                compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
            )
        held.append((compressor, decompressor))
    per = (_rss_kib() - before) / connections
    del held
    return {"connections": connections, "rss_kib_per_connection": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--connections", type=int, default=500)
    args = parser.parse_args()
    for ms in (20, 100):
        figures = cpu_and_ratio(_frames(ms), args.repeats)
        print(
            f"{ms} ms frames ({figures['frames']:.0f}): deflate {figures['deflate_us']:.1f} us, "
            f"inflate {figures['inflate_us']:.1f} us per frame, "
            f"deflated size {figures['size_ratio']:.3f} of the PCM"
        )
    memory = memory_per_connection(_frames(100), args.connections)
    print(
        f"{memory['connections']} connections: {memory['rss_kib_per_connection']:.0f} KiB "
        "RSS each (a compressor and a decompressor after 3 s of speech)"
    )


if __name__ == "__main__":
    main()
