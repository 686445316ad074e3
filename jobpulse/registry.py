"""`TaskRegistry`: the tasks an app may submit and a worker runs, each a name, a params model and options.

One registry object is shared by the user's web app (`jobpulse.web.jobs_router`) and worker
(`jobpulse.worker.worker_settings`): the web validates a submission against the params model and
enqueues by name, without calling the task; the worker runs it. A definition that cannot work (no params
model, a bad option) is recorded, not raised, when the module is imported, and both sides refuse to start
with every problem listed (`TaskRegistry.check`): an import error in the middle of arq's start-up says far
less than "task 'resize': its 2nd parameter needs a pydantic model annotation".
"""

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, overload

from pydantic import BaseModel

TaskFunction = Callable[[dict[str, Any], Any], Awaitable[Any]]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
# Highest per-task attempt limit: the settings' own bound (JOBPULSE_MAX_TRIES).
MAX_TRIES_LIMIT = 100


class TaskDefinitionError(ValueError):
    """A registered task cannot run as defined; the message lists every problem and how to fix it."""


@dataclass(frozen=True)
class TaskSpec:
    """One registered task. `max_tries` and `timeout_s` of None mean the settings' values."""

    name: str
    function: TaskFunction
    params_model: type[BaseModel]
    max_tries: int | None = None
    timeout_s: float | None = None

    @property
    def started_by(self) -> str | None:
        """The endpoint that starts this task, for a task `POST /jobs` must refuse (see `UploadParams`)."""
        started_by: str | None = getattr(self.params_model, "started_by", None)
        return started_by

    def tries(self, default: int) -> int:
        return default if self.max_tries is None else self.max_tries

    def timeout(self, default: float) -> float:
        return default if self.timeout_s is None else self.timeout_s


def _params_model(function: Callable[..., Any]) -> tuple[type[BaseModel] | None, str | None]:
    """The annotation of the function's 2nd parameter when it is a pydantic model, else why not."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None, "it has no signature to read"
    if len(parameters) < 2:
        return None, "it must take (ctx, params): the params model is its 2nd parameter's annotation"
    try:
        hints = inspect.get_annotations(function, eval_str=True)
    except Exception as exc:
        return None, f"its annotations cannot be resolved ({type(exc).__name__}: {exc})"
    model = hints.get(parameters[1].name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        shown = "missing" if model is None else repr(model)
        return None, (
            f"its 2nd parameter {parameters[1].name!r} must be annotated with a pydantic model "
            f"(class MyParams(BaseModel): ...), not {shown}"
        )
    return model, None


class TaskRegistry:
    """The tasks of one app: `@tasks.task` or `@tasks.task(name=..., max_tries=..., timeout_s=...)`."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self._problems: list[str] = []

    @overload
    def task(self, function: TaskFunction, /) -> TaskFunction: ...

    @overload
    def task(
        self, *, name: str | None = None, max_tries: int | None = None, timeout_s: float | None = None
    ) -> Callable[[TaskFunction], TaskFunction]: ...

    def task(
        self,
        function: TaskFunction | None = None,
        *,
        name: str | None = None,
        max_tries: int | None = None,
        timeout_s: float | None = None,
    ) -> TaskFunction | Callable[[TaskFunction], TaskFunction]:
        """Register an `async def task(ctx, params: Model)`; returns the function unchanged."""

        def register(fn: TaskFunction) -> TaskFunction:
            self._register(fn, name, max_tries, timeout_s)
            return fn

        return register if function is None else register(function)

    def _register(
        self, fn: TaskFunction, name: str | None, max_tries: int | None, timeout_s: float | None
    ) -> None:
        task_name = name if name is not None else getattr(fn, "__name__", repr(fn))
        problems = []
        if not isinstance(task_name, str) or not _NAME.fullmatch(task_name):
            problems.append(
                f"name {task_name!r} must be 1-128 letters, digits, '_', '.', ':' or '-', not starting "
                "with a digit"
            )
        elif task_name in self._specs:
            problems.append(f"name {task_name!r} is registered twice: give one of them name=")
        if not inspect.iscoroutinefunction(fn):
            problems.append("it must be an `async def` function")
        model, why = _params_model(fn)
        if why is not None:
            problems.append(why)
        if max_tries is not None and (
            not isinstance(max_tries, int)
            or isinstance(max_tries, bool)
            or not 1 <= max_tries <= MAX_TRIES_LIMIT
        ):
            problems.append(
                f"max_tries must be a whole number from 1 to {MAX_TRIES_LIMIT}, not {max_tries!r}"
            )
        if timeout_s is not None and (
            not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or not timeout_s > 0
        ):
            problems.append(f"timeout_s must be a number of seconds above 0, not {timeout_s!r}")
        if problems:
            self._problems.append(f"task {task_name!r}: " + "; ".join(problems))
            return
        assert model is not None
        self._specs[task_name] = TaskSpec(task_name, fn, model, max_tries, timeout_s)

    def check(self) -> None:
        """Raise `TaskDefinitionError` listing every task that cannot run as defined."""
        if self._problems:
            listed = "\n  ".join(self._problems)
            raise TaskDefinitionError(f"jobpulse cannot run these tasks as defined:\n  {listed}")
        for spec in self._specs.values():
            try:
                spec.params_model.model_json_schema()
            except Exception as exc:
                raise TaskDefinitionError(
                    f"task {spec.name!r}: its params model {spec.params_model.__name__} has no JSON schema "
                    f"({type(exc).__name__}: {exc}); its fields must be JSON types"
                ) from exc

    def get(self, name: str) -> TaskSpec | None:
        return self._specs.get(name)

    def __getitem__(self, name: str) -> TaskSpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(sorted(self._specs.values(), key=lambda spec: spec.name))

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def names(self) -> list[str]:
        return sorted(self._specs)

    def submittable(self) -> list[str]:
        """Names `POST /jobs` accepts: every task no other endpoint starts."""
        return [spec.name for spec in self if spec.started_by is None]


def import_registry(target: str) -> TaskRegistry:
    """The registry `module:attribute` names (`JOBPULSE_TASKS`, `--tasks`), imported from `sys.path`."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise TaskDefinitionError(f"{target!r} is not module:attribute (e.g. myapp.tasks:tasks)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskDefinitionError(
            f"cannot import {module_name!r} for the task registry {target!r}: {exc}"
        ) from exc
    registry: Any = module
    for part in attribute.split("."):
        registry = getattr(registry, part, None)
        if registry is None:
            raise TaskDefinitionError(
                f"{module_name!r} has no attribute {attribute!r} (the task registry {target!r})"
            )
    if not isinstance(registry, TaskRegistry):
        raise TaskDefinitionError(f"{target!r} is a {type(registry).__name__}, not a jobpulse TaskRegistry")
    return registry
