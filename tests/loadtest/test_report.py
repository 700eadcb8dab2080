"""The report: JSON, CSV, and a self-contained HTML file that renders in headless Chromium
from file:// with no console errors and no network."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loadtest import report, results
from loadtest.cli import write_outputs
from loadtest.hdrlog import new_histogram
from loadtest.merge import Merged
from loadtest.scenario import Objective, Scenario, SloSpec
from loadtest.slo import judge
from tests.helpers.browser import page


def _merged() -> Merged:
    """Ten intervals of two latency metrics and stage timings, as a merge would give."""
    rng = np.random.default_rng(1)
    m = Merged(start_epoch=1_790_000_000.0, interval_s=1.0, workers=2, cpu_s=3.0, elapsed_s=10)
    for bucket in range(1, 11):
        for metric, mean in (
            ("stt.message", 8_000),
            ("stt.final", 40_000),
            ("session.setup", 20_000),
            ("tts.first_audio", 30_000),
        ):
            h = new_histogram()
            for v in rng.exponential(mean * (1 + bucket / 10), 200):
                h.record_value(max(1, int(v)))
            m.add_histogram(metric, bucket, h)
        m.timeline[bucket] = Counter({"active": 10 * bucket, "sessions.started": 5 * bucket})
    for stage, mean in (("receive", 300), ("decode", 900), ("triton", 4000), ("total", 9e6)):
        h = new_histogram()
        for v in rng.exponential(mean, 50):
            h.record_value(max(1, int(v)))
        m.add_histogram(f"stage.{stage}", 10, h)
        m.counters[f"stage_us.{stage}"] = int(mean * 50)
    m.counters.update(
        {
            "sessions.ok": 49,
            "sessions.failed": 1,
            "stt.chunks": 5000,
            "tts.contexts": 20,
            "tts.underruns": 2,
            "tts.underrun_us": 80_000,
        }
    )
    m.errors.update({"UNAVAILABLE/BACKEND_UNAVAILABLE": 1})
    m.worker_cpu = {0: [0.2, 0.3, 0.3], 1: [0.2, 0.25, 0.3]}
    m.worker_lag_ms = {0: [0.5, 0.7, 0.4], 1: [0.6, 0.5, 0.5]}
    return m


def _result() -> dict:
    merged = _merged()
    slo = SloSpec(objectives=(Objective("stt.final", 99, 300),))
    search = {
        "best": 40,
        "over": "concurrency",
        "path": [
            {"level": 10, "passed": True, "checks": []},
            {"level": 80, "passed": False, "checks": []},
            {"level": 45, "passed": False, "checks": []},
            {"level": 27, "passed": True, "checks": []},
            {"level": 36, "passed": True, "checks": []},
            {"level": 40, "passed": True, "checks": []},
        ],
    }
    extra = {"slo": judge(merged, slo).to_dict(), "search": search}
    return results.build(merged, Scenario().to_dict(), extra)


def test_result_json_and_csv_hold_the_percentiles(tmp_path: Path) -> None:
    result = _result()
    write_outputs(result, tmp_path)
    loaded = json.loads((tmp_path / "result.json").read_text())
    assert loaded["metrics"]["stt.message"]["count"] == 2000
    assert loaded["sessions"]["error_rate"] == 0.02
    assert loaded["stages"]["triton"]["share"] > loaded["stages"]["receive"]["share"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "result.csv").read_text())))
    by_metric = {r["metric"]: r for r in rows}
    assert float(by_metric["stt.final"]["p99"]) == round(loaded["metrics"]["stt.final"]["p99"], 3)
    assert set(by_metric["stt.final"]) >= {"p50", "p90", "p95", "p99", "p99.9", "max"}


def test_report_is_self_contained() -> None:
    html = report.render(_result())
    assert (
        "<script" not in html
        and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        and "https://" not in html
    )


def test_report_renders_its_plots_in_chromium(tmp_path: Path) -> None:
    write_outputs(_result(), tmp_path)
    with page() as browser:
        requests: list[str] = []
        browser.page.on("request", lambda r: requests.append(r.url))
        browser.page.goto((tmp_path / "report.html").as_uri())
        plots = browser.page.locator("svg.plot")
        # Latency over time (4 metrics + active), CDF, stages, concurrency, search path.
        assert plots.count() >= 9
        for i in range(plots.count()):
            box = plots.nth(i).bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 200
            drawn = plots.nth(i).locator("path.series, circle.point, rect.bar")
            assert drawn.count() >= 1, f"plot {i} drew nothing"
            first = drawn.first.bounding_box()
            assert first is not None and (first["width"] > 0 or first["height"] > 0)
        titles = browser.page.locator("svg.plot").evaluate_all(
            "nodes => nodes.map(n => n.getAttribute('aria-label'))"
        )
        assert "latency by percentile" in titles and "search path" in titles
        assert "mean time per stream by stage" in titles
        assert browser.page.locator("text=SLO verdict").count() == 1
        assert browser.errors == []
        assert all(url.startswith("file://") for url in requests)


def test_client_cpu_per_message_says_what_it_divides_by() -> None:
    # A TTS request is answered by many audio chunks: CPU per "message" divided by requests
    # was inflated by the chunks per request, and the report did not say what it divided by.
    m = Merged(cpu_s=2.0, elapsed_s=10.0)
    m.counters.update({"sessions.ok": 10, "tts.requests": 10, "tts.chunks": 400})
    g = results.build(m, Scenario(kind="tts").to_dict())["generator"]
    assert g["messages"] == 400 and g["message_counts"] == {"stt.chunks": 0, "tts.chunks": 400}
    assert g["cpu_us_per_message"] == 5_000  # 2 s over 400 audio chunks
    assert g["cpu_us_per_tts_request"] == 200_000  # and over 10 requests
    html = report.render(results.build(m, Scenario(kind="tts").to_dict()))
    assert "400 TTS audio chunks received" in html and "per TTS request: 200000 µs" in html
    # In a mixed run the CPU of the two kinds is one sum: no per-request figure.
    m.counters["stt.chunks"] = 600
    mixed = results.build(m, Scenario(kind="mixed").to_dict())["generator"]
    assert mixed["cpu_us_per_message"] == 2_000 and mixed["cpu_us_per_tts_request"] is None


GATEWAY_STAGES = (
    "receive", "decode", "triton", "compute", "encode", "send",
    "edge-receive", "edge-queue", "edge-connect", "edge-send",
)  # fmt: skip


def test_the_stage_bar_chart_labels_its_bars_and_nothing_else(tmp_path: Path) -> None:
    # Its x axis once took the line chart's numeric ticks over [0, 1], all drawn at the axis'
    # left end; then the gateway's ten stage names, side by side under upright bars, ran into
    # each other ("decodeedge-connectedge-receive..."): every label must stand clear.
    from loadtest import svg

    bars = [(name, 1.0 + i) for i, name in enumerate(GATEWAY_STAGES)]
    chart = svg.bar_chart("mean time per stream by stage", bars, "ms")
    (tmp_path / "chart.html").write_text(f"<!doctype html><body>{chart}</body>")
    with page() as browser:
        browser.page.goto((tmp_path / "chart.html").as_uri())
        boxes = browser.page.locator("svg.plot text").evaluate_all(
            "nodes => nodes.map(n => { const b = n.getBoundingClientRect(),"
            " s = n.ownerSVGElement.getBoundingClientRect();"
            " return [n.textContent, b.x - s.x, b.y - s.y, b.width, b.height]; })"
        )
    labels = {t: (x, y, w, h) for t, x, y, w, h in boxes if t in GATEWAY_STAGES}
    assert set(labels) == set(GATEWAY_STAGES)  # each bar named once
    texts = [box for box in boxes if box[0].strip()]  # an empty axis label takes no room
    for i, (a, ax, ay, aw, ah) in enumerate(texts):
        assert ax >= 0, f"{a!r} starts left of the chart"
        for b, bx, by, bw, bh in texts[i + 1 :]:
            apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
            assert apart, f"{a!r} and {b!r} overlap"


def _mixed_merged() -> Merged:
    """Stage timings of a mixed run: STT streams minutes long, TTS streams a sentence."""
    from loadtest.recorder import Recorder

    rec = Recorder()
    for _ in range(30):
        rec.stages({"compute": 2_000_000, "triton": 2_500_000, "total": 60_000_000}, "stt")
    for _ in range(20):
        rec.stages({"compute": 30_000, "triton": 35_000, "total": 900_000}, "tts")
    for _ in range(3):
        rec.error("RESOURCE_EXHAUSTED", "OVERLOADED", "tts")
    rec.error("CUT", "MAX_DURATION", "stt")
    m = Merged(start_epoch=1_790_000_000.0, interval_s=1.0, workers=1, cpu_s=1.0, elapsed_s=10)
    for name, h in rec.total.items():
        m.add_histogram(name, 1, h)
    m.counters.update(rec.counters)
    m.counters.update({"sessions.ok": 50, "sessions.failed": 3, "sessions.cut": 1})
    m.errors.update(rec.errors)
    return m


def test_a_mixed_run_breaks_its_stages_down_per_kind() -> None:
    # A mixed run merged STT and TTS streams into one breakdown: compute p50 32 ms and p90
    # 2,099 ms, a mean that described neither kind.
    result = results.build(_mixed_merged(), Scenario(kind="mixed").to_dict())
    by_kind = result["stages_by_kind"]
    assert set(by_kind) == {"stt", "tts"}
    assert by_kind["stt"]["compute"]["count"] == 30 and by_kind["tts"]["compute"]["count"] == 20
    assert by_kind["stt"]["compute"]["p50"] > 1000 > 100 > by_kind["tts"]["compute"]["p99"]
    assert by_kind["tts"]["compute"]["share"] == pytest.approx(
        30 / 65
    )  # of the TTS streams' stage time
    assert "share" not in by_kind["stt"]["total"]  # a span, not a stage
    # The combined view still counts every stream, with no per-kind row in it.
    assert set(result["stages"]) == {"compute", "triton", "total"}
    assert result["stages"]["compute"]["count"] == 50
    html = report.render(result)
    assert "<h3>STT streams</h3>" in html and "<h3>TTS streams</h3>" in html
    assert ">stage.stt.compute<" not in html  # not among the percentiles: the breakdown has it
    assert result["metrics"]["stage.stt.compute"]["count"] == 30  # but in the result, for SLOs
    # And which kind each error hit (an OVERLOADED could be either model's capacity).
    assert result["errors_by_kind"] == {
        "stt": {"CUT/MAX_DURATION": 1},
        "tts": {"RESOURCE_EXHAUSTED/OVERLOADED": 3},
    }
    assert "<th>STT</th><th>TTS</th>" in html
    assert "<td>RESOURCE_EXHAUSTED/OVERLOADED</td><td>3</td><td>0</td><td>3</td>" in html


def test_a_run_of_one_kind_keeps_one_breakdown() -> None:
    result = _result()
    assert result["stages_by_kind"] == {} and result["errors_by_kind"] == {}
    html = report.render(result)
    assert "streams</h3>" not in html and "mean time per stream by stage" in html
    assert "<th>STT</th>" not in html
    # total is a span: no share, shown as a dash, not 0.0 %
    assert "<td>total</td>" in html and "0.0%" not in html


def test_report_shows_no_python_literals() -> None:
    # The SLO table showed Python's True, False and None (a bound not computed) as they were.
    page = report.render(_result())
    for literal in (">None<", ">True<", ">False<"):
        assert literal not in page, literal
    assert '<span class="ok">yes</span>' in page or '<span class="fail">no</span>' in page
    assert "<tr><th></th><th></th></tr>" not in page  # the summary has no empty header row


def test_the_summary_on_a_terminal_names_every_metric_and_error_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # On an 80-column terminal the metric column was cut ("stt.message_from_…"), and the
    # errors came out as a Python dict: "errors {'RESOURCE_EXHAUSTED/OVERLOADED': 13}".
    from loadtest.cli import print_summary

    m = _merged()
    h = new_histogram()
    h.record_value(5_000)
    m.add_histogram("stt.message_from_send", 10, h)
    for name, hist in _mixed_merged().totals.items():
        m.add_histogram(name, 10, hist)
    m.counters.update(_mixed_merged().counters)
    m.errors.update(_mixed_merged().errors)
    m.counters.update({"notices.FAILOVER": 2, "notices.FORMAT_SUSPECT": 1})
    result = results.build(m, Scenario(kind="mixed").to_dict())
    assert result["notices"] == {"FAILOVER": 2, "FORMAT_SUSPECT": 1}
    assert "<td>notices</td><td>FAILOVER 2, FORMAT_SUSPECT 1</td>" in report.render(result)
    print_summary(result, tmp_path)
    out = capsys.readouterr().out
    assert "stt.message_from_send" in out and "…" not in out
    assert "{" not in out and "'" not in out
    words = " ".join(out.split())  # the console wraps long lines at 80 columns
    assert "errors: RESOURCE_EXHAUSTED/OVERLOADED 3 (STT 0, TTS 3), " in words
    assert "CUT/MAX_DURATION 1 (STT 1, TTS 0)" in words
    assert "notices: FAILOVER 2, FORMAT_SUSPECT 1" in words
    assert "(error rate " in out
    assert "stage.stt.compute" not in out  # per kind, as shares below the table
    assert "STT streams, share of stage time:" in out and "TTS streams, share of stage time:" in out


def test_the_summary_on_a_terminal_says_which_objective_missed_and_the_underruns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said only "SLO missed": which objective, by how much, was in the HTML report alone,
    # and a TTS run's underruns (the figure a listener hears) were not on the terminal at all.
    from loadtest.cli import print_summary

    merged = _merged()
    spec = SloSpec(objectives=(Objective("stt.final", 99, 30), Objective("stt.message", 50, 900)))
    verdict = judge(merged, spec)
    assert not verdict.passed
    result = results.build(merged, Scenario().to_dict(), {"slo": verdict.to_dict()})
    print_summary(result, tmp_path)
    words = " ".join(capsys.readouterr().out.split())
    final = next(c for c in verdict.checks if c.name.startswith("stt.final"))
    assert final.observed is not None and final.bound is not None
    assert (
        f"SLO missed: stt.final p99 <= 30 ms: observed {final.observed:g},"
        f" upper bound {final.bound:g}; error rate <= 0.10%: observed 2.00%, upper bound 8.48%"
        " (judged on the observed rate; bound is Wilson's); underruns <= 0: observed 2" in words
    ), words
    assert "stt.message p50" not in words  # held: not listed
    assert "TTS underruns: 2 in 20 contexts, 80.0 ms in total" in words
    # The report's table too: the error rate as its name states it, not a bare fraction.
    page = report.render(result)
    assert "<td>2.00%</td><td>8.48%</td><td>0.10%</td>" in page


def test_a_run_whose_sessions_all_began_in_the_warm_up_says_so() -> None:
    # Fixed concurrency whose sessions outlast the run (the README's own example: 10 sessions
    # of 20 s for 20 s): every session starts in the warm-up, so no set-up time and no first
    # result are recorded, and the summary showed neither, with no word why.
    m = _merged()
    m.counters["sessions.started"] = 10
    del m.totals["session.setup"]
    limits = Scenario().to_dict()["limits"]
    started_in_warmup = results.build(
        m, {**Scenario().to_dict(), "limits": {**limits, "warmup_s": 1.0}}
    )
    assert any("began in the 1 s warm-up" in w for w in started_in_warmup["generator"]["warnings"])
    no_warmup = results.build(m, {**Scenario().to_dict(), "limits": {**limits, "warmup_s": 0.0}})
    assert not any("warm-up" in w for w in no_warmup["generator"]["warnings"])
    m = _merged()
    m.counters["sessions.started"] = 10  # and their set-up times recorded
    recorded = results.build(m, {**Scenario().to_dict(), "limits": {**limits, "warmup_s": 1.0}})
    assert not any("warm-up" in w for w in recorded["generator"]["warnings"])


def test_the_summary_prints_what_the_target_said_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A reason the target made up ("[/x]") and a scenario name are text: rich read them as
    # markup, and a closing tag that opened nothing ended the run in a MarkupError.
    from loadtest.cli import print_summary

    m = _merged()
    m.errors.update({"UNKNOWN/[/x]": 2})
    result = results.build(m, Scenario(name="[bold]night").to_dict())
    print_summary(result, tmp_path)
    words = " ".join(capsys.readouterr().out.split())
    assert "UNKNOWN/[/x] 2" in words and "[bold]night (ms)" in words, words


def test_a_fixed_concurrency_run_whose_slots_stopped_early_says_so() -> None:
    # Concurrency 3 for 10 s: 3 at once until 5 s, then 1 (a slot starts no session that
    # would run past the end), and nothing said: half the run at a third of the load asked.
    from loadtest.results import _concurrency_tail

    scenario = {
        "arrivals": {"process": "concurrency", "sessions": 3},
        "limits": {"duration_s": 10.0},
    }
    tail = [(t, 3 if t <= 5 else 1) for t in range(1, 10)] + [(10, 0)]
    (warning,) = _concurrency_tail(scenario, [{"t": t, "active": a} for t, a in tail])
    assert "held 3 sessions at once only until 5 s of the 10 s run" in warning
    held = [{"t": t, "active": 3} for t in range(1, 10)] + [{"t": 10, "active": 0}]
    assert _concurrency_tail(scenario, held) == []  # to the end: nothing to say
    scenario["arrivals"] = {"process": "poisson", "rate": 1}
    assert _concurrency_tail(scenario, [{"t": t, "active": a} for t, a in tail]) == []
