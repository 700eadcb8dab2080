"""Variants of how a stream ends (both services): the rich status, the timing trailers, the
parsing of what the client sent, and health and reflection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from examples import minimal_server as ex
from voxwire import errors
from voxwire.timings import SERVER_TIMING_TRAILER, StageClock, trailers
from voxwire.v1 import synthesis_pb2 as tts
from voxwire.v1 import transcription_pb2 as stt


class _RetryableConfigRequired(errors.ConfigRequired):
    retryable = True


class _ConfigAlreadySetWrongCode(errors.ConfigAlreadySet):
    code = grpc.StatusCode.INVALID_ARGUMENT


async def fail_without_details(
    self: Any, context: Any, error: Any, clock: StageClock, reader: ex.Reader
) -> None:
    await reader.drop()
    await context.abort(error.code, error.message, trailing_metadata=trailers(clock.to_proto()))


async def fail_with(
    self: Any, context: Any, error: Any, clock: StageClock, reader: ex.Reader
) -> None:
    """The example's fail, after one change to the error."""
    swap = {
        errors.ConfigRequired: _RetryableConfigRequired,
        errors.ConfigAlreadySet: _ConfigAlreadySetWrongCode,
    }
    if type(error) in swap and getattr(self, "swap_errors", False):
        error = swap[type(error)](error.message, violations=error.violations)
    if getattr(self, "strip_violations", False):
        error = type(error)(error.message)
    await ex.StreamService.fail(self, context, error, clock, reader)


def finish_without_binary_timings(self: Any, context: Any, clock: StageClock) -> None:
    context.set_trailing_metadata(
        tuple(t for t in trailers(clock.to_proto()) if t[0] == SERVER_TIMING_TRAILER)
    )


async def fail_with_disagreeing_timings(
    self: Any, context: Any, error: Any, clock: StageClock, reader: ex.Reader
) -> None:
    await reader.drop()
    timings = clock.to_proto()
    details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
    wrong = f"total;dur={timings.total_us / 1000 + 5:.3f}"  # 5 ms more than the binary form says
    metadata = (
        details,
        ("voxwire-timings-bin", timings.SerializeToString()),
        (SERVER_TIMING_TRAILER, wrong),
    )
    await context.abort(error.code, error.message, trailing_metadata=metadata)


async def fail_at_once(
    self: Any, context: Any, error: Any, clock: StageClock, reader: ex.Reader
) -> None:
    """The example's fail without reading what the client still sends first."""
    details = ("grpc-status-details-bin", error.to_rpc_status().SerializeToString())
    metadata = (details, *trailers(clock.to_proto()))
    await context.abort(error.code, error.message, trailing_metadata=metadata)


def both(name: str, attrs: dict[str, Any]) -> tuple[type[ex.Transcription], dict[str, Any]]:
    """A Transcription subclass and Synthesis overrides that share ``attrs``."""
    return type(name, (ex.Transcription,), attrs), attrs


class _RaisingReader(ex.Reader):
    async def next(self) -> Any:
        try:
            return await super().next()
        except errors.InvalidMessage as exc:
            if "parse" in exc.message:
                raise ValueError("cannot parse") from exc  # escapes as a bare gRPC UNKNOWN
            raise


def raising_reader(self: Any, requests: AsyncIterator[bytes]) -> ex.Reader:
    return _RaisingReader(requests, self.request, self.idle_s)


class SilentViolations(ex.SynthesisStream):
    def handle(self, msg: tts.StreamingSynthesizeRequest) -> list[Any]:
        try:
            return super().handle(msg)
        except errors.VoxwireError as exc:
            raise type(exc)(exc.message) from exc  # the same error without its violations


async def health_without_synthesis(server: grpc.aio.Server) -> None:
    checker = health.aio.HealthServicer()
    for name in ("", "voxwire.v1.Transcription", "voxwire.v1.Capabilities"):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection((*ex.SERVICES, "grpc.health.v1.Health"), server)


async def no_reflection(server: grpc.aio.Server) -> None:
    checker = health.aio.HealthServicer()
    for name in ("", *ex.SERVICES):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)


class _ParsesFirst(ex.Reader):
    def parse(self, data: bytes) -> Any:
        try:
            self.message.FromString(data)  # before the size check: the message is parsed
        except DecodeError:
            raise errors.InvalidMessage("the message does not parse") from None
        return super().parse(data)


def parsing_reader(self: Any, requests: AsyncIterator[bytes]) -> ex.Reader:
    return _ParsesFirst(requests, self.request, self.idle_s)


# What the uncapped variant echoes of a value in a description: past the cap of 128 bytes, within
# what a client takes in trailers (so that the kit sees the error).
_ECHO_BYTES = 300


def _echo(value: str) -> str:
    return value.encode()[:_ECHO_BYTES].decode(errors="ignore")


def _uncapped(
    error: errors.VoxwireError, model: str, values: dict[str, str], more: int = 0
) -> errors.VoxwireError:
    """``error`` echoing the client's input past every cap (VoxwireError caps what it is given,
    so this is set afterwards): the model name in the message, the value of each field in its
    violation's description, and ``more`` violations of vocabulary entries, all listed."""
    violations = []
    for violation in error.violations:
        field = violation.field.rsplit(".", 1)[-1]
        if values.get(field):
            echo = _echo(values[field])
            object.__setattr__(violation, "description", f"{echo!r} is not one of ours")
        violations.append(violation)
    for i in range(more):
        violations.append(errors.Violation(f"config.vocabulary[{i}].phrase", "not supported"))
    if model:
        error.message = f"{error.message}: you sent {_echo(model)!r}"
    error.violations = tuple(violations)
    return error


class EchoesUncapped(ex.Transcription):
    """Errors of a config echo the client's model and language, and list every bad entry."""

    def start(self, config: stt.TranscriptionConfig) -> ex.BeepDetector:
        try:
            return super().start(config)
        except errors.VoxwireError as exc:
            values = {"language": config.language}
            raise _uncapped(exc, config.model, values, len(config.vocabulary)) from None


class EchoesUncappedSession(ex.SynthesisStream):
    def open(self, cid: str, config: tts.SynthesisContextConfig) -> list[Any]:
        try:
            return super().open(cid, config)
        except errors.VoxwireError as exc:
            values = {"voice": config.voice, "language": config.language}
            raise _uncapped(exc, config.model, values) from None
