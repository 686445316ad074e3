"""Which primary of a Redis Cluster owns a channel's slot, for the hub's sharded subscriptions.

redis-py's asyncio cluster client routes commands but has no pub/sub in the 5.x line arq allows
(redis/redis-py#2219), so the hub holds plain subscriber connections to the primaries itself and needs
the slot map they are chosen by. It reads it with `CLUSTER SLOTS`, a public command, from any node the
cluster client knows, rather than from the client's own (private) node manager. It is read again
whenever a subscription is found on the wrong node: a connection lost (a failover), a `MOVED` answer or
a `sunsubscribe` that Redis sends when a slot migrates away.
"""

import bisect
import logging

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

logger = logging.getLogger(__name__)

Address = tuple[str, int]


class ShardMap:
    def __init__(self, cluster: RedisCluster, ranges: list[tuple[int, int, Address]] | None = None) -> None:
        """`ranges` (first slot, last slot, primary) until the first `refresh`: none by default."""
        self._cluster = cluster
        self._starts: list[int] = []  # first slot of each range, sorted
        self._ranges: list[tuple[int, int, Address]] = []
        self._unanswered: set[str] = set()  # names of the nodes that failed a read, most recently
        self._set(ranges or [])

    @staticmethod
    def slot(channel: bytes) -> int:
        return key_slot(channel)

    def owner(self, channel: bytes) -> Address | None:
        """The primary serving `channel`'s slot as last read, or None if no range covers it."""
        slot = key_slot(channel)
        n = bisect.bisect_right(self._starts, slot) - 1
        if n >= 0:
            first, last, address = self._ranges[n]
            if first <= slot <= last:
                return address
        return None

    def primaries(self) -> set[Address]:
        return {address for _, _, address in self._ranges}

    def moved(self, slot: int, address: Address) -> None:
        """A node answered `MOVED slot host:port`: believe it until the next full read."""
        ranges = [r for r in self._ranges if not r[0] <= slot <= r[1]]
        for first, last, owner in self._ranges:
            if first <= slot <= last:
                if first < slot:
                    ranges.append((first, slot - 1, owner))
                if slot < last:
                    ranges.append((slot + 1, last, owner))
        ranges.append((slot, slot, address))
        self._set(ranges)

    async def refresh(self) -> bool:
        """Read the slot map again from the first node that answers; False if none did.

        Nodes that did not answer last time are asked last: a dead primary stays in the cluster
        client's table until its failover ends, and each try of it costs every command of the web's
        cluster client its connection (jobpulse.connections). Each node is looked up by name just
        before it is asked, since a failed try makes the client read the topology again and replace
        every node it holds, closing the old ones.
        """
        names = sorted((node.name for node in self._cluster.get_nodes()), key=self._unanswered.__contains__)
        for name in names:
            try:
                await self._cluster.initialize()  # the re-read a failed try asked for, if any
                node = self._cluster.get_node(node_name=name)
                if node is None:
                    continue  # gone from the topology meanwhile
                slots = await self._cluster.cluster_slots(target_nodes=node)
            except (RedisError, RedisClusterException, OSError) as exc:
                logger.info("hub: could not read the cluster's slots from %s: %s", name, exc)
                self._unanswered.add(name)
                continue
            self._unanswered.discard(name)
            ranges = []
            for (first, last), shard in slots.items():
                host, port = shard["primary"][:2]
                # A node that announces no address (an empty host) is reached where we asked it.
                ranges.append((int(first), int(last), (str(host) or node.host, int(port))))
            self._set(ranges)
            return True
        return False

    def _set(self, ranges: list[tuple[int, int, Address]]) -> None:
        self._ranges = sorted(ranges)
        self._starts = [first for first, _, _ in self._ranges]
