"""The command line's grammar: subcommands, their options, and `key=value` job parameters."""

import argparse
import json
from pathlib import Path
from typing import Any

from jobpulse.cli.exit_codes import exit_codes_help

DESCRIPTION = "Submit background jobs to a jobpulse server and watch their progress."

EXAMPLES = """\
examples:
  jobpulse submit simulate steps=20 interval_ms=200 --wait
  jobpulse submit simulate steps=20 interval_ms=200      # prints the id: then
  jobpulse watch ID --timeout 60
  jobpulse upload data.csv --wait --json
  jobpulse up --port 9000
  jobpulse up --tasks myapp.tasks:tasks                   # your own tasks, no Python app needed
  jobpulse web --tasks myapp.tasks:tasks --port 8000     # or one part at a time
  jobpulse worker --tasks myapp.tasks:tasks"""

ENVIRONMENT_HELP = """\
environment:
  JOBPULSE_URL     the server's base URL when --url is not given (default http://127.0.0.1:8000)
  JOBPULSE_TOKEN   the bearer token when --token is not given
  JOBPULSE_TASKS   the task registry (module:attribute) when --tasks is not given
  TTY_INTERACTIVE  1 shows the live progress bar even when stdout is not a terminal, 0 never shows it"""


def parse_param(text: str) -> tuple[str, Any]:
    """`steps=20` -> ("steps", 20): the value is JSON when it parses as JSON, else the text as it is."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. steps=20 or name=ada)")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def params_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in pairs:
        if key in params:
            raise argparse.ArgumentTypeError(f"parameter {key!r} is given twice")
        params[key] = value
    return params


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return seconds


def _connection_options(*, top_level: bool) -> argparse.ArgumentParser:
    """--url and --token, accepted before the subcommand and after it (where they win)."""
    default = None if top_level else argparse.SUPPRESS
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument(
        "--url",
        default=default,
        help="the server's base URL (default: $JOBPULSE_URL, else http://127.0.0.1:8000)",
    )
    group.add_argument("--token", default=default, help="bearer token (default: $JOBPULSE_TOKEN)")
    return parent


def _watch_options(parser: argparse.ArgumentParser, *, wait_flag: bool) -> None:
    if wait_flag:
        parser.add_argument("--wait", action="store_true", help="watch the job until it ends, like `watch`")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="give up waiting after this long (exit 4); the job keeps running",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON: the job, or while waiting one object per event (event, id and its data)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobpulse",
        description=DESCRIPTION,
        epilog=f"{EXAMPLES}\n\n{exit_codes_help()}\n\n{ENVIRONMENT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(top_level=True)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    connection = [_connection_options(top_level=False)]

    submit = commands.add_parser(
        "submit",
        parents=connection,
        help="submit a job and print its id",
        description="Submit a job and print its id; with --wait, watch it to the end and print its result.",
        epilog="A value is JSON when it parses as JSON (steps=20, flag=true, x=null), else text (name=ada).",
    )
    submit.add_argument("task", help="the task's name, e.g. simulate")
    submit.add_argument("params", nargs="*", type=parse_param, metavar="KEY=VALUE", help="a task parameter")
    _watch_options(submit, wait_flag=True)

    upload = commands.add_parser(
        "upload",
        parents=connection,
        help="upload a file to be processed and print the job's id",
        description="Upload a file, which starts a process_upload job; print the job's id, or with --wait "
        "watch it to the end and print what it found (size, lines, SHA-256, ...).",
    )
    upload.add_argument("file", type=Path, help="the file to upload")
    upload.add_argument("--filename", help="the name to show for the file (default: its own name)")
    _watch_options(upload, wait_flag=True)

    watch = commands.add_parser(
        "watch",
        parents=connection,
        help="show a job's progress until it ends",
        description="Show a job's progress until it ends, then print its result. Ctrl-C stops watching "
        "(exit 130); it does not cancel the job.",
    )
    watch.add_argument("id", help="the job's id")
    _watch_options(watch, wait_flag=False)

    status = commands.add_parser(
        "status", parents=connection, help="show a job's current state", description="Show a job's state."
    )
    status.add_argument("id", help="the job's id")
    status.add_argument("--json", action="store_true", help="print the job as JSON")

    cancel = commands.add_parser(
        "cancel",
        parents=connection,
        help="cancel a queued or running job",
        description="Cancel a queued or running job and print its new state.",
    )
    cancel.add_argument("id", help="the job's id")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")

    tasks_help = (
        "your task registry as module:attribute, e.g. myapp.tasks:tasks (default: $JOBPULSE_TASKS; "
        "`up` in a jobpulse checkout without either runs the reference service's demo tasks)"
    )
    up = commands.add_parser(
        "up",
        help="run Redis, a worker and the web app on this machine, till Ctrl-C",
        description="Run the whole system for local use: a private Redis unless REDIS_URL is set, one arq "
        "worker and the web app. Ctrl-C stops everything.",
    )
    up.add_argument("--tasks", metavar="MODULE:ATTRIBUTE", help=tasks_help)
    up.add_argument("--host", help="interface to serve on (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="port to serve on (default $PORT, else 8000)")
    up.add_argument("--data", type=Path, help="where a private Redis keeps its data (default var/redis)")
    up.add_argument(
        "--cluster",
        action="store_true",
        help="try the cluster shape: a private Redis Cluster for the job store, a Redis for the queue",
    )
    web = commands.add_parser(
        "web",
        help="serve the web app for your tasks (uvicorn), till Ctrl-C",
        description="Serve jobpulse's standalone web app for a task registry with uvicorn.",
    )
    web.add_argument("--tasks", metavar="MODULE:ATTRIBUTE", help=tasks_help)
    web.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1)")
    web.add_argument("--port", type=int, help="port to serve on (default $PORT, else 8000)")
    worker = commands.add_parser(
        "worker",
        help="run an arq worker for your tasks, till Ctrl-C",
        description="Run an arq worker (`arq jobpulse.worker.entry.WorkerSettings`) for a task registry.",
    )
    worker.add_argument("--tasks", metavar="MODULE:ATTRIBUTE", help=tasks_help)
    return parser
