"""The Redis a benchmark runs on: one node for everything, or a Redis Cluster beside a queue node.

    with redis_deployment("cluster") as deployment:
        env = {**os.environ, **deployment.env()}

*node*: one private `redis-server` holds the queue and the job store, jobpulse's default; *replicated*:
the same with a replica (`--replicaof`), as a node run for failover would be (what the replica's feed
costs the node). *cluster*: a
private 3-shard Redis Cluster (`jobpulse.stack.redis_cluster.RedisCluster`: 3 primaries, a replica each)
holds the job store (`REDIS_URL` names one of its nodes, `JOBPULSE_REDIS_CLUSTER=1`), and one more
`redis-server` the queue (`JOBPULSE_QUEUE_REDIS_URL`), as issue 19 deploys it. Either way the benchmark
reads, per node: its CPU seconds (`/proc/<pid>/stat`, the whole server process) and its clients by name
(`CLIENT LIST`: `jobpulse-web`, `jobpulse-worker`, ...), which is how connections per web process are
counted per shard.
"""

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redis import Redis
from redis.crc import key_slot

from jobpulse import keys
from jobpulse.settings import Settings
from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.stack.redis_server import RedisServer

Kind = Literal["node", "replicated", "cluster"]
KINDS: tuple[Kind, ...] = ("node", "cluster")  # what `--redis both` runs
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# `CLIENT LIST` flags of connections that are not clients: a replica's link (S), a monitor (O), the
# link to our own primary (M).
_NOT_CLIENTS = {"S", "O", "M"}


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class RedisNode:
    role: str  # "node"; or "shard 1".."shard 3", "queue", "replica 1".. (of shard 1..)
    port: int
    pid: int | None
    first_slot: int | None = None  # a shard's: the first of its slots
    last_slot: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> Redis:
        return Redis(port=self.port, socket_timeout=10, **kwargs)

    def clients_by_name(self) -> Counter[str]:
        """This node's client connections by `CLIENT SETNAME` (unnamed as ""), the one asking left out."""
        with self.client() as redis:
            me = redis.client_id()
            return Counter(
                c.get("name", "")
                for c in redis.client_list()
                if int(c["id"]) != me and not set(c["flags"]) & _NOT_CLIENTS
            )

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.pid)

    def info_cpu_seconds(self) -> float:
        """The server's own CPU count (`INFO cpu`: `used_cpu_sys` + `used_cpu_user`, all its threads)."""
        with self.client() as redis:
            info = redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass
class RedisDeployment:
    kind: Kind
    store_url: str
    queue_url: str
    shards: list[RedisNode]  # the job store's primaries (one node: the node itself), by slot
    queue: RedisNode  # the queue's node (one node: the same as the store's)
    replicas: list[RedisNode] = field(default_factory=list)

    @property
    def nodes(self) -> list[RedisNode]:
        """Every server process, each once."""
        found: dict[int, RedisNode] = {}
        for node in [*self.shards, self.queue, *self.replicas]:
            found.setdefault(node.port, node)
        return list(found.values())

    @property
    def primaries(self) -> list[RedisNode]:
        """The nodes clients talk to: the shards and the queue (each once)."""
        return [node for node in self.nodes if node not in self.replicas]

    def env(self) -> dict[str, str]:
        """The environment a web process or worker needs for this deployment."""
        if self.kind != "cluster":
            return {"REDIS_URL": self.store_url}
        return {
            "REDIS_URL": self.store_url,
            "JOBPULSE_REDIS_CLUSTER": "1",
            "JOBPULSE_QUEUE_REDIS_URL": self.queue_url,
        }

    def settings_values(self) -> dict[str, Any]:
        """What `Settings` needs for this deployment (for a process that builds its own)."""
        if self.kind != "cluster":
            return {"redis_url": self.store_url}
        return {"redis_url": self.store_url, "redis_cluster": True, "queue_redis_url": self.queue_url}

    def settings(self, **values: Any) -> Settings:
        return Settings(**self.settings_values(), **values)

    def shard_of(self, job_id: str) -> RedisNode:
        """The primary that holds `job_id`'s keys (as the cluster stood at the start)."""
        slot = key_slot(keys.state_key(job_id).encode())
        for shard in self.shards:
            if shard.first_slot is None or shard.last_slot is None:
                return shard  # one node: it holds every slot
            if shard.first_slot <= slot <= shard.last_slot:
                return shard
        raise LookupError(f"no shard holds slot {slot}")

    def jobs_per_shard(self, job_ids: list[str]) -> dict[str, int]:
        counts = Counter(self.shard_of(job_id).role for job_id in job_ids)
        return {shard.role: counts[shard.role] for shard in self.shards}

    def clients_named(self, name: str) -> dict[str, int]:
        """Connections named `name` on each primary (shards and queue), by role."""
        return {node.role: node.clients_by_name()[name] for node in self.primaries}

    def connected_clients(self) -> int:
        """All client connections on the primaries, the ones asking and replication links left out."""
        return sum(sum(node.clients_by_name().values()) for node in self.primaries)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of every server process, by role."""
        return {node.role: node.cpu_seconds() for node in self.nodes}

    def wait_replicas_online(self, timeout_s: float = 30.0) -> None:
        """Until every shard's replicas have finished their first sync (`state=online`): before that a
        primary's replica is still loading its snapshot, and `WAIT` would time out for nothing."""
        deadline = time.monotonic() + timeout_s
        while not all(self._replicas_online(shard) for shard in self.shards):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replicas were not in sync within {timeout_s} s")
            time.sleep(0.05)

    def _replicas_online(self, shard: RedisNode) -> bool:
        with shard.client() as redis:
            info = redis.info("replication")
        states = [info[key].get("state") for key in info if key.startswith("slave") and key[5:].isdigit()]
        return len(states) == int(info.get("connected_slaves", 0)) and all(s == "online" for s in states)


def _pid(server: RedisServer) -> int | None:
    return server.process.pid if server.process else None


@contextmanager
def redis_deployment(kind: Kind) -> Iterator[RedisDeployment]:
    """Start `kind` (see the module's docstring); stopped on the way out."""
    with ExitStack() as stack:
        if kind == "node":
            server = stack.enter_context(RedisServer())
            node = RedisNode("node", server.port, _pid(server))
            yield RedisDeployment(kind, server.url, server.url, [node], node)
            return
        if kind == "replicated":
            server = stack.enter_context(RedisServer())
            follower = stack.enter_context(
                RedisServer(extra_args=("--replicaof", "127.0.0.1", str(server.port)))
            )
            node = RedisNode("node", server.port, _pid(server))
            replicated = [RedisNode("replica 1", follower.port, _pid(follower))]
            deployment = RedisDeployment(kind, server.url, server.url, [node], node, replicated)
            deployment.wait_replicas_online()
            yield deployment
            return
        cluster = stack.enter_context(RedisCluster())
        queue_server = stack.enter_context(RedisServer())
        queue = RedisNode("queue", queue_server.port, _pid(queue_server))
        by_port = {node.port: node for node in cluster.nodes}
        rows = cluster.topology()
        primaries: list[tuple[int, int, dict[str, str]]] = []
        for row in rows:
            if "master" in row["flags"] and row["slots"]:
                low, _, high = row["slots"].split()[0].partition("-")  # one range each, as started
                primaries.append((int(low), int(high or low), row))
        primaries.sort(key=lambda p: p[0])
        shards: list[RedisNode] = []
        replicas: list[RedisNode] = []
        for n, (first, last, row) in enumerate(primaries, 1):
            port = int(row["port"])
            shards.append(RedisNode(f"shard {n}", port, _pid(by_port[port].server), first, last))
            for replica in (r for r in rows if r["master"] == row["id"]):
                rport = int(replica["port"])
                replicas.append(RedisNode(f"replica {n}", rport, _pid(by_port[rport].server)))
        deployment = RedisDeployment(kind, cluster.url, queue_server.url, shards, queue, replicas)
        deployment.wait_replicas_online()
        yield deployment
