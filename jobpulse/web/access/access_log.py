"""Keeps job tokens out of uvicorn's access log, which writes every request's path with its query.

`EventSource` can only send a token in the URL (`?token=`), and logs are read by more people, and kept
longer, than the jobs they mention.
"""

import logging
import re

_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#\s]*", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(rf"\1{REDACTED}", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log(logger_name: str = "uvicorn.access") -> None:
    """Install the filter once; uvicorn has configured its loggers by the time the app starts."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
