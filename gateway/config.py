"""Gateway configuration: where it listens, which adapters it uses, limits, keys.

Values come from command-line flags (``python -m gateway --help``) or a TOML file with the same
keys (``--config gateway.toml``; tables ``[stt]``, ``[runner]`` for limits); flags win.
Every value is checked when it is loaded, against its field's type and range: a ``ConfigError``
names the file, the key and what is wrong, rather than a start that breaks later.
Defaults work against ``make run``'s adapter on 127.0.0.1:50051.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.auth.config import AuthConfig
from gateway.runner import RunnerLimits
from gateway.stt.session import SttLimits
from gateway.telemetry import MODES
from gateway.tts.session import TtsLimits


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file (when there is one),
    the key and what is wrong, on one line."""


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
        """Raises ConfigError (a ValueError) naming ``path`` and the key: the file cannot be
        read or parsed, a key is unknown (a typo must not pass silently), a value has the
        wrong type or is out of range."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        try:
            return cls.from_mapping(data, base_dir=path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> GatewayConfig:
        """Raises ConfigError naming the key of an unknown key or an invalid value."""
        values = check_table(cls, data, ())
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
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> GatewayConfig:
        """Raises ConfigError naming the key of an invalid value (None: not overridden)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **check_table(type(self), given, ()))


# Numbers must be positive (a zero size, count or timeout would refuse everything, or, for
# aiohttp's hard_max_message_bytes, lift the cap), except these, where the field's comment
# or its use gives 0 a meaning.
_ZERO_ALLOWED: frozenset[tuple[type, str]] = frozenset(
    {
        (GatewayConfig, "drain_grace_seconds"),  # close open sessions at once
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
        (RunnerLimits, "close_flush_s"),  # close without waiting for unsent frames
    }
)


# Lists that must hold something: a gateway without adapters only fails its start-up wait.
_NON_EMPTY: frozenset[tuple[type, str]] = frozenset({(GatewayConfig, "adapters")})


def _host_port(value: str, *, empty_ok: bool = False) -> str | None:
    if value == "" and empty_ok:
        return None
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit() and int(port) <= 65535:
        return None
    return f"must be host:port, not {value!r}"


# Checks beyond type and range, of strings whose bad values would only fail at start or later.
_STRING_RULES: dict[tuple[type, str], Callable[[str], str | None]] = {
    (GatewayConfig, "listen"): _host_port,
    (GatewayConfig, "grpc_listen"): lambda v: _host_port(v, empty_ok=True),  # "": disabled
    (GatewayConfig, "adapters"): _host_port,
    (GatewayConfig, "telemetry"): lambda v: (
        None if v in MODES else f"must be one of {', '.join(MODES)}, not {v!r}"
    ),
}


def check_table(cls: type, table: Any, path: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``table`` for the dataclass ``cls`` (its fields' annotations drive the
    checks; nested dataclasses are checked as tables, and stay dicts), normalized (a list for a
    tuple field becomes a tuple, an int for a float field a float).

    Raises:
        ConfigError: ``table`` is not a table, holds an unknown key, or a value of the wrong
            type or out of range; the message names the key path.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{_where(path)}: must be a table, not {table!r}")
    known = {f.name for f in fields(cls)}
    unknown = [name for name in table if name not in known]
    if unknown:
        names = ", ".join(_where((*path, name)) for name in sorted(unknown))
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''}: {names}")
    hints = typing.get_type_hints(cls)
    return {
        name: _check_value(hints[name], value, (*path, name), (cls, name))
        for name, value in table.items()
    }


def _check_value(kind: Any, value: Any, path: tuple[str, ...], owner: tuple[type, str]) -> Any:
    """``value`` checked against the annotation ``kind``; ``owner`` (dataclass, field) picks
    the range and string rules."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # X | None: TOML has no None
        (kind,) = [a for a in args if a is not type(None)]
        return _check_value(kind, value, path, owner)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return check_table(kind, value, path)
    if origin is tuple or origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{_where(path)}: must be a list, not {value!r}")
        if not value and owner in _NON_EMPTY:
            raise ConfigError(f"{_where(path)}: must not be empty")
        items = [
            _check_value(args[0], v, (*path[:-1], f"{path[-1]}[{i}]"), owner)
            for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if origin is Mapping or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_where(path)}: must be a table, not {value!r}")
        return {str(k): _check_value(args[1], v, (*path, str(k)), owner) for k, v in value.items()}
    problem = _scalar_problem(kind, value, owner)
    if problem is not None:
        raise ConfigError(f"{_where(path)}: {problem}")
    if kind is float:
        return float(value)
    return Path(value) if kind is Path else value


def _scalar_problem(kind: Any, value: Any, owner: tuple[type, str]) -> str | None:
    """What is wrong with a scalar ``value`` of a field typed ``kind``, or None."""
    if kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if kind is str or kind is Path:
        if not isinstance(value, str) and not (kind is Path and isinstance(value, Path)):
            return f"must be a string, not {value!r}"
        rule = _STRING_RULES.get(owner)
        return rule(str(value)) if rule is not None else None
    if kind is int or kind is float:
        return _number_problem(kind, value, owner in _ZERO_ALLOWED)
    raise TypeError(f"no configuration check for {kind!r} ({owner[0].__name__}.{owner[1]})")


def _number_problem(kind: type, value: Any, zero_allowed: bool) -> str | None:
    sign = "non-negative" if zero_allowed else "positive"
    noun = "integer" if kind is int else "number"
    # bool is an int subclass, but `true` for a size is a mistake; an int is a fine float.
    accepted = (int,) if kind is int else (int, float)
    ok = isinstance(value, accepted) and not isinstance(value, bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False  # TOML's inf and nan
    if ok and (value < 0 or (value == 0 and not zero_allowed)):
        ok = False
    return None if ok else f"must be a {sign} {noun}, not {value!r}"


def _where(path: tuple[str, ...]) -> str:
    """A key path as the TOML file spells it: ``listen``, ``[stt] max_frame_bytes``."""
    if len(path) <= 1:
        return path[0] if path else "the configuration"
    return f"[{path[0]}] {'.'.join(path[1:])}"
