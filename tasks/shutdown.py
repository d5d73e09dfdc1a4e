"""Stopping a worker within ATELIER_STOP_TIMEOUT, whatever it is running.

Celery's warm shutdown (SIGTERM, Ctrl-C) waits for the running job, however long it takes. Here,
the worker's main process instead tells its pool processes to hand their jobs back (SIGUSR2; Celery
uses SIGUSR1 for soft time limits): the job stops at its next progress step and is queued again
with its record, not failed, so the next start (or another worker on the same Redis) runs it. A
watchdog makes sure the worker exits within the timeout even when a step is long or Redis is gone
(the job then stays in Redis's running set, and the reconciler sends it again), and a second
SIGTERM stops it at once. A worker app.py started watches for app.py's death itself, beside the
SIGTERM app.py's death sends it. Pool processes die with the main process (Celery's PDEATHSIG).
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
WATCH_EVERY = 0.1
SUPERVISOR_VARIABLE = "ATELIER_SUPERVISOR_PID"  # set by app.py for the workers it starts

# In a pool process: the worker is stopping, the running job must be handed back.
handing_back = threading.Event()
_stop_timeout = 8.0  # the worker's main process: set from the settings once the worker is ready
_first_shutdown: float | None = None
# When the main process leaves, whatever its main thread is doing. Set by the signal handler with a
# plain assignment (no lock, no thread started inside a handler) and acted on by the watchdog.
_exit_at: float | None = None


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
    and in any thread (no logging locks: a plain write to stderr)."""
    with contextlib.suppress(OSError):
        os.write(2, f"worker {os.getpid()}: {why}; leaving now, the reconciler sends its jobs again\n".encode())
    for child in pool_processes():
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(code)


def begin_stop(grace: float) -> None:
    """Ask the pool for its running jobs; the watchdog ends the process ``grace`` seconds later at the
    latest (a stop already under way keeps its deadline if that is sooner)."""
    global _exit_at
    deadline = time.monotonic() + grace
    _exit_at = deadline if _exit_at is None else min(_exit_at, deadline)
    for child in pool_processes():
        with contextlib.suppress(psutil.Error):
            child.send_signal(HAND_BACK)


def orphaned(supervisor: int | None) -> bool:
    """Whether the app.py that started this worker is gone (a standalone worker never is)."""
    return supervisor is not None and os.getppid() != supervisor


def watch(supervisor: int | None) -> None:
    """The main process's watchdog thread: leaves at the stop's deadline, and stops the worker itself
    when app.py dies, so neither depends on Celery's main thread handling a signal (a killed app.py
    and Redis at once leave that thread in the broker's reconnect loop)."""
    seen_orphaned = False
    while True:
        time.sleep(WATCH_EVERY)
        if not seen_orphaned and orphaned(supervisor):
            seen_orphaned = True
            begin_stop(ORPHAN_GRACE)
            if _first_shutdown is None:  # Celery's warm shutdown: no new job is taken meanwhile
                os.kill(os.getpid(), signal.SIGTERM)
        if _exit_at is not None and time.monotonic() >= _exit_at:
            exit_now(1, "still stopping at the stop timeout")


@signals.worker_init.connect
def start_watchdog(**kwargs: Any) -> None:
    threading.Thread(target=watch, args=(_supervisor(),), name="stop-watchdog", daemon=True).start()


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
    begin_stop(ORPHAN_GRACE if orphaned(_supervisor()) else max(0.5, _stop_timeout - EXIT_MARGIN))


def _supervisor() -> int | None:
    supervisor = os.environ.get(SUPERVISOR_VARIABLE, "")
    return int(supervisor) if supervisor.isdigit() else None
