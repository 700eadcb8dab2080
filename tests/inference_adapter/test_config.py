"""Adapter configuration: TOML keys, CLI overrides, and typos that must not pass silently; a
configuration that cannot be used and a start that fails each stop the process with one line
and a status (2 and 1), no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from inference_adapter.__main__ import parse_args
from inference_adapter.config import AdapterConfig, ConfigError, Limits


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
    with pytest.raises(ConfigError, match="adapter.toml: unknown key"):
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


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[limits]\nmax_chunk_bytes = "big"\n', "[limits] max_chunk_bytes: must be a positive"),
        ("max_streams_per_replica = 0\n", "max_streams_per_replica: must be a positive"),
        ("[limits]\nidle_timeout_seconds = -1\n", "[limits] idle_timeout_seconds: must be a pos"),
        ("triton_urls = []\n", "triton_urls: must not be empty"),
        ('triton_urls = ["triton"]\n', "triton_urls[0]: must be host:port"),
        ('triton_urls = ["http://127.0.0.1:8001"]\n', "triton_urls[0]: must be host:port (no"),
        ('tts_stop_in_flight = "stop"\n', "tts_stop_in_flight: must be one of drain, cancel"),
        ('telemetry = "loud"\n', "telemetry: must be one of none, console, otlp, prometheus"),
        ("reuse_port = 1\n", "reuse_port: must be true or false"),
        ("limits = 5\n", "limits: must be a table"),
        ("listen = [\n", "not valid TOML"),
        ("replay_window_seconds = 4\n", "force_final_margin_seconds: must be below replay_win"),
        ("prometheus_port = 70000\n", "prometheus_port: must be a TCP port"),
        ("[limits]\nmax_chunk_bytes = 8388608\n", "[limits] max_chunk_bytes: must be at most"),
        # Half a TLS setting: served in plain text, without a word, before.
        ('tls_key = "k.pem"\n', "tls_key: needs tls_cert"),
        ('tls_client_ca = "ca.pem"\n', "tls_client_ca: needs tls_cert"),
    ],
)
def test_invalid_values_are_refused_naming_file_and_key(tmp_path: Path, text: str, named: str):
    path = tmp_path / "adapter.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        AdapterConfig.from_toml(path)
    assert str(caught.value).startswith(f"{path}: ") and named in str(caught.value)


def test_zeros_with_a_meaning_and_every_default_pass():
    cfg = AdapterConfig.from_mapping(
        {"max_failovers": 0, "drain_grace_seconds": 0, "limits": {"idle_warning_seconds": 0}}
    )
    assert cfg.max_failovers == 0 and cfg.limits.idle_warning_seconds == 0.0
    defaults = AdapterConfig()
    table = {f.name: getattr(defaults, f.name) for f in fields(defaults) if f.name != "limits"}
    table["limits"] = {f.name: getattr(defaults.limits, f.name) for f in fields(Limits)}
    assert AdapterConfig.from_mapping(table) == defaults


def _adapter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inference_adapter", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_process_says_what_is_wrong_in_one_line(tmp_path: Path):
    (tmp_path / "adapter.toml").write_text('[limits]\nmax_chunk_bytes = "big"\n')
    (tmp_path / "not.pem").write_text("not a certificate\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        runs = {
            "file": (_adapter("--config", "adapter.toml", cwd=tmp_path), 2, "max_chunk_bytes"),
            "flag": (_adapter("--prometheus-port", "-3", cwd=tmp_path), 2, "prometheus_port"),
            "port": (
                _adapter("--listen", f"127.0.0.1:{port}", cwd=tmp_path),
                1,
                f"cannot listen on 127.0.0.1:{port}: the port is taken",
            ),
            "tls": (
                _adapter("--listen", "127.0.0.1:0", "--tls-cert", "absent.pem", cwd=tmp_path),
                1,
                "absent.pem: No such file or directory",
            ),
            # Read as a port problem before ("cannot listen on ...: the port is taken").
            "tls-not-pem": (
                _adapter(
                    "--listen",
                    "127.0.0.1:0",
                    "--tls-cert",
                    "not.pem",
                    "--tls-key",
                    "not.pem",
                    cwd=tmp_path,
                ),
                1,
                "not a PEM certificate chain and its private key",
            ),
            # A traceback ending "OSError: [Errno 98] Address already in use", before.
            "metrics-port": (
                _adapter(
                    "--listen",
                    "127.0.0.1:0",
                    "--telemetry",
                    "prometheus",
                    "--prometheus-port",
                    str(port),
                    cwd=tmp_path,
                ),
                1,
                "in use",
            ),
            # A traceback ending "ValueError: Unknown level: 'verbose'", status 1, before.
            "log-level": (
                _adapter("--log-level", "verbose", cwd=tmp_path),
                2,
                "--log-level: invalid choice: 'VERBOSE'",
            ),
        }
    finally:
        taken.close()
    for name, (run, status, named) in runs.items():
        assert run.returncode == status, (name, run.stderr)
        assert "Traceback" not in run.stderr, (name, run.stderr)
        assert named in run.stderr.strip().splitlines()[-1], (name, run.stderr)
