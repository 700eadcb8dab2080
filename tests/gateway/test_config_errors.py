"""A gateway configuration that cannot be used stops ``voxwire gateway`` (and ``python -m
gateway``) at once: status 2, one line on stderr naming the file, the key and what is wrong,
no traceback. Every value is checked at load time against its field's type and range, so that
nothing invalid starts and breaks later (a drain with ``drain_grace_seconds = "soon"``). A valid
file still starts a gateway that serves and drains. A start that fails for another reason (no
adapter, a port taken, a TLS file missing) is status 1 and one line saying why."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w

from gateway.config import GatewayConfig
from inference_adapter.server import AdapterServer
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import start_gateway, write_config

VOXWIRE = str(Path(sys.executable).with_name("voxwire"))
SECRET = "hex:" + "ab" * 32
# A valid [auth] table (its keys file is absent: the configuration fails before it is read).
AUTH = (
    '[auth]\nkeys_file = "keys.toml"\ntoken_current_kid = "a"\n'
    f'token_signing_keys = {{ a = "{SECRET}" }}\n'
)


def run_gateway(
    *args: str, cwd: Path, command: tuple[str, ...] = (VOXWIRE, "gateway")
) -> subprocess.CompletedProcess[str]:
    # A bounded run: a configuration error must stop the process before it waits for anything.
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def assert_config_error(run: subprocess.CompletedProcess[str], *named: str) -> None:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    for part in named:
        assert part in lines[0], run.stderr


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("nope = 1\n" + AUTH, ("unknown key", "nope")),
        ("[stt]\nmax_frame = 1\n" + AUTH, ("unknown key", "[stt] max_frame")),
        # A typo, or the command line's flag for a key spelt otherwise: the key it meant.
        ('adapter = "127.0.0.1:1"\n' + AUTH, ("unknown key: adapter (did you mean adapters?)",)),
        (
            "[stt]\nidle_timeout = 5\n" + AUTH,
            ("unknown key: [stt] idle_timeout (did you mean idle_timeout_s?)",),
        ),
        ("listen = [\n" + AUTH, ("not valid TOML", "line 2")),
        ("stt = 5\n" + AUTH, ("stt: must be a table", "5")),
        ("listen = 5\n" + AUTH, ("listen: must be a string", "5")),
        ('listen = "8080"\n' + AUTH, ("listen: must be host:port",)),
        ('metrics_listen = "9464"\n' + AUTH, ("metrics_listen: must be host:port",)),
        ("adapters = []\n" + AUTH, ("adapters: must not be empty",)),
        ('telemetry = "loud"\n' + AUTH, ("telemetry:", "loud")),
        ('drain_grace_seconds = "soon"\n' + AUTH, ("drain_grace_seconds:", "'soon'")),
        ("reuse_port = 1\n" + AUTH, ("reuse_port: must be true or false",)),
        ("[stt]\nmax_frame_bytes = -5\n" + AUTH, ("[stt] max_frame_bytes: must be a positive",)),
        ("[tts]\nmax_contexts = 0\n" + AUTH, ("[tts] max_contexts: must be a positive",)),
        ("[tts]\nmax_words = 1.5\n" + AUTH, ("[tts] max_words: must be a positive integer",)),
        ("[runner]\nwrite_timeout_s = nan\n" + AUTH, ("[runner] write_timeout_s:", "nan")),
        ("[runner]\nclose_flush_s = -1\n" + AUTH, ("[runner] close_flush_s: must be a non-neg",)),
        ("hard_max_message_bytes = 0\n", ("hard_max_message_bytes: must be a positive",)),
        ("token_body_timeout_seconds = 0\n", ("token_body_timeout_seconds: must be a positive",)),
        (AUTH + "browser_token_ttl_s = 'x'\n", ("[auth] browser_token_ttl_s:", "'x'")),
        (AUTH.replace('"keys.toml"', "5"), ("[auth] keys_file: must be a string",)),
        (AUTH.replace('current_kid = "a"', 'current_kid = "b"'), ("auth.token_current_kid",)),
        ("auth = 5\n", ("auth: must be a table",)),
        # Each valid alone; together every session failed (the outbox refused its own bounds)
        # or a promise broke (a frame cut 1009 instead of CHUNK_TOO_LARGE).
        (
            "[runner]\nclient_high_water = 2000000\n" + AUTH,
            ("[runner] client_high_water: must be at most [runner] max_unsent_bytes",),
        ),
        (
            "[runner]\nupstream_max_bytes = 1000\n" + AUTH,
            ("[runner] upstream_high_water: must be at most [runner] upstream_max_bytes",),
        ),
        # Half a TLS setting: served in plain text, without a word, before.
        ('tls_key = "k.pem"\n' + AUTH, ("tls_key: needs tls_cert",)),
        ('adapter_cert = "c.pem"\nadapter_key = "k.pem"\n' + AUTH, ("adapter_ca: missing",)),
        ('adapter_ca = "ca.pem"\nadapter_cert = "c.pem"\n' + AUTH, ("adapter_key: must be",)),
        (
            "[stt]\nreplay_window_ms = 4000\n" + AUTH,
            ("[stt] force_final_margin_ms: must be below [stt] replay_window_ms",),
        ),
        (
            "hard_max_message_bytes = 1000\n" + AUTH,
            ("[stt] max_frame_bytes: must be at most hard_max_message_bytes",),
        ),
        ("[tts]\nlead_ms = 20000\n" + AUTH, ("[tts] lead_ms:", "max_lead_ms")),
        ("max_decoders = 2\nspare_decoders = 3\n" + AUTH, ("spare_decoders: must be at most",)),
        ("spare_decoders = -1\n" + AUTH, ("spare_decoders: must be a non-neg",)),
        ('listen = "127.0.0.1:0"\n', ("[auth]", "missing")),
    ],
)
def test_an_invalid_config_is_one_line_naming_file_and_key(
    tmp_path: Path, body: str, named: tuple[str, ...]
):
    (tmp_path / "gateway.toml").write_text(body)
    run = run_gateway("--config", "gateway.toml", cwd=tmp_path)
    assert_config_error(run, "gateway.toml: ", *named)


def test_python_m_gateway_reports_the_same_way(tmp_path: Path):
    (tmp_path / "gateway.toml").write_text("[stt]\nmax_frame_bytes = -5\n" + AUTH)
    run = run_gateway(
        "--config", "gateway.toml", cwd=tmp_path, command=(sys.executable, "-m", "gateway")
    )
    assert_config_error(run, "gateway.toml: [stt] max_frame_bytes: must be a positive", "-5")


def test_a_missing_config_file_is_named(tmp_path: Path):
    run = run_gateway("--config", "absent.toml", cwd=tmp_path)
    assert_config_error(run, "absent.toml", "cannot read")


def test_no_config_at_all_asks_for_one(tmp_path: Path):
    # The README's bare `voxwire gateway`: without [auth] the gateway cannot authenticate.
    assert_config_error(run_gateway(cwd=tmp_path), "--config", "[auth]")


def test_a_missing_keys_file_is_named(tmp_path: Path):
    (tmp_path / "gateway.toml").write_text(AUTH)
    run = run_gateway("--config", "gateway.toml", cwd=tmp_path)
    assert_config_error(run, "[auth] keys_file", "keys.toml")


def test_an_unknown_log_level_is_a_usage_error(tmp_path: Path):
    # A traceback ending "ValueError: Unknown level: 'verbose'", status 1, before.
    (tmp_path / "gateway.toml").write_text(AUTH)
    run = run_gateway("--config", "gateway.toml", "--log-level", "verbose", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "--log-level: invalid choice: 'VERBOSE'" in run.stderr, run.stderr


def test_an_invalid_flag_value_is_named(tmp_path: Path):
    (tmp_path / "gateway.toml").write_text(AUTH)
    run = run_gateway("--config", "gateway.toml", "--drain-grace-seconds", "-1", cwd=tmp_path)
    assert_config_error(run, "drain_grace_seconds: must be a non-negative number")


def _defaults_as_toml(instance: Any) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for f in fields(instance):
        value = getattr(instance, f.name)
        if is_dataclass(value):
            table[f.name] = _defaults_as_toml(value)
        elif value is not None:
            table[f.name] = list(value) if isinstance(value, tuple) else value
    return table


def test_every_default_passes_its_own_checks():
    # The range rules must admit every default: the checks cover every field of every table.
    text = tomli_w.dumps(_defaults_as_toml(GatewayConfig()))
    assert GatewayConfig.from_mapping(tomllib.loads(text)) == GatewayConfig()


async def test_a_valid_config_starts_serves_and_drains(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
):
    # Integers for float fields and the zeros that have a meaning are valid.
    tables = {
        "ping_interval_seconds": 15,
        "stt": {"max_failovers": 0, "idle_timeout_s": 20, "force_final_margin_ms": 0},
        "tts": {"lead_ms": 0, "read_ahead_bytes": 0},
        "runner": {"close_flush_s": 0},
    }
    config = write_config(
        tmp_path / "gw.toml", edge, edge_adapter.address, drain_grace_s=1, tables=tables
    )
    process = await start_gateway(config, tmp_path / "gw.log", command=(VOXWIRE, "gateway"))
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{process.http}/readyz") as ready:
            assert ready.status == 200
        process.signal(signal.SIGTERM)
        assert await process.wait(10.0) == 0, process.log()
    finally:
        await process.stop()


# -- a start that fails: status 1, one line saying why (the log lines before it stay) ---------


def assert_start_error(run: subprocess.CompletedProcess[str], *named: str) -> None:
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("the gateway cannot start: "), run.stderr
    for part in named:
        assert part in last, run.stderr


async def test_a_start_that_fails_is_one_line_saying_why(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    starts = {
        # Started before its adapters, a gateway waits for one, says so, then gives up.
        "no-adapter": (
            {"adapters": ["127.0.0.1:1"], "startup_wait_seconds": 1},
            # With why, in gRPC's words (a TLS mistake said nothing else).
            ("no adapter of 127.0.0.1:1 served within 1 s", "last: 127.0.0.1:1: UNAVAILABLE"),
        ),
        "port": ({"listen": f"127.0.0.1:{port}"}, ("address already in use", str(port))),
        "front-port": (
            {"grpc_listen": f"127.0.0.1:{port}"},
            (f"gRPC front cannot listen on 127.0.0.1:{port}", "grpc_listen"),
        ),
        "metrics-port": (
            {"metrics_listen": f"127.0.0.1:{port}"},
            (f"metrics cannot listen on 127.0.0.1:{port} (metrics_listen)", "in use"),
        ),
        "tls": ({"tls_cert": str(tmp_path / "absent.pem")}, ("tls_cert", "absent.pem")),
        # A file that is not PEM: "[SSL] PEM lib (_ssl.c:3926)", naming no file, before.
        "tls-not-pem": (
            {"tls_cert": str(not_pem)},
            ("tls_cert", str(not_pem), "not a PEM certificate chain"),
        ),
        # A traceback, before: the adapters' TLS files were read outside the start's checks.
        "adapter-ca": (
            {"adapter_ca": str(tmp_path / "absent-ca.pem")},
            ("adapter_ca", "absent-ca.pem", "No such file"),
        ),
    }
    try:
        for name, (tables, named) in starts.items():
            config = write_config(
                tmp_path / f"{name}.toml",
                edge,
                edge_adapter.address,
                drain_grace_s=1,
                tables=tables,
            )
            run = await asyncio.to_thread(
                run_gateway, "--config", str(config), "--log-level", "INFO", cwd=tmp_path
            )
            assert_start_error(run, *named)
            if name == "no-adapter":
                assert "waiting up to 1 s for an adapter of 127.0.0.1:1" in run.stderr
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("command", "prog"),
    [
        ((VOXWIRE, "gateway"), "voxwire gateway"),
        ((sys.executable, "-m", "gateway"), "python -m gateway"),
    ],
)
def test_help_names_the_command_as_typed(tmp_path: Path, command: tuple[str, ...], prog: str):
    # A user who typed `voxwire gateway --help` is shown `voxwire gateway` to copy, not
    # another command's name.
    run = run_gateway("--help", cwd=tmp_path, command=command)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"usage: {prog} [-h]"), run.stdout
