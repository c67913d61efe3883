"""Run a command that must not outlive the process that asked for it.

`python -m saliq.watchdog PID CMD...` starts CMD in its own process group and ends that group
when PID is gone (even after a SIGKILL, which leaves no chance to clean up) or when the
watchdog itself is told to stop. A sweep's private MLflow server runs under it, so a killed
driver leaves no server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    owner, cmd = int(argv[0]), argv[1:]
    child = subprocess.Popen(cmd, start_new_session=True)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and child.poll() is None and _alive(owner):
        time.sleep(0.5)
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
