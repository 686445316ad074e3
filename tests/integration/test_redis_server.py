"""The private Redis server the tests and `scripts/up` start."""

import socket
from pathlib import Path

import pytest

from jobpulse.stack.redis_server import RedisServer, free_port


def test_private_server_starts_answers_and_cleans_up() -> None:
    server = RedisServer().start()
    try:
        assert server.process is not None and server.process.poll() is None
        assert server.url.startswith("redis://127.0.0.1:")
    finally:
        server.cleanup()
    assert not server.directory.exists()


def test_someone_elses_server_on_the_port_is_not_taken_for_ours() -> None:
    """Regression: any PONG on the port counted as started, so a foreign Redis could be adopted."""
    with RedisServer() as first:
        second = RedisServer(port=first.port)
        with pytest.raises(RuntimeError, match=r"exited at start|did not answer"):
            second.start(timeout_s=3)
        assert second.process is None, "the failed server's process (and its stderr pipe) let go of"
        second.cleanup()


def test_a_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    """Regression: a port from the ephemeral range could become some client connection's local port
    before the server bound it (a scale-out test's web failed with "address already in use")."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    if low < 2024:
        pytest.skip(f"the ephemeral range starts at {low}: nothing below it to choose from")
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
