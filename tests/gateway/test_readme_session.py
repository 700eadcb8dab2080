"""The README's quick-start session, run as written against the real gateway.

A newcomer copies that block into a shell; when one of its commands stops working (the TTS curl
example once sent a form-encoded body and got 415 while curl exited 0), this test fails. The
block runs in bash, in a directory laid out as the checkout (``localstack/``, ``.venv``,
``out/dev.key``), with the gateway's address swapped for the test gateway's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers.edge import Edge

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8080"


def quick_start_block() -> str:
    """The shell block after "a session you can copy" in the README."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"a session you can copy:\n\n```sh\n(.*?)```", text, re.S)
    assert match, "the README's quick-start session block moved: update this test"
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl")
async def test_the_readmes_quick_start_session_works_as_written(edge: Edge, tmp_path: Path):
    block = quick_start_block()
    assert README_URL in block
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dev.key").write_text(edge.key + "\n")
    (tmp_path / "localstack").symlink_to(ROOT / "localstack")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    script = "set -euo pipefail\n" + block.replace(README_URL, edge.server.url)
    env = {**os.environ, "VOXWIRE_URL": edge.ws}
    env.pop("VOXWIRE_API_KEY", None)  # the block sets it from out/dev.key
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    stdout = out.decode()
    assert proc.returncode == 0, (stdout, err.decode())
    # The CLI's transcription and the curl upload both heard the sample.
    assert stdout.count("call me back") >= 2, stdout
    upload = next(line for line in stdout.splitlines() if line.startswith("{"))
    # curl prints the JSON with no newline after it: the next command's output follows on.
    reply, _ = json.JSONDecoder().raw_decode(upload)
    assert "call me back" in reply["transcript"], reply
    # The demo pages' lines, a token of its own each (a token is good for one session).
    pages = re.findall(rf"{re.escape(edge.server.url)}/demo/(\w+)\.html#token=(\S+)", stdout)
    assert [page for page, _ in pages] == ["demo", "speak"], stdout
    tokens = {token for _, token in pages}
    assert len(tokens) == 2 and all(len(token) > 40 for token in tokens), stdout
    # Both syntheses are audio, not an error body saved under a .wav name.
    for name in ("hi.wav", "hi2.wav"):
        audio = (tmp_path / "out" / name).read_bytes()
        assert audio[:4] == b"RIFF" and len(audio) > 8000, (name, audio[:200])
