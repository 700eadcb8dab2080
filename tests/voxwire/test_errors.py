"""The error hierarchy against the contract: every reason has one class, one status, one row."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc

from voxwire import errors
from voxwire.v1 import errors_pb2

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def test_every_contract_reason_has_exactly_one_error_class():
    enum = {n.removeprefix("ERROR_REASON_") for n in errors_pb2.ErrorReason.keys()} - {
        "UNSPECIFIED"
    }
    assert set(errors.reasons()) == enum


def test_the_contract_prints_the_generated_table():
    assert errors.markdown_table() in CONTRACT.read_text()


def test_close_codes_are_registered_or_application_codes():
    for cls in errors.reasons().values():
        # RFC 6455 7.4.1 and the IANA registry (1012 service restart, 1013 try again later).
        assert cls.ws_close_code in (1003, 1007, 1008, 1009, 1011, 1012, 1013) or (
            4000 <= cls.ws_close_code < 5000
        ), cls


def test_rich_status_and_in_band_forms_agree():
    err = errors.Overloaded("busy", retry_delay=datetime.timedelta(seconds=2))
    status = err.to_rpc_status()
    proto = err.to_proto()
    assert status.code == proto.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert errors_pb2.ErrorReason.Name(proto.reason) == "ERROR_REASON_OVERLOADED"
    assert proto.retryable and proto.retry_delay.seconds == 2 and len(status.details) == 2


def test_unknown_model_reported_reason_becomes_model_error():
    assert isinstance(errors.error_for_reason("NOT_A_REASON", "x"), errors.ModelError)
    assert isinstance(errors.error_for_reason("SSML_INVALID", "x"), errors.SsmlInvalid)


def test_an_error_echoes_client_input_only_within_its_budget():
    # A 1 MB model name and 600 bad vocabulary entries: the status detail stays small, so its
    # trailer fits any client's metadata limit (before: echoed whole, over 16 KiB).
    name = "m" * 1_000_000
    unknown = errors.UnknownModel(
        f"no stt model named {name!r}", violations=[errors.Violation("model", name)]
    )
    assert len(unknown.message.encode()) <= errors.MAX_MESSAGE_BYTES
    assert len(unknown.violations[0].description.encode()) <= errors.MAX_DESCRIPTION_BYTES
    many = [
        errors.Violation(f"config.vocabulary[{i}].phrase", "must be 1..100 characters")
        for i in range(600)
    ]
    invalid = errors.InvalidConfig.of("invalid config", many)
    assert len(invalid.violations) == errors.MAX_VIOLATIONS
    assert "(592 more violations not listed)" in invalid.message
    for error in (unknown, invalid):
        assert len(error.to_rpc_status().SerializeToString()) < 2048
        assert len(error.to_proto().SerializeToString()) < 2048


def test_a_long_message_with_many_violations_keeps_both_the_cap_and_the_count():
    # The message was cut to 256 bytes, then the count added after it: 287 bytes.
    error = errors.InvalidConfig("x" * 300, violations=[errors.Violation("f", "d")] * 10)
    assert len(error.message.encode()) <= errors.MAX_MESSAGE_BYTES
    assert error.message.endswith("... (2 more violations not listed)")


def test_clipping_keeps_whole_characters():
    clipped = errors.clip("é" * 200, 11)  # 2 bytes each
    assert clipped == "éééé..." and len(clipped.encode()) <= 11
    assert errors.clip("short", 11) == "short"
