"""`python -m stack`: Redis (private unless REDIS_URL is set), an arq worker and the web app, till Ctrl-C."""

import argparse
import os
import signal
import subprocess
import sys
import time

from stack.redis_server import RedisServer, env_with_redis


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()

    redis: RedisServer | None = None
    url = os.environ.get("REDIS_URL")
    if not url:
        redis = RedisServer(appendonly=True).start()
        url = redis.url
        print(f"jobpulse: started a private Redis at {url} (data in {redis.directory})", flush=True)  # noqa: T201
    env = env_with_redis(url)
    python = sys.executable
    processes = {
        "worker": subprocess.Popen([python, "-m", "arq", "worker.WorkerSettings"], env=env),
        "web": subprocess.Popen(
            [python, "-m", "uvicorn", "web.app:app", "--host", args.host, "--port", str(args.port),
             "--timeout-graceful-shutdown", "5"],
            env=env,
        ),
    }  # fmt: skip
    print(f"jobpulse: web on http://{args.host}:{args.port}  (API docs at /docs; Ctrl-C stops)", flush=True)  # noqa: T201

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"jobpulse: {name} exited with {process.returncode}", flush=True)  # noqa: T201
                    stopping, exit_code = True, 1
            time.sleep(0.2)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis is not None:
            redis.stop()  # its data directory is kept: the AOF lets a restart pick up where it stopped
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
