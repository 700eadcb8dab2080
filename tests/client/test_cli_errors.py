"""The ``voxwire`` console script's failures: one line naming what is wrong, a non-zero status,
no traceback, and no wait that is not bounded. Each run is the console script as a
subprocess; the session's real gateway where one is needed."""

from __future__ import annotations

import asyncio
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile

from benchmarks.stack import free_port
from tests.client.cli_process import VOXWIRE, Outcome, run_voxwire
from tests.helpers.edge import Edge
from tests.helpers.speech_fixtures import SPEECH_DIR

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAY_BILL = str(SPEECH_DIR / "pay_bill.wav")


def assert_one_clean_line(run: Outcome, status: int = 1) -> None:
    assert run.status == status, run.err
    assert run.out == ""
    assert len(run.err.strip().splitlines()) == 1, run.err
    for noise in ("Traceback", "Exception ignored", "LibsndfileError", "Errno"):
        assert noise not in run.err, run.err


# -- input files ---------------------------------------------------------------------------------


async def test_a_missing_input_file_is_named(edge: Edge, tmp_path: Path):
    missing = tmp_path / "nope.wav"
    run = await run_voxwire("transcribe", str(missing), "--url", edge.ws, key=edge.key)
    assert_one_clean_line(run)
    assert f"{missing}: no such file" in run.err


async def test_a_directory_as_input_is_named(edge: Edge, tmp_path: Path):
    run = await run_voxwire("transcribe", str(tmp_path), "--url", edge.ws, key=edge.key)
    assert_one_clean_line(run)
    assert f"{tmp_path}: is a directory" in run.err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("speak", "Hi", "-o", "OUT", "--voice", "nosuch"), "--voice must be one of"),
        (("transcribe", str(SPEECH_DIR / "pay_bill.wav"), "--language", "fr"),
         "--language must be one of"),
    ],
)  # fmt: skip
async def test_a_config_error_names_the_flag_not_the_contracts_field(
    edge: Edge, tmp_path: Path, args: tuple[str, ...], said: str
):
    # "open.voice must be one of ...": the contract's name, which no flag of the command has.
    args = tuple(str(tmp_path / "x.wav") if a == "OUT" else a for a in args)
    run = await run_voxwire(*args, "--url", edge.ws, key=edge.key)
    assert_one_clean_line(run)
    assert said in run.err and "open." not in run.err and "config." not in run.err, run.err


async def test_version() -> None:
    run = await run_voxwire("--version", key=None)
    assert run.status == 0 and run.out.startswith("voxwire ") and run.out.strip() != "voxwire"


async def test_a_file_that_is_not_audio_is_named(edge: Edge, tmp_path: Path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    run = await run_voxwire("transcribe", str(text), "--url", edge.ws, key=edge.key)
    assert_one_clean_line(run)
    assert f"{text}: not an audio file" in run.err


async def test_a_file_at_a_rate_below_4_khz_is_refused_before_anything_is_sent(
    edge: Edge, tmp_path: Path
):
    # A header declaring 2 Hz was resampled up to 8 kHz: 4,000 times the audio, sent.
    low = tmp_path / "low.wav"
    soundfile.write(low, [0.0] * 64, 2, subtype="PCM_16")
    run = await run_voxwire("transcribe", str(low), "--url", edge.ws, key=edge.key)
    assert_one_clean_line(run)
    assert f"{low}: the audio's sample rate is 2 Hz" in run.err, run.err


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--rate", "8000"), "--rate says 8000"),
        (("--encoding", "mulaw"), "--encoding says mulaw"),
        (("--channels", "2"), "--channels says 2"),
    ],
)
async def test_format_flags_that_contradict_the_file_are_a_usage_error(
    edge: Edge, tmp_path: Path, flags: tuple[str, ...], said: str
):
    # They were silently ignored for a file (the file's own format was sent), while a WAV on
    # stdin was checked: a 16 kHz file with --rate 8000 was transcribed with no word of it.
    flac = tmp_path / "pay_bill.flac"
    samples, rate = soundfile.read(PAY_BILL, dtype="int16")
    soundfile.write(flac, samples, rate)
    run = await run_voxwire("transcribe", str(flac), *flags, "--url", edge.ws, key=edge.key)
    assert_one_clean_line(run, status=2)
    assert f"{flac} is FLAC of PCM_16 at {rate} Hz, 1 channel(s), but {said}" in run.err


async def test_format_flags_that_agree_with_the_file_are_taken(edge: Edge):
    run = await run_voxwire(
        "transcribe",
        PAY_BILL,
        *("--encoding", "pcm_s16le", "--rate", "16000", "--channels", "1"),
        *("--url", edge.ws),
        key=edge.key,
    )
    assert run.status == 0, run.err
    assert run.out.strip(), run.err


def _cut_flac(tmp_path: Path, fraction: float) -> tuple[Path, float]:
    """call_me_back.wav as FLAC, its bytes cut at ``fraction``; and the whole's seconds."""
    samples, rate = soundfile.read(SPEECH_DIR / "call_me_back.wav", dtype="int16")
    whole = tmp_path / "whole.flac"
    soundfile.write(whole, samples, rate)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * fraction)])
    return cut, len(samples) / rate


async def test_a_flac_cut_short_prints_what_was_heard_then_says_where_it_stopped(
    edge: Edge, tmp_path: Path
):
    # The cut frame made libFLAC lose sync: the CLI died with "LibsndfileError: Error : flac
    # decoder lost sync." and printed nothing, though the audio before the cut had decoded.
    cut, seconds = _cut_flac(tmp_path, 0.75)
    run = await run_voxwire("transcribe", str(cut), "--url", edge.ws, key=edge.key)
    assert run.status == 1, run.err
    assert run.out.strip(), "the words before the cut are printed"
    assert len(run.err.strip().splitlines()) == 1, run.err
    assert f"{cut}: cannot decode past " in run.err and "cut short or damaged" in run.err
    assert f"of {seconds:.2f} s" in run.err
    for noise in ("Traceback", "LibsndfileError"):
        assert noise not in run.err, run.err


def _stopped_at(err: str) -> float:
    return float(err.split("cannot decode past ", 1)[1].split(" s of ", 1)[0])


async def test_a_flac_cut_inside_its_first_read_still_sends_what_decodes(
    edge: Edge, tmp_path: Path
):
    # The CLI reads a second at a time, and libsndfile returns nothing of a read that fails:
    # a file cut 0.7 s in was "cannot decode it" with nothing sent, where the gateway's upload
    # path (100 ms blocks) transcribes the 0.7 s. The CLI reads such a second again in 100 ms
    # blocks.
    cut, _ = _cut_flac(tmp_path, 0.25)
    run = await run_voxwire("transcribe", str(cut), "--url", edge.ws, key=edge.key)
    assert run.status == 1, run.err
    assert f"{cut}: cannot decode past " in run.err, run.err
    assert 0.3 < _stopped_at(run.err) < 1.0, run.err


# -- speak's output ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["/nonexistent/x.wav", "/proc/x.wav", "DIR"])
async def test_speak_checks_its_output_before_synthesizing(tmp_path: Path, where: str):
    output = str(tmp_path) if where == "DIR" else where
    # No gateway listens on this URL: a failure about the output proves it came first.
    run = await run_voxwire(
        "speak", "Hello", "-o", output, "--url", f"ws://127.0.0.1:{free_port()}", key="k"
    )
    assert_one_clean_line(run)
    assert f"{output}: cannot write" in run.err
    assert "gateway" not in run.err


@pytest.mark.parametrize(
    ("name", "rate", "said"),
    [("x.m4a", "16000", "cannot write .m4a audio"), ("x.opus", "22050", "pass --rate 24000")],
)
async def test_speak_refuses_an_output_format_it_cannot_write_before_synthesizing(
    tmp_path: Path, name: str, rate: str, said: str
):
    output = tmp_path / name
    run = await run_voxwire(
        "speak", "Hello", "-o", str(output), "--rate", rate,
        "--url", f"ws://127.0.0.1:{free_port()}", key="k",
    )  # fmt: skip
    assert_one_clean_line(run)
    assert said in run.err and "gateway" not in run.err, run.err
    assert not output.exists()


@pytest.mark.parametrize(
    ("head", "flags", "status", "said"),
    [
        (b"\x00\x01" * 100, (), 2, "raw samples (no header): for raw samples give --encoding"),
        (bytes.fromhex("1a45dfa39f4286810142f781"), (), 1, "a WebM file"),
        # Flags make no raw samples of a file of a kind libsndfile cannot read.
        (bytes.fromhex("1a45dfa39f4286810142f781"), ("--encoding", "mulaw", "--rate", "8000"),
         1, "cannot decode"),
    ],
)  # fmt: skip
async def test_transcribe_says_what_a_file_it_cannot_read_is(
    tmp_path: Path, head: bytes, flags: tuple[str, ...], status: int, said: str
):
    path = tmp_path / ("x.raw" if status == 2 else "x.webm")
    path.write_bytes(head + bytes(4000))
    run = await run_voxwire(
        "transcribe", str(path), *flags, "--url", f"ws://127.0.0.1:{free_port()}", key="k"
    )
    assert_one_clean_line(run, status)
    assert said in run.err and "gateway" not in run.err, run.err


async def test_a_failed_speak_leaves_no_file_and_an_existing_one_as_it_was(tmp_path: Path):
    url = f"ws://127.0.0.1:{free_port()}"
    new = tmp_path / "new.wav"
    run = await run_voxwire("speak", "Hello", "-o", str(new), "--url", url, key="k")
    assert run.status == 1 and "no gateway could be reached" in run.err, run.err
    assert not new.exists()
    old = tmp_path / "old.wav"
    old.write_bytes(b"what was there before")
    run = await run_voxwire("speak", "Hello", "-o", str(old), "--url", url, key="k")
    assert run.status == 1, run.err
    assert old.read_bytes() == b"what was there before"


# -- unreachable gateways ------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes TCP connections (the kernel's backlog) and never answers them."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


async def test_a_first_connect_that_fails_says_no_gateway_could_be_reached():
    urls = [f"ws://127.0.0.1:{free_port()}", f"ws://127.0.0.1:{free_port()}"]
    run = await run_voxwire(
        "transcribe", PAY_BILL, "--url", urls[0], "--url", urls[1], key="k", timeout_s=30
    )
    assert run.status == 1, run.err
    assert len(run.err.strip().splitlines()) == 1, run.err
    assert "no gateway could be reached" in run.err
    assert all(url in run.err for url in urls)
    assert "Connect call failed" in run.err  # the last error
    assert "took the session back" not in run.err  # resume wording, on a first connect
    assert run.seconds < 6.0 + 4.0  # the documented 6 s, and the interpreter starting up


async def test_a_gateway_that_never_answers_is_given_up_on_after_connect_timeout(
    silent_port: int,
):
    url = f"ws://127.0.0.1:{silent_port}"
    began = asyncio.get_running_loop().time()
    run = await run_voxwire(
        "speak", "Hello", "-o", "/dev/null", "--url", url, "--connect-timeout", "2", key="k"
    )
    assert run.status == 1, run.err
    assert "no gateway could be reached" in run.err and url in run.err
    assert "2 s" in run.err
    assert asyncio.get_running_loop().time() - began < 2.0 + 3.0


async def test_transcribe_keeps_to_connect_timeout_asking_capabilities_first(silent_port: int):
    # transcribe asks the gateway's capabilities (up to 2 s) before its session: that wait
    # counts against --connect-timeout, not on top of it.
    url = f"ws://127.0.0.1:{silent_port}"
    began = asyncio.get_running_loop().time()
    run = await run_voxwire("transcribe", PAY_BILL, "--url", url, "--connect-timeout", "2", key="k")
    assert run.status == 1, run.err
    assert "no gateway could be reached" in run.err and "within 2 s" in run.err, run.err
    # 2 s and the process's start (4.4 s when the two waits added up).
    assert asyncio.get_running_loop().time() - began < 2.0 + 1.6


async def test_a_reader_that_goes_away_is_not_an_error(edge: Edge):
    # `voxwire transcribe --json | head -1` printed "error: BrokenPipeError: ..." when head
    # left: the reader's choice, not a failure to report.
    import os
    import shlex

    from tests.client.cli_process import VOXWIRE

    command = shlex.join(
        [VOXWIRE, "transcribe", str(SPEECH_DIR / "pay_bill.wav"), "--json", "--url", edge.ws]
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f"{command} | head -1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VOXWIRE_API_KEY": edge.key},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert len(out.decode().splitlines()) == 1, out
    assert not err.strip(), err.decode()


async def test_a_servers_field_the_message_does_not_name_follows_it_under_its_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "rates [16000] only", from a server that does not resample, said nothing of --rate
    # (before voxwire speak resampled such rates itself, its own refusal said this).
    from voxwire import errors
    from voxwire.cli.common import fail

    refusal = errors.UnsupportedSampleRate(
        "rates [16000] only",
        violations=[errors.Violation("open.output_format.sample_rate_hz", "[16000]")],
    )
    assert fail("speak", refusal) == 1
    said = capsys.readouterr().err.strip()
    assert (
        said
        == "voxwire speak: error: UNSUPPORTED_SAMPLE_RATE: rates [16000] only (--rate: [16000])"
    )
    named = errors.UnknownModel(
        "no model 'x' (open.model)", violations=[errors.Violation("open.model", "unknown")]
    )
    fail("speak", named)
    assert capsys.readouterr().err.strip().endswith("no model 'x' (--model)")  # said once


@pytest.mark.parametrize("key", [None, "", "  "])
@pytest.mark.parametrize("command", ["speak", "transcribe"])
async def test_no_api_key_is_one_line_and_status_2(command: str, key: str | None):
    # `export VOXWIRE_API_KEY=$(cat out/dev.key)` in another directory sets it empty: the empty
    # key went on to the gateway, a second error line (UNAUTHENTICATED) and status 1.
    args = ("Hi", "-o", "/dev/null") if command == "speak" else (PAY_BILL,)
    url = f"ws://127.0.0.1:{free_port()}"
    run = await run_voxwire(command, *args, "--url", url, key=key)
    assert_one_clean_line(run, 2)
    assert "no API key: pass --key or set $VOXWIRE_API_KEY" in run.err, run.err


@pytest.mark.parametrize(
    ("args", "closed", "said"),
    [
        (("transcribe", PAY_BILL), ">&-", "stdout is closed: nowhere to write"),
        (("transcribe", "-", "--encoding", "mulaw", "--rate", "8000"), "<&-", "stdin is closed"),
        (("speak", "-", "-o", "/dev/null"), "<&-", "stdin is closed: nothing to read"),
        (("speak", "Hi", "-o", "-"), ">&-", "stdout is closed: nowhere to write"),
    ],
)
async def test_a_closed_standard_stream_is_one_line_and_status_2(args, closed, said):
    # A transcript printed to a closed stdout was lost with status 0 (Python makes the stream
    # None, and print writes nothing to None); speak ended in a traceback either way.
    url = f"ws://127.0.0.1:{free_port()}"
    command = " ".join(shlex.quote(a) for a in (VOXWIRE, *args, "--url", url))
    process = await asyncio.create_subprocess_shell(
        f"{command} {closed}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"VOXWIRE_API_KEY": "k", "PATH": "/usr/bin:/bin"},
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 2, err
    text = err.decode()
    assert said in text and len(text.strip().splitlines()) == 1, text


@pytest.mark.parametrize("command", [("speak", "Hi", "-o", "/dev/null"), ("transcribe", PAY_BILL)])
async def test_a_gateway_url_that_is_not_ws_is_a_wrong_command_line(command):
    run = await run_voxwire(*command, "--url", "http://127.0.0.1:8080", key="k")
    assert run.status == 2, run.err
    assert "a gateway URL starts with ws:// or wss://" in run.err, run.err
    assert "ValueError" not in run.err and "Traceback" not in run.err, run.err


@pytest.mark.parametrize("rate", ["0", "-8000", "8k"])
async def test_a_rate_that_is_no_rate_is_a_wrong_command_line(rate: str):
    run = await run_voxwire(
        "transcribe", "-", "--encoding", "mulaw", f"--rate={rate}", "--url", "ws://127.0.0.1:1",
        key="k", stdin=bytes(800),
    )  # fmt: skip
    assert run.status == 2, run.err
    assert "--rate" in run.err and "Traceback" not in run.err, run.err


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
async def test_a_flac_or_mp3_given_as_a_pipe_says_to_save_it_first(
    tmp_path: Path, fmt: str, subtype: str
):
    # `voxwire transcribe <(cat x.flac)`, as stdin's own refusal suggested: a FLAC "lost sync"
    # and was called "not an audio file libsndfile reads"; an MP3 dropped words.
    samples, rate = soundfile.read(PAY_BILL, dtype="int16")
    path = tmp_path / f"x.{fmt.lower()}"
    soundfile.write(path, samples, rate, format=fmt, subtype=subtype)
    command = (
        f"{shlex.quote(VOXWIRE)} transcribe <(cat {shlex.quote(str(path))}) --url ws://127.0.0.1:1"
    )
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"VOXWIRE_API_KEY": "k", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 2, err
    assert b"is a pipe" in err and b"save it to a file" in err, err
