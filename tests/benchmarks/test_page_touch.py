"""benchmarks/page_touch.py measures something: the CPU of faulting memory in is counted."""

from __future__ import annotations

import math

from benchmarks.page_touch import touch_us_per_page


def test_touching_fresh_memory_costs_measurable_cpu():
    for huge in (False, True):
        us = touch_us_per_page(16 * 2**20, huge)
        # A fault is at least a trap into the kernel; a few ms per page would be a broken
        # measurement (wall time, or a process stopped), not a fault.
        assert math.isfinite(us) and 0.01 < us < 5000, us
