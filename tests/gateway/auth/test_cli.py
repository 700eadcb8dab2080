"""`voxwire keys` end to end, in subprocesses, on a real keys file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.auth.keys import KeyStore
from tests.gateway.auth.helpers import DEFAULTS
from voxwire.errors import Unauthenticated

KEY = re.compile(r"vx_([a-z0-9]{10})_[A-Za-z0-9_-]{43}")
SCRIPT = Path(sys.executable).with_name("voxwire")


def voxwire(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxwire.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_create_list_revoke(tmp_path: Path):
    path = tmp_path / "keys.toml"
    created = voxwire(
        "keys", "create", "--name", "acme web", "--file", str(path),
        "--max-concurrent", "5", "--per-minute", "20",
        "--origin", "https://App.example", "--origin", "http://localhost:3000",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and KEY.fullmatch(lines[0])  # the key, once, alone on stdout
    key = lines[0]
    key_id = KEY.fullmatch(key).group(1)  # type: ignore[union-attr]
    assert key_id in created.stderr and "only time" in created.stderr and key not in created.stderr
    assert key not in path.read_text()
    record = KeyStore(path, DEFAULTS).verify(key)
    assert record.name == "acme web" and record.allowed_origins == (
        "https://app.example",
        "http://localhost:3000",
    )

    second = voxwire("keys", "create", "--name", "backend", "--file", str(path))
    assert second.returncode == 0 and KEY.fullmatch(second.stdout.strip())

    listed = voxwire("keys", "list", "--file", str(path))
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    assert record.hash not in listed.stdout and record.hash[:15] in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert re.search(
        r"acme web\s+\S+\s+no\s+5\s+20\s+https://app.example,http://localhost:3000", row
    )
    assert re.search(r"backend\s+\S+\s+no\s+default\s+default\s+-", listed.stdout)

    revoked = voxwire("keys", "revoke", key_id, "--file", str(path))
    assert revoked.returncode == 0 and f"revoked key {key_id}" in revoked.stdout
    with pytest.raises(Unauthenticated, match="revoked"):
        KeyStore(path, DEFAULTS).verify(key)
    KeyStore(path, DEFAULTS).verify(second.stdout.strip())  # the other key still works
    row = next(
        line
        for line in voxwire("keys", "list", "--file", str(path)).stdout.splitlines()
        if line.startswith(key_id)
    )
    assert re.search(r"\byes\b", row)


def test_errors_exit_non_zero(tmp_path: Path):
    path = tmp_path / "keys.toml"
    missing = voxwire("keys", "list", "--file", str(path))
    assert missing.returncode == 1 and "No such file" in missing.stderr
    assert voxwire("keys", "create", "--name", "x", "--file", str(path)).returncode == 0
    unknown = voxwire("keys", "revoke", "nosuchkey", "--file", str(path))
    assert unknown.returncode == 1 and "no key 'nosuchkey'" in unknown.stderr
    bad_origin = voxwire(
        "keys", "create", "--name", "y", "--origin", "app.example", "--file", str(path)
    )
    assert bad_origin.returncode == 1 and "origin" in bad_origin.stderr
    zero = voxwire("keys", "create", "--name", "z", "--per-minute", "0", "--file", str(path))
    assert zero.returncode == 2 and "at least 1" in zero.stderr
    assert len(KeyStore(path, DEFAULTS)) == 1  # no failed command wrote anything


def test_the_keys_file_from_the_environment(tmp_path: Path):
    path = tmp_path / "env-keys.toml"
    created = voxwire("keys", "create", "--name", "env", env={"VOXWIRE_KEYS_FILE": str(path)})
    assert created.returncode == 0, created.stderr
    assert KeyStore(path, DEFAULTS).verify(created.stdout.strip()).name == "env"


def test_the_console_script_and_light_imports():
    assert SCRIPT.exists(), "pip install -e . installs the voxwire console script"
    helped = subprocess.run(
        [str(SCRIPT), "keys", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0 and "create" in helped.stdout and "revoke" in helped.stdout
    probe = (
        "import sys, voxwire, voxwire.cli; voxwire.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert imported.stdout.strip() == "[]"
