"""What the adapter reads of a model's capacity from its Triton config (ModelInfo)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inference_adapter.triton.catalog import model_info


def config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


STT = """
name: "m" max_batch_size: 16
sequence_batching { direct { } }
instance_group [ { kind: KIND_CPU count: 2 } ]
parameters [
  { key: "voxwire.kind" value: { string_value: "stt" } },
  { key: "voxwire.sample_rate_hz" value: { string_value: "16000" } }%s
]
"""
PER_INSTANCE = ',\n  { key: "voxwire.max_streams_per_instance" value: { string_value: "%s" } }'


def test_sequence_slots_bound_stt_admission_when_nothing_else_is_declared():
    info = model_info(config(STT % ""))
    assert info is not None
    assert (info.sequence_slots, info.streams_per_replica(256, 4)) == (32, 32)


def test_the_declared_real_time_streams_per_instance_bound_admission_below_the_slots():
    # pocketsphinx holds 16 sequences per instance and keeps up with 2: admitting 32 let every
    # stream of a busy replica fall behind together instead of refusing the newest.
    info = model_info(config(STT % (PER_INSTANCE % 2)))
    assert info is not None
    assert (info.sequence_slots, info.streams_per_replica(256, 4)) == (32, 4)
    assert info.streams_per_replica(3, 4) == 3  # the adapter's own cap still applies


def test_tts_contexts_are_bounded_by_it_too():
    tts = (
        (STT % (PER_INSTANCE % 1))
        .replace('"stt"', '"tts"')
        .replace("sequence_batching { direct { } }", "")
    )
    info = model_info(config(tts))
    assert info is not None
    assert info.streams_per_replica(256, 4) == 2  # not 2 instances x 1 x oversubscription 4


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_malformed_declaration_is_refused(value: str):
    with pytest.raises(ValueError, match="voxwire"):
        model_info(config(STT % (PER_INSTANCE % value)))
