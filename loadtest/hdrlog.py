"""HDR histograms and their interval logs (the HdrHistogram log format, version 1.2).

Every worker writes one log: a header, then for each interval and metric one line
``Tag=<metric>,<start>,<length>,<max>,<compressed histogram>``, timestamps in seconds relative
to the run's start epoch (the ``#[BaseTime: ...]`` line). ``hdrh``'s ``HistogramLogWriter``
formats the lines and ``HistogramLogReader`` reads them back, tags included; the writer has no
tag parameter, so each line is formatted into a buffer and prefixed here, exactly as the Java
writer does for tagged histograms. Values are integers in microseconds.
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader, HistogramLogWriter

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3  # values are exact to 0.1 %


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def to_us(seconds: float) -> int:
    """A duration as histogram value: whole microseconds, clamped to the trackable range."""
    return min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6)))


class IntervalLogWriter:
    """Tagged interval histograms of one process, formatted into a buffer; ``take`` returns
    what was written since the last take (so the caller writes files off the event loop)."""

    def __init__(self, base_epoch_s: float, comment: str = "") -> None:
        self._out = out = io.StringIO()
        self._base = base_epoch_s
        writer = HistogramLogWriter(out)
        if comment:
            writer.output_comment(comment)
        writer.output_log_format_version()
        # hdrh's output_start_time formats the date wrongly, so both lines are written here, with
        # the same number: the reader skips intervals that start before StartTime, and a
        # rounding difference between the two would drop the first interval.
        when = datetime.datetime.fromtimestamp(base_epoch_s, datetime.UTC).isoformat()
        out.write(f"#[StartTime: {base_epoch_s:f} (seconds since epoch), {when}]\n")
        out.write(f"#[BaseTime: {base_epoch_s:f} (seconds since epoch)]\n")
        writer.output_legend()

    def write(self, tag: str, histogram: HdrHistogram, start_epoch_s: float, end_epoch_s: float):
        if "," in tag or not tag:
            raise ValueError(f"a tag must be non-empty and comma-free: {tag!r}")
        start, end = start_epoch_s - self._base, end_epoch_s - self._base
        histogram.set_start_time_stamp(start * 1000.0)
        histogram.set_end_time_stamp(end * 1000.0)
        line = io.StringIO()
        # max_value_unit_ratio 1000: the max column is in ms (values are µs).
        HistogramLogWriter(line).output_interval_histogram(histogram, start, end, 1000.0)
        self._out.write(f"Tag={tag},{line.getvalue()}")

    def take(self) -> str:
        text = self._out.getvalue()
        self._out.seek(0)
        self._out.truncate()
        return text


@dataclass(frozen=True, slots=True)
class Interval:
    tag: str
    start_epoch_s: float
    end_epoch_s: float
    histogram: HdrHistogram


def read_log(path: Path) -> list[Interval]:
    """Every interval histogram of a log, in file order. Raises OSError, ValueError."""
    reader = HistogramLogReader(str(path), new_histogram())
    out = []
    try:
        while (h := reader.get_next_interval_histogram()) is not None:
            start, end = h.get_start_time_stamp() / 1000.0, h.get_end_time_stamp() / 1000.0
            out.append(Interval(h.get_tag() or "", start, end, h))
    finally:
        reader.close()
    return out


def percentiles_ms(h: HdrHistogram, points: tuple[float, ...]) -> dict[str, float]:
    """``{"p50": ms, ...}`` plus max and mean, for a histogram of µs."""
    out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000.0 for p in points}
    out["max"] = h.get_max_value() / 1000.0
    out["mean"] = h.get_mean_value() / 1000.0
    return out
