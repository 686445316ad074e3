"""Calls of one Lua script made while another is on its way to Redis go together, as one pipeline.

A worker running many jobs that each publish uncoalesced updates makes many script calls at once. Alone,
each pays redis-py's whole command path: a pooled connection, its clean-connection check, a send and a
read, about 40 µs of client CPU on our 2-core machine, as much again as the call's own work. Sent
together, they share one connection, one send and one read; each still runs as its own script call and
gets its own reply or error.

One send is on its way at a time. A call made while none is goes out at once, exactly as an unbatched
call would: no wait, no extra task. Calls made while one is on its way queue, and go out together as
soon as it is answered; calls made meanwhile make the next batch. So the busier the worker, the larger
the batches, and Redis runs the calls in the order they were made.

It sits beside the store, which it serves (`JobStore(..., batch_progress=True)`, the worker's), rather than
in `jobpulse.worker`: the contract imports nothing of either side.

redis-py resends a whole pipeline whose connection dropped. The append script's write id makes a resent
call harmless only while it is its job's latest write, so no job may have two writes in one batch: the
progress reporter, the one user, awaits each of a job's writes before it makes the next.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

from jobpulse.connections import is_transient

_Call = tuple[Sequence[KeyT], Sequence[EncodableT], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, redis: Redis | RedisCluster, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._waiting: list[_Call] = []
        self._in_flight = False
        self._batch_task: asyncio.Task[None] | None = None  # a strong reference while it runs
        self.sends = 0  # lone calls and pipelines sent: for tests and benchmarks

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        if self._in_flight:
            reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting.append((keys, args, reply))
            return await reply
        self._in_flight = True
        self.sends += 1
        try:
            return await self._script(keys=keys, args=args)
        finally:
            self._send_next()

    def _send_next(self) -> None:
        """The send on its way is answered: send what queued meanwhile, if anything did."""
        if self._waiting:
            self._batch_task = asyncio.get_running_loop().create_task(self._send_batch())
        else:
            self._in_flight = False
            self._batch_task = None

    async def _send_batch(self) -> None:
        batch, self._waiting = self._waiting, []
        self.sends += 1
        try:
            if len(batch) == 1:
                keys, args, reply = batch[0]
                await _settle(reply, self._script(keys=keys, args=args))
                return
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args, _ in batch:
                        pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
                    replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # the connection failed past its retries
                for _, _, reply in batch:
                    if not reply.done():
                        reply.set_exception(exc)
                return
            except asyncio.CancelledError:  # the worker is stopping
                for _, _, reply in batch:
                    reply.cancel()
                raise
            for (keys, args, reply), result in zip(batch, replies, strict=True):
                if isinstance(result, Exception) and (
                    isinstance(result, NoScriptError) or is_transient(result)
                ):
                    # Redis lost its script cache (a restart): the script did not run, and calling it
                    # through redis-py's script object loads it again and runs it. Or a cluster's node
                    # failed under this call: alone it rides that out (jobpulse.connections), and its
                    # write id makes it harmless if it had run.
                    await _settle(reply, self._script(keys=keys, args=args))
                elif reply.done():
                    pass  # its caller was cancelled; the write itself went through
                elif isinstance(result, Exception):
                    reply.set_exception(result)
                else:
                    reply.set_result(result)
        finally:
            self._send_next()


async def _settle(reply: "asyncio.Future[Any]", call: Any) -> None:
    try:
        result = await call
    except asyncio.CancelledError:
        reply.cancel()
        raise
    except Exception as exc:
        if not reply.done():
            reply.set_exception(exc)
    else:
        if not reply.done():
            reply.set_result(result)


class ShardedScriptBatcher:
    """A `ScriptBatcher` per Redis Cluster node, chosen by the call's first key.

    One batcher has one send in flight at a time. On a cluster, a call to a primary that has just died
    rides out the failover (seconds), and every other job's write would queue behind it; with a batcher
    per node only the jobs of that shard wait.
    """

    def __init__(self, cluster: RedisCluster, script: AsyncScript) -> None:
        self._cluster = cluster
        self._script = script
        self._batchers: dict[str, ScriptBatcher] = {}
        self._owners: dict[int, str] = {}  # slot: the name of the node it was last seen on

    @property
    def sends(self) -> int:
        return sum(batcher.sends for batcher in self._batchers.values())

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        slot = key_slot(str(keys[0]).encode())
        try:
            found = self._cluster.get_node_from_key(str(keys[0]))
        except Exception:  # the slot map being read again (redis-py drops it at each node failure)
            found = None
        if found is not None:
            self._owners[slot] = found.name
        # While the map is unknown, the node it was last seen on: a dead primary's calls must not take
        # the other shards' queue. A slot never seen gets a batcher of its own.
        node = self._owners.get(slot, f"slot {slot}")
        batcher = self._batchers.get(node)
        if batcher is None:
            batcher = self._batchers[node] = ScriptBatcher(self._cluster, self._script)
        return await batcher(keys=keys, args=args)
