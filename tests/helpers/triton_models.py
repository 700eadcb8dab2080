"""Test-only variants of the benchmark models, and probes of a Triton's sequence slots.

Variants are built in a temporary model repository from the committed ``model_repository``
(same code, a few config lines changed), so what a test proves at Triton holds for the real
configuration too.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2_grpc

from inference_adapter.triton.tensors import parse_response, stt_request
from localstack.triton import default_model_repository


def copy_model(repo: Path, name: str) -> Path:
    target = repo / name
    shutil.copytree(
        default_model_repository() / name, target, ignore=shutil.ignore_patterns("__pycache__")
    )
    return target


def bench_stt_variant(
    repo: Path, name: str, *, slots: int, idle_us: int = 120_000_000, compute_ms: int = 0
) -> None:
    """bench_stt with the direct strategy and ``slots`` sequence slots (one instance); with
    ``compute_ms``, that long per batch instead of the default."""
    target = repo / name
    shutil.copytree(repo / "bench_stt", target)
    config = (target / "config.pbtxt").read_text()
    config = config.replace('name: "bench_stt"', f'name: "{name}"')
    config = config.replace("max_batch_size: 128", f"max_batch_size: {slots}")
    config = re.sub(
        r"max_sequence_idle_microseconds: \d+", f"max_sequence_idle_microseconds: {idle_us}", config
    )
    if compute_ms:
        config, n = re.subn(
            r'key: "compute_ms" value: \{ string_value: "[0-9]+" \}',
            f'key: "compute_ms" value: {{ string_value: "{compute_ms}" }}',
            config,
        )
        assert n == 1, "bench_stt's compute_ms parameter moved"
    start = config.index("  oldest {")
    config = config[:start] + "  direct { }" + config[config.index("\n", start) :]
    (target / "config.pbtxt").write_text(config)


def bench_tts_variant(repo: Path, name: str, *, rtf: float) -> None:
    """bench_tts synthesizing at real-time factor ``rtf`` (1.0: as long as the audio lasts)."""
    target = repo / name
    shutil.copytree(repo / "bench_tts", target)
    config = (target / "config.pbtxt").read_text()
    config = config.replace('name: "bench_tts"', f'name: "{name}"')
    config = re.sub(
        r'key: "rtf" value: \{ string_value: "[0-9.]+" \}',
        f'key: "rtf" value: {{ string_value: "{rtf}" }}',
        config,
    )
    (target / "config.pbtxt").write_text(config)


def variants_repository(root: Path) -> Path:
    """The benchmark models and their test-only variants (docs in tests/inference_adapter)."""
    repo = root / "models"
    for name in ("bench_stt", "bench_tts"):
        copy_model(repo, name)
    bench_stt_variant(repo, "bench_stt_2slot", slots=2)
    bench_stt_variant(repo, "bench_stt_idle", slots=2, idle_us=300_000)
    bench_stt_variant(repo, "bench_stt_slow", slots=2, compute_ms=900)
    bench_tts_variant(repo, "bench_tts_realtime", rtf=1.0)
    return repo


async def start_latency(url: str, model: str) -> float:
    """Seconds for Triton to answer a new sequence's START (it waits while no slot is free);
    the sequence is ended again at once."""
    async with grpc.aio.insecure_channel(url) as ch:
        call = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer(timeout=30)
        seq = int.from_bytes(os.urandom(7), "big")
        t0 = time.monotonic()
        await call.write(
            stt_request(
                model, seq, np.zeros(0, np.int16), control={"config": {}}, start=True, batched=True
            )
        )
        while not parse_response(await call.read()).final:
            pass
        elapsed = time.monotonic() - t0
        await call.write(
            stt_request(model, seq, np.zeros(0, np.int16), control={"cancel": True}, end=True)
        )
        while not parse_response(await call.read()).final:
            pass
        await call.done_writing()  # Triton ends the call: no cancel (inference_adapter/triton)
        await call.code()
        return elapsed


class HeldSequence:
    """A sequence started directly at Triton and held open: it takes one slot until ``close``."""

    def __init__(self, channel: grpc.aio.Channel, model: str) -> None:
        self._model = model
        self._seq = int.from_bytes(os.urandom(7), "big")
        self._call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
            timeout=120
        )

    async def start(self) -> None:
        await self._call.write(
            stt_request(
                self._model, self._seq, np.zeros(0, np.int16), control={"config": {}}, start=True
            )
        )
        while not parse_response(await self._call.read()).final:
            pass

    async def close(self) -> None:
        await self._call.write(
            stt_request(
                self._model, self._seq, np.zeros(0, np.int16), control={"cancel": True}, end=True
            )
        )
        while not parse_response(await self._call.read()).final:
            pass
        self._call.cancel()


async def pending_requests(metrics_port: int, model: str) -> float:
    """Triton's nv_inference_pending_request_count for ``model`` (Prometheus endpoint)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    pattern = rf'nv_inference_pending_request_count{{model="{model}",version="1"}} (\S+)'
    match = re.search(pattern, body)
    assert match, f"no pending count for {model}"
    return float(match.group(1))
