"""The error hierarchy against the contract: every reason has one class, one status, one row."""

from __future__ import annotations

import datetime
import re
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


def test_the_contract_table_matches_the_classes():
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([A-Z_]+) \|", CONTRACT.read_text(), re.M))
    for reason, cls in errors.reasons().items():
        assert rows.get(reason) == cls.code.name, reason
        assert (
            cls.ws_close_code in (1001, 1003, 1007, 1008, 1009, 1011, 1013)
            or 4000 <= cls.ws_close_code < 5000
        )


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
