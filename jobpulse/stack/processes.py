"""Stopping a child process the way every runner here does: SIGTERM, a grace period, then SIGKILL."""

import signal
import subprocess


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
