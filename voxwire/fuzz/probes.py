"""What the fuzzer reads around a run: leaks and memory, on the adapter's side and Triton's.

- Prometheus text endpoints (the adapter's when it exposes one, Triton's metrics port), read
  with a plain HTTP/1.0 GET on asyncio streams and parsed with prometheus_client's parser.
- The resident set size of a process (``/proc/PID/status`` VmRSS, Linux).
- Log lines an asyncio server must never write ("Task was destroyed but it is pending",
  "exception was never retrieved", tracebacks), counted in the log written during the run.
- Triton's sequence slots, probed directly: open as many fresh sequences on an STT model as it
  has slots and count the STARTs answered promptly. A slot a stream leaked (a sequence that was
  never ended) holds its START in Triton's backlog until the idle timeout, so free slots =
  prompt answers. The probe ends every sequence it opened (END with ``{"cancel": true}``).

Nothing here imports the adapter; the Triton probe needs tritonclient's generated stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LOG_PATTERNS = {
    "task_destroyed_pending": re.compile(r"Task was destroyed but it is pending"),
    "exception_never_retrieved": re.compile(r"exception (was )?never retrieved"),
    "traceback": re.compile(r"^Traceback \(most recent call last\)", re.MULTILINE),
}


async def scrape(hostport: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Every sample of a Prometheus text endpoint, ``name{labels}`` -> value.

    Raises OSError / TimeoutError when the endpoint cannot be read."""
    host, port = hostport.rsplit(":", 1)
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            request = f"GET /metrics HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            body = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    text = body.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{", 1)[0] == name and all(w in key for w in want)
    )


def by_label(samples: dict[str, float], name: str, label: str) -> dict[str, float]:
    """``name``'s samples summed by the value of ``label`` (over every other label)."""
    out: dict[str, float] = {}
    for key, value in samples.items():
        if key.startswith(name + "{") and f'{label}="' in key:
            which = key.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[which] = out.get(which, 0.0) + value
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux). Raises OSError when the process is gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for pid {pid}")


def count_log(path: Path, start: int) -> dict[str, int]:
    """Occurrences of each LOG_PATTERNS entry in ``path`` from byte ``start`` on."""
    with path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", "replace")
    return {name: len(p.findall(text)) for name, p in LOG_PATTERNS.items()}


@dataclass(frozen=True, slots=True)
class SlotProbe:
    model: str
    slots: int
    answered: int  # STARTs answered within the deadline

    @property
    def leaked(self) -> int:
        return self.slots - self.answered


def _slots(config: Any) -> int:
    """Sequence slots of a model config: candidate sequences for the oldest strategy, else
    instances x max_batch_size (direct; Triton docs, sequence batcher)."""
    batching = config.sequence_batching
    if batching.HasField("oldest"):
        return int(batching.oldest.max_candidate_sequences) or 1
    instances = sum(g.count or 1 for g in config.instance_group) or 1
    return instances * max(1, config.max_batch_size)


def _start_request(service_pb2: Any, model: str, seq: int, batched: bool, end: bool) -> Any:
    """A START (config, no audio) or an END+cancel request of a voxwire STT sequence."""
    request = service_pb2.ModelInferRequest(model_name=model)
    request.parameters["sequence_id"].int64_param = seq
    request.parameters["sequence_start"].bool_param = not end
    request.parameters["sequence_end"].bool_param = end
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    audio = request.inputs.add(name="AUDIO", datatype="INT16")
    audio.shape.extend([1, 0] if batched else [0])
    request.raw_input_contents.append(b"")
    control = {"cancel": True} if end else {"config": {"language": "", "vocabulary": []}}
    payload = json.dumps(control).encode()
    tensor = request.inputs.add(name="CONTROL", datatype="BYTES")
    tensor.shape.extend([1, 1] if batched else [1])
    request.raw_input_contents.append(struct.pack("<I", len(payload)) + payload)
    return request


async def probe_slots(triton: str, model: str, *, answer_within_s: float = 10.0) -> SlotProbe:
    """Open every sequence slot of ``model`` on Triton at ``triton`` (gRPC host:port) at once
    and count the STARTs answered within ``answer_within_s``.

    Raises grpc.aio.AioRpcError when Triton cannot be reached or does not know the model."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    async with grpc.aio.insecure_channel(triton) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reply = await stub.ModelConfig(service_pb2.ModelConfigRequest(name=model), timeout=5.0)
        config = reply.config
        slots = _slots(config)
        batched = config.max_batch_size > 0

        async def one() -> bool:
            seq = secrets.randbits(62) | 1
            call = stub.ModelStreamInfer()
            answered = False
            try:
                await call.write(_start_request(service_pb2, model, seq, batched, end=False))
                async with asyncio.timeout(answer_within_s):
                    while not answered:
                        msg = await call.read()
                        if msg is grpc.aio.EOF or msg.error_message:
                            break
                        final = msg.infer_response.parameters.get("triton_final_response")
                        answered = final is None or final.bool_param
            except (TimeoutError, grpc.aio.AioRpcError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await call.write(_start_request(service_pb2, model, seq, batched, True))
                        await call.done_writing()
                        async for _ in call:
                            pass
                call.cancel()
            return answered

        results = await asyncio.gather(*(one() for _ in range(slots)))
    return SlotProbe(model=model, slots=slots, answered=sum(results))


async def triton_ready(triton: str) -> bool:
    """Whether Triton at ``triton`` (gRPC host:port) still answers ServerReady."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    try:
        async with grpc.aio.insecure_channel(triton) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            reply = await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5.0)
            return bool(reply.ready)
    except grpc.aio.AioRpcError:
        return False


def pending_requests(samples: dict[str, float], models: Iterable[str]) -> dict[str, float]:
    """Triton's ``nv_inference_pending_request_count`` per model."""
    return {m: total(samples, "nv_inference_pending_request_count", model=m) for m in models}
