"""The hub's slot map: which primary a channel's slot is on, and a `MOVED` answer believed at once."""

from typing import cast

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from jobpulse import keys
from jobpulse.web.streaming.shard_map import ShardMap

A, B, C = ("10.0.0.1", 6379), ("10.0.0.2", 6379), ("10.0.0.3", 6379)
THREE = [(0, 5460, A), (5461, 10922, B), (10923, 16383, C)]


def channel_in(first: int, last: int) -> bytes:
    """A job's live channel whose slot is in `first..last`."""
    for n in range(100_000):
        name = keys.live_channel(f"job{n}").encode()
        if first <= key_slot(name) <= last:
            return name
    raise AssertionError("no such channel")


def shard_map(ranges: list[tuple[int, int, tuple[str, int]]]) -> ShardMap:
    return ShardMap(cast(RedisCluster, None), ranges)  # refresh() is not called: no client needed


def test_a_channel_is_routed_by_its_slot_and_the_job_id_is_its_hash_tag() -> None:
    shards = shard_map(THREE)
    for first, last, address in THREE:
        channel = channel_in(first, last)
        assert shards.owner(channel) == address
    # The channel, the state and the stream of a job share one slot: the script's keys and its SPUBLISH.
    job_id = "qGifttvEDfUpfZiKzwCCdw"
    slots = {key_slot(name.encode()) for name in (keys.live_channel(job_id), keys.state_key(job_id))}
    assert slots == {key_slot(keys.events_key(job_id).encode())} == {key_slot(job_id.encode())}
    assert shards.primaries() == {A, B, C}


def test_an_uncovered_slot_has_no_owner() -> None:
    shards = shard_map([(0, 5460, A)])
    assert shards.owner(channel_in(5461, 16383)) is None
    assert shard_map([]).owner(channel_in(0, 16383)) is None


def test_moved_splits_the_range_around_the_one_slot_and_leaves_the_rest() -> None:
    shards = shard_map(THREE)
    channel = channel_in(5462, 10921)  # inside B's range, not at its ends
    slot = key_slot(channel)
    shards.moved(slot, C)
    assert shards.owner(channel) == C
    assert shards.owner(channel_in(5461, slot - 1)) == B
    assert shards.owner(channel_in(slot + 1, 10922)) == B
    assert shards.owner(channel_in(0, 5460)) == A
    assert shards.primaries() == {A, B, C}


def test_moved_at_the_edge_of_a_range_and_to_a_new_node() -> None:
    shards = shard_map(THREE)
    shards.moved(0, B)
    shards.moved(16383, ("10.0.0.9", 7000))
    assert shards.owner(channel_in(1, 5460)) == A
    assert ("10.0.0.9", 7000) in shards.primaries()
    moved_again = shard_map([(7, 7, A)])
    moved_again.moved(7, B)
    assert moved_again.primaries() == {B}
