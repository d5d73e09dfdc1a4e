"""Atelier's Celery worker with cProfile in its main process and its pool process, for the batch benchmark.

    celery -A benchmarks.profile_worker worker -Q cpu -c 1 ...   (benchmarks/batch.py --profile starts it)

The app is ``tasks``' own; only these signal handlers are added. ``ATELIER_BENCH_PROFILE`` is the
path prefix of the two stats files: ``<prefix>.pool`` is written by the pool process after its
``ATELIER_BENCH_PROFILE_TASKS``-th task, ``<prefix>.main`` by the main process as it stops.
``ATELIER_BENCH_PROFILE_CLOCK=cpu`` times each function by its thread's CPU time instead of the wall
clock: on a shared, loaded machine the wall clock also counts the time other processes held the cores.
"""

from __future__ import annotations

import cProfile
import os
import time
from typing import Any

from celery import signals

from tasks import get_app

app = get_app()
_profiles: dict[str, cProfile.Profile] = {}
_tasks = [0]


def _prefix() -> str:
    return os.environ["ATELIER_BENCH_PROFILE"]


def _profiler() -> cProfile.Profile:
    clock = os.environ.get("ATELIER_BENCH_PROFILE_CLOCK", "wall")
    return cProfile.Profile(time.thread_time) if clock == "cpu" else cProfile.Profile()


@signals.worker_init.connect
def profile_main(**kwargs: Any) -> None:
    _profiles["main"] = _profiler()
    _profiles["main"].enable()


@signals.worker_process_init.connect
def profile_pool(**kwargs: Any) -> None:
    _profiles["main"].disable()  # the fork's copy of the main process's profiler
    _profiles["pool"] = _profiler()
    _profiles["pool"].enable()


@signals.task_postrun.connect
def dump_pool(**kwargs: Any) -> None:
    _tasks[0] += 1
    if _tasks[0] == int(os.environ["ATELIER_BENCH_PROFILE_TASKS"]):
        _profiles["pool"].disable()
        _profiles["pool"].dump_stats(f"{_prefix()}.pool")


@signals.worker_shutting_down.connect
def dump_main(**kwargs: Any) -> None:
    _profiles["main"].disable()
    _profiles["main"].dump_stats(f"{_prefix()}.main")
