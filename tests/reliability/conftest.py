"""Reliability tests: the session stack's fixtures, plus small stacks of their own (another Redis
database or server) where they expire, kill or restart things."""

from __future__ import annotations

from tests.integration.conftest import api, busy_cpu  # noqa: F401 - shared fixtures
from tests.support.operations import register

register()
