"""``python -m tests.support.worker -Q cpu ...``: a real Celery worker that also knows test_steps."""

from __future__ import annotations

import sys

from tests.support.operations import register

register()

from tasks import get_app  # noqa: E402

if __name__ == "__main__":
    get_app().worker_main(["worker", *sys.argv[1:]])
