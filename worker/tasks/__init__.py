"""Task implementations, bound to the names and params models registered in `jobpulse.tasks`."""

from worker.lifecycle import TaskImpl
from worker.tasks.process_upload import process_upload
from worker.tasks.simulate import simulate

TASK_IMPLS: dict[str, TaskImpl] = {
    "simulate": simulate,
    "process_upload": process_upload,
}

__all__ = ["TASK_IMPLS"]
