"""What each subcommand does, given its parsed arguments and a client."""

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from jobpulse.cli.arguments import params_dict
from jobpulse.cli.exit_codes import CommandError, ExitCode
from jobpulse.cli.progress_view import make_display, result_json, write_line
from jobpulse.cli.watching import follow
from jobpulse.client import Client
from jobpulse.models import JobView


def _print_job(job: JobView) -> None:
    write_line(job.model_dump_json())


def _started(client: Client, job: JobView, args: argparse.Namespace) -> ExitCode:
    """A job just submitted or uploaded: its id (or JSON), or with --wait its progress and result."""
    if not args.wait:
        if args.json:
            _print_job(job)
        else:
            write_line(job.id)
        return ExitCode.OK
    return follow(client, job.id, make_display(json_lines=args.json), job=job, timeout=args.timeout)


def _check_timeout(args: argparse.Namespace) -> None:
    if args.timeout is not None and not args.wait:
        raise CommandError(ExitCode.USAGE, "--timeout is for waiting: add --wait")


def submit(client: Client, args: argparse.Namespace) -> ExitCode:
    _check_timeout(args)
    try:
        params = params_dict(args.params)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(ExitCode.USAGE, str(exc)) from None
    return _started(client, client.submit(args.task, **params), args)


def upload(client: Client, args: argparse.Namespace) -> ExitCode:
    _check_timeout(args)
    if not args.file.is_file():
        raise CommandError(ExitCode.USAGE, f"{args.file} is not a file")
    try:
        job = client.upload(args.file, filename=args.filename)
    except OSError as exc:  # unreadable: permissions, a file that vanished
        raise CommandError(ExitCode.USAGE, f"cannot read {args.file}: {exc.strerror or exc}") from None
    return _started(client, job, args)


def watch(client: Client, args: argparse.Namespace) -> ExitCode:
    return follow(client, args.id, make_display(json_lines=args.json), timeout=args.timeout)


def status_summary(job: JobView) -> list[str]:
    """A few lines a person reads: what the job is, where it is, and how it ended."""
    lines = [f"job       {job.id} ({job.task})"]
    state = f"{job.status}" + (f" (attempt {job.attempt})" if job.attempt else "")
    lines.append(f"status    {state}")
    progress = f"{job.progress:.1f}%"
    if job.current is not None and job.total is not None:
        progress += f"  {job.current}/{job.total}"
    if job.message:
        progress += f"  {job.message}"
    lines.append(f"progress  {progress}")
    if job.error:
        lines.append(f"error     {job.error}")
    if job.status == "succeeded":
        lines.append(f"result    {result_json(job.result)}")
    return lines


def status(client: Client, args: argparse.Namespace) -> ExitCode:
    job = client.get(args.id)
    if args.json:
        _print_job(job)
    else:
        for line in status_summary(job):
            write_line(line)
    return ExitCode.OK


def cancel(client: Client, args: argparse.Namespace) -> ExitCode:
    job = client.cancel(args.id)
    if args.json:
        _print_job(job)
    else:
        write_line(str(job.status))
    return ExitCode.OK


# What `jobpulse up` runs: the library's own entry points for a registry named by --tasks or
# JOBPULSE_TASKS, else, from a jobpulse checkout, the reference service (its demo tasks).
LIBRARY_TARGETS = ("jobpulse.worker.entry.WorkerSettings", "jobpulse.web.entry:app")
REFERENCE_TARGETS = ("worker.WorkerSettings", "web.app:app")


def _tasks(args: argparse.Namespace) -> str | None:
    """--tasks, else $JOBPULSE_TASKS; --tasks is put in the environment the servers read."""
    if args.tasks:
        os.environ["JOBPULSE_TASKS"] = args.tasks
    return os.environ.get("JOBPULSE_TASKS") or None


def _no_tasks() -> CommandError:
    return CommandError(
        ExitCode.USAGE,
        "name your task registry: --tasks module:attribute (or JOBPULSE_TASKS), e.g. --tasks tasks:tasks "
        "for `tasks = TaskRegistry()` in ./tasks.py",
    )


def _reference_service_here() -> bool:
    cwd = Path.cwd()
    return (cwd / "web" / "app.py").is_file() and (cwd / "worker" / "__init__.py").is_file()


def _become(command: list[str]) -> int:
    """Run `command` with this interpreter: this process becomes it, so Ctrl-C reaches it directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, command)
    child = subprocess.Popen(command)  # elsewhere a child, which gets the console's Ctrl-C as we do
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue  # the child stops and exits; wait for it


def up(args: argparse.Namespace) -> int:
    """`python -m jobpulse.stack`: Redis, a worker and the web app, till Ctrl-C."""
    if _tasks(args):
        worker, app = LIBRARY_TARGETS
    elif _reference_service_here():
        worker, app = REFERENCE_TARGETS
    else:
        raise _no_tasks()
    command = [sys.executable, "-m", "jobpulse.stack", "--worker", worker, "--app", app]
    for option in ("host", "port", "data"):
        if (value := getattr(args, option)) is not None:
            command += [f"--{option}", str(value)]
    if args.cluster:
        command.append("--cluster")
    return _become(command)


def web(args: argparse.Namespace) -> int:
    """uvicorn serving the standalone app for the registry."""
    if not _tasks(args):
        raise _no_tasks()
    port = args.port if args.port is not None else int(os.environ.get("PORT", "8000"))
    return _become(
        [sys.executable, "-m", "uvicorn", LIBRARY_TARGETS[1], "--host", args.host, "--port", str(port)]
    )


def worker(args: argparse.Namespace) -> int:
    """arq's worker for the registry."""
    if not _tasks(args):
        raise _no_tasks()
    return _become([sys.executable, "-m", "arq", LIBRARY_TARGETS[0]])


SERVICE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"up": up, "web": web, "worker": worker}


JOB_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], ExitCode]] = {
    "submit": submit,
    "upload": upload,
    "watch": watch,
    "status": status,
    "cancel": cancel,
}
