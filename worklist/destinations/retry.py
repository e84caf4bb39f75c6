"""The one retry policy every destination shares: capped exponential backoff with
equal jitter, bounded by time.

A delivery that fails with a retryable answer is tried again after

``delay(n) = c/2 + uniform(0, c/2)``, ``c = min(cap, base * 2 ** (n - 1))``

seconds ("equal jitter", AWS Architecture Blog, *Exponential Backoff And
Jitter*): retries of many deliveries to one recovering peer spread out, yet a
delay is never shorter than half its ceiling, so bad luck cannot spend attempts
within seconds (full jitter, ``uniform(0, c)``, spent 6 of 10 attempts in 18 s
of a PACS outage). A peer's ``Retry-After`` raises the delay (up to ``cap``).

Retries are bounded by **time**, not by a count: a delivery is retried until
``retry_for`` has passed since its first failure (a working day by default), the
last attempt landing at that deadline; then it fails and the operator reads why
(``radground jobs show``). The schedule lives in the database
(``deliveries.next_attempt_at`` and ``deliveries.retry_until``), so a restart
or a lost broker message loses no retry: the node's sweeper sends a delivery
whose time has come again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["DEFAULT_RETRY_FOR_SECONDS", "RetryPolicy"]

#: A working day.
DEFAULT_RETRY_FOR_SECONDS = 8 * 3600.0


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again, and until when.

    Attributes
    ----------
    retry_for_seconds
        How long after the first failure a delivery keeps being retried.
    base_seconds
        Ceiling of the first delay (the first retry waits between half of it and all of it).
    cap_seconds
        No delay is longer (a peer's ``Retry-After`` included): once the peer is back,
        results arrive within this.
    """

    retry_for_seconds: float = DEFAULT_RETRY_FOR_SECONDS
    base_seconds: float = 10.0
    cap_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("retry_for_seconds", "base_seconds", "cap_seconds"):
            _positive(name, getattr(self, name))
        if self.base_seconds > self.cap_seconds:
            raise ValueError(
                f"base_seconds ({self.base_seconds}) must not exceed "
                f"cap_seconds ({self.cap_seconds})"
            )

    def ceiling(self, attempt: int) -> float:
        """The exponential ceiling of retry ``attempt`` (1 = the first retry), capped."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be an int >= 1, got {attempt!r}")
        if attempt > 64:  # 2 ** 1100 overflows a float; by then every base has reached the cap
            return self.cap_seconds
        return min(self.cap_seconds, self.base_seconds * 2.0 ** (attempt - 1))

    def floor(self, attempt: int) -> float:
        """The shortest delay retry ``attempt`` can draw: half its ceiling."""
        return self.ceiling(attempt) / 2.0

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry ``attempt`` (1 for the first retry after the first failure).

        Parameters
        ----------
        attempt
            Which retry this is.
        retry_after
            The peer's ``Retry-After`` (seconds, >= 0): the delay is at least this, at most ``cap``.
        rng
            Random source (a seeded :class:`random.Random` in tests).
        """
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, (int, float))
            or not math.isfinite(retry_after)
            or retry_after < 0
        ):
            raise ValueError(f"retry_after must be None or seconds >= 0, got {retry_after!r}")
        half = self.ceiling(attempt) / 2.0
        delay = half + (rng or random).uniform(0.0, half)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cap_seconds)

    def deadline(self, first_failure_at: datetime) -> datetime:
        """Until when a delivery that first failed at ``first_failure_at`` is retried."""
        return first_failure_at + timedelta(seconds=self.retry_for_seconds)

    def next_attempt_at(
        self,
        attempt: int,
        *,
        failed_at: datetime,
        retry_until: datetime,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to make retry ``attempt`` of a delivery that just failed at ``failed_at``,
        or None when its time is up (``failed_at`` at or past ``retry_until``). The last
        retry is made at ``retry_until`` itself, however the delay falls."""
        if failed_at >= retry_until:
            return None
        due = failed_at + timedelta(seconds=self.delay(attempt, retry_after=retry_after, rng=rng))
        return min(due, retry_until)

    def with_retry_for(self, retry_for_seconds: float | None) -> RetryPolicy:
        """This policy with a destination's own ``retry_for`` (None keeps the default)."""
        if retry_for_seconds is None:
            return self
        return RetryPolicy(
            retry_for_seconds=retry_for_seconds,
            base_seconds=self.base_seconds,
            cap_seconds=self.cap_seconds,
        )
