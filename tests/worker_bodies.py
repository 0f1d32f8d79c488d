"""Worker bodies for tests/test_faults_jobs.py: module level and light (stdlib only), so spawned workers start fast."""

from __future__ import annotations

import os
import signal
import time


def job(what: str) -> int:
    """Sleep long, die by SIGKILL, raise a user error, or return 7."""
    if what == "sleep":
        time.sleep(120)
    elif what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "raise":
        raise ValueError("utterance 'x': bad input")
    return 7
