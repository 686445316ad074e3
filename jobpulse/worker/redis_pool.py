"""The worker's Redis connections: a fixed number, and they wait for Redis to come back instead of failing.

arq's worker dies on the first connection error its poll loop meets, and redis-py's command retries do
not help there: a pool hands out a connection *before* the retry starts, and reconnecting a dropped one
fails at once while Redis restarts. So the pool itself retries getting a connected connection, with
backoff, for up to `JOBPULSE_REDIS_RECONNECT_S`; commands on it retry too. Past that the worker exits as
before and its supervisor starts it again.

The pool holds at most `JOBPULSE_WORKER_REDIS_POOL_SIZE` connections, however many jobs publish at once:
a command waits for a free connection rather than opening another (or failing).

Once the worker is stopping (`stop_when()`: at SIGTERM/SIGINT, or after `JOBPULSE_SHUTDOWN_GRACE_S`
if one is set), waiting for Redis would only keep the worker from exiting: from then on
every command gets one try, and all of them together get `STOP_BUDGET_S` (connect, send and reply). A
Redis that is up answers the shutdown's own writes (the interrupted job's `retrying`, the heartbeat and
health-check keys) in milliseconds; a Redis that is down or unreachable costs the stop at most that long,
and a job it interrupted is left to the stall reaper, as after SIGKILL.
"""

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from types import FrameType
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from jobpulse import keys, queue_codec
from jobpulse.settings import Settings

logger = logging.getLogger(__name__)

# Shown by `CLIENT LIST`, so operators (and tests) can count the worker processes' connections.
WORKER_CLIENT_NAME = "jobpulse-worker"

_BACKOFF_CAP_S = 1.0
_FIRST_BACKOFF_S = 0.05

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# What the Redis commands a stopping worker still makes may take, all together.
STOP_BUDGET_S = 0.5


class HiredisPackingConnection(Connection):
    """Packs commands with hiredis, as redis-py's synchronous client already does when hiredis is there.

    redis-py's asyncio connection packs them in Python, about 13 µs for the 22 arguments of a progress
    update on our 2-core machine; hiredis writes the same bytes in about 2 µs. Text goes out as UTF-8,
    the pools' encoding.
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        # redis-py annotates each argument as a list; it takes what the Python packer takes.
        packed: list[bytes] = self._packer.pack(*args)  # type: ignore[arg-type]
        return packed


class ReconnectingPool(BlockingConnectionPool):
    def __init__(self, *args: Any, reconnect_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reconnect_s = reconnect_s
        self._main_task: asyncio.Task[Any] | None = None
        self._signalled = False
        self._grace_s = 0.0
        self._stop_deadline: float | None = None  # loop time; set once the worker is stopping
        self._cutting: asyncio.Task[None] | None = None

    def stop_when(self, main_task: asyncio.Task[Any], *, watch_signals: bool, grace_s: float) -> None:
        """Stop retrying once the worker stops: at SIGTERM/SIGINT, or at the end of its grace if it has one.

        arq cancels the running jobs and then its main task at the signal, or after the grace
        (`job_completion_wait`); the jobs' cleanup writes to Redis at once, before the main task has
        ended. So the signal is watched, by chaining a handler in front of asyncio's (as
        jobpulse.web.shutdown does for uvicorn): that needs `watch_signals` (the process owns its signals)
        and the main thread. Without them, the pool stops retrying once the main task has ended.
        """
        self._main_task = main_task
        self._grace_s = grace_s
        if not watch_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in _STOP_SIGNALS:
            previous = signal.getsignal(sig)

            def handle(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self._signalled = True  # runs in the main thread, between two of the loop's bytecodes
                if callable(previous):
                    previous(signum, frame)  # asyncio's: its wakeup fd then runs arq's handler

            signal.signal(sig, handle)

    def stopping(self) -> bool:
        if self._stop_deadline is not None:
            return True
        # With a grace, arq cancels the main task when the grace ends; it then ends in a moment.
        ended = self._main_task is not None and self._main_task.done()
        if not (ended or (self._signalled and not self._grace_s)):
            return False
        loop = asyncio.get_running_loop()
        self._stop_deadline = loop.time() + STOP_BUDGET_S
        # Connections made from now on: one try each (and see get_available_connection()).
        self.connection_kwargs["retry"] = Retry(NoBackoff(), retries=0)
        loop.call_at(self._stop_deadline, self._cut_off)
        return True

    def _cut_off(self) -> None:
        """The budget is spent: close the connections still in use, so the commands that wait on them fail.

        Commands sent while the worker ran have no reply timeout (a job's write waits for Redis to come
        back): the stall reaper's and the reconciler's, which stop only in `on_shutdown`, would otherwise
        hold their connections for ever, and a pool with none free keeps everything else waiting.
        """
        self._cutting = asyncio.get_running_loop().create_task(self._close_in_use(), name="redis cut-off")

    async def _close_in_use(self) -> None:
        for connection in list(self._in_use_connections):  # the pool's own set (redis-py's ConnectionPool)
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect(nowait=True)  # closes the socket: a pending read fails at once

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_s
        delay = _FIRST_BACKOFF_S
        while not self.stopping():
            try:
                connection: AbstractConnection = await super().get_connection(*args, **kwargs)
                return connection
            except (RedisConnectionError, RedisTimeoutError):
                if loop.time() + delay > deadline or self.stopping():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP_S)
        return await self._last_connection(*args, **kwargs)

    async def _last_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        """A stopping worker's connection: no retries, and only what is left of the stop budget."""
        left = self._time_left()
        if left is None:
            raise RedisConnectionError(
                f"the worker is stopping and Redis took more than {STOP_BUDGET_S:g} s: not waiting for it"
            )
        try:
            async with asyncio.timeout(left):
                connection: AbstractConnection = await super().get_connection(*args, **kwargs)
        except TimeoutError as exc:
            raise RedisTimeoutError("the worker is stopping and Redis did not answer in time") from exc
        self._limit(connection)  # its command too
        return connection

    def get_available_connection(self) -> AbstractConnection:
        connection: AbstractConnection = super().get_available_connection()  # type: ignore[no-untyped-call]
        if self._stop_deadline is not None:
            self._limit(connection)  # before the pool connects it
        return connection

    def _time_left(self) -> float | None:
        """What is left of the stop budget, None once it is spent."""
        assert self._stop_deadline is not None
        left = self._stop_deadline - asyncio.get_running_loop().time()
        return left if left > 0 else None

    def _limit(self, connection: AbstractConnection) -> None:
        left = self._time_left() or 0.001
        connection.retry = Retry(NoBackoff(), retries=0)
        # Read at each connect, reply and close: they cannot outlast the budget either.
        connection.socket_timeout = connection.socket_connect_timeout = left


class WorkerRedis(ArqRedis):
    """arq's client, on a `ReconnectingPool`: a stopping worker without Redis still runs its shutdown hooks.

    arq's `Worker.close()` deletes this host's health-check key before it runs `on_shutdown`: were that
    to raise, no hook would run (the report relay's socket stays behind) and the worker would exit 1
    after a stop that went as well as it could. The key expires a second after its interval anyway.
    """

    health_check_key = ""

    async def delete(self, *names: Any) -> Any:
        try:
            return await super().delete(*names)
        except RedisError as exc:
            pool = self.connection_pool
            if names != (self.health_check_key,) or not (
                isinstance(pool, ReconnectingPool) and pool.stopping()
            ):
                raise
            logger.warning("stopping without Redis (%s): the health-check key will expire instead", exc)
            return 0


def worker_redis(settings: Settings, url: str | None = None) -> ArqRedis:
    """The connection arq's worker (and our heartbeats, reaper and, on one Redis, store through it) uses:
    to the queue's Redis, or to `url` (the store's, when it is another single node)."""
    retries = max(1, int(settings.redis_reconnect_s / _BACKOFF_CAP_S))
    pool = ReconnectingPool.from_url(
        url or settings.queue_url,
        reconnect_s=settings.redis_reconnect_s,
        max_connections=settings.worker_redis_pool_size,
        timeout=None,  # wait as long as it takes: a connection is held for one command or transaction
        connection_class=HiredisPackingConnection,  # a rediss:// or unix:// URL picks its own class
        client_name=WORKER_CLIENT_NAME,
        retry=Retry(ExponentialBackoff(cap=_BACKOFF_CAP_S, base=_FIRST_BACKOFF_S), retries=retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=settings.redis_timeout_s,
    )
    redis = WorkerRedis(connection_pool=pool)
    redis.health_check_key = keys.worker_health_check_key(settings.queue_name, socket.gethostname())
    redis.auto_close_connection_pool = True  # closing the client closes the pool, as Redis.from_pool() does
    # What arq's create_pool() sets on the pools it makes, with our codec rather than pickle.
    redis.job_serializer = queue_codec.encode
    redis.job_deserializer = queue_codec.decode
    redis.default_queue_name = settings.queue_name
    redis.expires_extra_ms = 86_400_000
    return redis
