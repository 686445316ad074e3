"""Which registry the reference service serves: `JOBPULSE_TASKS`, else its demo tasks."""

from jobpulse import Settings, TaskRegistry, import_registry

DEMO_TASKS = "worker.tasks:registry"


def served_registry(settings: Settings) -> TaskRegistry:
    return import_registry(settings.tasks or DEMO_TASKS)
