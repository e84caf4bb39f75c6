"""The one retry policy (worklist.destinations.retry): capped exponential backoff with equal
jitter and a floor, bounded by time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from worklist.destinations import RetryPolicy

START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def schedule(policy: RetryPolicy, rng: random.Random, *, down_for: float = float("inf"),
             attempt_seconds: float = 0.0) -> tuple[list[float], bool]:
    """Attempt times (seconds after the first) against a peer that is down for ``down_for``
    seconds, each attempt taking ``attempt_seconds``; and whether the delivery succeeded."""
    retry_until = policy.deadline(START + timedelta(seconds=attempt_seconds))
    at, times, attempt = START, [], 0
    while True:
        times.append((at - START).total_seconds())
        failed_at = at + timedelta(seconds=attempt_seconds)
        if (at - START).total_seconds() >= down_for:
            return times, True
        attempt += 1
        due = policy.next_attempt_at(attempt, failed_at=failed_at, retry_until=retry_until, rng=rng)
        if due is None:
            return times, False
        at = due


def old_full_jitter_schedule(rng: random.Random, *, down_for: float) -> tuple[list[float], bool]:
    """The policy this one replaced, for contrast: uniform(0, min(300, 2 * 2^(n-1))) and
    10 attempts, whatever time they spanned."""
    at, times = 0.0, []
    for attempt in range(1, 11):
        times.append(at)
        if at >= down_for:
            return times, True
        at += rng.uniform(0.0, min(300.0, 2.0 * 2 ** (attempt - 1)))
    return times, False


def test_a_delay_is_never_below_its_floor_nor_above_its_ceiling_or_the_cap():
    policy = RetryPolicy(base_seconds=10.0, cap_seconds=600.0)
    rng = random.Random(20261207)
    for attempt in range(1, 40):
        ceiling = min(600.0, 10.0 * 2 ** (attempt - 1))
        draws = [policy.delay(attempt, rng=rng) for _ in range(500)]
        assert policy.floor(attempt) == ceiling / 2
        assert all(ceiling / 2 <= d <= ceiling for d in draws), attempt
        # jittered: retries of many deliveries spread out
        assert max(draws) - min(draws) > ceiling / 4


def test_backoff_is_capped_even_for_huge_attempt_numbers():
    policy = RetryPolicy(base_seconds=10.0, cap_seconds=600.0)
    rng = random.Random(3)
    for attempt in (7, 8, 64, 65, 1100, 10**6):
        assert all(300.0 <= policy.delay(attempt, rng=rng) <= 600.0 for _ in range(100))


def test_retry_after_raises_the_delay_up_to_the_cap_only():
    policy = RetryPolicy(base_seconds=2.0, cap_seconds=60.0)
    rng = random.Random(4)
    assert all(policy.delay(1, retry_after=30.0, rng=rng) >= 30.0 for _ in range(100))
    assert policy.delay(1, retry_after=3600.0, rng=rng) == 60.0
    assert policy.delay(1, retry_after=0.0, rng=random.Random(9)) == policy.delay(
        1, rng=random.Random(9)
    )


def test_the_schedule_is_bounded_by_time_not_by_a_count():
    policy = RetryPolicy(retry_for_seconds=8 * 3600, base_seconds=10.0, cap_seconds=600.0)
    for seed in range(50):
        times, delivered = schedule(policy, random.Random(seed))
        assert not delivered
        assert times[-1] == 8 * 3600  # the last attempt is made at the deadline itself ...
        assert all(b > a for a, b in pairwise(times))  # ... and none after it
        assert all(b - a <= 600.0 for a, b in pairwise(times))  # capped
        # about one attempt per 5-10 minutes once capped: the count follows the period
        assert 8 * 3600 / 600 < len(times) < 8 * 3600 / 300 + 10


def test_a_30_second_outage_does_not_exhaust_the_retries():
    policy = RetryPolicy()  # the defaults: 8 h, base 10 s, cap 600 s
    for seed in range(2000):
        times, delivered = schedule(policy, random.Random(seed), down_for=30.0)
        assert delivered, seed
        # the floors (5, 10, 20 s) keep bad luck from spending attempts: at most 3 fall in the
        # outage
        assert sum(1 for t in times if t < 30.0) <= 3, (seed, times)
        assert sum(1 for t in times if t < 18.0) <= 3
    # the policy it replaced spent 6 or more of its 10 attempts in the first 18 s for some draws
    spent = [
        old_full_jitter_schedule(random.Random(seed), down_for=30.0)[0] for seed in range(2000)
    ]
    assert max(sum(1 for t in times if t < 18.0) for times in spent) >= 6


def test_a_slow_peer_still_gets_its_last_attempt_at_the_deadline():
    policy = RetryPolicy(retry_for_seconds=3600, base_seconds=10.0, cap_seconds=600.0)
    times, delivered = schedule(policy, random.Random(1), attempt_seconds=45.0)
    assert not delivered and times[-1] == 3600 + 45.0


def test_a_failure_at_or_after_the_deadline_ends_the_retries():
    policy = RetryPolicy(retry_for_seconds=60)
    until = policy.deadline(START)
    assert until == START + timedelta(seconds=60)
    assert policy.next_attempt_at(3, failed_at=until, retry_until=until) is None
    assert (
        policy.next_attempt_at(3, failed_at=until + timedelta(seconds=1), retry_until=until) is None
    )
    assert (
        policy.next_attempt_at(30, failed_at=until - timedelta(seconds=1), retry_until=until)
        == until
    )


def test_a_destination_may_retry_for_its_own_period():
    policy = RetryPolicy(retry_for_seconds=8 * 3600, base_seconds=5.0, cap_seconds=120.0)
    own = policy.with_retry_for(600.0)
    assert (own.retry_for_seconds, own.base_seconds, own.cap_seconds) == (600.0, 5.0, 120.0)
    assert policy.with_retry_for(None) is policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry_for_seconds": 0},
        {"base_seconds": -1},
        {"cap_seconds": float("inf")},
        {"base_seconds": 60.0, "cap_seconds": 30.0},
        {"retry_for_seconds": True},
    ],
)
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("attempt", "kwargs"),
    [
        (0, {}),
        (-1, {}),
        (True, {}),
        (1.5, {}),
        (1, {"retry_after": -1.0}),
        (1, {"retry_after": float("nan")}),
    ],
)
def test_bad_delay_arguments_are_refused(attempt, kwargs):
    with pytest.raises(ValueError):
        RetryPolicy().delay(attempt, **kwargs)
