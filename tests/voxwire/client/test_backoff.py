"""Full-jitter backoff: bounds, the server's delay as a floor, the attempt and time budgets."""

from __future__ import annotations

import random

import pytest

from voxwire.client.backoff import Backoff, RetryBudget


def test_full_jitter_stays_under_the_exponential_ceiling_and_spreads_over_it():
    policy = Backoff(base_s=0.1, cap_s=2.0)
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (40, 2.0)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(2000)]
        assert 0.0 <= min(delays) and max(delays) <= ceiling
        # Uniform over [0, ceiling]: the mean is about half of it, not bunched at the top.
        assert abs(sum(delays) / len(delays) - ceiling / 2) < ceiling * 0.05


def test_the_servers_retry_delay_is_a_floor():
    policy = Backoff(base_s=0.1, cap_s=0.4)
    rng = random.Random(1)
    assert all(policy.delay(2, 1.5, rng) == 1.5 for _ in range(100))
    assert all(policy.delay(0, 0.05, rng) >= 0.05 for _ in range(100))


def test_the_budget_ends_after_max_attempts_and_resets_after_a_session():
    budget = RetryBudget(Backoff(max_attempts=3, max_elapsed_s=100.0), rng=random.Random(2))
    assert [budget.next_delay(0.0) is not None for _ in range(4)] == [True, True, True, False]
    budget.reset()
    assert budget.next_delay(50.0) is not None


def test_the_budget_ends_when_the_next_attempt_would_start_too_late():
    budget = RetryBudget(Backoff(max_attempts=100, max_elapsed_s=5.0), rng=random.Random(3))
    assert budget.next_delay(0.0) is not None
    assert budget.next_delay(4.9, retry_after_s=0.5) is None  # would start at 5.4 s


def test_settings_are_checked():
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=1.0, cap_s=0.5)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)
