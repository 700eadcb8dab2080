"""The adapter's pure per-chunk STT work, with no I/O: what its Python costs before any socket.

One audio chunk (100 ms of 16 kHz PCM) through what the adapter does to it, in one process and
no event loop: parse the client's request, ``TranscriptionSession.receive``, the Triton request
(``TranscriptionStream._tensor``), then the two Triton responses every chunk gets (an interim
and the empty final response): decode (``parse_response``), ``model_response``, serialize what
goes to the client. A fresh session every 100 chunks (so the replay window never forces a
final), the garbage-collector policy of the server processes, medians over 400 rounds.

Machine noise on the 2-core VM moves a single run by 10-40 %, so compare revisions by
alternating runs (``--rounds``): this checkout and the one given with ``--against DIR`` (e.g. a
``git worktree`` of the baseline), one after the other.

    python -m benchmarks.stt_chunk_work [--against /tmp/base] [--rounds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROUNDS_PER_RUN = 400
CHUNKS_PER_SESSION = 100


def measure() -> float:
    """Median µs per chunk over ``ROUNDS_PER_RUN`` fresh sessions."""
    import numpy as np
    from tritonclient.grpc import service_pb2

    from inference_adapter.config import Limits
    from inference_adapter.stt.config import resolve
    from inference_adapter.stt.service import TranscriptionStream
    from inference_adapter.stt.session import TranscriptionSession
    from inference_adapter.triton.catalog import ModelInfo, ModelKind
    from inference_adapter.triton.tensors import ModelResponse, encode_bytes_tensor, parse_response
    from voxwire.gc_policy import settle_after_startup
    from voxwire.v1 import audio_pb2, transcription_pb2

    model = ModelInfo(
        name="bench_stt",
        kind=ModelKind.STT,
        sample_rate_hz=16000,
        languages=("en-US",),
        features=frozenset({"interim_results", "word_timestamps"}),
        voices=(),
        benchmark=True,
        batched=True,
        sequence_slots=256,
    )
    request = transcription_pb2.StreamingTranscribeRequest
    config = transcription_pb2.TranscriptionConfig(
        model=model.name,
        interim_results=True,
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000
        ),
    )
    pcm = (np.sin(np.arange(1600) / 10) * 3000).astype("<i2").tobytes()
    chunk = request(audio=pcm).SerializeToString()

    interim = service_pb2.ModelStreamInferResponse()
    out = interim.infer_response
    out.parameters["triton_final_response"].bool_param = False
    event = {"type": "interim", "utterance": 0, "text": "the quick brown fox", "end_ms": 900}
    out.outputs.add(name="EVENTS", datatype="BYTES", shape=[1])
    out.raw_output_contents.append(encode_bytes_tensor([json.dumps(event).encode()]))
    out.outputs.add(name="COMPUTE_US", datatype="UINT64", shape=[1])
    out.raw_output_contents.append((123).to_bytes(8, "little"))
    final = service_pb2.ModelStreamInferResponse()
    final.infer_response.parameters["triton_final_response"].bool_param = True
    answers = (interim.SerializeToString(), final.SerializeToString())
    decode = service_pb2.ModelStreamInferResponse.FromString

    def session() -> tuple[TranscriptionSession, Any]:
        resolved = resolve(config, {model.name: model}, Limits(), request_id="r")
        s = TranscriptionSession(resolved, Limits(), session_id="s")
        stream: Any = TranscriptionStream.__new__(TranscriptionStream)
        stream.session, stream.sequence_id = s, 1
        with contextlib.suppress(ImportError):  # a revision before the serialized requests
            from inference_adapter.triton.tensors import SequenceRequests

            stream._requests = SequenceRequests(model.name, 1, batched=model.batched)
        tensor = stream._tensor
        tensor(s.start())
        s.model_response(ModelResponse(({"type": "ready"},), 10, None, True))
        return s, tensor

    def run() -> float:
        s, tensor = session()
        t0 = time.perf_counter()
        for _ in range(CHUNKS_PER_SESSION):
            for req in s.receive(request.FromString(chunk)).to_model:
                wire = tensor(req)
                if not isinstance(wire, bytes):  # revisions that built messages
                    wire.SerializeToString()
            for raw in answers:
                for response in s.model_response(parse_response(decode(raw))):
                    response.SerializeToString()
        return (time.perf_counter() - t0) / CHUNKS_PER_SESSION * 1e6

    settle_after_startup()
    for _ in range(20):
        run()
    return statistics.median(run() for _ in range(ROUNDS_PER_RUN))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.once:
        print(f"{measure():.2f}")
        return
    trees = {"this checkout": Path.cwd()}
    if args.against:
        trees[f"{args.against}"] = args.against
    got: dict[str, list[float]] = {name: [] for name in trees}
    here = Path(__file__).resolve()
    for _ in range(args.rounds):
        for name, tree in trees.items():
            # The script of this checkout, the modules of ``tree`` (its working directory).
            line = subprocess.run(
                [sys.executable, str(here), "--once"],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got[name].append(float(line))
    for name, values in got.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:30} µs per chunk: median {statistics.median(values):.1f} ({each})")


if __name__ == "__main__":
    main()
