"""Adapter configuration: TOML keys, CLI overrides, and typos that must not pass silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_adapter.__main__ import parse_args
from inference_adapter.config import AdapterConfig


def test_toml_with_limits(tmp_path: Path):
    path = tmp_path / "adapter.toml"
    path.write_text(
        'triton_urls = ["127.0.0.1:8001", "127.0.0.1:9001"]\n'
        "max_streams_per_replica = 10\n"
        "[limits]\nidle_timeout_seconds = 12.5\n"
    )
    cfg = AdapterConfig.from_toml(path)
    assert cfg.triton_urls == ("127.0.0.1:8001", "127.0.0.1:9001")
    assert cfg.max_streams_per_replica == 10 and cfg.limits.idle_timeout_seconds == 12.5
    assert cfg.limits.max_chunk_bytes == AdapterConfig().limits.max_chunk_bytes


@pytest.mark.parametrize("text", ["max_stream_per_replica = 1\n", "[limits]\nidle_timeout = 3\n"])
def test_unknown_keys_are_rejected(tmp_path: Path, text: str):
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="unknown configuration keys"):
        AdapterConfig.from_toml(path)


def test_flags_override_the_file(tmp_path: Path):
    path = tmp_path / "adapter.toml"
    path.write_text('listen = "127.0.0.1:7000"\ntelemetry = "console"\n')
    cfg = parse_args(
        [
            "--config",
            str(path),
            "--triton-url",
            "10.0.0.1:8001",
            "--triton-url",
            "10.0.0.2:8001",
            "--telemetry",
            "none",
        ]
    )
    assert cfg.listen == "127.0.0.1:7000"
    assert cfg.triton_urls == ("10.0.0.1:8001", "10.0.0.2:8001") and cfg.telemetry == "none"
