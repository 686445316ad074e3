"""The reference service's demo tasks, in one registry that its web app and its worker share."""

from jobpulse import TaskRegistry
from worker.tasks.process_upload import process_upload
from worker.tasks.simulate import simulate

registry = TaskRegistry()
registry.task(simulate)
registry.task(process_upload)

__all__ = ["registry"]
