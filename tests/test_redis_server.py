"""The private Redis server the tests and `scripts/up` start."""

import pytest

from stack.redis_server import RedisServer


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
        second.cleanup()
