"""Gateway configuration: where it listens, which adapters it uses, limits, keys.

Values come from command-line flags (``python -m gateway --help``) or a TOML file with the same
keys (``--config gateway.toml``; tables ``[stt]``, ``[runner]`` for limits); flags win.
Every value is checked when it is loaded, against its field's type and range: a ``ConfigError``
names the file, the key and what is wrong, rather than a start that breaks later.
Defaults work against ``make run``'s adapter on 127.0.0.1:50051.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.auth.config import AuthConfig
from gateway.runner import RunnerLimits
from gateway.stt.session import SttLimits
from gateway.telemetry import MODES
from gateway.tts.session import TtsLimits
from voxwire.config_check import (
    ConfigError,
    Relation,
    Rules,
    check_relations,
    check_table,
    host_port,
    one_of,
    read_toml,
)

__all__ = ["ConfigError", "GatewayConfig"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: str = "127.0.0.1:8080"
    # The voxwire.v1 gRPC front (same auth); empty disables it.
    grpc_listen: str = "127.0.0.1:8081"
    # Where GET /metrics (and /healthz, /readyz) are served instead of on `listen`: an
    # address of the operators' network only, so that clients of the public port cannot read
    # the gateway's counts or make it render them; /metrics on `listen` is then 404. Empty:
    # on `listen`, unauthenticated (development, or a network policy in front).
    metrics_listen: str = ""
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
    # A drain's going_aways go out at most this many a second (all within half the grace), each
    # telling its client to reconnect at once: the other gateways take the resumes at a
    # bounded rate, and a session streams here until its turn instead of waiting out a random
    # jitter (BENCHMARKS.md, "Resume after a gateway restart"). 0: all at once, and each client
    # spreads its own reconnect with its backoff jitter.
    drain_pace_per_s: float = 200.0
    # How long an HTTP connection may stay open with no request in progress: from the connect
    # to its first request's complete headers, and between requests. aiohttp's own default
    # (3630 s, meant to outlast a proxy's) let a client that sends nothing, or a header a byte
    # at a time, hold a socket and up to ~2 MiB of buffered headers for an hour without a key.
    # 75 s is nginx's keepalive_timeout, above the 60 s idle cut of common load balancers (a
    # proxy in front still closes first, so it never sends on a connection being closed).
    # The gRPC front closes a connection with no call in progress after the same time.
    keepalive_timeout_seconds: float = 75.0
    # How long the whole body of POST /v1/auth/token (a few hundred bytes of JSON, usually
    # none) may take to arrive once its headers are in: 408 IDLE_TIMEOUT beyond it, so a body
    # dripped a byte at a time does not hold the connection. 10 s is far beyond what a few
    # hundred bytes need on any link. The audio endpoints bound their bodies by their
    # session's idle timeout instead ([stt] / [tts] idle_timeout_s: a stalled upload).
    token_body_timeout_seconds: float = 10.0
    # POST /v1/stt: the largest upload (413 beyond it).
    max_upload_bytes: int = 200 * 1024 * 1024
    # POST /v1/stt: the most audio one upload may hold (413 BODY_TOO_LARGE beyond it; refused
    # before any is sent when its header declares its length). Bytes do not bound it: FLAC of
    # silence holds hours in a few megabytes, and without this an upload ran until the
    # adapter's hour of stream time. 4 h: a long meeting; past it, stream over WebSocket.
    max_upload_audio_seconds: float = 4 * 3600.0
    # POST /v1/stt: how long one write of an upload's audio may wait for the adapter to take
    # it (503 BACKEND_UNAVAILABLE beyond). An upload goes as fast as the adapter takes it, so
    # its writes wait for the model: with stt_pocketsphinx on continuous speech (about 3x
    # real time) a write waited over 10 s for the adapter's HTTP/2 window to reopen, and the
    # sessions' 10 s ([runner] write_timeout_s, sized for real-time streams) failed every
    # upload of more than about two minutes of speech. The adapter fails a stream whose model
    # leaves a request unanswered for its own timeout, so this only catches a hung adapter.
    upload_write_timeout_seconds: float = 120.0
    # POST /v1/stt: compressed uploads decoding at once (libsndfile in child processes, one
    # per upload; 503 OVERLOADED beyond it; docs/design/edge.md, "Upload decoders").
    max_decoders: int = 4
    # Decoders started ahead of need and kept idle (at most max_decoders): a decoder takes
    # about half a second to start (Python, numpy, soxr and libsndfile imported), which an
    # upload that found none idle waited for before its first audio reached the model. One
    # costs about 54 MiB of memory while idle; 0: none (started when an upload needs one).
    spare_decoders: int = 1
    # Serve the browser demo pages at /demo/ (development; off by default): demo.html,
    # microphone to words; speak.html, text to speech with a barge-in.
    demo_page: bool = False
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
        """Raises ConfigError (a ValueError) naming ``path`` and the key: the file cannot be
        read or parsed, a key is unknown (a typo must not pass silently), a value has the
        wrong type or is out of range."""
        data = read_toml(path)
        try:
            return cls.from_mapping(data, base_dir=path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> GatewayConfig:
        """Raises ConfigError naming the key of an unknown key or an invalid value."""
        values = check_table(cls, data, (), RULES)
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            # The limit tables ([stt], [tts], [runner]); [auth] has its own from_mapping, which
            # resolves a relative keys file against the config file's directory.
            if dataclasses.is_dataclass(hints[name]):
                values[name] = hints[name](**value)
        if "auth" in values:
            try:
                values["auth"] = AuthConfig.from_mapping(values["auth"], base_dir)
            except ValueError as exc:  # AuthConfig's own checks; their messages name the key
                raise ConfigError(str(exc)) from None
        config = cls(**values)
        check_relations(config, RULES)
        return config

    def with_overrides(self, **overrides: Any) -> GatewayConfig:
        """Raises ConfigError naming the key of an invalid value (None: not overridden)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        config = replace(self, **check_table(type(self), given, (), RULES))
        check_relations(config, RULES)
        return config


# Numbers must be positive (a zero size, count or timeout would refuse everything, or, for
# aiohttp's hard_max_message_bytes, lift the cap), except these, where the field's comment
# or its use gives 0 a meaning.
_ZERO_ALLOWED: frozenset[tuple[type, str]] = frozenset(
    {
        (GatewayConfig, "drain_grace_seconds"),  # close open sessions at once
        (GatewayConfig, "drain_pace_per_s"),  # every going_away at once
        (GatewayConfig, "spare_decoders"),  # none started ahead of need
        (SttLimits, "idle_warning_s"),  # the warnings: at the limit itself
        (SttLimits, "duration_warning_s"),
        (SttLimits, "force_final_margin_ms"),
        (SttLimits, "max_failovers"),  # 0: never fail over
        (SttLimits, "drain_grace_s"),
        (TtsLimits, "lead_ms"),  # 0 = as fast as the model
        (TtsLimits, "max_lead_ms"),
        (TtsLimits, "queue_slack_ms"),  # the floor is at least 64 KiB anyway
        (TtsLimits, "read_ahead_bytes"),  # 0: each context reads only its floor
        (TtsLimits, "idle_warning_s"),
        (TtsLimits, "duration_warning_s"),
        (TtsLimits, "max_failovers"),
        (TtsLimits, "drain_grace_s"),
        (TtsLimits, "spare_call_max_age_s"),  # 0: no upstream call opened ahead
        (RunnerLimits, "close_flush_s"),  # close without waiting for unsent frames
    }
)


# Lists that must hold something: a gateway without adapters only fails its start-up wait.
_NON_EMPTY: frozenset[tuple[type, str]] = frozenset({(GatewayConfig, "adapters")})


# Checks beyond type and range, of strings whose bad values would only fail at start or later.
_STRING_RULES: dict[tuple[type, str], Callable[[str], str | None]] = {
    (GatewayConfig, "listen"): host_port,
    (GatewayConfig, "grpc_listen"): lambda v: host_port(v, empty_ok=True),  # "": disabled
    (GatewayConfig, "metrics_listen"): lambda v: host_port(v, empty_ok=True),  # "": on listen
    (GatewayConfig, "adapters"): host_port,
    (GatewayConfig, "telemetry"): one_of(*MODES),
}

# Values each valid alone that together would fail every session or break a promise.
_RELATIONS = (
    Relation(
        "[runner] client_high_water",
        lambda c: c.runner.client_high_water <= c.runner.max_unsent_bytes,
        "must be at most [runner] max_unsent_bytes (the hard bound it warns before)",
    ),
    Relation(
        "[runner] upstream_high_water",
        lambda c: c.runner.upstream_high_water <= c.runner.upstream_max_bytes,
        "must be at most [runner] upstream_max_bytes (the hard bound it warns before)",
    ),
    Relation(
        "spare_decoders",
        lambda c: c.spare_decoders <= c.max_decoders,
        "must be at most max_decoders (the most decoder processes the gateway runs)",
    ),
    Relation(
        "[stt] force_final_margin_ms",
        lambda c: c.stt.force_final_margin_ms < c.stt.replay_window_ms,
        "must be below [stt] replay_window_ms: the final is forced that long before the "
        "window fills",
    ),
    Relation(
        "[stt] max_frame_bytes",
        lambda c: c.stt.max_frame_bytes <= c.hard_max_message_bytes,
        "must be at most hard_max_message_bytes: a larger frame is cut by the WebSocket "
        "stack (1009) before the session can answer CHUNK_TOO_LARGE",
    ),
    Relation(
        "[tts] max_frame_bytes",
        lambda c: c.tts.max_frame_bytes <= c.hard_max_message_bytes,
        "must be at most hard_max_message_bytes: a larger frame is cut by the WebSocket "
        "stack (1009) before the session can answer CHUNK_TOO_LARGE",
    ),
    # Half a TLS setting is refused, not served in plain text without a word.
    Relation(
        "tls_key",
        lambda c: not c.tls_key or bool(c.tls_cert),
        "needs tls_cert (--tls-cert): without it the edge would serve plain HTTP",
    ),
    Relation(
        "adapter_ca",
        lambda c: not (c.adapter_cert or c.adapter_key) or bool(c.adapter_ca),
        "missing (--adapter-ca): adapter_cert and adapter_key are for TLS to the adapters, "
        "and without a CA the link would be plain text",
    ),
    Relation(
        "adapter_key",
        lambda c: bool(c.adapter_cert) == bool(c.adapter_key),
        "must be given with adapter_cert, and adapter_cert with it (a client certificate and "
        "its key, for mTLS)",
    ),
    Relation(
        "[tts] lead_ms",
        lambda c: c.tts.lead_ms <= c.tts.max_lead_ms,
        "the default lead must be at most [tts] max_lead_ms, the most a client may ask for",
    ),
)

RULES = Rules(
    zero_allowed=_ZERO_ALLOWED,
    non_empty=_NON_EMPTY,
    strings=_STRING_RULES,
    relations=_RELATIONS,
)
