"""Files the page hands to Gradio go when their jobs do: after the TTL."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import ui.common
from ui.common import publish, sweep


def test_published_files_older_than_the_ttl_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui.common, "RESULTS", tmp_path)
    monkeypatch.setattr(ui.common, "_swept", 0.0)
    old, fresh = publish("old.png", b"old"), publish("fresh.png", b"fresh")
    an_hour_ago = time.time() - 3601
    os.utime(old, (an_hour_ago, an_hour_ago))
    monkeypatch.setattr(ui.common, "_swept", 0.0)  # the publishing above looked already
    sweep(3600, every=60)
    assert not Path(old).exists() and Path(fresh).read_bytes() == b"fresh"
    os.utime(fresh, (an_hour_ago, an_hour_ago))
    sweep(3600, every=60)  # looked a moment ago: not again so soon
    assert Path(fresh).exists()
    monkeypatch.setattr(ui.common, "_swept", 0.0)
    publish("next.png", b"next")  # publishing sweeps, with the jobs' TTL
    assert not Path(fresh).exists() and Path(tmp_path / "next.png").exists()
