"""``voxwire.audio.formats.carried_rate``: the rate decoded audio (an upload, a file the CLI
sends) is resampled to, and the lowest it is resampled from."""

from __future__ import annotations

import pytest

from voxwire.audio.formats import MIN_SOURCE_RATE_HZ, PCM_RATES, carried_rate
from voxwire.errors import UnsupportedSampleRate


@pytest.mark.parametrize(
    ("rate", "carried"),
    [(8000, 8000), (44100, 44100), (4000, 8000), (6000, 8000), (11000, 11025), (96000, 48000)],
)
def test_a_rate_goes_at_the_lowest_carried_rate_at_or_above_it(rate, carried):
    assert carried_rate(rate) == carried
    assert carried in PCM_RATES


@pytest.mark.parametrize("rate", [0, 1, 2, 100, MIN_SOURCE_RATE_HZ - 1])
def test_below_the_floor_is_unsupported_not_resampled_thousands_of_times_up(rate):
    # At 1 Hz every sample became 8,000: a 3,200-byte WAV became 25.6 MB for the model.
    with pytest.raises(UnsupportedSampleRate, match=f"sample rate is {rate} Hz"):
        carried_rate(rate)
    # Nothing above the floor grows by more than 2x.
    assert carried_rate(MIN_SOURCE_RATE_HZ) <= 2 * MIN_SOURCE_RATE_HZ


@pytest.mark.parametrize(
    "rate, offered, sent",
    [
        (44100, [16000], 16000),
        (8000, [16000], 16000),
        (16000, [8000, 16000], 16000),
        (11025, [8000, 16000, 48000], 16000),
        (96000, [8000, 16000], 16000),
        (6000, [], 8000),
    ],
)
def test_a_model_that_takes_some_rates_gets_one_of_them(rate, offered, sent):
    assert carried_rate(rate, offered) == sent
