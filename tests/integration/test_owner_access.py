"""`jobs_router(owner=...)`: the user's own access rule (their session, their user model) for the job routes.

A user's app on a real uvicorn with a real worker: its `current_user` reads a session cookie into a user
model, `owner_of` answers the user's name, and the router at /api takes `owner=owner_of`. Alice's jobs
open to alice on every route (read, wait, stream, resume, cancel); bob gets for each exactly what an
unknown id gets; nobody gets the app's own 401; API keys and job tokens keep what they open.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import Cookie, Depends, FastAPI, HTTPException
from pydantic import SecretStr
from redis.asyncio import Redis

import worker.tasks
from jobpulse.ids import new_job_id
from jobpulse.keys import state_key
from jobpulse.models import JobView
from jobpulse.settings import Settings
from jobpulse.store import JobNotFound
from jobpulse.web import Jobs, JobsDep, jobs_router, uploads_router
from tests.conftest import WebServer, WorkerProcess
from tests.support.sse import ids, read_events

pytestmark = pytest.mark.anyio

PREFIX = "/api"
KEY = "key-for-owner-tests-0123456789"
SIGN_IN = {"detail": "Sign in at /login first."}


@dataclass(frozen=True)
class User:
    name: str


SESSIONS = {"s-alice": User("alice"), "s-bob": User("bob")}


async def current_user(session: Annotated[str | None, Cookie()] = None) -> User:
    """The app's own session check, with its own refusal."""
    user = SESSIONS.get(session or "")
    if user is None:
        raise HTTPException(401, SIGN_IN["detail"], headers={"WWW-Authenticate": 'Cookie realm="shop"'})
    return user


async def owner_of(user: Annotated[User, Depends(current_user)]) -> str:
    return user.name


async def owner_if_signed_in(session: Annotated[str | None, Cookie()] = None) -> str | None:
    """A rule that lets API keys and job tokens through: None where there is no user."""
    user = SESSIONS.get(session or "")
    return None if user is None else user.name


Me = Annotated[str, Depends(owner_of)]


def user_app(settings: Settings, owner: Callable[..., Any]) -> FastAPI:
    app = FastAPI(title="my shop")

    @app.post("/resize")
    async def resize(jobs: JobsDep, me: Me) -> dict[str, Any]:
        job = await jobs.submit("simulate", {"steps": 2, "interval_ms": 5}, owner=me)
        return {"id": job.id, "events_url": job.events_url}

    @app.get("/mine/{job_id}")
    async def mine(job_id: str, jobs: JobsDep, me: Me) -> JobView:
        return await jobs.get(job_id, owner=me)

    @app.delete("/mine/{job_id}")
    async def drop(job_id: str, jobs: JobsDep, me: Me) -> JobView:
        return await jobs.cancel(job_id, owner=me)

    app.include_router(jobs_router(worker.tasks.registry, settings=settings, owner=owner), prefix=PREFIX)
    app.include_router(uploads_router(worker.tasks.registry, owner=owner), prefix=PREFIX)
    return app


@dataclass
class Served:
    server: WebServer
    clients: list[httpx.AsyncClient]

    def client(self, session: str | None = None, **headers: str) -> httpx.AsyncClient:
        cookies = {"session": session} if session else None
        client = httpx.AsyncClient(base_url=self.server.url, timeout=20, cookies=cookies, headers=headers)
        self.clients.append(client)
        return client


@pytest.fixture
async def serve(settings: Settings, redis: Redis) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    started: list[tuple[WebServer, WorkerProcess, Served]] = []

    async def start(owner: Callable[..., Any] = owner_of, **changes: Any) -> Served:
        changed = settings.model_copy(update={"progress_interval_ms": 0, **changes})
        server = WebServer(changed, app=user_app(changed, owner))
        await server.start()
        process = WorkerProcess(changed)
        await process.start()
        served = Served(server, [])
        started.append((server, process, served))
        return served

    try:
        yield start
    finally:
        for server, process, served in reversed(started):
            for client in served.clients:
                await client.aclose()
            await process.stop()
            await server.stop()


async def submit(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.post(f"{PREFIX}/jobs", json={"task": "simulate", "params": params})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def answer(
    http: httpx.AsyncClient, method: str, url: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (but the date) and body (for a stream, its opening bytes)."""
    async with http.stream(method, url, headers=headers) as response:
        with anyio.fail_after(10):
            if response.status_code == 200 and "text/event-stream" in response.headers["content-type"]:
                body = await response.aiter_bytes().__anext__()
            else:
                body = await response.aread()
    kept = {name: value for name, value in response.headers.items() if name != "date"}
    return response.status_code, kept, body


def routes(job_id: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every way of reading or cancelling a job: GET, a long poll, the stream, a resumed stream, DELETE."""
    return [
        ("GET", f"{PREFIX}/jobs/{job_id}", {}),
        ("GET", f"{PREFIX}/jobs/{job_id}?wait=3", {}),
        ("GET", f"{PREFIX}/jobs/{job_id}/events", {}),
        ("GET", f"{PREFIX}/jobs/{job_id}/events", {"Last-Event-ID": "1"}),
        ("GET", f"{PREFIX}/jobs/{job_id}/events?last_event_id=1", {}),
        ("DELETE", f"{PREFIX}/jobs/{job_id}", {}),
    ]


async def test_the_owner_reads_waits_streams_resumes_and_cancels_their_job_which_records_them(
    serve: Any, redis: Redis
) -> None:
    served = await serve()
    alice = served.client("s-alice")
    job = await submit(alice, steps=3, interval_ms=20)
    assert job["events_url"] == f"{PREFIX}/jobs/{job['id']}/events"
    assert await redis.hget(state_key(job["id"]), "owner") == b"alice"  # type: ignore[misc]

    events = await read_events(alice, job["id"], path=job["events_url"])
    assert events[-1].data["status"] == "succeeded"
    resumed = await read_events(alice, job["id"], path=job["events_url"], last_event_id=events[1].id)
    assert ids(resumed) == ids(events)[2:]
    waited = await alice.get(f"{PREFIX}/jobs/{job['id']}?wait=5")
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded"
    # The owner is not part of the job's public view.
    assert "owner" not in waited.json() and "alice" not in waited.text

    running = await submit(alice, steps=1000, interval_ms=50)
    cancelled = await alice.delete(f"{PREFIX}/jobs/{running['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"


async def test_another_users_job_answers_exactly_what_an_unknown_job_answers_on_every_route(
    serve: Any,
) -> None:
    """Bob cannot tell alice's job from one that never existed, before and while alice watches it (the
    stream's two paths: a job this process already watches is read with its history in one step), and
    his DELETE leaves it running."""
    served = await serve()
    alice, bob = served.client("s-alice"), served.client("s-bob")
    job = await submit(alice, steps=1000, interval_ms=50)
    unknown = new_job_id()

    async def bob_cannot_tell() -> None:
        for method, url, headers in routes(job["id"]):
            foreign = await answer(bob, method, url, **headers)
            status, unknown_headers, unknown_body = await answer(
                bob, method, url.replace(job["id"], unknown), **headers
            )
            assert foreign[0] == 404, (method, url, foreign)
            assert foreign == (
                status,
                unknown_headers,
                unknown_body.replace(unknown.encode(), job["id"].encode()),
            )

    await bob_cannot_tell()
    async with alice.stream("GET", job["events_url"]) as watching:
        assert watching.status_code == 200
        chunks = watching.aiter_bytes()
        for _ in range(3):  # past the replay: live events arrive, so the job's channel is subscribed here
            await chunks.__anext__()
        hub = served.server.services.hub
        probe = hub.open_watched(job["id"], 0)
        assert probe is not None, "alice's stream should have the job watched in this process"
        hub.release(probe)
        await bob_cannot_tell()
    still = await alice.get(f"{PREFIX}/jobs/{job['id']}")
    assert still.json()["status"] == "running"


async def test_a_caller_without_a_session_gets_the_apps_own_refusal_on_every_route(serve: Any) -> None:
    served = await serve()
    job = await submit(served.client("s-alice"), steps=1000, interval_ms=50)
    nobody = served.client()
    refused = [(method, url, headers) for method, url, headers in routes(job["id"])]
    refused.append(("POST", f"{PREFIX}/jobs", {"Content-Type": "application/json"}))
    for method, url, headers in refused:
        status, answered_headers, body = await answer(nobody, method, url, **headers)
        assert (status, body) == (401, b'{"detail":"Sign in at /login first."}'), (method, url)
        assert answered_headers["www-authenticate"] == 'Cookie realm="shop"'


async def test_jobsdep_in_the_users_own_route_submits_reads_and_cancels_as_the_owner(serve: Any) -> None:
    served = await serve()
    alice, bob = served.client("s-alice"), served.client("s-bob")
    started = await alice.post("/resize")
    assert started.status_code == 200, started.text
    job_id = started.json()["id"]
    assert (await alice.get(f"{PREFIX}/jobs/{job_id}")).status_code == 200
    events = await read_events(alice, job_id, path=started.json()["events_url"])
    assert events[-1].data["status"] == "succeeded"
    assert (await alice.get(f"/mine/{job_id}")).json()["status"] == "succeeded"

    unknown = new_job_id()
    for method, url in [("GET", f"{PREFIX}/jobs/{{}}"), ("GET", "/mine/{}"), ("DELETE", "/mine/{}")]:
        foreign = await bob.request(method, url.format(job_id))
        never = await bob.request(method, url.format(unknown))
        assert foreign.status_code == never.status_code == 404, (method, url)
        assert foreign.text == never.text.replace(unknown, job_id)

    jobs = Jobs(served.server.services)
    long = await jobs.submit("simulate", {"steps": 1000, "interval_ms": 50}, owner="alice")
    with pytest.raises(JobNotFound):
        await jobs.cancel(long.id, owner="bob")
    assert (await jobs.get(long.id, owner="alice")).status in {"queued", "running"}
    assert (await alice.delete(f"/mine/{long.id}")).json()["status"] == "cancelled"


async def test_api_keys_and_job_tokens_keep_what_they_open_beside_the_owner_rule(serve: Any) -> None:
    """With keys on and a rule that answers None without a session: a key reads, streams and cancels
    anyone's job and submits ownerless ones; a job's token reads that job; a user needs no key to
    submit; with none of these, jobpulse's 401."""
    served = await serve(
        owner=owner_if_signed_in,
        api_keys=(SecretStr(KEY),),
        token_secret=SecretStr("t" * 32),
        token_ttl_s=600,
    )
    alice, bob = served.client("s-alice"), served.client("s-bob")
    service = served.client(Authorization=f"Bearer {KEY}")
    nobody = served.client()

    job = await submit(alice, steps=1000, interval_ms=50)  # a user submits without a key
    url = f"{PREFIX}/jobs/{job['id']}"
    assert (await service.get(url)).status_code == 200
    assert len(await read_events(service, job["id"], path=job["events_url"], limit=2)) == 2
    by_token = served.client(Authorization=f"Bearer {job['token']}")
    assert (await by_token.get(url)).status_code == 200
    assert (
        len(
            await read_events(
                nobody, job["id"], path=job["events_url"], query=f"?token={job['token']}", limit=2
            )
        )
        == 2
    )
    # A token reads; it does not cancel, and a bad one is passed over for the user's own standing.
    assert (await by_token.delete(url)).status_code == 401
    assert (await bob.get(f"{url}?token=1.bad")).status_code == 404
    refused = await nobody.get(url)
    assert refused.status_code == 401 and "sign in" in refused.json()["detail"]
    assert (await served.client(Authorization="Bearer wrong").delete(url)).status_code == 401

    cancelled = await service.delete(url)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    ownerless = await submit(service, steps=1, interval_ms=0)
    assert (await service.get(f"{PREFIX}/jobs/{ownerless['id']}")).status_code == 200
    assert (await alice.get(f"{PREFIX}/jobs/{ownerless['id']}")).status_code == 404
    assert (await nobody.post(f"{PREFIX}/jobs", json={"task": "simulate", "params": {}})).status_code == 401


async def test_an_upload_is_its_users_job_too(serve: Any) -> None:
    served = await serve()
    alice, bob = served.client("s-alice"), served.client("s-bob")
    uploaded = await alice.post(
        f"{PREFIX}/uploads", files={"file": ("notes.txt", b"one\ntwo\n", "text/plain")}
    )
    assert uploaded.status_code == 202, uploaded.text
    job = uploaded.json()
    assert (await alice.get(f"{PREFIX}/jobs/{job['id']}", params={"wait": 10})).json()[
        "status"
    ] == "succeeded"
    foreign = await bob.get(f"{PREFIX}/jobs/{job['id']}")
    unknown = await bob.get(f"{PREFIX}/jobs/no-such-job-at-all")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["detail"].replace(job["id"], "ID") == unknown.json()["detail"].replace(
        "no-such-job-at-all", "ID"
    )
    anonymous = served.client()
    refused = await anonymous.post(f"{PREFIX}/uploads", files={"file": ("x.txt", b"x", "text/plain")})
    assert refused.status_code == 401
