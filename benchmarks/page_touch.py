"""What a page fault costs on this machine: the CPU of touching anonymous memory page by page.

A server that keeps audio (the replay windows, voxwire/replay.py) takes memory it has not
touched before at the rate audio arrives: about one 4 KiB page per 100 ms message of 16 kHz
PCM16 (BENCHMARKS.md, "Page faults of the replay windows"). This measures what each such
first touch costs, with and without ``MADV_HUGEPAGE``, in rounds of ``--mib`` each. The first
rounds of a fresh process on a fresh virtual machine touch memory the guest never used (the host
backs it lazily, so each fault is also the host's); later rounds reuse pages the guest kernel
got back from earlier rounds.

    python -m benchmarks.page_touch [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import mmap
import time

PAGE = 4096


def touch_us_per_page(size: int, huge: bool) -> float:
    """CPU µs per 4 KiB page to fault in ``size`` bytes of fresh anonymous memory."""
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if huge:
            region.madvise(mmap.MADV_HUGEPAGE)
        start = time.process_time()
        for offset in range(0, size, PAGE):
            region[offset] = 1
        return (time.process_time() - start) * 1e6 / (size // PAGE)
    finally:
        region.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * 2**20
    for n in range(1, args.rounds + 1):
        for huge in (False, True):
            us = touch_us_per_page(size, huge)
            kind = "MADV_HUGEPAGE" if huge else "4 KiB pages  "
            print(f"round {n}, {kind}: {us:.2f} µs CPU per 4 KiB touched ({args.mib} MiB)")


if __name__ == "__main__":
    main()
