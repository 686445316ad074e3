"""Calls of one Lua script made in the same event-loop turn go to Redis as one pipeline.

A worker running many jobs that each publish uncoalesced updates makes many script calls at once. Alone,
each pays redis-py's whole command path: a pooled connection, its clean-connection check, a send and a
read, about 40 µs of client CPU on our 2-core machine, as much again as the call's own work. Calls that
arrive in the same turn of the event loop share one connection, one send and one read; each still runs
as its own script call, in the order it was made, and gets its own reply or error.

A call never waits for another batch: the next call after a batch leaves starts the next one, on another
pooled connection, so a lone call costs what it did before. Redis runs the pipelines of concurrent
batches in any order, so the caller must not have two calls that depend on each other's order in flight
at once; the progress reporter, the one user, awaits each of a job's writes before the next.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

_Call = tuple[Sequence[KeyT], Sequence[EncodableT], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references until each batch is done
        self.batches_sent = 0  # how many pipelines (or lone calls) went out: for tests and benchmarks

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((keys, args, reply))
        if len(self._waiting) == 1:
            # The task's first step runs on the loop's next turn, after every call made in this one.
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await reply

    async def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        self.batches_sent += 1
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
            if isinstance(result, NoScriptError):
                # Redis lost its script cache (a restart). The script did not run: calling it through
                # redis-py's script object loads it again and runs it.
                await _settle(reply, self._script(keys=keys, args=args))
            elif reply.done():
                pass  # its caller was cancelled; the write itself went through
            elif isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)


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
