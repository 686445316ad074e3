"""The `jobpulse` command's exit codes: a contract scripts rely on, so each has one meaning."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = 2
    JOB_CANCELLED = 3
    TIMED_OUT = 4
    NOT_FOUND = 5
    UNREACHABLE = 6
    INTERRUPTED = 130
    BROKEN_PIPE = 141

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "the job succeeded, or the command did what was asked",
    ExitCode.JOB_FAILED: "the job failed (its error is printed), or an unexpected error",
    ExitCode.USAGE: "usage error: bad arguments, or a request the server refused (4xx other than 404)",
    ExitCode.JOB_CANCELLED: "the job was cancelled",
    ExitCode.TIMED_OUT: "--timeout passed before the job finished (it keeps running)",
    ExitCode.NOT_FOUND: "no such job (unknown, expired or malformed id)",
    ExitCode.UNREACHABLE: "the server is unreachable, or unavailable for longer than the reconnect timeout",
    ExitCode.INTERRUPTED: "Ctrl-C: stopped waiting (the job is not cancelled)",
    ExitCode.BROKEN_PIPE: "the output was closed early, e.g. piped into `head`",
}


def exit_codes_help() -> str:
    """The table of exit codes for `jobpulse --help`."""
    return "exit codes:\n" + "\n".join(f"  {code.value:<4} {code.meaning}" for code in ExitCode)


class CommandError(Exception):
    """Ends the command with `code`, after printing `message` to stderr as one line."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
