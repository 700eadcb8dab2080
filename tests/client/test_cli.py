"""The ``voxwire`` console script's transcribe, speak and gateway commands, each run as a
subprocess against the session's real gateway."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from inference_adapter.server import AdapterServer
from tests.client.cli_process import VOXWIRE, voxwire
from tests.client.helpers import assert_heard
from tests.helpers.edge import Edge
from tests.helpers.gateway_process import start_gateway, write_config
from tests.helpers.speech_fixtures import SPEECH_DIR
from tests.helpers.wavio import read_wav

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_transcribe_prints_one_line_per_final_result(edge: Edge):
    status, out, err = await voxwire(
        "transcribe", str(SPEECH_DIR / "call_me_back.wav"), "--url", edge.ws, key=edge.key
    )
    assert status == 0, err
    (line,) = out.splitlines()
    assert_heard(line, "call_me_back.wav")


async def test_a_wav_file_is_held_to_its_own_header(edge: Edge, tmp_path: Path):
    # A data size of 0 (a recorder stopped before it patched its header): libsndfile read no
    # samples, "held no audio", status 0. A data chunk shorter than its declared size: the
    # transcript came, status 0, no word of the cut (on stdin: status 1, saying so).
    whole = (SPEECH_DIR / "call_me_back.wav").read_bytes()
    at = whole.index(b"data") + 4
    size = int.from_bytes(whole[at : at + 4], "little")
    zero = tmp_path / "zero_size.wav"
    zero.write_bytes(whole[:at] + bytes(4) + whole[at + 4 :])
    status, out, err = await voxwire("transcribe", str(zero), "--url", edge.ws, key=edge.key)
    assert status == 0, err
    assert_heard(out.strip(), "call_me_back.wav")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[:at] + (2 * size).to_bytes(4, "little") + whole[at + 4 :])
    status, out, err = await voxwire("transcribe", str(cut), "--url", edge.ws, key=edge.key)
    assert status == 1, err
    assert_heard(out.strip(), "call_me_back.wav")  # what was there was heard
    assert "its WAV header declares" in err and "it is cut short" in err, err


async def test_transcribe_json_prints_every_event_in_the_wire_schema(edge: Edge):
    status, out, err = await voxwire(
        "transcribe", str(SPEECH_DIR / "pay_bill.wav"), "--json", "--url", edge.ws, key=edge.key
    )
    assert status == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert list(events[0]) == ["started"] and list(events[-1]) == ["summary"]
    finals = [e["result"] for e in events if e.get("result", {}).get("isFinal")]
    assert_heard(" ".join(f["transcript"] for f in finals), "pay_bill.wav")
    assert finals[0]["words"]  # --json asks for word timings
    assert any("result" in e and not e["result"].get("isFinal") for e in events)  # interims


async def test_transcribe_reads_flac_and_raw_stdin(edge: Edge, tmp_path: Path):
    pcm, rate = read_wav(SPEECH_DIR / "kitchen_lights.wav")
    flac = tmp_path / "kitchen.flac"
    soundfile.write(flac, pcm, rate)
    status, out, err = await voxwire("transcribe", str(flac), "--url", edge.ws, key=edge.key)
    assert status == 0, err
    assert_heard(out.strip(), "kitchen_lights.wav")
    status, out, err = await voxwire(
        "transcribe",
        "-",
        "--encoding",
        "pcm_s16le",
        "--rate",
        str(rate),
        "--url",
        edge.ws,
        key=edge.key,
        stdin=pcm.tobytes(),
    )
    assert status == 0, err
    assert_heard(out.strip(), "kitchen_lights.wav")


@pytest.mark.parametrize("name", ["kitchen.raw", "kitchen.ulaw"])
async def test_transcribe_reads_a_raw_file_in_the_format_its_flags_give(
    edge: Edge, tmp_path: Path, name: str
):
    # A .raw file was "TypeError: samplerate must be specified", flags or not; another name
    # "not an audio file libsndfile reads": raw samples went only through stdin.
    pcm, rate = read_wav(SPEECH_DIR / "kitchen_lights.wav")
    path = tmp_path / name
    if name.endswith(".ulaw"):
        soundfile.write(path, pcm, rate, format="RAW", subtype="ULAW")
        encoding = "mulaw"
    else:
        path.write_bytes(pcm.tobytes())
        encoding = "pcm_s16le"
    status, out, err = await voxwire(
        "transcribe", str(path), "--encoding", encoding, "--rate", str(rate),
        "--url", edge.ws, key=edge.key,
    )  # fmt: skip
    assert status == 0, err
    assert_heard(out.strip(), "kitchen_lights.wav")


async def test_transcribe_realtime_takes_the_audio_duration(edge: Edge):
    loop = asyncio.get_running_loop()
    began = loop.time()
    status, out, err = await voxwire(
        "transcribe", str(SPEECH_DIR / "pay_bill.wav"), "--realtime", "--url", edge.ws, key=edge.key
    )
    assert status == 0, err
    assert loop.time() - began >= 2.0  # the file is 2.01 s long, sent at real time
    assert_heard(out.strip(), "pay_bill.wav")


async def test_ctrl_c_finishes_the_transcript_of_the_audio_sent(edge: Edge):
    # Ctrl-C in the middle of a sentence ended the command with nothing printed: the words
    # sent since the last final were dropped (a live source, `arecord | voxwire transcribe -`,
    # lost its last sentence). Now the audio stops there and the session closes, so what was
    # said so far comes out as a final result; the exit status is still 130.
    process = await asyncio.create_subprocess_exec(
        VOXWIRE,
        "transcribe",
        str(SPEECH_DIR / "call_me_back.wav"),
        "--realtime",
        "--json",
        "--url",
        edge.ws,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"VOXWIRE_API_KEY": edge.key, "PATH": "/usr/bin:/bin"},
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        # The first interim result: the session is up and the audio flowing (a loaded machine
        # may take seconds to get there); then into the sentence, and Ctrl-C.
        while "result" not in json.loads(await process.stdout.readline()):
            pass
        await asyncio.sleep(0.8)
        process.send_signal(signal.SIGINT)
        out, err = await process.communicate()
    assert process.returncode == 130, err
    assert "stopping" in err.decode() and "Traceback" not in err.decode(), err
    finals = [
        e["result"]["transcript"]
        for e in map(json.loads, out.decode().splitlines())
        if e.get("result", {}).get("isFinal")
    ]
    assert finals and finals[0].split()[:2] == ["please", "call"], finals  # its last word cut
    assert "nine" not in finals[0], finals  # "... tomorrow morning at nine": not all sent


async def test_ctrl_c_stops_at_once_while_stdin_gives_nothing(edge: Edge):
    # Stdin's writer has sent a sentence and then stalls, the pipe open. Ctrl-C was held until
    # stdin's next bytes came (35 s for a 35 s stall), and the stop's grace began only then.
    pcm, _ = read_wav(SPEECH_DIR / "call_me_back.wav")
    process = await asyncio.create_subprocess_exec(
        VOXWIRE, "transcribe", "-", "--encoding", "pcm_s16le", "--rate", "16000",
        "--url", edge.ws,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"VOXWIRE_API_KEY": edge.key, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert process.stdin is not None
    try:
        process.stdin.write(pcm.tobytes())
        await process.stdin.drain()
        await asyncio.sleep(1.5)  # the audio is sent; stdin stays open and silent
        process.send_signal(signal.SIGINT)
        began = time.monotonic()
        assert process.stdout is not None and process.stderr is not None
        async with asyncio.timeout(30):  # stdin still open (communicate would close it)
            out, err, _ = await asyncio.gather(
                process.stdout.read(), process.stderr.read(), process.wait()
            )
        took = time.monotonic() - began
    finally:
        process.stdin.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, err
    assert took < 10, took  # the transcript of what was sent, then the end
    assert_heard(out.decode().strip(), "call_me_back.wav")


async def test_errors_are_one_line_with_the_reason_and_status_1(edge: Edge):
    status, out, err = await voxwire(
        "transcribe", str(SPEECH_DIR / "pay_bill.wav"), "--url", edge.ws, key="vx_bad_" + "x" * 43
    )
    assert status == 1 and "UNAUTHENTICATED" in err and not out
    status, _, err = await voxwire("transcribe", "x.wav", "--url", edge.ws, key=None)
    assert status == 2 and "VOXWIRE_API_KEY" in err


async def test_speak_writes_a_wav_of_the_spoken_text(edge: Edge, tmp_path: Path):
    out_path = tmp_path / "hello.wav"
    status, _, err = await voxwire(
        "speak",
        "Hello from the voxwire command line.",
        "-o",
        str(out_path),
        "--rate",
        "16000",
        "--words",
        "--url",
        edge.ws,
        key=edge.key,
    )
    assert status == 0, err
    # stderr is a pipe here: the word lines and the summary, no empty line from the spinner.
    assert "" not in err.splitlines() and err.splitlines()[-1].startswith("wrote "), err
    with wave.open(str(out_path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert len(samples) > 16000  # over a second of speech
    assert np.abs(samples).max() > 1000  # not silence
    assert "voxwire" in err.lower()  # the word timings


@pytest.mark.parametrize(
    ("name", "rate", "kind"),
    [("hello.flac", "16000", "FLAC"), ("hello.mp3", "16000", "MP3"), ("hello.opus", "", "OGG")],
)
async def test_speak_writes_the_format_its_output_is_named_for(
    edge: Edge, tmp_path: Path, name: str, rate: str, kind: str
):
    # `voxwire speak ... -o out.mp3` wrote a WAV named out.mp3.
    path = tmp_path / name
    args = ("--rate", rate) if rate else ()  # .opus: 24 kHz unless told (Opus has no 22.05)
    status, _, err = await voxwire(
        "speak", "Hello from the command line.", "-o", str(path), *args, "--url", edge.ws,
        key=edge.key,
    )  # fmt: skip
    assert status == 0, err
    info = soundfile.info(str(path))
    assert info.format == kind and info.channels == 1, info
    assert info.samplerate == (int(rate) if rate else 24000), info
    samples, _ = soundfile.read(str(path), dtype="float32")
    assert len(samples) / info.samplerate > 1.0 and np.abs(samples).max() > 0.03


@pytest.mark.parametrize(("name", "subtype"), [("prompt.mulaw", "ULAW"), ("prompt.alaw", "ALAW")])
async def test_speak_writes_a_phone_prompt_in_g711(
    edge: Edge, tmp_path: Path, name: str, subtype: str
):
    # `-o prompt.mulaw` wrote a 16-bit PCM WAV under a mu-law name (the project's own
    # telephony fixtures are .mulaw), and `.ulaw` / `.alaw` were refused.
    path = tmp_path / name
    status, _, err = await voxwire(
        "speak", "Hello from the command line.", "-o", str(path), "--url", edge.ws,
        key=edge.key,
    )  # fmt: skip
    assert status == 0, err
    assert not path.read_bytes().startswith(b"RIFF")  # headerless, as G.711 prompts are
    samples, _ = soundfile.read(
        str(path), samplerate=8000, channels=1, format="RAW", subtype=subtype, dtype="float32"
    )
    assert len(samples) / 8000 > 1.0 and np.abs(samples).max() > 0.03


async def _speak_seconds(edge: Edge, path: Path, *args: str) -> tuple[int, str, float]:
    status, _, err = await voxwire(
        "speak", *args, "-o", str(path), "--rate", "16000", "--url", edge.ws, key=edge.key
    )
    if status:
        return status, err, 0.0
    with wave.open(str(path)) as wav:
        return status, err, wav.getnframes() / wav.getframerate()


async def test_speak_sends_a_speak_document_as_ssml(edge: Edge, tmp_path: Path):
    # Before, the CLI had no way to ask for SSML: a <speak> document was read out as words.
    ssml = '<speak>Hello <break time="1500ms"/> there.</speak>'
    status, err, plain_s = await _speak_seconds(edge, tmp_path / "a.wav", "Hello there.")
    assert status == 0, err
    status, err, ssml_s = await _speak_seconds(edge, tmp_path / "b.wav", ssml)
    assert status == 0, err
    assert 1.3 < ssml_s - plain_s < 2.0, (plain_s, ssml_s)  # the break, not words
    status, err, _ = await _speak_seconds(edge, tmp_path / "c.wav", "<speak>Hello")
    assert status == 1 and "SSML_INVALID" in err, err
    # --format text speaks markup as written; --format ssml insists.
    status, err, _ = await _speak_seconds(edge, tmp_path / "d.wav", "--format", "text", "<speak>Hi")
    assert status == 0, err
    status, err, _ = await _speak_seconds(edge, tmp_path / "e.wav", "--format", "ssml", "Hi <b")
    assert status == 1 and "SSML_INVALID" in err, err


async def test_an_ssml_document_with_a_byte_order_mark_is_ssml_not_words(
    edge: Edge, tmp_path: Path
):
    # A Windows editor saves a byte order mark before "<speak>": the document was not known
    # as one, and its markup was read out ("speak Hello / speak").
    document = '<speak>Hello <break time="1500ms"/> there.</speak>'
    times = []
    for name, text in (("plain.wav", "\ufeffHello there."), ("bom.wav", "\ufeff" + document)):
        path = tmp_path / name
        status, _, err = await voxwire(
            "speak", "-", "-o", str(path), "--rate", "16000", "--url", edge.ws,
            key=edge.key, stdin=text.encode(),
        )  # fmt: skip
        assert status == 0, err
        with wave.open(str(path)) as wav:
            times.append(wav.getnframes() / wav.getframerate())
    assert 1.3 < times[1] - times[0] < 2.0, times  # the break, not markup read out


async def test_speak_to_dash_writes_the_wav_to_stdout(edge: Edge):
    # -o - made a file named "-" in the working directory, and nothing reached the pipe.
    import io

    from tests.client.cli_process import run_voxwire

    outcome = await run_voxwire(
        "speak", "Hello there.", "-o", "-", "--rate", "16000", "--url", edge.ws, key=edge.key
    )
    assert outcome.status == 0, outcome.err
    assert not await asyncio.to_thread(Path("-").exists)
    said = outcome.err.splitlines()[-1]
    assert said.startswith("wrote stdout ("), outcome.err
    with wave.open(io.BytesIO(outcome.stdout)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
    # A pipe gets a streaming header (sizes unknown: the audio goes out as it comes), then
    # every sample the command counted.
    assert outcome.stdout[4:8] == outcome.stdout[40:44] == b"\xff\xff\xff\xff"
    seconds = float(said.split("(")[1].split()[0])
    assert abs((len(outcome.stdout) - 44) / 32000 - seconds) < 0.01 and seconds > 0.5


async def _speak_pipes(edge: Edge, *args: str) -> asyncio.subprocess.Process:
    """``voxwire speak - -o - ARGS`` with pipes for stdin, stdout and stderr."""
    import os

    return await asyncio.create_subprocess_exec(
        VOXWIRE, "speak", "-", "-o", "-", *args, "--url", edge.ws,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VOXWIRE_API_KEY": edge.key},
    )  # fmt: skip


async def test_speak_to_a_pipe_sends_the_audio_as_it_comes(edge: Edge):
    # Before, a pipe (-o - | aplay) got the WAV only once the whole text was synthesized: a
    # long text's first audio came when its last did.
    sentence = "Please call me back tomorrow morning at nine, and send me the details. "
    process = await _speak_pipes(edge)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write((sentence * 60).encode())
    process.stdin.close()
    began = time.monotonic()
    arrivals: list[tuple[float, int]] = []  # (when, bytes so far)
    total = 0
    try:
        async with asyncio.timeout(120):
            while block := await process.stdout.read(65536):
                total += len(block)
                arrivals.append((time.monotonic() - began, total))
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    first = next(t for t, n in arrivals if n > 44 + 32_000)  # a second of audio
    last = arrivals[-1][0]
    assert total > 44 + 100 * 44_100  # over 100 s of speech at 22,050 Hz
    # The audio came over the synthesis, not in one burst at its end.
    assert last - first > 0.5 * last, (first, last)


async def test_speak_from_a_pipe_speaks_the_text_as_it_comes(edge: Edge):
    # `llm ... | voxwire speak - -o - | aplay`: stdin was read to its end before anything was
    # sent, so nothing was heard until the writer had finished. Now its text goes as it comes.
    process = await _speak_pipes(edge, "--rate", "16000")
    assert process.stdin is not None and process.stdout is not None
    try:
        async with asyncio.timeout(30):
            process.stdin.write(b"Please call me back tomorrow morning at nine. ")
            await process.stdin.drain()
            # A second of the first sentence's audio, while the rest of the text is unwritten.
            heard = b""
            while len(heard) < 44 + 32_000:
                heard += await process.stdout.read(65536) or b"!"
                assert not heard.endswith(b"!"), "stdout ended"
            process.stdin.write("And send me the details, café.".encode())
            process.stdin.close()
            rest, err = await asyncio.gather(process.stdout.read(), process.stderr.read())
            assert await process.wait() == 0, err
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    seconds = (len(heard) + len(rest) - 44) / 32_000
    assert f"({seconds:.2f} s)" in err.decode(), (seconds, err)
    assert seconds > 3.5  # both sentences


# The command run as the console script runs it, printing its own peak RSS (KiB) at exit.
_MAXRSS = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
    " file=sys.stderr))\n"
    "from voxwire.cli import main\n"
    "sys.argv[0] = 'voxwire'\n"
    "sys.exit(main())\n"
)


async def _speak_peak_kib(edge: Edge, text: str, path: Path) -> tuple[int, str]:
    import sys

    from tests.client.cli_process import run_voxwire

    run = await run_voxwire(
        "speak", "-", "-o", str(path), "--rate", "48000", "--url", edge.ws,
        key=edge.key,
        stdin=text.encode(),
        timeout_s=120,
        command=(sys.executable, "-c", _MAXRSS),
    )  # fmt: skip
    assert run.status == 0, run.err
    lines = run.err.splitlines()
    return int(lines[-1].split()[1]), lines[-2]


async def test_speak_memory_stays_flat_however_long_the_text(edge: Edge, tmp_path: Path):
    # Before, the audio was kept in memory until the end, about 5 times over (the parts, their
    # join, wave's copy): 595 s of speech took the command from 82 to 221 MB.
    sentence = "Please call me back tomorrow morning at nine, and send me the details. "
    short_kib, _ = await _speak_peak_kib(edge, sentence, tmp_path / "short.wav")
    long_kib, said = await _speak_peak_kib(edge, sentence * 60, tmp_path / "long.wav")
    seconds = float(said.split("(")[1].split()[0])
    with wave.open(str(tmp_path / "long.wav")) as wav:
        assert abs(wav.getnframes() / 48000 - seconds) < 0.01  # the header names all the audio
        audio_mib = wav.getnframes() * 2 / 2**20
    assert audio_mib > 15, said  # well above what the spool holds (a batch, 1 MiB)
    grown_mib = (long_kib - short_kib) / 1024
    assert grown_mib < 8, f"{grown_mib:.1f} MiB more for {audio_mib:.1f} MiB of audio"


async def test_voxwire_gateway_runs_the_gateway_and_drains_on_sigterm(
    edge: Edge, edge_adapter: AdapterServer, tmp_path: Path
):
    config = write_config(tmp_path / "gw.toml", edge, edge_adapter.address, drain_grace_s=1.0)
    process = await start_gateway(config, tmp_path / "gw.log", command=(VOXWIRE, "gateway"))
    try:
        status, out, err = await voxwire(
            "transcribe", str(SPEECH_DIR / "pay_bill.wav"), "--url", process.ws, key=edge.key
        )
        assert status == 0, err
        assert_heard(out.strip(), "pay_bill.wav")
        process.signal(signal.SIGTERM)
        assert await process.wait(10.0) == 0
    finally:
        await process.stop()
