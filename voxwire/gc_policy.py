"""The garbage collector's policy for a long-running voxwire server process (gateway, adapter).

What start-up made (modules, protobuf descriptors, config) lives as long as the process:
``gc.freeze()`` moves it out of the collector's generations, so the full collections that
streams' garbage triggers do not traverse it again each time. And the young generation is
collected every 10,000 allocations instead of 700: most of a stream's garbage dies by reference
count before a collection sees it, and a young generation padded with streams' long-lived
objects (replay windows, tasks) cost ~2 % of the CPU at 100 streams in collections
(BENCHMARKS.md, "Gateway hot path"; the adapter's py-spy profile of 2026-12-01 put 15 us per
message in ``gc_collect_main``). Cyclic garbage still goes, a little later.
"""

from __future__ import annotations

import gc


def settle_after_startup() -> None:
    """Call once the server is up, before it takes traffic."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
