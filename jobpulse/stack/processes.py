"""Stopping a child process the way every runner here does: SIGTERM, a grace period, then SIGKILL."""

import signal
import subprocess
import time
from collections.abc import Sequence


def stop_process(popen: "subprocess.Popen[bytes]", timeout_s: float) -> None:
    """Ask a running child to stop and wait `timeout_s` for it; kill it if it is still there."""
    if popen.poll() is not None:
        return
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def stop_processes(popens: "Sequence[subprocess.Popen[bytes]]", timeout_s: float) -> None:
    """`stop_process` for several at once: all are asked first, then all share the one `timeout_s`.

    Stopped one after another, each with its own grace, a supervisor takes their sum; Docker's (default
    10 s) and systemd's stop timeouts are for the supervisor as a whole.
    """
    running = [popen for popen in popens if popen.poll() is None]
    for popen in running:
        popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for popen in running:
        try:
            popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
