"""What task code raises to fail its job with a message meant for the job's users."""


class TaskFailed(Exception):
    """Fail the job with this message as its `error`, shown as it is.

    Any other exception fails the job too, but its error reads `ClassName: message`, which suits bugs;
    raise this (or a subclass) for failures the user should read, such as a file that is not what it
    claims to be. It is not retried.
    """
