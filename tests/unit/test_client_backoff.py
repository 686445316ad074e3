"""jobpulse.client.backoff: reconnection timing, on a clock the tests move by hand."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from jobpulse.client.backoff import Backoff, retry_after
from jobpulse.client.errors import ServerUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def backoff(
    clock: Clock, *, reconnect_timeout: float = 1000, max_backoff: float = 10, jitter: float = 0
) -> Backoff:
    return Backoff(
        "http://jobpulse/x",
        reconnect_timeout=reconnect_timeout,
        max_backoff=max_backoff,
        clock=clock,
        jitter=lambda: jitter,
    )


def delays(policy: Backoff, failures: int) -> list[float]:
    result = []
    for _ in range(failures):
        policy.failed("refused")
        result.append(policy.delay())
    return result


def test_no_wait_before_the_first_failure_then_the_retry_hint_doubling_up_to_the_cap() -> None:
    policy = backoff(Clock())
    assert policy.delay() == 0
    assert delays(policy, 7) == [0.5, 1, 2, 4, 8, 10, 10]  # 0.5 s until the server sends a hint


def test_the_servers_retry_hint_is_the_floor_even_above_the_cap() -> None:
    policy = backoff(Clock(), max_backoff=1)
    policy.hint(250)
    assert delays(policy, 4) == [0.25, 0.5, 1, 1]
    policy.hint(5000)
    assert policy.delay() == 5


def test_retry_zero_still_backs_off() -> None:
    policy = backoff(Clock())
    policy.hint(0)
    assert delays(policy, 3) == pytest.approx([0.1, 0.2, 0.4])


def test_an_event_starts_the_doubling_over() -> None:
    policy = backoff(Clock())
    policy.hint(250)
    delays(policy, 4)
    policy.progressed()
    assert policy.delay() == 0
    assert delays(policy, 2) == [0.25, 0.5]


def test_jitter_only_lengthens_the_wait_and_never_past_the_cap() -> None:
    policy = backoff(Clock(), max_backoff=3, jitter=1)
    assert delays(policy, 4) == pytest.approx([0.6, 1.2, 2.4, 3])


def test_retry_after_is_a_floor_for_the_next_wait_only() -> None:
    policy = backoff(Clock())
    policy.failed("503", retry_after=3)
    assert policy.delay() == 3
    assert policy.delay() == 0.5


def test_gives_up_after_reconnect_timeout_trying_last_at_its_very_end() -> None:
    clock = Clock()
    policy = backoff(clock, reconnect_timeout=10)
    clock.now = 100
    policy.failed("refused")  # the window opens at the first failure
    clock.now = 109
    policy.failed("refused")
    assert policy.delay() == 1
    clock.now = 109.5
    policy.failed("refused")
    assert policy.delay() == 0.5  # 2 s by the doubling, cut to the end of the window
    clock.now = 110
    with pytest.raises(ServerUnavailable) as unavailable:
        policy.failed("connection refused")
    assert (unavailable.value.url, unavailable.value.reason) == ("http://jobpulse/x", "connection refused")


def test_a_successful_connection_closes_the_window() -> None:
    clock = Clock()
    policy = backoff(clock, reconnect_timeout=10)
    policy.failed("refused")
    clock.now = 9
    policy.connected()
    policy.failed("stream ended")
    clock.now = 18
    policy.failed("refused")  # 9 s since the window opened again: still trying


def test_reconnect_timeout_zero_gives_up_at_the_first_failure() -> None:
    with pytest.raises(ServerUnavailable):
        backoff(Clock(), reconnect_timeout=0).failed("refused")


def test_the_wait_ends_at_the_deadline() -> None:
    clock = Clock()
    policy = backoff(clock)
    delays(policy, 5)
    assert policy.delay(deadline=1.5) == 1.5
    assert policy.delay(deadline=-1) == 0


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after({"retry-after": "2"}) == 2
    assert retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 < (retry_after({"retry-after": later}) or 0) <= 30
