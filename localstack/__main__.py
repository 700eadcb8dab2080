"""``make run``: the whole local stack, proven end to end, serving until Ctrl-C.

1. Starts a real Triton (the ``tritonserver`` inside the nvidia-pytriton wheel) on
   127.0.0.1:8001 (HTTP 8000, metrics 8002) with every model in ``model_repository/``.
2. Starts the inference adapter on 127.0.0.1:50051 in front of it.
3. Starts the gateway on 127.0.0.1:8080 (WebSocket, HTTP; the browser demo at /demo/) and its
   gRPC front on 127.0.0.1:8081, with a development API key (kept in ``out/dev.key``; the keys
   file holds only its hash) and a token signing key (``out/gateway-signing.key``) made on the
   first run. The key's limits (``DEV_KEY_LIMITS``) admit the conformance kit and a load test.
4. Proves the stack through the gateway over WebSocket with the SDK: transcribes the bundled
   sample, speaks a sentence into ``out/hello.wav``, printing the texts and stage timings; then
   transcribes the sample again through the gRPC front with the key, as an API edge would.
5. Keeps serving until Ctrl-C (or SIGTERM), then drains and stops all three.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import secrets
import signal
from pathlib import Path

import grpc

from gateway.auth.config import AuthConfig
from gateway.auth.keys import KeyStore, create_key
from gateway.auth.limits import KeyLimits
from gateway.auth.origins import origin_allowed
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.client import read_wav, transcribe, transcript, write_wav
from localstack.triton import TritonPorts, TritonServer, default_model_repository
from voxwire.client import SynthesisSession, TranscriptionSession
from voxwire.timings import server_timing
from voxwire.v1 import audio_pb2, synthesis_pb2, transcription_pb2

SAMPLE = Path(__file__).resolve().parent / "samples" / "call_me_back.wav"
SENTENCE = "Hello from voxwire. This sentence was synthesized by eSpeak through Triton."
TTS_RATE = 24_000
# The development key's limits (the gateway's defaults for a key that sets none are 10 and 60):
# enough for the conformance kit through the gRPC front (about 100 cases, some opening several
# streams at once, in about a minute) and for the load tester's scenarios against this stack.
# The keys file entry sets none, so the limits are this run's, whichever run made the key.
DEV_KEY_LIMITS = KeyLimits(max_concurrent_sessions=200, max_new_sessions_per_minute=3000)


def _private(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


def demo_origins(listen: str) -> list[str]:
    """The origins a browser on this machine sends for the demo page of a gateway listening on
    ``listen`` (``host:port``): its port on 127.0.0.1 and localhost, and on the host named."""
    host, _, port = listen.rpartition(":")
    hosts = ["127.0.0.1", "localhost"]
    if host not in ("", "0.0.0.0", "[::]", *hosts):
        hosts.append(host)
    return [f"http://{h}:{port}" for h in hosts]


def dev_auth(out: Path, origins: list[str]) -> tuple[AuthConfig, str]:
    """The development keys file, signing key and API key (made once, then reused while it
    allows ``origins``, the demo page's: a browser token is refused from any other)."""
    keys_file = out / "voxwire-keys.toml"
    key_path, signing_path = out / "dev.key", out / "gateway-signing.key"
    if not signing_path.exists():
        _private(signing_path, "hex:" + secrets.token_hex(32))
    key = key_path.read_text().strip() if key_path.exists() else ""
    try:
        allowed = KeyStore(keys_file, KeyLimits(10, 60)).verify(key).allowed_origins
    except Exception:
        allowed = None  # no key yet, or not one of this keys file
    # A key made by a run on another --listen does not admit this run's demo page.
    if allowed is None or not all(origin_allowed(o, allowed) for o in origins):
        key, _ = create_key(
            keys_file,
            name="make-run",
            now=datetime.datetime.now(datetime.UTC),
            allowed_origins=origins,
        )
        _private(key_path, key + "\n")
    auth = AuthConfig(
        keys_file=keys_file,
        token_signing_keys={"dev": signing_path.read_text().strip()},
        token_current_kid="dev",
        default_max_concurrent_sessions=DEV_KEY_LIMITS.max_concurrent_sessions,
        default_max_new_sessions_per_minute=DEV_KEY_LIMITS.max_new_sessions_per_minute,
    )
    return auth, key


async def demo(url: str, key: str, out_dir: Path) -> None:
    pcm, rate = read_wav(SAMPLE)
    config = transcription_pb2.TranscriptionConfig(
        model="stt_pocketsphinx",
        audio_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
    )
    finals: list[str] = []
    async with await TranscriptionSession.connect([url], config, api_key=key) as stt:
        step = rate // 10 * 2  # 100 ms frames
        for pos in range(0, len(pcm), step):
            await stt.send(pcm[pos : pos + step])
        summary = await stt.close()
        async for event in stt.events():
            if isinstance(event, transcription_pb2.TranscriptResult) and event.is_final:
                finals.append(event.transcript)
    print(f"\n[stt] {SAMPLE.name} via {url}: {' '.join(finals)!r}")
    print(f"[stt] server-timing: {server_timing(summary.timings)}")

    fmt = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=TTS_RATE
    )
    context_config = synthesis_pb2.SynthesisContextConfig(
        model="tts_espeak", output_format=fmt, word_timestamps=True
    )
    async with await SynthesisSession.connect([url], api_key=key, lead_ms=0) as tts:
        context = await tts.open("hello", context_config)
        await context.append(SENTENCE)
        await context.close()
        audio = await context.audio()
        summary = await tts.close()
    path = out_dir / "hello.wav"
    write_wav(path, audio, TTS_RATE)
    print(f"[tts] {SENTENCE!r} -> {path} ({len(audio) / (2 * TTS_RATE):.2f} s)")
    print(f"[tts] server-timing: {server_timing(summary.timings)}\n")


async def demo_front(address: str, key: str) -> None:
    """The sample through the gateway's gRPC front with the key, as an API edge calls it."""
    pcm, rate = read_wav(SAMPLE)
    audio_format = audio_pb2.AudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
    )
    async with grpc.aio.insecure_channel(address) as channel:
        outcome = await transcribe(
            channel,
            pcm,
            audio_format,
            model="stt_pocketsphinx",
            interim_results=False,
            metadata=(("authorization", f"Bearer {key}"),),
        )
    if outcome.code != grpc.StatusCode.OK:
        raise RuntimeError(f"the gRPC front answered {outcome.code.name}: {outcome.details}")
    print(f"[grpc] {SAMPLE.name} via {address}: {transcript(outcome)!r}")
    print(f"[grpc] server-timing: {server_timing(outcome.timings)}\n")


async def main(args: argparse.Namespace) -> None:
    log = args.out / "tritonserver.log"
    triton = TritonServer(
        default_model_repository(),
        ports=TritonPorts(
            grpc=args.triton_grpc_port,
            http=args.triton_grpc_port - 1,
            metrics=args.triton_grpc_port + 1,
        ),
        log_path=log,
    )
    print(f"starting Triton on 127.0.0.1:{args.triton_grpc_port} (log: {log}) ...")
    await triton.start()
    adapter = AdapterServer(AdapterConfig(listen=args.adapter, triton_urls=(triton.grpc_url,)))
    auth, key = dev_auth(args.out, demo_origins(args.listen))
    gateway = GatewayServer(
        GatewayConfig(
            listen=args.listen,
            grpc_listen=args.grpc_listen,
            adapters=(args.adapter,),
            auth=auth,
            demo_page=True,
        )
    )
    try:
        await adapter.start()
        print(f"inference adapter listening on {adapter.address}")
        await gateway.start()
        ws = gateway.url.replace("http", "ws", 1)
        print(f"gateway listening on {gateway.url}  (WebSocket {ws}/v1/stt/stream, /v1/tts/stream)")
        if gateway.grpc_address:
            print(f"gateway gRPC front on {gateway.grpc_address} (authorization: Bearer <key>)")
        print(f"development API key: {key}   (also in {args.out / 'dev.key'})")
        await demo(ws, key, args.out)
        if gateway.grpc_address:
            await demo_front(gateway.grpc_address, key)
        key_file = args.out / "dev.key"
        print(f"try:  VOXWIRE_API_KEY=$(cat {key_file}) .venv/bin/voxwire transcribe {SAMPLE}")
        print("serving; press Ctrl-C to stop")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("draining ...", flush=True)
    finally:
        await gateway.stop(grace=5.0)
        await adapter.stop(grace=5.0)
        await triton.stop()
    print("stopped: gateway, adapter and Triton")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="the gateway")
    parser.add_argument(
        "--grpc-listen", default="127.0.0.1:8081", help="the gateway's gRPC front ('' disables)"
    )
    parser.add_argument("--adapter", default="127.0.0.1:50051", help="the adapter's address")
    parser.add_argument("--triton-grpc-port", type=int, default=8001)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
