"""The container files agree with how Atelier stops: SIGTERM reaches it, and it is done in time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)", text)
    assert match, f"unexpected duration {text!r}"
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_every_atelier_service_stops_inside_its_grace_period() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    ours = {name: service for name, service in services.items() if service.get("image") == "atelier"}
    assert {"web", "worker-cpu", "worker-gpu"} <= set(ours)
    for name, service in ours.items():
        timeout = float(service["environment"].get("ATELIER_STOP_TIMEOUT", Settings().stop_timeout))
        assert service["stop_signal"] == "SIGTERM", name
        assert timeout + 1 <= seconds(service["stop_grace_period"]), name  # a second to spare
        command = service["command"]
        assert isinstance(command, list), f"{name}: exec form, or a shell would take the SIGTERM"


def test_the_image_runs_its_command_as_pid_1_with_sigterm() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert "STOPSIGNAL SIGTERM" in lines
    command = next(line for line in lines if line.startswith("CMD "))
    assert json.loads(command.removeprefix("CMD "))[:2] == ["python", "app.py"]  # exec form
    assert Settings().stop_timeout + 1 <= 10  # docker's default grace period
