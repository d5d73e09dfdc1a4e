"""The Tasks tab's lookups when Redis cannot be reached: the page's words, not Redis's."""

from __future__ import annotations

import gradio as gr
import pytest

import ui.tasks
from app import free_port
from jobs import JobClient
from settings import Settings
from ui.common import UNREACHABLE

ID = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    "lookup",
    [
        ui.tasks.task_status,
        ui.tasks.task_result,
        ui.tasks.cancel_task,
        ui.tasks.look_up,  # the buttons, which take a task or a batch id
        ui.tasks.look_up_result,
        ui.tasks.cancel_any,
    ],
)
def test_redis_away_is_said_plainly(lookup, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    nowhere = JobClient(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    monkeypatch.setattr(ui.tasks, "get_client", lambda: nowhere)
    monkeypatch.setattr(ui.common, "get_client", lambda: nowhere)
    with pytest.raises(gr.Error) as caught:
        lookup(ID)
    assert caught.value.message == UNREACHABLE
