"""What jobpulse.connections relies on in redis-py's cluster client, which are not its public API.

Each test fails, rather than passes by a fallback, when a redis-py release changes what it relies on:
then the fix there may be unneeded or wrong, and `redis`'s bound in pyproject.toml is not to be widened
before it is looked at again.
"""

import asyncio
import socket
from collections.abc import Awaitable
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from jobpulse.connections import StoreCluster, cut_under_it, is_transient, store_cluster
from jobpulse.settings import Settings
from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.stack.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def calls(cluster: RedisCluster, name: str) -> int:
    """How many times the cluster's nodes ran command `name` (`INFO commandstats`'s spelling)."""
    total = 0
    for port in cluster.ports:
        async with Redis(port=port) as node:
            total += (await node.info("commandstats")).get(f"cmdstat_{name}", {}).get("calls", 0)
    return total


def client_for(settings: Settings) -> StoreCluster:
    return store_cluster(settings, client_name="jobpulse-internals-test", max_connections=4, ride_out_s=5)


async def test_a_topology_re_read_asks_no_node_for_the_command_table(
    cluster_settings: Settings, redis_cluster: RedisCluster
) -> None:
    """redis-py 5.3 reads `COMMAND` from its default node at every re-read; ours reads it once."""
    client = client_for(cluster_settings)
    try:
        await client.set("{internals}:table", 1)
        assert client.commands_parser.commands, "the table was read at the first use"
        tables, slot_reads = (
            await calls(redis_cluster, "command"),
            await calls(redis_cluster, "cluster|slots"),
        )
        await client.aclose()  # what redis-py does at a failed command: the next one reads the topology
        assert await client.get("{internals}:table") == b"1"
        assert await calls(redis_cluster, "cluster|slots") > slot_reads, "the topology was read again"
        assert await calls(redis_cluster, "command") == tables, "and COMMAND's table was not"
    finally:
        await client.aclose()


async def test_a_re_read_with_every_seed_dropped_finds_the_cluster_again(cluster_settings: Settings) -> None:
    """redis-py drops each node that failed a command from its seed list (redis/redis-py#3693): a few
    failing at once (a failover cutting every connection) leave it empty, and its next re-read raised
    "Redis Cluster cannot be connected. Please provide at least one reachable node: None"."""
    client = client_for(cluster_settings)
    try:
        await client.set("{internals}:seeds", 1)
        client.nodes_manager.startup_nodes.clear()
        await client.aclose()
        assert await client.get("{internals}:seeds") == b"1"
        assert client.nodes_manager.startup_nodes.keys() == client.nodes_manager.nodes_cache.keys()
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_a_node_refusing_a_connection_is_not_taken_for_a_cut() -> None:
    client = Redis(port=free_port(), socket_connect_timeout=1)
    try:
        with pytest.raises(RedisConnectionError) as refused:
            await client.ping()
    finally:
        await client.aclose()
    assert is_transient(refused.value)
    assert not cut_under_it(refused.value), "backs off: the node itself is away"


async def blocked(client: Redis, admin: Redis, name: str) -> asyncio.Task[Any]:
    """A `BLPOP` of `client` in flight, seen by the server."""

    async def pop() -> Any:
        return await cast(Awaitable[Any], client.blpop([f"internals:{name}"], timeout=10))

    task = asyncio.create_task(pop())
    for _ in range(200):
        if any(c.get("cmd") == "blpop" and c.get("name") == name for c in await admin.client_list()):
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the BLPOP never reached the server")


async def test_a_connection_closed_under_a_command_is_a_cut(redis_server: RedisServer) -> None:
    """What a command in flight on a healthy node meets when redis-py closes every node's connections."""
    admin = Redis.from_url(redis_server.url)
    client = Redis.from_url(redis_server.url, client_name="internals-local")
    try:
        task = await blocked(client, admin, "internals-local")
        connection = client.connection_pool._in_use_connections.copy().pop()
        await connection.disconnect()
        with pytest.raises((RedisConnectionError, AttributeError)) as cut:
            await task
    finally:
        await client.aclose()
        await admin.aclose()
    assert is_transient(cut.value)
    assert cut_under_it(cut.value), "sent again at once: its node is fine"


async def test_a_connection_the_server_closed_under_a_command_is_a_cut(redis_server: RedisServer) -> None:
    admin = Redis.from_url(redis_server.url)
    client = Redis.from_url(redis_server.url, client_name="internals-server")
    try:
        task = await blocked(client, admin, "internals-server")
        victim = next(c for c in await admin.client_list() if c.get("name") == "internals-server")
        await admin.execute_command("CLIENT", "KILL", "ID", victim["id"])
        with pytest.raises(RedisConnectionError) as cut:
            await task
    finally:
        await client.aclose()
        await admin.aclose()
    assert cut_under_it(cut.value)
