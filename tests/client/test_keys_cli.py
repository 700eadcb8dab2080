"""``voxwire keys`` at its edges, as the console script in subprocesses: a directory as the
keys file leaves nothing behind, revoke takes the whole key as well as its id, and a key needs
a name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

VOXWIRE = str(Path(sys.executable).with_name("voxwire"))
KEY = re.compile(r"vx_([a-z0-9]{10})_[A-Za-z0-9_-]{43}")


def keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VOXWIRE, "keys", *args], capture_output=True, text=True, timeout=60, check=False
    )


def create(path: Path, name: str = "app") -> str:
    run = keys("create", "--name", name, "--file", str(path))
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_a_directory_as_keys_file_is_refused_and_leaves_no_lock(tmp_path: Path):
    folder = tmp_path / "keys"
    folder.mkdir()
    for args in (("create", "--name", "app"), ("revoke", "abcd1234ef")):
        run = keys(*args, "--file", str(folder))
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert str(folder) in run.stderr and "directory" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]  # no keys.lock beside it


def test_revoke_takes_the_whole_key(tmp_path: Path):
    path = tmp_path / "keys.toml"
    key = create(path)
    match = KEY.fullmatch(key)
    assert match is not None, key
    run = keys("revoke", key, "--file", str(path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"revoked key {match.group(1)} (app)"
    listed = keys("list", "--file", str(path))
    row = next(line for line in listed.stdout.splitlines() if line.startswith(match.group(1)))
    assert " yes " in row, listed.stdout


def test_revoke_of_an_unknown_id_says_what_to_pass(tmp_path: Path):
    path = tmp_path / "keys.toml"
    create(path)
    run = keys("revoke", "zzzz", "--file", str(path))
    assert run.returncode == 1 and "'zzzz'" in run.stderr and "key id" in run.stderr, run.stderr


def test_an_empty_name_is_refused(tmp_path: Path):
    path = tmp_path / "keys.toml"
    for name in ("", "  "):
        run = keys("create", "--name", name, "--file", str(path))
        assert run.returncode == 2, run.stderr
        assert "--name" in run.stderr and "empty" in run.stderr, run.stderr
        assert run.stdout == "" and not path.exists()
