"""full_path_slo starts the models its scenario names, and the shipped SLO scenarios name
models the repository has."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.full_path_slo import SCENARIO, parse_args, triton_models
from loadtest.scenario import REPO, load
from localstack.triton import default_model_repository

SLO_SCENARIOS = sorted((REPO / "loadtest" / "scenarios").glob("slo_*.toml"))


def test_the_benchmark_search_loads_the_benchmark_models() -> None:
    assert triton_models(load(SCENARIO)) == ["bench_stt", "bench_tts"]


@pytest.mark.parametrize(
    ("name", "model"),
    [("slo_stt_real.toml", "stt_pocketsphinx"), ("slo_tts_real.toml", "tts_espeak")],
)
def test_a_real_model_search_loads_its_model(name: str, model: str) -> None:
    args = parse_args(["--scenario", str(REPO / "loadtest" / "scenarios" / name)])
    assert model in triton_models(load(args.scenario))


@pytest.mark.parametrize("path", SLO_SCENARIOS, ids=lambda p: p.stem)
def test_slo_scenarios_name_models_in_the_repository(path: Path) -> None:
    for model in triton_models(load(path)):
        assert (default_model_repository() / model / "config.pbtxt").is_file(), model
