"""`python -m jobpulse.stack`: Redis (private unless REDIS_URL is set), an arq worker and a web app.

`--cluster` tries the cluster shape instead: a private, throw-away Redis Cluster (3 primaries, 3
replicas) for the job store and a private Redis for the queue, as `docs/SCALING.md` describes.

`jobpulse up` and `scripts/up` run it: `--worker` names the arq worker settings and `--app` the ASGI app
(the reference service's by default; `jobpulse up --tasks` passes jobpulse's own entry points).

A small supervisor for trying jobpulse on one machine: a child that dies is started again (an arq worker
exits after JOBPULSE_REDIS_RECONNECT_S without Redis), unless it keeps dying right after its start, which
means something is wrong (a port in use, a broken install) and everything stops.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobpulse.stack.processes import stop_processes
from jobpulse.stack.redis_cluster import RedisCluster
from jobpulse.stack.redis_server import RedisServer, env_with_redis

# A child that exits this soon after starting, this many times in a row, is not restarted again.
_QUICK_EXIT_S = 5.0
_QUICK_EXITS_TOLERATED = 3
# How long the children get to stop (together), before they are killed: the web's graceful shutdown
# (--timeout-graceful-shutdown) is 5 s.
_STOP_WAIT_S = 7.0


def say(text: str) -> None:
    print(f"jobpulse: {text}", flush=True)  # noqa: T201


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = field(default=0)

    def start(self) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which stops the children in order.
        self.popen = subprocess.Popen(self.args, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()


@dataclass
class _Redis:
    """What the children are pointed at, and what of it this process started (to stop last)."""

    env: dict[str, str]
    server: RedisServer | None = None
    cluster: RedisCluster | None = None
    throw_away: bool = False

    def stop(self) -> None:
        if self.server is not None:
            if self.throw_away:
                self.server.cleanup()  # nothing of it is kept
            else:
                self.server.stop()
        if self.cluster is not None:
            self.cluster.stop()


def _start_redis(args: argparse.Namespace) -> _Redis:
    if args.cluster:
        cluster = RedisCluster()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        queue = RedisServer().start()
        say(f"started a private Redis Cluster ({cluster.url} and 5 more nodes), a queue Redis at {queue.url}")
        env = {
            **env_with_redis(cluster.url),
            "JOBPULSE_REDIS_CLUSTER": "1",
            "JOBPULSE_QUEUE_REDIS_URL": queue.url,
        }
        return _Redis(env, queue, cluster, throw_away=True)
    if url := os.environ.get("REDIS_URL"):
        return _Redis(env_with_redis(url))
    args.data.mkdir(parents=True, exist_ok=True)
    server = RedisServer(appendonly=True, directory=args.data.resolve()).start()
    say(f"started a private Redis at {server.url} (data in {args.data})")
    return _Redis(env_with_redis(server.url), server)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m jobpulse.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default="worker.WorkerSettings", help="arq worker settings to run")
    parser.add_argument("--app", default="web.app:app", help="ASGI app for uvicorn to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("var/redis"),
        help="where a private Redis keeps its append-only file",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a private Redis Cluster for the job store and a Redis for the queue (kept in memory only)",
    )
    args = parser.parse_args()

    redis = _start_redis(args)
    env = redis.env
    python = sys.executable
    web_args = ["--host", args.host, "--port", str(args.port), "--timeout-graceful-shutdown", "5"]
    children = [
        Child("worker", [python, "-m", "arq", args.worker], env),
        Child("web", [python, "-m", "uvicorn", args.app, *web_args], env),
    ]
    for child in children:
        child.start()
    say(f"web on http://{args.host}:{args.port} (API docs at /docs); Ctrl-C stops everything")

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while not stopping:
            for child in children:
                if (code := child.exited()) is None:
                    continue
                quick = time.monotonic() - child.started_at < _QUICK_EXIT_S
                child.quick_exits = child.quick_exits + 1 if quick else 0
                if child.quick_exits >= _QUICK_EXITS_TOLERATED:
                    say(f"{child.name} keeps exiting right after it starts (last exit code {code}); stopping")
                    stopping, exit_code = True, 1
                    break
                say(f"{child.name} exited with {code}; starting it again")
                time.sleep(1)
                child.start()
            time.sleep(0.2)
    finally:
        # The web is asked first (its streams end), then the worker (its jobs); they stop side by side, in
        # well under Docker's 10 s, whether or not Redis is there (issue 18): a child still running after
        # _STOP_WAIT_S is killed. Redis last, after everything that writes to it.
        stop_processes([c.popen for c in reversed(children) if c.popen is not None], _STOP_WAIT_S)
        redis.stop()
    say("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
