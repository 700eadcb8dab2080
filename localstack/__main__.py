"""``make run``: the whole local stack, proven end to end, serving until Ctrl-C.

1. Starts a real Triton (the ``tritonserver`` inside the nvidia-pytriton wheel) on
   127.0.0.1:8001 (HTTP 8000, metrics 8002) with every model in ``model_repository/``.
2. Starts the inference adapter on 127.0.0.1:50051 in front of it.
3. Transcribes the bundled sample through the adapter, and speaks a sentence into
   ``out/hello.wav``, printing the texts and the stage timings.
4. Keeps serving until Ctrl-C (or SIGTERM), then drains and stops both.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import grpc

from inference_adapter.config import AdapterConfig
from inference_adapter.server import AdapterServer
from localstack.client import read_wav, synthesize, transcribe, transcript, write_wav
from localstack.triton import TritonPorts, TritonServer, default_model_repository
from voxwire.v1 import audio_pb2

SAMPLE = Path(__file__).resolve().parent / "samples" / "call_me_back.wav"
SENTENCE = "Hello from voxwire. This sentence was synthesized by eSpeak through Triton."


async def demo(address: str, out_dir: Path) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        pcm, rate = read_wav(SAMPLE)
        fmt = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        )
        stt = await transcribe(channel, pcm, fmt, model="stt_pocketsphinx")
        if stt.code != grpc.StatusCode.OK:
            raise SystemExit(f"transcription failed: {stt.code.name} {stt.details}")
        print(f"\n[stt] {SAMPLE.name}: {transcript(stt)!r}")
        print(f"[stt] server-timing: {stt.server_timing}")

        tts = await synthesize(channel, SENTENCE, model="tts_espeak")
        if tts.code != grpc.StatusCode.OK:
            raise SystemExit(f"synthesis failed: {tts.code.name} {tts.details}")
        audio = b"".join(chunk.audio for chunk in tts.of("audio"))
        out = out_dir / "hello.wav"
        write_wav(out, audio, 24000)
        words = [w.word for ws in tts.of("words") for w in ws.words]
        seconds, chunks = len(audio) / 48000, len(tts.of("audio"))
        print(f"[tts] {SENTENCE!r} -> {out} ({seconds:.2f} s, {chunks} chunks)")
        print(f"[tts] words: {' '.join(words)}")
        print(f"[tts] server-timing: {tts.server_timing}\n")


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
    adapter = AdapterServer(AdapterConfig(listen=args.listen, triton_urls=(triton.grpc_url,)))
    try:
        await adapter.start()
        print(f"inference adapter listening on {adapter.address}")
        await demo(adapter.address, args.out)
        print("serving; press Ctrl-C to stop")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("draining ...")
    finally:
        await adapter.stop(grace=5.0)
        await triton.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:50051")
    parser.add_argument("--triton-grpc-port", type=int, default=8001)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
