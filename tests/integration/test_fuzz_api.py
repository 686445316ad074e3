"""Fuzzing the HTTP API from its own OpenAPI document (schemathesis), against a real stack.

The document is read from the running server's `/openapi.json`; every operation in it gets requests
that fit it (positive) and requests that do not (negative), many of them aimed at jobs that exist:
finished ones of every kind, one still running, and the ones the fuzzed submissions created. Every
answer must come within a per-request deadline, must not be a 5xx, and must be one the document
describes: status code, content type, headers and body. Afterwards the server must still run a job and
stream it. Both with API keys off (the default) and on (fuzzed requests then carry a valid key unless
schemathesis is negating exactly that, which must get 401).

`POST /jobs` documents its body as any `task` with any `params`: a task's own params are only named in
prose. So it is fuzzed twice: as documented, and with the body narrowed to each submittable task's
params model from the document's components. Valid params must then be accepted
(`positive_data_acceptance`), and invalid ones refused: that reaches the worker, too.

Two of schemathesis's readings are not this document's, so they are replaced rather than run:
- `positive_data_acceptance` on the documented `POST /jobs` body: any `task`, any `params` fits it, and
  is rightly refused with 422.
- `response_schema_conformance` on `text/event-stream`: schemathesis reads an event stream's schema as
  that of each event (`{event, data, id, retry}`, as OpenAPI 3.2's `itemSchema`); this one documents the
  JSON in each `data:` line, by `event:` name, and that is what `_check_stream` holds the stream to.

The server runs in this event loop, so requests (which schemathesis sends with `requests`) go from a
worker thread; Hypothesis runs there too. Generation is derandomized and without shrinking: the same
requests every run, and a failure is reported as found (with a `curl` command to replay it).
"""

import copy
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import requests
import schemathesis
from httpx_sse import EventSource
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel, SecretStr
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import CHECKS, CheckFunction, is_check_class, load_all_checks

from jobpulse.models import LostEvent, ProgressEvent, StatusEvent
from tests.conftest import Stack, StackFactory
from tests.support.sse import TERMINAL, read_to_the_end
from worker.tasks import registry

pytestmark = pytest.mark.anyio

logger = logging.getLogger(__name__)

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]

API_KEY = "fuzz-api-key-0123456789"
TOKEN_SECRET = "fuzz-token-secret-0123456789abcdef"

# No answer by then (or, from a stream, neither its end nor MAX_STREAM_EVENTS events): a hang.
REQUEST_TIMEOUT_S = 10.0
MAX_STREAM_EVENTS = 20  # a live job's stream is read this far, then dropped
MAX_EXAMPLES = 50  # per operation and generation mode
MAX_WAIT_S = 60.0  # `GET /jobs/{id}?wait=` may hold the answer this long (its documented maximum)

# The checks run on every answer; schemathesis's others are off (see the module's docstring).
CHECKS_ON = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]

EVENT_MODELS: dict[str, type[BaseModel]] = {
    "status": StatusEvent,
    "progress": ProgressEvent,
    "lost": LostEvent,
}

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

OPERATIONS = [
    "POST /jobs",
    "POST /uploads",
    "GET /jobs/{job_id}",
    "GET /jobs/{job_id}/events",
    "DELETE /jobs/{job_id}",
]


def _checks(*names: str) -> list[CheckFunction]:
    load_all_checks()
    return [check for check in CHECKS.get_by_names(names) if not is_check_class(check)]


@dataclass
class Jobs:
    """Job ids the fuzzing aims at, besides the ones it makes up."""

    short: list[str]  # terminal, with a handful of events: their streams must end by themselves
    live: str  # running for hours, a progress event every 100 ms
    created: list[str] = field(default_factory=list)  # by the fuzzed POSTs


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)

    def record(self, name: str, status: int) -> None:
        self.requests[name] += 1
        self.statuses.setdefault(name, Counter())[status] += 1

    def summary(self) -> str:
        return "\n".join(
            f"{name}: {self.requests[name]} requests, statuses {dict(sorted(statuses.items()))}"
            for name, statuses in self.statuses.items()
        )


def _allowed_hold_s(case: AnyCase) -> float:
    """How long the server may rightly hold a long poll: `wait` seconds, if it is a valid `wait`."""
    if case.method.upper() != "GET" or "wait" not in case.query:
        return 0.0
    try:
        wait = float(case.query["wait"])
    except (TypeError, ValueError):
        return 0.0
    return wait if math.isfinite(wait) and 0 <= wait <= MAX_WAIT_S else 0.0


def _reproduction(case: AnyCase, response: schemathesis.Response | None = None) -> str:
    body = repr(case.body) if case.media_type is not None else "(none)"
    text = (
        f"{case.method} {case.formatted_path} query={case.query!r} headers={dict(case.headers)!r} "
        f"body={body}\n{case.as_curl_command()}"
    )
    if response is not None:
        text += f"\n-> {response.status_code} {response.headers!r} {response.content[:2000]!r}"
    return text


def _is_event_stream(response: schemathesis.Response) -> bool:
    content_type = response.headers.get("content-type", [""])[0]
    return content_type.partition(";")[0].strip() == "text/event-stream"


def _check_stream(case: AnyCase, response: schemathesis.Response, *, must_end: bool) -> None:
    """Each event's `data:` is the JSON its `event:` name documents; a stream that ended ended a job."""
    job_id = case.path_parameters["job_id"]
    stream = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=response.content)
    events = list(EventSource(stream).iter_sse())
    why = "\n" + _reproduction(case, response)
    for event in events:
        assert event.event in EVENT_MODELS, f"undocumented event {event.event!r}" + why
        data = EVENT_MODELS[event.event].model_validate_json(event.data)
        assert getattr(data, "job_id", None) == job_id, why
    if must_end:
        assert not response.stream_cut_short, "a finished job's stream did not end" + why
    if not response.stream_cut_short:
        assert events and events[-1].event == "status", "the stream ended without a status" + why
        assert events[-1].json()["status"] in TERMINAL, "the stream ended before the job" + why


def _with_task_params(document: dict[str, Any], task: str) -> dict[str, Any]:
    """The document with `POST /jobs` taking only `task`, with the params its model documents."""
    narrowed = copy.deepcopy(document)
    body = narrowed["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["task", "params"],
        "properties": {
            "task": {"const": task},
            "params": {"$ref": f"#/components/schemas/{registry[task].params_model.__name__}"},
        },
    }
    return narrowed


class Fuzzer:
    def __init__(self, base_url: str, jobs: Jobs) -> None:
        self.base_url = base_url
        self.jobs = jobs
        self.tally = Tally()
        self.session = requests.Session()
        self.not_on_streams = _checks("response_schema_conformance")

    def send(self, case: AnyCase, name: str, additional_checks: list[CheckFunction]) -> None:
        """Sends the case and checks the answer (in a worker thread)."""
        timeout = REQUEST_TIMEOUT_S + _allowed_hold_s(case)
        started = time.monotonic()
        try:
            response = case.call(base_url=self.base_url, session=self.session, timeout=timeout)
        except requests.Timeout as exc:
            raise AssertionError(f"no answer within {timeout:.1f} s:\n" + _reproduction(case)) from exc
        elapsed = time.monotonic() - started
        self.tally.record(name, response.status_code)
        assert elapsed < timeout, f"answered in {elapsed:.1f} s, over {timeout:.1f} s:\n" + _reproduction(
            case, response
        )
        stream = _is_event_stream(response) and response.status_code == 200
        try:
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=self.not_on_streams if stream else None,
            )
        except BaseExceptionGroup as failures:
            # Schemathesis's report (with `curl`), as an ordinary failure: a BaseExceptionGroup would
            # take down anyio's test runner with it, and the stack's teardown.
            raise AssertionError(f"{failures.message}\n{_reproduction(case, response)}") from failures
        if stream:
            _check_stream(case, response, must_end=case.path_parameters.get("job_id") in self.jobs.short)
        if response.status_code == 202:
            self.jobs.created.append(response.json()["id"])

    def fuzz(
        self,
        schema: BaseSchema,
        label: str,
        *,
        name: str | None = None,
        existing: Sequence[str] = (),
        live: str | None = None,
        fixed: Sequence[dict[str, Any]] = (),
        additional_checks: Sequence[str] = (),
    ) -> None:
        """`label`, with generated data of both modes, in equal parts (as far as they apply):

        made-up cases; cases aimed at one of the `existing` (finished) jobs; at the `live` job; and
        positive cases with the `as_strategy` arguments of one of `fixed` set, e.g. a job and a header.
        Tallied under `name`, the label by default.
        """
        operation: Operation | None = schema.find_operation_by_label(label)
        assert operation is not None, f"{label} is not in the OpenAPI document"
        name = name or label
        for mode in GenerationMode:
            strategy = partial(operation.as_strategy, generation_mode=mode)
            kinds = [strategy()]
            if mode is GenerationMode.POSITIVE:
                kinds[0] = st.one_of(kinds[0], *operation.get_strategies_from_examples())
            if existing:
                kinds.append(st.one_of([strategy(path_parameters={"job_id": i}) for i in existing]))
            if live is not None:
                kinds.append(strategy(path_parameters={"job_id": live}))
            if fixed and mode is GenerationMode.POSITIVE:
                kinds.append(st.one_of([strategy(**kwargs) for kwargs in fixed]))
            checks = _checks(*additional_checks)
            sent = self.tally.requests[name]
            try:
                self._run(kinds, partial(self.send, name=name, additional_checks=checks))
            except Unsatisfiable:
                # Nothing in the operation that can be made invalid (a plain string in the path, and no
                # credentials to leave out); anything else that cannot be generated is an error.
                if mode is GenerationMode.POSITIVE or self.tally.requests[name] != sent:
                    raise
                logger.info("%s: no invalid request to make", name)

    def _run(self, kinds: list[st.SearchStrategy[AnyCase]], send: Callable[[AnyCase], None]) -> None:
        @FUZZ_SETTINGS
        @given(data=st.data())
        def fuzz_operation(data: st.DataObject) -> None:
            kind = data.draw(st.integers(0, len(kinds) - 1), label="kind of case")
            send(data.draw(kinds[kind], label="case"))

        fuzz_operation()


async def _settled(stack: Stack, job_id: str, statuses: set[str]) -> dict[str, Any]:
    with anyio.fail_after(10):
        while (job := await stack.job(job_id))["status"] not in statuses:
            await anyio.sleep(0.02)
    return job


async def _seed_jobs(stack: Stack) -> Jobs:
    """Jobs of every kind to aim at: succeeded, failed, cancelled, an upload, one running."""
    succeeded = await stack.submit(steps=2, interval_ms=0)
    failed = await stack.submit(steps=3, interval_ms=0, fail_at=2)
    cancelled = await stack.submit(steps=1, interval_ms=0, start_delay_ms=60_000)
    assert (await stack.client.delete(f"/jobs/{cancelled['id']}")).status_code == 200
    files = {"file": ("people.csv", b"name,city\nada,london\n", "text/csv")}
    upload = await stack.client.post("/uploads", files=files)
    assert upload.status_code == 202, upload.text
    live = await stack.submit(steps=100_000, interval_ms=50)
    short = [succeeded["id"], failed["id"], cancelled["id"], upload.json()["id"]]
    finals = [(await _settled(stack, job_id, TERMINAL))["status"] for job_id in short]
    assert finals == ["succeeded", "failed", "cancelled", "succeeded"]
    await _settled(stack, live["id"], {"running"})
    return Jobs(short=short, live=live["id"])


async def _cancel_all(stack: Stack, job_ids: list[str]) -> None:
    """Leaves the fuzzed submissions finished, so they neither hold up the worker nor a long poll."""
    for job_id in job_ids:
        response = await stack.client.delete(f"/jobs/{job_id}")
        assert response.status_code in (200, 409), response.text


async def _in_thread(function: Callable[[], None]) -> None:
    await anyio.to_thread.run_sync(function)


@pytest.mark.parametrize("access", ["open", "api_keys"])
async def test_fuzzing_the_api_from_its_openapi_document(make_stack: StackFactory, access: str) -> None:
    options: dict[str, Any] = {
        "request-timeout": REQUEST_TIMEOUT_S,
        "max-stream-events": MAX_STREAM_EVENTS,
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS_ON}},
    }
    if access == "api_keys":
        stack = await make_stack(api_keys=(SecretStr(API_KEY),), token_secret=SecretStr(TOKEN_SECRET))
        stack.client.headers["Authorization"] = f"Bearer {API_KEY}"
        options["auth"] = {"openapi": {"HTTPBearer": {"bearer": API_KEY}}}
    else:
        # The document says credentials are optional here (`security` includes `{}`): sending none, or
        # nonsense, must be accepted like any valid request.
        stack = await make_stack()
    response = await stack.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()

    def load(document: dict[str, Any]) -> BaseSchema:
        return schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict(options))

    schema = load(document)
    labels = sorted(operation.label for path in schema for operation in schema[path].values())
    assert labels == sorted(OPERATIONS), "an operation this test does not know of: fuzz it too"
    submittable = registry.submittable()
    assert submittable

    jobs = await _seed_jobs(stack)
    fuzzer = Fuzzer(stack.web.url, jobs)
    try:
        await _in_thread(lambda: fuzzer.fuzz(schema, "POST /jobs"))
        for task in submittable:
            narrowed = load(_with_task_params(document, task))
            await _in_thread(
                partial(
                    fuzzer.fuzz,
                    narrowed,
                    "POST /jobs",
                    name=f"POST /jobs ({task} params)",
                    additional_checks=["positive_data_acceptance"],
                )
            )
        await _in_thread(lambda: fuzzer.fuzz(schema, "POST /uploads"))
        await _cancel_all(stack, jobs.created)

        finished = jobs.short + jobs.created[:6]
        # The running job is polled with a short `wait`, or one case could hold the answer a minute.
        polls = [{"path_parameters": {"job_id": jobs.live}, "query": {"wait": wait}} for wait in (0, 0.2)]
        await _in_thread(lambda: fuzzer.fuzz(schema, "GET /jobs/{job_id}", existing=finished, fixed=polls))

        # A finished job's stream resumed at its last event (204) and just before it (200, one event).
        ends = [(job_id, (await stack.job(job_id))["last_event_id"]) for job_id in jobs.short]
        resumes = [
            {"path_parameters": {"job_id": job_id}, "headers": {"Last-Event-ID": str(last - back)}}
            for job_id, last in ends
            for back in (0, 1)
        ] + [
            {"path_parameters": {"job_id": job_id}, "query": {"last_event_id": str(last)}}
            for job_id, last in ends
        ]
        await _in_thread(
            lambda: fuzzer.fuzz(
                schema, "GET /jobs/{job_id}/events", existing=finished, live=jobs.live, fixed=resumes
            )
        )
        await _in_thread(
            lambda: fuzzer.fuzz(schema, "DELETE /jobs/{job_id}", existing=finished, live=jobs.live)
        )
    finally:
        logger.info("fuzzed (%s):\n%s", access, fuzzer.tally.summary())
        fuzzer.session.close()
    assert set(OPERATIONS) <= set(fuzzer.tally.requests)

    # Still healthy: a new job runs to the end, and its stream tells it all.
    job = await stack.submit(steps=3, interval_ms=10)
    events = await read_to_the_end(stack.client, job["id"], deadline_s=15)
    assert events[-1].data["status"] == "succeeded", events[-1]
    assert [e.data["progress"] for e in events if e.event == "progress"][-1] == 100
    assert (await stack.job(job["id"]))["status"] == "succeeded"
