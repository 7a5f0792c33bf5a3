"""Retry-After on step_in_progress says when the running turn is likely done, not how long its
lease could last: a turn that has run for t is likely to need about t more."""

from __future__ import annotations

import pytest

from orchestrator_flows.store import retry_after_seconds

LEASE_MS = 20_000


@pytest.mark.parametrize(("held_ms", "seconds"), [
    (0, 1),  # just claimed: most turns take milliseconds
    (40, 1),
    (999, 1),
    (2_300, 3),  # a slow agent, 2.3 s in: likely about as long again
    (9_000, 9),
    (17_500, 3),  # never past what is left of the lease
    (19_990, 1),
])
def test_retry_after_is_how_long_the_running_turn_likely_still_needs(
    held_ms: int, seconds: int
) -> None:
    assert retry_after_seconds(LEASE_MS - held_ms, LEASE_MS) == seconds
