"""When to try the server again after a failure, and when to give up. No I/O: both clients share it.

The server tells its clients how long to wait with the SSE `retry:` field (`JOBPULSE_SSE_RETRY_MS`, and
250 ms when a stopping web process cuts a stream short) and with `Retry-After` on a 503. Those are floors:
the client never comes back sooner than asked. On top of them, consecutive failures double the wait up to
`max_backoff`, so a server that is down is not hammered, and a little jitter keeps the clients of a
restarted web process from all arriving in the same millisecond.
"""

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

from jobpulse.client.errors import ServerUnavailable

# The wait before the server has sent a `retry:` hint (it sends one as each stream opens).
DEFAULT_RETRY_S = 0.5
# The doubling starts from at least this, so a server that says `retry: 0` is not retried in a hot loop.
MIN_BACKOFF_S = 0.1
JITTER = 0.2


class Backoff:
    """Reconnection timing for one stream or request, from its first failure to its success or give-up.

    `failed()` raises `ServerUnavailable` once the server has been unreachable (no successful connection)
    for `reconnect_timeout` seconds; `delay()` never sleeps past that moment, so the last attempt is made
    right at the edge of the window rather than abandoned early.
    """

    def __init__(
        self,
        url: str,
        *,
        reconnect_timeout: float,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.reconnect_timeout = reconnect_timeout
        self.max_backoff = max_backoff
        self.retry_s = DEFAULT_RETRY_S
        self.failures = 0
        self._clock = clock
        self._jitter = jitter
        self._unreachable_since: float | None = None
        self._retry_after: float | None = None

    def hint(self, retry_ms: int) -> None:
        """The server's `retry:` field: from now on, the least time to wait before reconnecting."""
        self.retry_s = max(0, retry_ms) / 1000

    def connected(self) -> None:
        """The server answered (200, or 204 on a stream): it is reachable again."""
        self._unreachable_since = None

    def progressed(self) -> None:
        """An event arrived: the connection was worth making, so the next failure starts the doubling over."""
        self.failures = 0

    def failed(self, reason: str, *, retry_after: float | None = None) -> None:
        """Count a failed attempt; raise `ServerUnavailable` if the server has been away too long."""
        now = self._clock()
        self.failures += 1
        self._retry_after = retry_after
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._unreachable_since >= self.reconnect_timeout:
            raise ServerUnavailable(self.url, reason)

    def delay(self, deadline: float | None = None) -> float:
        """Seconds to wait before the next attempt: 0 before any failure, and never past `deadline`."""
        if self.failures == 0:
            return 0.0
        exponential = max(self.retry_s, MIN_BACKOFF_S) * 2.0 ** min(self.failures - 1, 32)
        wait = max(self.retry_s, min(self.max_backoff, exponential * (1 + JITTER * self._jitter())))
        if self._retry_after is not None:
            wait = max(wait, self._retry_after)
            self._retry_after = None
        now = self._clock()
        if self._unreachable_since is not None:
            wait = min(wait, self._unreachable_since + self.reconnect_timeout - now)
        if deadline is not None:
            wait = min(wait, deadline - now)
        return max(0.0, wait)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` in seconds, given as seconds or as an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds: float = when.timestamp() - time.time()
    return max(0.0, seconds)
