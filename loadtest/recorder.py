"""What one worker measured: HDR histograms per metric (whole run and current interval),
counters, and errors by status and reason. In-memory and synchronous: the event loop records,
a ticker flushes each interval to the worker's log.

Metric names (docs/design/loadtest.md, "Measurement points") are dotted, e.g. ``stt.message``;
stage timings are ``stage.<name>``, and in a mixed run also ``stage.stt.<name>`` and
``stage.tts.<name>``.
"""

from __future__ import annotations

from collections import Counter

from hdrh.histogram import HdrHistogram

from loadtest.hdrlog import IntervalLogWriter, new_histogram, to_us

# Every latency the tool records (besides ``stage.<name>``): what an SLO objective may name.
METRICS = (
    "stt.message",  # a result after the chunk whose end it reflects was due
    "stt.message_from_send",  # the same, from when that chunk was actually written
    "stt.covered",  # each chunk, at the first result that reflects it
    "stt.first_result",
    "stt.final",
    "tts.first_audio",
    "tts.chunk_gap",
    "tts.underrun",
    "session.setup",
    "session.rejected",
    "generator.lag",
)
STAGE_PREFIX = "stage."


def known_metric(name: str) -> bool:
    """Whether ``name`` is a metric the tool records (``stage.<name>`` for any stage)."""
    return name in METRICS or (name.startswith(STAGE_PREFIX) and len(name) > len(STAGE_PREFIX))


# An error message kept as an example is cut to this (the contract caps its own at ~256).
MAX_EXAMPLE_CHARS = 300


class Recorder:
    def __init__(self) -> None:
        self.total: dict[str, HdrHistogram] = {}
        self._interval: dict[str, HdrHistogram] = {}
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        # The first message of each error key: what the run shows beside its count, so that a
        # refusal says why ("sample_rate 8000 is not one of ...") and not only its reason.
        self.examples: dict[str, str] = {}

    def record(self, metric: str, seconds: float) -> None:
        """One sample of ``metric``, a duration in seconds (stored as µs)."""
        self.record_us(metric, to_us(seconds))

    def record_us(self, metric: str, micros: int) -> None:
        interval = self._interval.get(metric)
        if interval is None:
            interval = self._interval[metric] = new_histogram()
            if metric not in self.total:
                self.total[metric] = new_histogram()
        value = max(1, micros)
        interval.record_value(value)
        self.total[metric].record_value(value)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(
        self, status: str, reason: str = "", kind: str | None = None, message: str = ""
    ) -> None:
        """A failed session or context, keyed ``STATUS/REASON``; ``kind`` ("stt" or "tts", in
        a mixed run) also counts it as ``errors.<kind>.STATUS/REASON``, which kind failed.
        ``message``: the error's own words; the first of each key is kept (``examples``)."""
        key = f"{status}/{reason}" if reason else status
        self.errors[key] += 1
        if message and key not in self.examples:
            self.examples[key] = message[:MAX_EXAMPLE_CHARS]
        if kind:
            self.counters[f"errors.{kind}.{key}"] += 1

    def stages(self, stages_us: dict[str, int], kind: str | None = None) -> None:
        """A stream's stage timings (the ``voxwire-timings-bin`` trailer), one sample each.
        ``kind`` ("stt" or "tts", in a mixed run): also as ``stage.<kind>.<name>``, since an
        STT stream's stages (minutes of audio, compute in every chunk) and a TTS stream's (a
        sentence) are different populations that a merged breakdown would blur."""
        prefixes = ("", f"{kind}.") if kind else ("",)
        for stage, micros in stages_us.items():
            for prefix in prefixes:
                self.record_us(f"stage.{prefix}{stage}", micros)
                self.counters[f"stage_us.{prefix}{stage}"] += micros

    def flush_interval(self, log: IntervalLogWriter, start_epoch_s: float, end_epoch_s: float):
        """Write the interval's histograms (those with samples) and start a new interval.

        The interval's histograms are dropped, not reset: the next sample of a metric makes a
        fresh one (0.2 ms). hdrh's ``reset`` zeroes its 23,552 counts in a Python loop, 2.3 ms
        per histogram on an idle core; with twenty metrics it stalled the worker's event loop
        for 50-100 ms every interval, and the pacing wake-ups it made late were measured as
        the system's latency (BENCHMARKS.md, "The generator's own stall")."""
        interval, self._interval = self._interval, {}
        for tag, histogram in interval.items():
            if histogram.get_total_count():
                log.write(tag, histogram, start_epoch_s, end_epoch_s)

    def interval_percentile_ms(self, metric: str, percentile: float) -> float | None:
        return _percentile_ms(self._interval.get(metric), percentile)

    def percentile_ms(self, metric: str, percentile: float) -> float | None:
        return _percentile_ms(self.total.get(metric), percentile)


def _percentile_ms(h: HdrHistogram | None, percentile: float) -> float | None:
    if h is None or not h.get_total_count():
        return None
    return float(h.get_value_at_percentile(percentile)) / 1000.0
