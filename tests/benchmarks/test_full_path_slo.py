"""full_path_slo starts the models its scenario names, and the shipped SLO scenarios name
models the repository has."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.full_path_slo import SCENARIO, gateway_overrides, parse_args, triton_models
from benchmarks.gateway_stack import gateway_setup
from gateway.config import GatewayConfig
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


def test_a_gateway_config_file_reaches_the_gateways_configuration(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("[tts]\nread_ahead_bytes = 0\n")
    args = parse_args(["--gateway-config", str(tmp_path / "gateway.toml")])
    setup = gateway_setup(tmp_path / "stack", ["127.0.0.1:50051"], **gateway_overrides(args))
    config = GatewayConfig.from_toml(setup.config)
    assert config.tts.read_ahead_bytes == 0 and config.adapters == ("127.0.0.1:50051",)
    assert gateway_overrides(parse_args([])) == {}
