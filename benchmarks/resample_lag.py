"""What ``voxwire.audio.resample``'s two latencies hold back and cost, against a floor.

    python -m benchmarks.resample_lag [--rounds 9] [--seconds 10] [--chunk-ms 20]

For each rate pair a stream takes (a phone's 8 kHz into a 16 kHz model and a 16 kHz model out to
a phone, a browser's 48 kHz in, eSpeak's 22,050 Hz out to a phone, 16 kHz out at 24 kHz), both
latencies are fed the same noise in chunks of ``--chunk-ms``, interleaved round by round:

    lag     output held back after each chunk (the input's duration so far minus the output's),
            in ms: the mean and the largest over the stream, the last round's (deterministic)
    CPU     process CPU per millisecond of audio, median and range over the rounds
    floor   the same chunks through ``np.ascontiguousarray`` and a float32 copy: what any
            resampler pays to be called at all
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from voxwire.audio.resample import StreamResampler

PAIRS = [(8000, 16000), (16000, 8000), (48000, 16000), (22050, 8000), (16000, 24000)]


def run(
    mode: str, in_rate: int, out_rate: int, x: np.ndarray, chunk_ms: int
) -> tuple[float, float, float]:
    """(CPU us per ms of audio, mean lag ms, max lag ms)."""
    n = in_rate * chunk_ms // 1000
    lags: list[float] = []
    if mode == "floor":
        t = time.process_time()
        for start in range(0, x.size, n):
            np.ascontiguousarray(x[start : start + n]).copy()
        cpu = time.process_time() - t
        return cpu / (x.size / in_rate * 1000) * 1e6, 0.0, 0.0
    resampler = StreamResampler(in_rate, out_rate, latency=mode)  # type: ignore[arg-type]
    t = time.process_time()
    for start in range(0, x.size, n):
        resampler.process(x[start : start + n])
        lags.append(resampler.pending_out_frames)
    resampler.flush()
    cpu = time.process_time() - t
    ms = [lag * 1000 / out_rate for lag in lags]
    return cpu / (x.size / in_rate * 1000) * 1e6, statistics.fmean(ms), max(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    modes = ("floor", "low", "bulk")
    cpu: dict[tuple[int, int, str], list[float]] = {}
    lag: dict[tuple[int, int, str], tuple[float, float]] = {}
    for _ in range(args.rounds):
        for in_rate, out_rate in PAIRS:
            x = rng.uniform(-0.5, 0.5, int(in_rate * args.seconds)).astype(np.float32)
            for mode in modes:
                us, mean, worst = run(mode, in_rate, out_rate, x, args.chunk_ms)
                cpu.setdefault((in_rate, out_rate, mode), []).append(us)
                lag[(in_rate, out_rate, mode)] = (mean, worst)
    print(
        "| rates | latency | lag mean / max (ms) | CPU per ms of audio, median (range), "
        f"{args.rounds} rounds |"
    )
    print("|---|---|---:|---:|")
    for in_rate, out_rate in PAIRS:
        for mode in modes:
            v = cpu[(in_rate, out_rate, mode)]
            mean, worst = lag[(in_rate, out_rate, mode)]
            print(
                f"| {in_rate} -> {out_rate} | {mode} | {mean:.1f} / {worst:.1f} | "
                f"{statistics.median(v):.2f} µs ({min(v):.2f}-{max(v):.2f}) |"
            )


if __name__ == "__main__":
    main()
