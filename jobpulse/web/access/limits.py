"""Per-client limits: submissions a minute (across all web processes) and streams held open (per process).

Both answer 429 with `Retry-After`, the way API clients already know to back off.
"""

import math
import resource
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from jobpulse.keys import submission_rate_key
from jobpulse.web.errors import ApiError

# GCRA (the generic cell rate algorithm): one number per client, the time its next submission is due.
# A client may run up to a minute ahead of its steady rate, so it can submit `limit` jobs in a burst and
# then `limit` a minute. Redis's clock, so every web process agrees.
_ADMIT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local due = tonumber(redis.call('GET', KEYS[1])) or now
if due < now then due = now end
local next_due = due + interval
local wait = next_due - window - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(next_due), 'PX', math.ceil(next_due - now))
return 0
"""


class SubmissionRate:
    """At most `limit` submissions per `window_s` per client (a minute in the app); 0 turns it off."""

    def __init__(self, redis: Redis | RedisCluster, limit: int, window_s: float = 60) -> None:
        self._limit = limit
        self._window_ms = window_s * 1000
        self._admit = redis.register_script(_ADMIT)  # type: ignore[misc]  # RedisCluster has it too

    async def admit(self, client: str) -> None:
        if not self._limit:
            return
        interval_ms = self._window_ms / self._limit
        args = [interval_ms, self._window_ms]
        wait_ms = int(await self._admit(keys=[submission_rate_key(client)], args=args))
        if wait_ms > 0:
            retry_after = max(1, math.ceil(wait_ms / 1000))
            raise ApiError(
                429,
                f"Too many submissions: at most {self._limit} a minute per client "
                f"(JOBPULSE_SUBMISSIONS_PER_MINUTE); retry in {retry_after} s.",
                {"Retry-After": str(retry_after)},
            )


STREAM_RETRY_AFTER_S = 5
FULL_RETRY_AFTER_S = 2
# File descriptors kept free for Redis connections, uploads and plain requests when the stream capacity
# is derived from the open-file limit.
RESERVED_FDS = 256


def stream_capacity(configured: int) -> int:
    """`configured`, or with 0, what the process's open-file limit leaves for streams.

    Every stream holds a socket; past the limit `accept()` fails and clients see connections reset, or
    a `200` followed by a drop. Refusing with a `503` first tells them to go elsewhere or come back.
    """
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, soft - RESERVED_FDS)


@dataclass
class StreamSlots:
    """Counts the event streams and long-polls this process holds open, in all and per client."""

    per_client: int
    capacity: int = 1_000_000
    _held: Counter[str] = field(default_factory=Counter)
    _total: int = 0

    @property
    def total(self) -> int:
        return self._total

    def take(self, client: str) -> "StreamSlot":
        if self._total >= self.capacity:
            raise ApiError(
                503,
                f"This web process already holds {self.capacity} open streams (JOBPULSE_MAX_STREAMS); "
                "retry shortly.",
                {"Retry-After": str(FULL_RETRY_AFTER_S)},
            )
        if self.per_client and self._held[client] >= self.per_client:
            raise ApiError(
                429,
                f"Too many open streams: at most {self.per_client} per client "
                "(JOBPULSE_MAX_STREAMS_PER_CLIENT); close one first.",
                {"Retry-After": str(STREAM_RETRY_AFTER_S)},
            )
        self._held[client] += 1
        self._total += 1
        return StreamSlot(self, client)

    def held(self, client: str) -> int:
        return self._held[client]

    def _give_back(self, client: str) -> None:
        self._total -= 1
        self._held[client] -= 1
        if self._held[client] <= 0:
            del self._held[client]


class StreamSlot:
    """One held stream; `release()` gives it back, once however often it is called."""

    def __init__(self, slots: StreamSlots, client: str) -> None:
        self._slots: StreamSlots | None = slots
        self._client = client

    def release(self) -> None:
        if self._slots is not None:
            self._slots._give_back(self._client)
            self._slots = None
