"""Stopping a worker within ATELIER_STOP_TIMEOUT, whatever it is running.

Celery's warm shutdown (SIGTERM, Ctrl-C) waits for the running job, however long it takes. Here,
the worker's main process instead tells its pool processes to hand their jobs back (SIGUSR2; Celery
uses SIGUSR1 for soft time limits): the job stops at its next progress step and is queued again
with its record, not failed, so the next start (or another worker on the same Redis) runs it. A
watchdog makes sure the worker exits within the timeout even when a step is long or Redis is gone
(the job then stays in Redis's running set, and the reconciler sends it again), and a second
SIGTERM stops it at once. Pool processes die with the main process (Celery's PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any

import psutil
from celery import signals

HAND_BACK = signal.SIGUSR2
EXIT_MARGIN = 1.5  # seconds of the stop timeout left to app.py for stopping Redis after the workers
ORPHAN_GRACE = 2.0  # seconds a worker whose parent died (app.py killed) gives its jobs to hand back
# A second SIGTERM this long after the first stops at once. Closer ones are one event: a killed
# parent's PDEATHSIG arrives once per thread of the parent as its threads exit.
SECOND_SIGNAL_AFTER = 1.0
_parent = os.getppid()

# In a pool process: the worker is stopping, the running job must be handed back.
handing_back = threading.Event()
_stop_timeout = 8.0  # the worker's main process: set from the settings once the worker is ready
_first_shutdown: float | None = None


def remember_stop_timeout(seconds: float) -> None:
    global _stop_timeout
    _stop_timeout = seconds


@signals.worker_process_init.connect
def listen_for_hand_back(**kwargs: Any) -> None:
    signal.signal(HAND_BACK, lambda signum, frame: handing_back.set())


def pool_processes() -> list[psutil.Process]:
    children: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        children = psutil.Process().children()
    return children


def exit_now(code: int, why: str) -> None:
    """Kill the pool processes and leave at once: their jobs are in Redis's running set, and the
    reconciler of the next start (or of another worker) sends them again. Safe in a signal handler
    (no logging locks: a plain write to stderr)."""
    with contextlib.suppress(OSError):
        os.write(2, f"worker {os.getpid()}: {why}; leaving now, the reconciler sends its jobs again\n".encode())
    for child in pool_processes():
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(code)


@signals.worker_shutting_down.connect
def hand_back_running_jobs(how: str = "Warm", exitcode: int | None = None, **kwargs: Any) -> None:
    """In the worker's main process, as the shutdown starts: ask the pool for the running jobs."""
    global _first_shutdown
    now = time.monotonic()
    if how == "Cold" or (_first_shutdown is not None and now - _first_shutdown >= SECOND_SIGNAL_AFTER):
        exit_now(exitcode or 1, "asked again to stop")  # a second SIGTERM, or SIGQUIT
    if _first_shutdown is not None:
        return
    _first_shutdown = now
    for child in pool_processes():
        with contextlib.suppress(psutil.Error):
            child.send_signal(HAND_BACK)
    orphaned = os.getppid() != _parent  # app.py is gone: nobody waits for a clean stop
    grace = ORPHAN_GRACE if orphaned else max(0.5, _stop_timeout - EXIT_MARGIN)
    timer = threading.Timer(grace, exit_now, args=(exitcode or 1, f"still stopping after {grace:.1f} s"))
    timer.daemon = True
    timer.start()
