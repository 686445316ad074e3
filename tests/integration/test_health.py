"""`/healthz` and `/readyz` against real Redis servers: up, stopped and started again, and silent."""

import time

import anyio
import anyio.to_thread
import httpx
import pytest
from pydantic import SecretStr

from jobpulse.settings import Settings
from jobpulse.stack.redis_server import RedisServer
from tests.conftest import StackFactory, WebServer
from tests.support.tcp_proxy import FreezableProxy

pytestmark = pytest.mark.anyio


async def wait_for_status(
    client: httpx.AsyncClient, path: str, status: int, within_s: float
) -> httpx.Response:
    with anyio.fail_after(within_s):
        while True:
            response = await client.get(path)
            if response.status_code == status:
                return response
            await anyio.sleep(0.05)


async def test_probes_answer_without_credentials_on_a_locked_server(make_stack: StackFactory) -> None:
    """With API keys on, everything else needs a key; a probe has none and must still get its answer."""
    locked = await make_stack(
        with_worker=False, api_keys=(SecretStr("probe-key-0123456789"),), token_secret=SecretStr("s" * 32)
    )
    assert (await locked.client.get("/jobs/AAAAAAAAAAAAAAAAAAAAAA")).status_code == 401
    healthz = await locked.client.get("/healthz")
    assert healthz.status_code == 200 and healthz.json() == {"status": "ok"}
    assert healthz.headers["cache-control"] == "no-store"
    readyz = await locked.client.get("/readyz")
    assert readyz.status_code == 200 and readyz.json() == {"status": "ok", "redis": "ok"}


async def test_probes_are_not_in_the_openapi_document(make_stack: StackFactory) -> None:
    stack = await make_stack(with_worker=False)
    paths = (await stack.client.get("/openapi.json")).json()["paths"]
    assert "/healthz" not in paths and "/readyz" not in paths
    assert "/jobs" in paths


async def test_readyz_is_503_while_redis_is_stopped_and_200_once_it_is_back(settings: Settings) -> None:
    with RedisServer() as server:
        web = WebServer(settings.model_copy(update={"redis_url": server.url}))
        await web.start()
        try:
            async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
                assert (await client.get("/readyz")).status_code == 200
                await anyio.to_thread.run_sync(server.stop)

                down = await client.get("/readyz")
                assert down.status_code == 503
                assert down.headers["retry-after"] == "5"
                assert down.headers["content-type"] == "application/json"
                body = down.json()
                assert body["status"] == "unavailable" and body["redis"] == "unavailable"
                assert body["detail"].startswith("Redis is unavailable (ConnectionError: ")
                assert str(server.port) not in body["detail"]  # the log names hosts and ports; the answer not
                # Liveness does not depend on Redis: a supervisor must not restart the web for its outage.
                assert (await client.get("/healthz")).status_code == 200

                await anyio.to_thread.run_sync(server.start)  # the same port
                up = await wait_for_status(client, "/readyz", 200, within_s=10)
                assert up.json() == {"status": "ok", "redis": "ok"}
        finally:
            await web.stop()


async def test_readyz_gives_up_on_a_silent_redis_within_its_timeout(settings: Settings) -> None:
    """A Redis that accepts and never answers (a dead network path) must not hold the probe past its own
    timeout: 503 after `JOBPULSE_REDIS_TIMEOUT_S` (capped at 2 s), then 200 on a fresh connection."""
    proxy = FreezableProxy(int(settings.redis_url.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    web = WebServer(settings.model_copy(update={"redis_url": proxy.url, "redis_timeout_s": 0.5}))
    await web.start()
    try:
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
            assert (await client.get("/readyz")).status_code == 200  # the pool now holds a connection
            proxy.freeze_open_connections()
            started = time.monotonic()
            silent = await client.get("/readyz")
            elapsed = time.monotonic() - started
            assert silent.status_code == 503, silent.text
            assert "no answer within 0.5 s" in silent.json()["detail"]
            assert 0.4 < elapsed < 2.0
            # The timed-out connection was dropped; a new one goes through the proxy's new connections.
            await wait_for_status(client, "/readyz", 200, within_s=5)
    finally:
        await web.stop()
        await proxy.stop()
