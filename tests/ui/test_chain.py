"""Send to ▸ and follow-up steps: the pure parts (which targets, what value, the steps' JSON)."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from ui.chain import APPLY_STYLE, NOTHING, REMOVE_BACKGROUND, send_targets, sent_value, steps_text, then_of


def test_a_result_is_offered_to_every_other_operation_that_takes_an_image() -> None:
    assert [key for key, _ in send_targets("image_generation")] == [
        "background_removal", "object_removal", "style_transfer", "face_swap.image", "face_swap.target_image",
    ]  # fmt: skip
    assert "style_transfer" not in dict(send_targets("style_transfer"))
    assert not any(key.startswith("face_swap") for key, _ in send_targets("face_swap"))


def test_the_object_editor_gets_the_result_as_its_background() -> None:
    assert sent_value("object_removal", "/r.png") == {"background": "/r.png", "layers": [], "composite": None}
    assert sent_value("face_swap.target_image", "/r.png") == "/r.png"
    with pytest.raises(gr.Error, match="no result to send yet"):
        sent_value("background_removal", None)


def test_the_rows_make_the_steps_json() -> None:
    assert steps_text(NOTHING, "mosaic", NOTHING, "mosaic") == ""
    text = steps_text(APPLY_STYLE, "starry-night", NOTHING, "mosaic", REMOVE_BACKGROUND, "mosaic")
    assert json.loads(text) == [
        {"task_type": "style_transfer", "parameters": {"style": "starry-night"}},
        {"task_type": "background_removal"},
    ]


def test_then_text_is_json_or_named_as_invalid() -> None:
    assert then_of("") is None and then_of("  ") is None and then_of("[]") is None
    assert then_of('[{"task_type": "background_removal"}]') == [{"task_type": "background_removal"}]
    assert then_of("[1]") == [1]  # the job system names then[0], as REST does
    with pytest.raises(gr.Error, match="then: then must be a JSON list of steps"):
        then_of("not json")


def test_every_send_button_loads_its_target_and_opens_its_tab() -> None:
    from ui import build_ui

    demo = build_ui()
    config = demo.get_config_file()
    ids = {block["id"]: block.get("props", {}) for block in config["components"]}
    tabs = next(key for key, props in ids.items() if props.get("elem_id") == "studio-tabs")
    buttons = {key: props["elem_id"] for key, props in ids.items() if str(props.get("elem_id")).startswith("send-")}
    wired = {
        buttons[target[0]]: dependency["outputs"]
        for dependency in config["dependencies"]
        for target in dependency["targets"]
        if target[0] in buttons and target[1] == "click"
    }
    assert len(wired) == 5 + 4 + 4 + 4 + 3  # Generate offers all five; the others, every other operation
    assert all(tabs in outputs and len(outputs) == 2 for outputs in wired.values())
    assert "send-style_transfer-to-face_swap-target_image" in wired
