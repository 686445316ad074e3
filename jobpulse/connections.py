"""The Redis client for job events and state: one node, or a Redis Cluster discovered from one node.

jobpulse talks to Redis in two roles (`Settings`): the *queue* (arq's keys and the workers' bookkeeping),
always one node because arq has no cluster support; and the *store* (each job's state hash, event
stream and live channel, the submission limits), `REDIS_URL`, which may be a cluster. This module makes
the store's cluster client; the single-node clients stay where they were made before (the web's pool,
the worker's `redis_pool`), since one node for both roles is the default and the fast path.

On a cluster every key of a job carries its id as a hash tag (`jobpulse.keys`), so the append script's
keys and channel are in one slot and redis-py routes each script call to that slot's primary.

What redis-py's asyncio `RedisCluster` (5.x, the line arq allows) does not do, added here:
- **A bound on connections.** Its per-node pools raise `MaxConnectionsError` when full rather than wait.
  Every command and pipeline here first takes one of `max_connections` permits, so no node ever holds
  more than that many of this client's connections, and a burst waits instead of failing.
- **Riding out a failover.** It retries a command three times, re-reading the topology in between,
  which a primary's failover (seconds: `cluster-node-timeout` and an election) outlasts. `ride_out_s`
  keeps retrying connection and cluster-down errors that long, with backoff: the worker's whole
  `JOBPULSE_REDIS_RECONNECT_S`, as its single-node pool does; the web's `JOBPULSE_REDIS_TIMEOUT_S`.
  A pipeline is sent again whole. A retried append is harmless: the script's write id makes a second
  run answer the first one's id (and `jobpulse.script_batch` never puts two writes of a job in one).
- **Keeping the other shards going through a failover.** At each failed command redis-py closes every
  node's connections, cutting the other shards' commands under way: those are sent again at once
  (`cut_under_it`), and only a node refusing or not answering is backed off from. It also drops the
  failed node from its seed list and reads the topology again, and each re-read also fetches `COMMAND`'s
  table from its default node, the first primary. When that primary is the dead one, every re-read
  fails until the failover ends, so every shard's commands wait it out; and concurrent failures can
  empty the seed list ("Redis Cluster cannot be connected ... reachable node: None", redis/redis-py#3693).
  Here the table is read once (it does not change with the topology), and the seed list is filled again
  from every node seen before each re-read. Both reach into redis-py's internals: `redis` is bounded to
  the releases they were tested on, and tests/cluster/test_redis_py_internals.py fails when they change.
"""

import asyncio
import logging
import os
import random
import time
import traceback
from typing import Any

from redis._parsers import AsyncCommandsParser
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobpulse.settings import Settings

# The store's client (`JobStore`, the hub, the limits): one node, or a cluster.
StoreRedis = Redis | RedisCluster

logger = logging.getLogger(__name__)

# What a failover or a slot moving looks like to a client: all worth waiting through.
_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    MaxConnectionsError,
)
_FIRST_BACKOFF_S = 0.05
_BACKOFF_CAP_S = 0.5


class _Permits:
    """An `asyncio.Semaphore` made on first use, so the client can be built outside a running loop."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._count)
        return self._semaphore


def is_transient(exc: BaseException) -> bool:
    """A failure worth waiting through: one of `_TRANSIENT`; redis-py closing a connection under a
    command (`cut_under_it`); or no node of the cluster answering a topology read, which redis-py raises
    as a `RedisClusterException` caused by the last node's connection error."""
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, AttributeError):
        return cut_under_it(exc)
    if isinstance(exc, RedisClusterException) and exc.__cause__ is not None:
        return isinstance(exc.__cause__, _TRANSIENT)
    return False


def cut_under_it(exc: BaseException) -> bool:
    """The command's connection failed once open: not its node refusing or not answering a connection.

    redis-py 5's asyncio cluster client answers a connection error to one node by reading the topology
    again, which closes every node's connections (`RedisCluster._execute_command`, then `aclose()`, and
    `NodesManager.set_nodes` at the re-read); a command in flight on another node then fails with a
    connection error, or inside redis-py's connection code with an `AttributeError` (its writer or reader
    gone: `'NoneType' object has no attribute 'writelines'`). Only an `AttributeError` raised from
    redis-py's own modules counts, so a bug of ours is never retried away.
    """
    if exc.__traceback__ is None or isinstance(exc, MaxConnectionsError):
        return False
    # The frames' code only: `traceback.extract_tb` would read each frame's source line too.
    codes = [frame.f_code for frame, _ in traceback.walk_tb(exc.__traceback__)]
    if isinstance(exc, AttributeError):
        return f"{os.sep}redis{os.sep}" in codes[-1].co_filename
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return not any(code.co_name in _CONNECTING for code in codes)
    return False


# redis-py's functions that open a connection (`AbstractConnection.connect` and its handshake): a failure
# raised in them is the node's, worth backing off from.
_CONNECTING = frozenset({"connect", "on_connect", "_connect"})
# How many times in a row a command cut under it is sent again at once: more is a node that accepts
# connections and drops them, and backs off.
_AT_ONCE = 10


async def _riding_out(ride_out_s: float, what: str, call: Any) -> Any:
    """`await call()`, again while it fails transiently, for at most `ride_out_s`.

    A command cut under it is sent again at once: its own node is fine, another node's failure closed
    the connection (`cut_under_it`), and backing off would make every shard wait out the failed one's
    backoff. Anything else backs off, exponentially, with jitter.
    """
    deadline = time.monotonic() + ride_out_s
    backoff = _FIRST_BACKOFF_S
    at_once = _AT_ONCE
    while True:
        try:
            return await call()
        except (*_TRANSIENT, AttributeError, RedisClusterException) as exc:
            left = deadline - time.monotonic()
            if left <= 0 or not is_transient(exc):
                raise
            logger.info("redis cluster: %s failed (%s); retrying", what, exc)
            if at_once > 0 and cut_under_it(exc):
                at_once -= 1
                await asyncio.sleep(0)
                continue
            at_once = _AT_ONCE
            await asyncio.sleep(min(left, backoff * (0.5 + random.random())))
            backoff = min(backoff * 2, _BACKOFF_CAP_S)


class _CommandTableOnce(AsyncCommandsParser):
    """redis-py's parser of `COMMAND`'s table (where each command's keys are), read from one node once.

    redis-py reads it again from the default node at every topology re-read, and the default node may
    be the primary that just died (see the module's docstring).
    """

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if not self.commands:
            await super().initialize(node)


class StoreCluster(RedisCluster):
    """redis-py's asyncio cluster client, bounded and riding out failovers (see the module's docstring)."""

    def __init__(self, *args: Any, permits: int, ride_out_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._permits = _Permits(permits)
        self.ride_out_s = ride_out_s
        self.commands_parser = _CommandTableOnce()
        # Every node ever seen, by name: the seeds of a topology re-read (redis-py's own list loses one
        # at each failure of it). A node gone for good only costs a refused connection at a re-read.
        self._seen: dict[str, tuple[str, int]] = {
            name: (node.host, int(node.port)) for name, node in self.nodes_manager.startup_nodes.items()
        }

    async def initialize(self) -> "StoreCluster":
        seeds = self.nodes_manager.startup_nodes
        for name, (host, port) in self._seen.items():
            if name not in seeds:
                seeds[name] = ClusterNode(host, port, **self.nodes_manager.connection_kwargs)
        await super().initialize()
        for name, node in self.nodes_manager.nodes_cache.items():
            self._seen.setdefault(name, (node.host, int(node.port)))
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async def once() -> Any:
            async with self._permits.semaphore:
                return await super(StoreCluster, self).execute_command(*args, **kwargs)

        if isinstance(kwargs.get("target_nodes"), ClusterNode | list | dict):
            # Its caller chose the node (the hub's slot-map read): a dead one is not waited for, the
            # caller asks another.
            return await once()
        return await _riding_out(self.ride_out_s, str(args[0]), once)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if transaction or shard_hint:  # which RedisCluster.pipeline refuses
            return super().pipeline(transaction, shard_hint)
        return _BoundedPipeline(self)  # type: ignore[abstract]  # as RedisCluster.pipeline makes it


class _BoundedPipeline(ClusterPipeline):
    """A pipeline that takes one of its client's permits while it runs (it uses a connection per node),
    and is sent again, whole, while it fails transiently, as a single command is."""

    _client: StoreCluster

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        commands = list(self._command_stack)  # redis-py empties it after each try

        async def once() -> list[Any]:
            self._command_stack = list(commands)
            async with self._client._permits.semaphore:
                return await super(_BoundedPipeline, self).execute(raise_on_error, allow_redirections)

        result: list[Any] = await _riding_out(self._client.ride_out_s, "pipeline", once)
        return result


def store_cluster(
    settings: Settings, *, client_name: str, max_connections: int, ride_out_s: float
) -> StoreCluster:
    """The cluster client for `settings.redis_url`, any one node of the cluster: the rest are discovered.

    No more than `max_connections` of its connections are open to any one node.
    """
    cluster = StoreCluster.from_url(
        settings.redis_url,
        permits=max_connections,
        ride_out_s=ride_out_s,
        # A permit is one command or pipeline, which holds at most one connection per node; two more
        # leave room for the topology reads redis-py makes on its own after a MOVED or a failover.
        max_connections=max_connections + 2,
        socket_connect_timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_keepalive=True,
        client_name=client_name,
        # Some slots without a primary (a failover under way) must not stop the rest from being served.
        require_full_coverage=False,
    )
    assert isinstance(cluster, StoreCluster)
    return cluster
