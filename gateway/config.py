"""Gateway configuration: where it listens, which adapters it uses, limits, keys.

Values come from command-line flags (``python -m gateway --help``) or a TOML file with the same
keys (``--config gateway.toml``; tables ``[stt]``, ``[runner]`` for limits); flags win.
Defaults work against ``make run``'s adapter on 127.0.0.1:50051.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.auth.config import AuthConfig
from gateway.runner import RunnerLimits
from gateway.stt.session import SttLimits
from gateway.tts.session import TtsLimits


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: str = "127.0.0.1:8080"
    # The voxwire.v1 gRPC front (same auth); empty disables it.
    grpc_listen: str = "127.0.0.1:8081"
    adapters: tuple[str, ...] = ("127.0.0.1:50051",)
    # SO_REUSEPORT on both listeners (WebSocket/HTTP and the gRPC front): several gateway
    # processes share one port and the kernel spreads new connections over them, which is how
    # the edge uses more than one core (one event loop per process). Off by default, so that a
    # second process on a taken port fails at start instead of silently sharing it. With it on,
    # a draining process closes its listener at once, so new connections and resumes go to the
    # others. Per-key limits (concurrent sessions, sessions per minute) are counted per process.
    reuse_port: bool = False
    # One HTTP/2 connection per adapter carries every stream: gRPC core coalesces the writes of
    # many streams into one syscall, and the adapter reads one socket. Two cost the gateway 16 %
    # more CPU per message at 30 streams (BENCHMARKS.md, "One channel per adapter"). More only
    # behind a proxy that caps streams per connection (gRPC core itself sets no cap).
    channels_per_adapter: int = 1
    # WebSocket ping interval; a connection whose pong is missing for half of it is closed.
    ping_interval_seconds: float = 15.0
    # permessage-deflate (RFC 7692) when the client offers it. Off by default: PCM audio barely
    # compresses, deflate costs CPU on every frame both ways, and each compressing connection
    # holds zlib state (BENCHMARKS.md, "WebSocket compression").
    websocket_compression: bool = False
    # aiohttp's own cap on one WebSocket message: beyond it the stack closes with 1009 by
    # itself. Frames between stt.max_frame_bytes and this get a CHUNK_TOO_LARGE event.
    hard_max_message_bytes: int = 1024 * 1024
    drain_grace_seconds: float = 20.0
    # POST /v1/stt: the largest upload (413 beyond it), and compressed uploads decoding at once
    # (libsndfile runs in threads; 503 OVERLOADED beyond it).
    max_upload_bytes: int = 200 * 1024 * 1024
    # Serve the browser demo page at /demo/ (development; off by default).
    demo_page: bool = False
    max_decoders: int = 4
    # How long to wait for a healthy adapter at start-up.
    startup_wait_seconds: float = 30.0
    # TLS for the edge (WebSocket, HTTP and the gRPC front): PEM certificate chain and key.
    tls_cert: str = ""
    tls_key: str = ""
    # mTLS to the adapters: a CA to verify them, and a client certificate.
    adapter_ca: str = ""
    adapter_cert: str = ""
    adapter_key: str = ""
    # Tracing (a span per session, W3C trace context to the adapters): "none" (default; the
    # client's trace context still goes upstream), "console" or "otlp" (needs the otlp extra).
    telemetry: str = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    stt: SttLimits = field(default_factory=SttLimits)
    tts: TtsLimits = field(default_factory=TtsLimits)
    runner: RunnerLimits = field(default_factory=RunnerLimits)
    # Keys file, token signing keys, limits of keys (the [auth] table); required to serve.
    auth: AuthConfig | None = None

    @classmethod
    def from_toml(cls, path: Path) -> GatewayConfig:
        """Raises ValueError on unknown keys (a typo must not pass silently)."""
        return cls.from_mapping(tomllib.loads(path.read_text()), base_dir=path.parent)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base_dir: Path | None = None) -> GatewayConfig:
        data = dict(data)
        auth = data.pop("auth", None)
        if auth is not None:
            data["auth"] = AuthConfig.from_mapping(auth, base_dir)
        nested = {"stt": SttLimits, "tts": TtsLimits, "runner": RunnerLimits}
        parts: dict[str, Any] = {}
        unknown: set[str] = set()
        for name, kind in nested.items():
            table = data.pop(name, {})
            unknown |= {f"{name}.{k}" for k in set(table) - {f.name for f in fields(kind)}}
            parts[name] = kind(**{k: v for k, v in table.items() if f"{name}.{k}" not in unknown})
        unknown |= set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        if "adapters" in data:
            data["adapters"] = tuple(data["adapters"])
        return cls(**data, **parts)

    def with_overrides(self, **overrides: Any) -> GatewayConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
