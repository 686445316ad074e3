"""Task implementations, bound to the names and params models registered in `jobpulse.tasks`."""

from worker.lifecycle import TaskImpl
from worker.tasks.simulate import simulate

TASK_IMPLS: dict[str, TaskImpl] = {
    "simulate": simulate,
}

__all__ = ["TASK_IMPLS"]
