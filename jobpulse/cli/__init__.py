"""`jobpulse`: submit jobs, watch their progress, and run the whole system locally.

`main()` is the one place where errors become an exit code and one line on stderr; see `exit_codes`.
"""

import os
import sys
from collections.abc import Sequence

from jobpulse.cli.arguments import build_parser
from jobpulse.cli.commands import JOB_COMMANDS, SERVICE_COMMANDS
from jobpulse.cli.exit_codes import CommandError, ExitCode
from jobpulse.cli.progress_view import write_line
from jobpulse.client import (
    Client,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobpulseError,
    RequestRejected,
    ServerUnavailable,
    WaitTimeout,
)

__all__ = ["ExitCode", "main"]


def _rejection_detail(detail: object) -> str:
    """The server's `detail`: text, or 422's list of {loc, msg, type} as `params.steps: Field required`."""
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, dict) and "msg" in error:
                loc = [str(part) for part in error.get("loc", []) if part != "body"]
                parts.append(f"{'.'.join(loc)}: {error['msg']}" if loc else str(error["msg"]))
            else:
                parts.append(str(error))
        return "; ".join(parts)
    return str(detail)


def _as_command_error(exc: JobpulseError) -> CommandError:
    if isinstance(exc, JobNotFound):
        return CommandError(
            ExitCode.NOT_FOUND, f"job {exc.job_id} not found (unknown, expired or malformed id)"
        )
    if isinstance(exc, ServerUnavailable):
        return CommandError(ExitCode.UNREACHABLE, f"cannot reach the server at {exc.url}: {exc.reason}")
    if isinstance(exc, RequestRejected):
        detail = _rejection_detail(exc.detail)
        return CommandError(ExitCode.USAGE, f"the server refused the request ({exc.status}): {detail}")
    if isinstance(exc, JobFailed):
        return CommandError(ExitCode.JOB_FAILED, f"job {exc.job_id} failed: {exc.error}")
    if isinstance(exc, JobCancelled):
        return CommandError(ExitCode.JOB_CANCELLED, f"job {exc.job_id} was cancelled")
    if isinstance(exc, WaitTimeout):
        return CommandError(
            ExitCode.TIMED_OUT, f"timed out after {exc.timeout:g} s waiting for job {exc.job_id}"
        )
    return CommandError(ExitCode.JOB_FAILED, str(exc) or type(exc).__name__)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in SERVICE_COMMANDS:
        return SERVICE_COMMANDS[args.command](args)
    try:
        client = Client(args.url, token=args.token)
    except ValueError as exc:  # a base URL that is not an http(s) URL
        raise CommandError(ExitCode.USAGE, str(exc)) from None
    with client:
        return JOB_COMMANDS[args.command](client, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit code is the answer (see `jobpulse --help`)."""
    try:
        try:
            return _run(argv)
        except JobpulseError as exc:
            raise _as_command_error(exc) from None
        except KeyboardInterrupt:
            raise CommandError(ExitCode.INTERRUPTED, "interrupted") from None
    except CommandError as error:
        write_line(f"jobpulse: {error.message}", sys.stderr)
        return error.code
    except BrokenPipeError:
        # Whoever read our output stopped (`| head`): say nothing more, and keep Python from complaining
        # about the unflushable stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE
    except Exception as exc:  # a bug, or a server answering what this version does not know: still one line
        write_line(f"jobpulse: unexpected error: {type(exc).__name__}: {exc}", sys.stderr)
        return ExitCode.JOB_FAILED
