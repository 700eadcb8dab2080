"""Adapter configuration: where Triton is, the stream limits, telemetry.

Values come from command-line flags (``python -m inference_adapter --help``) or from a TOML
file with the same keys (``--config adapter.toml``); flags win. Everything has a default that
works against a local Triton on 127.0.0.1:8001. Every value is checked when it is loaded
(``voxwire.config_check``): a ``ConfigError`` names the file, the key and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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

__all__ = ["TELEMETRY_MODES", "AdapterConfig", "ConfigError", "Limits"]

TELEMETRY_MODES = ("none", "console", "otlp", "prometheus")


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits every client sees (and reads from Capabilities)."""

    max_contexts_per_stream: int = 8
    max_chunk_bytes: int = 64 * 1024
    max_stream_seconds: float = 3600.0
    idle_timeout_seconds: float = 30.0
    # StreamNotice IDLE_WARNING / DURATION_WARNING this long before the idle close and the
    # maximum duration (docs/contract.md, "Notices"); a warning not shorter than its limit, or
    # 0, is never sent.
    idle_warning_seconds: float = 5.0
    duration_warning_seconds: float = 60.0
    max_pending_text_bytes: int = 16 * 1024
    # A client that leaves this much of its responses unread (serialized bytes queued at the
    # server), or whose single write does not complete within write_timeout_seconds, fails
    # with SLOW_CONSUMER: a stalled client must not hold a model slot indefinitely.
    max_unread_response_bytes: int = 1024 * 1024
    write_timeout_seconds: float = 10.0
    # Unanswered model requests per stream before the adapter stops reading from the client
    # (backpressure through HTTP/2 flow control instead of an unbounded queue).
    max_inflight_requests: int = 16


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    listen: str = "127.0.0.1:50051"
    # SO_REUSEPORT: several adapter processes share ``listen`` and the kernel spreads new
    # connections over them (one event loop, one core each). Off by default (gRPC core would set
    # it), so that a second adapter on a taken port fails at start instead of silently sharing.
    reuse_port: bool = False
    # Triton gRPC endpoints (KServe v2), one per replica.
    triton_urls: tuple[str, ...] = ("127.0.0.1:8001",)
    # Streams (STT streams + TTS contexts) one replica may hold; beyond it: OVERLOADED. Each
    # model's own capacity, read from its config, caps its streams further: an STT model's
    # sequence slots; for a TTS model instances x concurrency x tts_oversubscription.
    max_streams_per_replica: int = 256
    # TTS contexts admitted per model slot (instance x concurrency): a context occupies a slot
    # only while one of its units synthesizes (faster than real time), and waits for text
    # between units. See ModelInfo.streams_per_replica.
    tts_oversubscription: int = 4
    # gRPC's own limit on a received message (its default). Messages between the adapter's
    # limit (max_chunk_bytes + 64 KiB) and this one are refused with CHUNK_TOO_LARGE without
    # being parsed; gRPC refuses larger ones before buffering them, with RESOURCE_EXHAUSTED and
    # no ErrorInfo (nothing in gRPC lets the server say more). Lower it to bound the memory a
    # hostile message can take; the rich reason then stops there.
    max_receive_message_bytes: int = 4 * 1024 * 1024
    # Channels per replica that the adapter spreads its Triton streams over.
    channels_per_replica: int = 2
    # Readiness poll of each replica, and the deadline of each poll. A refused connection
    # takes a replica out at once, a hung one after two silent polls in a row: within
    # interval + 2 x timeout (under a second).
    health_interval_seconds: float = 0.25
    health_timeout_seconds: float = 0.35
    # How long a model may take to answer a request before its replica is deemed failed.
    model_response_timeout_seconds: float = 10.0
    # Transparent failover (docs/contract.md, "Failover"): a stream (STT) or context (TTS)
    # whose replica fails moves to another replica this many times in a row without progress
    # (a new final result or acknowledged finalize; TTS: new audio); 0 turns failover off (the
    # stream fails with BACKEND_UNAVAILABLE, as without it).
    max_failovers: int = 3
    # STT: the model audio kept per stream since its acknowledged position, for the replay on
    # another replica; unacknowledged audio this close to the window forces a final result.
    replay_window_seconds: float = 30.0
    force_final_margin_seconds: float = 5.0
    # A TTS context that stops with a unit in flight (the client cancels it, or the stream
    # ends): "drain" half-closes its Triton call, lets the unit finish and drops its audio (at
    # most ``tts_stop_drain_seconds``, then a cancel), which keeps a model instance busy that
    # long (a barge-in's next context may wait for one: benchmarks/tts_barge_in.py); "cancel"
    # cancels the call, which stops the model at once (the fastest barge-in)
    # but can crash Triton 2.51, the build the nvidia-pytriton wheel ships, under load
    # (inference_adapter/triton/reaper.py). Choose "cancel" only with a Triton that has the fix.
    tts_stop_in_flight: str = "drain"
    tts_stop_drain_seconds: float = 10.0
    # How long a RESOURCE_EXHAUSTED client should wait before retrying.
    overload_retry_seconds: float = 1.0
    # Grace period of a drain: streams may finish for this long after a stop is requested.
    drain_grace_seconds: float = 10.0
    default_stt_model: str = ""
    default_tts_model: str = ""
    # "none" (default, no cost), "console", "otlp" or "prometheus".
    telemetry: str = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    prometheus_port: int = 9464
    # TLS for the adapter's own port: PEM certificate chain and key. With a client CA, mTLS:
    # only clients with a certificate that CA signed (the gateways) get a connection.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    limits: Limits = field(default_factory=Limits)

    @property
    def probe_verdict_seconds(self) -> float:
        """The longest the readiness probe takes to decide about a replica (a hung one is out
        after two silent probes): how long a stream whose call broke waits for its verdict."""
        return self.health_interval_seconds + 2 * self.health_timeout_seconds

    @classmethod
    def from_toml(cls, path: Path) -> AdapterConfig:
        """Raises ConfigError (a ValueError) naming ``path`` and the key: the file cannot be
        read or parsed, a key is unknown (a typo must not pass silently), a value has the
        wrong type or is out of range."""
        data = read_toml(path)
        try:
            return cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AdapterConfig:
        """Raises ConfigError naming the key of an unknown key or an invalid value."""
        values = check_table(cls, data, (), RULES)
        if "limits" in values:
            values["limits"] = Limits(**values["limits"])
        config = cls(**values)
        check_relations(config, RULES)
        return config

    def with_overrides(self, **overrides: Any) -> AdapterConfig:
        """The command line's values over the file's (None: not given). Raises ConfigError
        naming the key of an invalid value."""
        limit_overrides = overrides.pop("limits", None) or {}
        given = {k: v for k, v in overrides.items() if v is not None}
        cfg = replace(self, **check_table(type(self), given, (), RULES))
        if limit_overrides:
            checked = check_table(Limits, limit_overrides, ("limits",), RULES)
            cfg = replace(cfg, limits=replace(cfg.limits, **checked))
        check_relations(cfg, RULES)
        return cfg


# Numbers must be positive, except where 0 has a meaning (the field's comment says which).
_ZERO_ALLOWED: frozenset[tuple[type, str]] = frozenset(
    {
        (Limits, "idle_warning_seconds"),  # 0: no warning
        (Limits, "duration_warning_seconds"),
        (AdapterConfig, "max_failovers"),  # 0: failover off
        (AdapterConfig, "force_final_margin_seconds"),  # a final at the window itself
        (AdapterConfig, "tts_stop_drain_seconds"),  # 0: a stopped unit is cancelled at once
        (AdapterConfig, "overload_retry_seconds"),  # retry at once
        (AdapterConfig, "drain_grace_seconds"),  # end open streams at once
    }
)

RULES = Rules(
    zero_allowed=_ZERO_ALLOWED,
    non_empty=frozenset({(AdapterConfig, "triton_urls")}),
    strings={
        (AdapterConfig, "listen"): host_port,
        (AdapterConfig, "triton_urls"): host_port,
        (AdapterConfig, "tts_stop_in_flight"): one_of("drain", "cancel"),
        (AdapterConfig, "telemetry"): one_of(*TELEMETRY_MODES),
    },
    relations=(
        Relation(
            "force_final_margin_seconds",
            lambda c: c.force_final_margin_seconds < c.replay_window_seconds,
            "must be below replay_window_seconds: the final is forced that long before the "
            "window fills",
        ),
        Relation(
            "prometheus_port",
            lambda c: c.prometheus_port <= 65535,
            "must be a TCP port, 1 to 65535",
        ),
        # A chunk the limit allows must be a message gRPC reads: over its receive limit it
        # was refused by gRPC itself, RESOURCE_EXHAUSTED with no reason, while Capabilities
        # advertised it.
        Relation(
            "[limits] max_chunk_bytes",
            lambda c: c.limits.max_chunk_bytes <= c.max_receive_message_bytes,
            "must be at most max_receive_message_bytes (gRPC refuses a larger message itself, "
            "with no reason, while Capabilities would advertise it)",
        ),
        # Half a TLS setting is refused, not served in plain text without a word.
        Relation(
            "tls_key",
            lambda c: not c.tls_key or bool(c.tls_cert),
            "needs tls_cert (--tls-cert): without it the adapter would serve plain text",
        ),
        Relation(
            "tls_client_ca",
            lambda c: not c.tls_client_ca or bool(c.tls_cert),
            "needs tls_cert and tls_key (mTLS is TLS first)",
        ),
    ),
)
