"""Telephony audio: word error rate of 8 kHz G.711 speech against the same speech at 16 kHz.

The speech fixtures (``tests/fixtures/speech``: 16 kHz PCM16 WAVs of flite speech) and their
phone-band versions (``tests/fixtures/speech/telephony``: band-limited to 300-3400 Hz,
resampled to 8 kHz, G.711 mu-law and A-law; ``make_telephony.py``) are streamed through the
real adapter and Triton (``stt_pocketsphinx``), one file after another, as the adapter's
accuracy acceptance test does; files in ``wer_exempt.json`` are left out. The adapter takes the
8 kHz streams to the model's native 16 kHz with its soxr resampler (docs/contract.md, "Audio").

    python -m benchmarks.telephony [--repeats 2] [--json out/bench/telephony.json]
        [--write-md BENCHMARKS.md]

Each repeat runs the three sets in an order rotated per repeat, and each set twice in a row.
Until 2026-11-30 the model's pooled decoders carried their cepstral mean (CMN) from one stream
to the next, so a set's first pass decoded against the other band's mean; now every sequence
starts from its own band's prior (the adapter passes the client's rate; stt_engine.DecoderPool)
and the two passes, and every order, must read the same: the table shows whether they do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc

from loadtest.wer import word_error_rate
from localstack.client import read_wav, transcribe, transcript
from voxwire.v1 import audio_pb2

REPO = Path(__file__).resolve().parent.parent
SPEECH_DIR = REPO / "tests" / "fixtures" / "speech"
TELEPHONY_DIR = SPEECH_DIR / "telephony"
MODEL = "stt_pocketsphinx"
BEGIN, END = "<!-- telephony:begin -->", "<!-- telephony:end -->"


@dataclass(frozen=True, slots=True)
class AudioSet:
    """One way to send the fixtures: a label, the wire format and where each file's bytes are."""

    label: str
    encoding: audio_pb2.AudioEncoding.ValueType
    rate_hz: int
    suffix: str  # "" for the 16 kHz WAVs, else the telephony file suffix

    @property
    def format(self) -> audio_pb2.AudioFormat:
        return audio_pb2.AudioFormat(
            encoding=self.encoding, sample_rate_hz=self.rate_hz, channels=1
        )

    def audio(self, name: str) -> bytes:
        """The wire bytes of fixture ``name`` (a WAV name of transcripts.json).

        Raises:
            OSError: the file is missing.
            ValueError: a WAV that is not 16-bit mono.
        """
        if not self.suffix:
            pcm, rate = read_wav(SPEECH_DIR / name)
            if rate != self.rate_hz:
                raise ValueError(f"{name}: {rate} Hz, expected {self.rate_hz}")
            return pcm
        return (TELEPHONY_DIR / f"{Path(name).stem}.{self.suffix}").read_bytes()


WIDEBAND = AudioSet("PCM16 16 kHz", audio_pb2.AUDIO_ENCODING_PCM_S16LE, 16000, "")
MULAW = AudioSet("mu-law 8 kHz", audio_pb2.AUDIO_ENCODING_MULAW, 8000, "mulaw")
ALAW = AudioSet("A-law 8 kHz", audio_pb2.AUDIO_ENCODING_ALAW, 8000, "alaw")
SETS = (WIDEBAND, MULAW, ALAW)


@dataclass(frozen=True, slots=True)
class FileResult:
    name: str
    reference: str
    hypothesis: str
    wer: float


@dataclass(frozen=True, slots=True)
class SetResult:
    label: str
    files: tuple[FileResult, ...]

    @property
    def words(self) -> int:
        return sum(len(f.reference.split()) for f in self.files)

    @property
    def wer(self) -> float:
        """Corpus WER: the files' edits over all their reference words."""
        edits = sum(f.wer * len(f.reference.split()) for f in self.files)
        return edits / self.words if self.words else 0.0


def accuracy_names() -> list[str]:
    """The fixtures the stock model is meant to decode, sorted (transcripts minus exempt)."""
    transcripts = json.loads((SPEECH_DIR / "transcripts.json").read_text())
    exempt = json.loads((SPEECH_DIR / "wer_exempt.json").read_text())
    return sorted(set(transcripts) - set(exempt))


async def measure_set(
    channel: grpc.aio.Channel,
    audio_set: AudioSet,
    names: list[str] | None = None,
    model: str = MODEL,
) -> SetResult:
    """Stream ``names`` (default: every accuracy fixture) of ``audio_set``, one after another;
    per-file WER.

    Raises:
        RuntimeError: a stream did not end OK.
        OSError, ValueError: as ``AudioSet.audio``.
    """
    transcripts = json.loads((SPEECH_DIR / "transcripts.json").read_text())
    results = []
    for name in accuracy_names() if names is None else names:
        out = await transcribe(channel, audio_set.audio(name), audio_set.format, model=model)
        if out.code != grpc.StatusCode.OK:
            raise RuntimeError(f"{audio_set.label} {name}: {out.code.name} {out.details}")
        hypothesis = transcript(out)
        reference = transcripts[name]
        results.append(
            FileResult(name, reference, hypothesis, word_error_rate(reference, hypothesis))
        )
    return SetResult(audio_set.label, tuple(results))


async def measure(address: str, repeats: int) -> dict[str, list[list[SetResult]]]:
    """``repeats`` rounds of the three sets, the order rotated each round, each set twice in
    a row: {"switched": first passes, "same_band": second passes}, each a list of rounds in
    SETS order."""
    passes: dict[str, list[list[SetResult]]] = {"switched": [], "same_band": []}
    async with grpc.aio.insecure_channel(address) as channel:
        for repeat in range(repeats):
            order = _order(repeat)
            done: dict[str, dict[str, SetResult]] = {key: {} for key in passes}
            for audio_set in order:
                for key in passes:
                    print(f"{audio_set.label}, {key} (repeat {repeat + 1})", file=sys.stderr)
                    done[key][audio_set.label] = await measure_set(channel, audio_set)
            for key, results in done.items():
                passes[key].append([results[s.label] for s in SETS])
    return passes


def _order(repeat: int) -> tuple[AudioSet, ...]:
    """The sets in the order ``measure`` runs them in ``repeat`` (0-based)."""
    shift = repeat % len(SETS)
    return SETS[shift:] + SETS[:shift]


def _before(repeat: int, label: str) -> str:
    """What ran just before the first pass of set ``label`` in ``repeat``."""
    order = [s.label for s in _order(repeat)]
    at = order.index(label)
    if at:
        return order[at - 1]
    return "a fresh Triton" if repeat == 0 else _order(repeat - 1)[-1].label


def _cell(f: FileResult) -> str:
    return f"{f.hypothesis or '(nothing)'} ({f.wer:.2f})"


def render(result: dict[str, Any]) -> str:
    """The markdown section (between BEGIN and END) for a measured result."""
    h = result["header"]
    passes = {
        key: [[_set_from_dict(s) for s in r] for r in result[key]]
        for key in ("switched", "same_band")
    }
    rounds = passes["same_band"]
    first = rounds[0]
    out = [
        BEGIN,
        "",
        "### Result (generated by `make bench-telephony` from its JSON)",
        "",
        f"- {h['date']}, commit {h['commit']}, pocketsphinx {h['pocketsphinx']}, Python "
        f"{h['python']}; `{h['command']}`",
        f"- {len(first[0].files)} files, {first[0].words} words; one stream per file, one after "
        "another, through the adapter and Triton (`stt_pocketsphinx`, the bundled 16 kHz en-us "
        "model; 8 kHz streams are resampled to 16 kHz by the adapter)",
        "",
        "Corpus WER per repeat; *first pass*: the set's first pass, after what the parentheses "
        "name (the cepstral mean it starts from); *second pass*: the same set again right "
        "after, the steady state of that band:",
        "",
        "| set | "
        + " | ".join(f"first pass, r{i + 1}" for i in range(len(rounds)))
        + " | "
        + " | ".join(f"second pass, r{i + 1}" for i in range(len(rounds)))
        + " |",
        "|---|" + "---|" * 2 * len(rounds),
    ]
    for i, audio_set in enumerate(first):
        firsts = [
            f"{r[i].wer:.3f} (after {_before(n, audio_set.label)})"
            for n, r in enumerate(passes["switched"])
        ]
        seconds = [f"{r[i].wer:.3f}" for r in passes["same_band"]]
        out.append(f"| {audio_set.label} | {' | '.join(firsts + seconds)} |")
    out += [
        "",
        "Per file, second pass, repeat 1 (hypothesis, WER):",
        "",
        "| file | reference | " + " | ".join(s.label for s in first) + " |",
        "|---|---|" + "---|" * len(first),
    ]
    for j, f in enumerate(first[0].files):
        per_set = " | ".join(_cell(s.files[j]) for s in first)
        out.append(f"| {f.name} | {f.reference} | {per_set} |")
    return "\n".join([*out, "", END])


def _set_from_dict(data: dict[str, Any]) -> SetResult:
    return SetResult(data["label"], tuple(FileResult(**f) for f in data["files"]))


def write_section(result: dict[str, Any], path: Path) -> None:
    """Replace the telephony section of ``path`` (or append one)."""
    text = path.read_text() if path.exists() else ""
    section = render(result)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def _header() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "pocketsphinx": version("pocketsphinx"),
        "python": platform.python_version(),
        "command": "python -m benchmarks.telephony " + " ".join(sys.argv[1:]),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from inference_adapter.config import AdapterConfig
    from inference_adapter.server import AdapterServer
    from localstack.triton import TritonServer, default_model_repository

    header = _header()
    log_path = args.json.parent / "telephony-triton.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    triton_server = TritonServer(default_model_repository(), models=[MODEL], log_path=log_path)
    async with triton_server as triton:
        # Accuracy, not latency: a busy machine must not fail a stream (defaults 0.35 s / 10 s).
        config = AdapterConfig(
            listen="127.0.0.1:0",
            triton_urls=(triton.grpc_url,),
            health_timeout_seconds=2.0,
            model_response_timeout_seconds=60.0,
        )
        adapter = AdapterServer(config)
        await adapter.start()
        try:
            passes = await measure(adapter.address, args.repeats)
        finally:
            await adapter.stop(grace=1.0)
    return {
        "header": header,
        **{key: [[asdict(s) for s in r] for r in rounds] for key, rounds in passes.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.telephony",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds, order rotated")
    parser.add_argument("--json", type=Path, default=Path("out/bench/telephony.json"))
    parser.add_argument("--write-md", type=Path, help="regenerate this file's telephony section")
    return parser.parse_args(argv)


def cli() -> None:
    args = parse_args()
    result = asyncio.run(main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    if args.write_md:
        write_section(result, args.write_md)
        print(f"updated {args.write_md}", file=sys.stderr)


if __name__ == "__main__":
    cli()
