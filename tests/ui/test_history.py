"""The Tasks tab's list and the header's numbers: what the pure helpers make of the job client's answers."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from jobs.limits import RateWindow
from jobs.owners import Usage
from ui.history import HEADERS, operation_title, rows, shrink, submitted, usage_line, window_words


def test_the_operation_column_names_the_operation_and_marks_chains_and_batch_items() -> None:
    assert operation_title({"task_type": "style_transfer"}) == "Style transfer"
    assert operation_title({"task_type": "object_removal", "steps": 2}) == "Remove object · chain of 2 steps"
    assert operation_title({"task_type": "background_removal", "batch_id": "b"}) == "Remove background · batch item"
    assert operation_title({"task_type": "no_such_operation"}) == "no_such_operation"


def test_rows_follow_the_headers() -> None:
    entry = {"task_id": "abc", "status": "SUCCESS", "task_type": "style_transfer", "created_at": 0.0}
    assert HEADERS == ["Task id", "Status", "Operation", "Submitted", "Result"]
    assert rows([entry]) == [["abc", "Done", "Style transfer", "1970-01-01 00:00:00 UTC", ""]]
    shown = rows([entry], {"abc": "/tmp/gradio/atelier-results/abc.thumb.png"})[0][4]
    assert shown == "![result](/gradio_api/file=/tmp/gradio/atelier-results/abc.thumb.png)"  # the thumbnail
    assert submitted(86400.5) == "1970-01-02 00:00:00 UTC"


@pytest.mark.parametrize(
    ("usage", "seconds", "line"),
    [
        (Usage(3, 12, RateWindow(120, 88, 20)), 60, "3 running · 12 waiting · 88 of 120 submissions left this minute"),
        (Usage(0, 1, RateWindow(10, 0, 5)), 3600, "0 running · 1 waiting · 0 of 10 submissions left this hour"),
        (Usage(1, 0), None, "1 running · 0 waiting"),  # no rate limit: no third part
    ],
)
def test_the_header_line(usage: Usage, seconds: int | None, line: str) -> None:
    assert usage_line(usage, seconds) == line


def test_window_words() -> None:
    assert [window_words(s) for s in (1, 60, 86400)] == ["this second", "this minute", "today"]
    assert window_words(120) == "in this 120-second window"


def test_thumbnails_are_small_pngs() -> None:
    out = io.BytesIO()
    Image.new("RGB", (640, 320), (200, 10, 10)).save(out, format="PNG")
    with Image.open(io.BytesIO(shrink(out.getvalue()))) as small:
        assert small.format == "PNG" and small.size == (160, 80)
