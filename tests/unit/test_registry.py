"""`TaskRegistry`: what a definition gives the web and the worker, what it refuses, and how to fix it."""

import sys
import types
from typing import Any

import pytest
from pydantic import BaseModel

from jobpulse import TaskDefinitionError, TaskRegistry, UploadParams
from jobpulse.registry import import_registry


class Resize(BaseModel):
    width: int


def test_a_task_is_named_for_its_function_and_takes_its_2nd_parameters_model() -> None:
    tasks = TaskRegistry()

    @tasks.task
    async def resize(ctx: dict[str, Any], params: Resize) -> dict[str, bool]:
        return {"ok": True}

    spec = tasks["resize"]
    assert spec.function is resize  # the decorator returns the function unchanged
    assert spec.params_model is Resize
    assert (spec.max_tries, spec.timeout_s, spec.started_by) == (None, None, None)
    assert spec.tries(3) == 3 and spec.timeout(60) == 60
    tasks.check()
    assert tasks.names == ["resize"] and tasks.submittable() == ["resize"] and "resize" in tasks


def test_options_override_the_settings() -> None:
    tasks = TaskRegistry()

    @tasks.task(name="thumbs", max_tries=5, timeout_s=600)
    async def make_thumbs(ctx: dict[str, Any], params: Resize) -> None: ...

    spec = tasks["thumbs"]
    assert "make_thumbs" not in tasks
    assert spec.tries(3) == 5 and spec.timeout(3600) == 600


def test_string_annotations_resolve() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\n"
        "from tests.unit.test_registry import Resize\n"
        "async def resize(ctx, params: Resize): ...\n",
        namespace,
    )
    tasks = TaskRegistry()
    tasks.task(namespace["resize"])
    assert tasks["resize"].params_model is Resize


def test_an_upload_task_is_started_by_its_endpoint_only() -> None:
    class Scan(UploadParams):
        pass

    tasks = TaskRegistry()

    @tasks.task
    async def scan(ctx: dict[str, Any], params: Scan) -> None: ...

    assert tasks["scan"].started_by == "POST /uploads"
    assert tasks.submittable() == []


async def _no_model(ctx: dict[str, Any], params: dict[str, Any]) -> None: ...


async def _one_parameter(ctx: dict[str, Any]) -> None: ...


def _not_async(ctx: dict[str, Any], params: Resize) -> None: ...


@pytest.mark.parametrize(
    ("function", "options", "says"),
    [
        (_no_model, {}, "must be annotated with a pydantic model"),
        (_one_parameter, {}, "it must take (ctx, params)"),
        (_not_async, {}, "must be an `async def` function"),
        (_no_model, {"name": "1bad name"}, "must be 1-128 letters"),
        (_no_model, {"max_tries": 0}, "max_tries must be a whole number from 1 to 100"),
        (_no_model, {"max_tries": True}, "max_tries must be a whole number"),
        (_no_model, {"timeout_s": 0}, "timeout_s must be a number of seconds above 0"),
        (_no_model, {"timeout_s": "10"}, "timeout_s must be a number of seconds above 0"),
    ],
)
def test_a_bad_definition_is_refused_at_check_with_what_to_fix(
    function: Any, options: dict[str, Any], says: str
) -> None:
    tasks = TaskRegistry()
    tasks.task(**options)(function)  # importing the module still works...
    with pytest.raises(TaskDefinitionError) as refused:  # ...but neither side starts
        tasks.check()
    assert says in str(refused.value)
    assert (options.get("name") or function.__name__) in str(refused.value)


def test_every_problem_is_listed_at_once() -> None:
    tasks = TaskRegistry()
    tasks.task(_no_model)
    tasks.task(_not_async)  # type: ignore[arg-type]  # what the check is for
    with pytest.raises(TaskDefinitionError) as refused:
        tasks.check()
    assert "'_no_model'" in str(refused.value) and "'_not_async'" in str(refused.value)


def test_a_name_registered_twice_is_refused() -> None:
    tasks = TaskRegistry()

    async def resize(ctx: dict[str, Any], params: Resize) -> None: ...

    tasks.task(resize)
    tasks.task(resize)
    with pytest.raises(TaskDefinitionError, match="registered twice"):
        tasks.check()


def test_a_model_without_a_json_schema_is_refused() -> None:
    class Opaque(BaseModel):
        model_config = {"arbitrary_types_allowed": True}
        handle: type  # a class, which JSON cannot carry

    tasks = TaskRegistry()

    @tasks.task
    async def peek(ctx: dict[str, Any], params: Opaque) -> None: ...

    with pytest.raises(TaskDefinitionError, match="has no JSON schema"):
        tasks.check()


def test_import_registry_names_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("jobpulse_test_tasks_module")
    module.tasks = TaskRegistry()  # type: ignore[attr-defined]
    module.other = object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert import_registry(f"{module.__name__}:tasks") is module.tasks
    for target, says in [
        ("no_colon", "is not module:attribute"),
        (f"{module.__name__}:", "is not module:attribute"),
        ("jobpulse_no_such_module_here:tasks", "cannot import"),
        (f"{module.__name__}:missing", "has no attribute 'missing'"),
        (f"{module.__name__}:other", "not a jobpulse TaskRegistry"),
    ]:
        with pytest.raises(TaskDefinitionError, match=says):
            import_registry(target)
