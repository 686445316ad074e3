"""The job store: each job's current state and its event history, changed together in one atomic step.

Every change to a job goes through one Lua script that, atomically,
  1. refuses the change if the job is unknown, already finished, or the caller's attempt is stale;
  2. numbers the event (``last_event_id`` + 1) and appends it to the job's stream, trimmed to a length;
  3. updates the state hash that `GET /jobs/{id}` reads in O(1);
  4. refreshes both keys' expiry (short once the job has finished);
  5. on a status event, files the job in its queue's index of unfinished jobs (`keys.unfinished_jobs_key`),
     scored by Redis's clock, or takes it out on the final one (progress events leave the index alone);
  6. publishes the event on the job's live channel for web processes that are watching (`SPUBLISH`, the
     shard's own, on a Redis Cluster).
So the state never disagrees with the history, nothing is appended after a terminal event, and a
subscriber that reads the stream and then listens live sees each event exactly once.

When the queue lives apart from the store (`Settings.queue_apart`: a cluster, or two URLs), the index is
the queue's (workers' bookkeeping, beside arq's keys) and no script can touch both. Step 5 then happens
beside the script, ordered so that the index errs only towards too much: a job is filed before its
status is written and taken out only after its final one. An entry left behind (a crash in between) names
a job the reconciler finds finished or gone, and drops.
"""

import itertools
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic_core import to_jsonable_python
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from jobpulse import keys
from jobpulse.events import StoredEvent, event_id_from_entry, from_stream_entry
from jobpulse.models import JobView, StatusEvent, epoch_to_datetime, progress_event_json
from jobpulse.script_batch import ScriptBatcher, ShardedScriptBatcher
from jobpulse.settings import Settings
from jobpulse.status import EventType, JobStatus

_APPEND = """
local state, stream, index = KEYS[1], KEYS[2], KEYS[3]
local mode, channel, etype, data, final = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local expect_attempt, maxlen, ttl, write_id = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local member, expect_status, publish = ARGV[10], ARGV[11], ARGV[12]
if mode == 'create' then
  if redis.call('EXISTS', state) == 1 then return -3 end
else
  if redis.call('EXISTS', state) == 0 then return -1 end
  -- The same call again (a client retrying after a lost reply): it is already written, once.
  if redis.call('HGET', state, 'last_write') == write_id then
    return tonumber(redis.call('HGET', state, 'last_event_id'))
  end
  if redis.call('HGET', state, 'final') == '1' then return 0 end
  if expect_attempt ~= '' and redis.call('HGET', state, 'attempt') ~= expect_attempt then return -2 end
  if expect_status ~= '' and redis.call('HGET', state, 'status') ~= expect_status then return -2 end
  if mode == 'unqueued' then
    -- The reconciler's write: only while arq holds the job nowhere (KEYS[4..7]: arq's job, in-progress,
    -- queue and result keys). A job key off the queue, or a result, is arq's leftover: dropped with it.
    if redis.call('EXISTS', KEYS[5]) == 1 then return -4 end
    if redis.call('EXISTS', KEYS[4]) == 1 and redis.call('ZSCORE', KEYS[6], member) then return -4 end
    redis.call('DEL', KEYS[4], KEYS[7])
  end
end
local seq = redis.call('HINCRBY', state, 'last_event_id', 1)
redis.call('XADD', stream, 'MAXLEN', maxlen, '0-' .. seq, 'type', etype, 'data', data, 'final', final)
redis.call('HSET', state, 'last_write', write_id, unpack(ARGV, 13))
if final == '1' then redis.call('HSET', state, 'final', '1') end
redis.call('EXPIRE', state, ttl)
redis.call('EXPIRE', stream, ttl)
if index == nil then
  -- the queue lives apart: the store keeps the index beside this script
elseif final == '1' then
  redis.call('ZREM', index, member)
elseif etype == 'status' then
  local t = redis.call('TIME')
  redis.call('ZADD', index, t[1] * 1000 + math.floor(t[2] / 1000), member)
end
redis.call(publish, channel, seq .. '\\n' .. etype .. '\\n' .. final .. '\\n' .. data)
return seq
"""

# The queue's side, when it lives apart from the store (see the module's docstring).
_FILE_UNFINISHED = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 1
"""

# The reconciler's check when the queue lives apart: the append script's `unqueued` branch, on the queue.
_RELEASE_FROM_ARQ = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -4 end
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('ZSCORE', KEYS[3], ARGV[1]) then return -4 end
redis.call('DEL', KEYS[1], KEYS[4])
return 1
"""

# What the append script answers instead of an event id.
_FINISHED: Final = 0
_UNKNOWN: Final = -1
_STALE_ATTEMPT: Final = -2
_EXISTS: Final = -3
_HELD_BY_ARQ: Final = -4


class JobStoreError(Exception):
    """A change the store refused."""


class JobNotFound(JobStoreError):
    def __init__(self, job_id: str) -> None:
        # An id is short; whatever else arrived in its place is cut, not echoed back at length.
        shown = job_id if len(job_id) <= 64 else f"{job_id[:64]}…"
        super().__init__(f"No job {shown!r}: it never existed or its retention has expired.")
        self.job_id = job_id


class JobAlreadyFinished(JobStoreError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id!r} has already finished.")
        self.job_id = job_id


class StaleAttempt(JobStoreError):
    """The job has moved on to another attempt; whoever ran this one must stop publishing."""


class HeldByArq(JobStoreError):
    """The reconciler's write was refused: arq holds the job after all (queued or running)."""


@dataclass(frozen=True)
class JobState:
    """The state hash, parsed."""

    id: str
    task: str
    status: JobStatus
    progress: float
    message: str | None
    current: int | None
    total: int | None
    attempt: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: Any
    error: str | None
    params: dict[str, Any]
    last_event_id: int
    # Who submitted it, under an owner rule (`jobs_router(owner=...)`); never in the public view.
    owner: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def view(self, events_url: str) -> JobView:
        """As `GET /jobs/{id}` shows it; `events_url` is where the web serves its stream."""
        return JobView(
            id=self.id,
            task=self.task,
            status=self.status,
            progress=self.progress,
            message=self.message,
            current=self.current,
            total=self.total,
            attempt=self.attempt,
            created_at=epoch_to_datetime(self.created_at),
            started_at=None if self.started_at is None else epoch_to_datetime(self.started_at),
            finished_at=None if self.finished_at is None else epoch_to_datetime(self.finished_at),
            result=self.result,
            error=self.error,
            last_event_id=self.last_event_id,
            events_url=events_url,
        )


def _text(raw: Mapping[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return value.decode() if value else None


def _number(raw: Mapping[bytes, bytes], name: str) -> float | None:
    value = raw.get(name.encode())
    return float(value) if value else None


def _integer(raw: Mapping[bytes, bytes], name: str) -> int | None:
    value = raw.get(name.encode())
    return int(value) if value else None


def parse_state(job_id: str, raw: Mapping[bytes, bytes]) -> JobState:
    """The state hash as `HGETALL` answers it, parsed."""
    result = _text(raw, "result")
    return JobState(
        id=job_id,
        task=_text(raw, "task") or "",
        status=JobStatus(_text(raw, "status") or JobStatus.QUEUED),
        progress=_number(raw, "progress") or 0.0,
        message=_text(raw, "message"),
        current=_integer(raw, "current"),
        total=_integer(raw, "total"),
        attempt=_integer(raw, "attempt") or 0,
        created_at=_number(raw, "created_at") or 0.0,
        started_at=_number(raw, "started_at"),
        finished_at=_number(raw, "finished_at"),
        result=None if result is None else json.loads(result),
        error=_text(raw, "error"),
        params=json.loads(_text(raw, "params") or "{}"),
        last_event_id=_integer(raw, "last_event_id") or 0,
        owner=_text(raw, "owner"),
    )


def _field(value: object) -> str:
    """How a state field is written: absent values as the empty string, which reads back as None."""
    return "" if value is None else str(value)


def to_json(value: object) -> str:
    """JSON for results and event data; values JSON cannot hold are turned into their closest form."""
    return json.dumps(to_jsonable_python(value, fallback=repr), separators=(",", ":"), ensure_ascii=False)


# A job's state and the events after ARGV[1] (at most ARGV[2]), read as one snapshot in one round trip:
# what a new watcher of an already watched job needs before its first byte.
_STATE_AND_EVENTS = """
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[1]) + 1), '+', 'COUNT', ARGV[2])
}
"""


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class JobStore:
    def __init__(
        self,
        redis: "Redis | RedisCluster",
        settings: Settings,
        *,
        queue_redis: "Redis | None" = None,
        batch_progress: bool = False,
    ) -> None:
        """`redis` is the store's Redis (`REDIS_URL`: one node, or a `jobpulse.connections.StoreCluster`);
        `queue_redis`, the queue's, where the unfinished index lives when `settings.queue_apart` (by
        default `redis`). `batch_progress`: progress writes made while another is on its way to Redis go
        together as one pipeline (`jobpulse.script_batch`), for a worker whose many jobs publish at once."""
        self._redis = redis
        self._queue_redis: Redis = queue_redis or redis  # type: ignore[assignment]  # one node if not apart
        self._queue_apart = settings.queue_apart
        self._publish = "SPUBLISH" if settings.redis_cluster else "PUBLISH"
        self._maxlen = settings.stream_maxlen
        self._retention_s = settings.retention_s
        self._active_ttl_s = settings.active_ttl_s
        self._unfinished = keys.unfinished_jobs_key(settings.queue_name)
        self._append = redis.register_script(_APPEND)  # type: ignore[misc]  # RedisCluster has it too
        self._state_and_events = redis.register_script(_STATE_AND_EVENTS)  # type: ignore[misc]  # RedisCluster has it too
        self._file_unfinished = self._queue_redis.register_script(_FILE_UNFINISHED)
        self._release_from_arq = self._queue_redis.register_script(_RELEASE_FROM_ARQ)
        self._append_progress: Any = self._append
        if batch_progress:
            self._append_progress = (
                ShardedScriptBatcher(redis, self._append)
                if isinstance(redis, RedisCluster)
                else ScriptBatcher(redis, self._append)
            )
        # Write ids are this store's random name and a count: unique per write, and cheaper than fresh
        # random bytes for each.
        self._writer = secrets.token_hex(8)
        self._writes = itertools.count(1)

    @property
    def redis(self) -> "Redis | RedisCluster":
        """The store's Redis, which it writes the job's state and events through."""
        return self._redis

    @property
    def queue_redis(self) -> "Redis":
        """The queue's Redis, for the workers' bookkeeping that goes with arq's keys (heartbeats)."""
        return self._queue_redis

    async def _run(
        self,
        job_id: str,
        *,
        mode: str,
        event_type: EventType,
        data: str | bytes,
        final: bool,
        fields: Mapping[str, object],
        expect_attempt: int | None = None,
        expect_status: JobStatus | None = None,
        unless_held: tuple[str, str, str, str] | None = None,
        write_id: str | None = None,
        batched: bool = False,
    ) -> int:
        """Run the append script; `write_id` names this one write (a fresh one by default).

        The worker's Redis client retries a command whose connection dropped. If the first try ran but its
        reply was lost, the retry carries the same `write_id` and the script answers the event id it wrote
        rather than appending the event a second time.
        """
        args: list[str | bytes] = [
            mode,
            keys.live_channel(job_id),
            event_type.value,
            data,
            "1" if final else "0",
            "" if expect_attempt is None else str(expect_attempt),
            str(self._maxlen),
            str(self._retention_s if final else self._active_ttl_s),
            write_id or f"{self._writer}-{next(self._writes)}",
            job_id,
            "" if expect_status is None else expect_status.value,
            self._publish,
        ]
        for name, value in fields.items():
            args += [name, _field(value)]
        append = self._append_progress if batched else self._append
        script_keys = [keys.state_key(job_id), keys.events_key(job_id)]
        if not self._queue_apart:
            script_keys.append(self._unfinished)
            if unless_held is not None:
                args[0] = "unqueued"
                script_keys += unless_held
        else:
            if (
                unless_held is not None
                and int(await self._release_from_arq(keys=list(unless_held), args=[job_id])) == _HELD_BY_ARQ
            ):
                raise HeldByArq(f"Job {job_id!r} is on arq's queue or running after all.")
            if event_type is EventType.STATUS and not final:
                await self._file_unfinished(keys=[self._unfinished], args=[job_id])
        code = int(await append(keys=script_keys, args=args))
        if self._queue_apart and final and (code > 0 or code == _FINISHED):
            await self._queue_redis.zrem(self._unfinished, job_id)  # only once it is written
        if code > 0:
            return code
        if code == _FINISHED:
            raise JobAlreadyFinished(job_id)
        if code == _STALE_ATTEMPT:
            raise StaleAttempt(f"Job {job_id!r} is no longer on attempt {expect_attempt}.")
        if code == _EXISTS:
            raise JobStoreError(f"Job {job_id!r} already exists.")
        if code == _HELD_BY_ARQ:
            raise HeldByArq(f"Job {job_id!r} is on arq's queue or running after all.")
        raise JobNotFound(job_id)

    async def create(
        self, job_id: str, task: str, params: Mapping[str, Any], *, owner: str | None = None
    ) -> JobState:
        """Record a new job as `queued`, with its first event; `owner` is written in the same step."""
        now = time.time()
        event = StatusEvent(job_id=job_id, ts=now, status=JobStatus.QUEUED, attempt=0)
        fields = {
            "task": task,
            "status": JobStatus.QUEUED.value,
            "progress": 0,
            "attempt": 0,
            "created_at": now,
            "params": to_json(params),
            "owner": owner,
        }
        event_id = await self._run(
            job_id,
            mode="create",
            event_type=EventType.STATUS,
            data=event.model_dump_json(exclude_none=True),
            final=False,
            fields=fields,
        )
        # Exactly what the script just wrote: no need to read it back.
        return JobState(
            id=job_id,
            task=task,
            status=JobStatus.QUEUED,
            progress=0.0,
            message=None,
            current=None,
            total=None,
            attempt=0,
            created_at=now,
            started_at=None,
            finished_at=None,
            result=None,
            error=None,
            params=dict(params),
            last_event_id=event_id,
            owner=owner,
        )

    async def set_status(
        self,
        job_id: str,
        status: JobStatus,
        *,
        attempt: int,
        error: str | None = None,
        result: Any = None,
        expect_attempt: int | None = None,
        expect_status: JobStatus | None = None,
        unless_held: tuple[str, str, str, str] | None = None,
    ) -> int:
        """Append a status event and move the state to it; returns the event id.

        `expect_status` (with `expect_attempt`) refuses the write (`StaleAttempt`) if the job has changed
        since it was read. `unless_held`, arq's job, in-progress, queue and result keys of the job, is the
        reconciler's: the write is refused (`HeldByArq`) if arq holds the job (in progress, or its job key
        on the queue), and otherwise drops arq's leftovers of it (a job key off the queue, a result) in
        the same step, so that the job can be enqueued again under its id.
        """
        now = time.time()
        result_json = to_json(result) if status is JobStatus.SUCCEEDED else None
        event_data = StatusEvent(
            job_id=job_id,
            ts=now,
            status=status,
            attempt=attempt,
            error=error,
            result=None if result_json is None else json.loads(result_json),
        ).model_dump_json(exclude_none=True)
        fields: dict[str, object] = {"status": status.value, "attempt": attempt, "error": error}
        if status is JobStatus.RUNNING:
            fields |= {"started_at": now, "progress": 0, "message": None, "current": None, "total": None}
        if status.is_terminal:
            fields |= {"finished_at": now, "result": result_json}
        if status is JobStatus.SUCCEEDED:
            fields["progress"] = 100
        return await self._run(
            job_id,
            mode="append",
            event_type=EventType.STATUS,
            data=event_data,
            final=status.is_terminal,
            fields=fields,
            expect_attempt=expect_attempt,
            expect_status=expect_status,
            unless_held=unless_held,
        )

    async def set_progress(
        self,
        job_id: str,
        *,
        attempt: int,
        progress: float,
        message: str | None = None,
        current: int | None = None,
        total: int | None = None,
        ts: float | None = None,
    ) -> int:
        """Append a progress event for `attempt` and update the state; returns the event id."""
        data = progress_event_json(
            job_id, time.time() if ts is None else ts, progress, message, current, total
        )
        fields = {"progress": progress, "message": message, "current": current, "total": total}
        return await self._run(
            job_id,
            mode="append",
            event_type=EventType.PROGRESS,
            data=data,
            final=False,
            fields=fields,
            expect_attempt=attempt,
            batched=True,
        )

    async def get(self, job_id: str) -> JobState | None:
        raw = await self._redis.hgetall(keys.state_key(job_id))  # type: ignore[misc]
        return parse_state(job_id, raw) if raw else None

    async def read_events(self, job_id: str, after: int, count: int) -> list[StoredEvent]:
        """Up to `count` events with ids greater than `after`, oldest first."""
        entries = await self._redis.xrange(keys.events_key(job_id), min=f"0-{after + 1}", count=count)
        return [from_stream_entry(entry_id, fields) for entry_id, fields in entries]

    async def state_and_events(
        self, job_id: str, after: int, count: int
    ) -> tuple[JobState | None, list[StoredEvent]]:
        """`get` and `read_events` at once, as one consistent snapshot."""
        raw, entries = await self._state_and_events(
            keys=[keys.state_key(job_id), keys.events_key(job_id)], args=[after, count]
        )
        state = parse_state(job_id, _pairs(raw)) if raw else None
        return state, [from_stream_entry(entry_id, _pairs(fields)) for entry_id, fields in entries]

    async def first_retained_id(self, job_id: str) -> int | None:
        entries = await self._redis.xrange(keys.events_key(job_id), count=1)
        return event_id_from_entry(entries[0][0]) if entries else None
