"""The hub's slot map read from a real cluster whose client still lists a node that is gone (a primary
killed, its failover under way): read from another node at once, and the gone one asked last after."""

import logging
import time

import pytest
from redis.asyncio.cluster import ClusterNode

from jobpulse.connections import StoreCluster, store_cluster
from jobpulse.settings import Settings
from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.stack.redis_server import free_port
from jobpulse.web.streaming.shard_map import ShardMap

pytestmark = pytest.mark.anyio


def put_first(client: StoreCluster, node: ClusterNode) -> None:
    """`node` listed first in the client's table of nodes (what `get_nodes()` answers)."""
    nodes = client.nodes_manager.nodes_cache
    in_order = {node.name: node, **{name: n for name, n in nodes.items() if name != node.name}}
    nodes.clear()
    nodes.update(in_order)


async def test_a_gone_node_is_not_waited_for_and_is_asked_last_next_time(
    cluster_settings: Settings, redis_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    client = store_cluster(
        cluster_settings, client_name="jobpulse-shard-map-test", max_connections=4, ride_out_s=10
    )
    try:
        await client.initialize()
        gone = ClusterNode("127.0.0.1", free_port(), **client.nodes_manager.connection_kwargs)
        put_first(client, gone)  # the first one asked, as a dead default node is
        shards = ShardMap(client)

        caplog.set_level(logging.INFO, logger="jobpulse.web.streaming.shard_map")
        started = time.monotonic()
        assert await shards.refresh()
        assert time.monotonic() - started < 2, "the gone node was ridden out, not passed over"
        assert [gone.name in r.getMessage() for r in caplog.records] == [True]
        assert {port for _, port in shards.primaries()} == {node.port for node in redis_cluster.primaries()}

        caplog.clear()
        put_first(client, gone)  # the client's re-read at the failure dropped it
        assert await shards.refresh()
        assert caplog.records == [], "the node that did not answer was asked first again"
    finally:
        await client.aclose()
