"""Results onward: "Send to ▸" another tab, and follow-up steps that make a job a chain.

Send to ▸ loads a tab's result into another tab's input and opens that tab (its other settings
stay as they were). Then… adds steps to the job: the submission carries ``then`` (DESIGN.md
"Chains"), the chain has one task id, and its status reads "Step 2 of 3 · Remove background — …".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr

from jobs import style_presets
from ui.common import error

if TYPE_CHECKING:
    from ui.batch import BatchSection

# Where a result can go: (send key, button label). A key is a task type, or "task_type.input" for
# a tab with two images (face swap's source face and target photo).
SEND_TARGETS = [
    ("background_removal", "Remove background"),
    ("object_removal", "Remove object"),
    ("style_transfer", "Style transfer"),
    ("face_swap.image", "Face swap (as source face)"),
    ("face_swap.target_image", "Face swap (as target photo)"),
]
NOTHING = "(nothing)"
REMOVE_BACKGROUND = "Remove the background"
APPLY_STYLE = "Apply a style"
FOLLOW_UPS = [NOTHING, REMOVE_BACKGROUND, APPLY_STYLE]
STEP_ROWS = 3  # the job system takes five; three make the page's rows


def send_targets(task_type: str) -> list[tuple[str, str]]:
    """The targets a tab's result is offered to: every other operation that takes an image."""
    return [(key, label) for key, label in SEND_TARGETS if key.split(".")[0] != task_type]


def sent_value(key: str, path: str | None) -> Any:
    """The target input's new value: the result file (the object editor takes it as its background)."""
    if not path:
        raise error("There is no result to send yet: run the job first.", title="Nothing to send")
    if key == "object_removal":
        return {"background": path, "layers": [], "composite": None}
    return path


def _send(key: str, path: str | None) -> tuple[Any, gr.Tabs]:
    return sent_value(key, path), gr.Tabs(selected=key.split(".")[0])


def step_of(operation: str | None, style: str | None) -> dict[str, Any] | None:
    """One follow-up step from its row on the page; None for "(nothing)"."""
    if operation == REMOVE_BACKGROUND:
        return {"task_type": "background_removal"}
    if operation == APPLY_STYLE:
        return {"task_type": "style_transfer", "parameters": {"style": style or "mosaic"}}
    return None


def steps_text(*rows: Any) -> str:
    """The steps the rows describe (operation, style, operation, style, …), as the JSON that ``then`` takes."""
    steps = [step_of(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
    chosen = [step for step in steps if step]
    return json.dumps(chosen) if chosen else ""


def then_of(text: str | None) -> Any:
    """The follow-up steps from their JSON text ("" or "[]" = none). The job system checks them and
    names what is wrong (``then``, ``then[1].parameters.style``), as REST does; only text that is no
    JSON at all is refused here, in its words."""
    if not (text or "").strip():
        return None
    try:
        steps = json.loads(text or "")
    except ValueError as exc:
        raise error(f"Invalid input — then: then must be a JSON list of steps: {exc}", title="Invalid input") from None
    return steps if steps != [] else None


@dataclass
class FollowUps:
    """The Then… accordion: rows of (operation, style), and the steps' JSON that the job carries."""

    steps: gr.Textbox
    rows: list[tuple[gr.Dropdown, gr.Dropdown]] = field(default_factory=list)


def follow_ups(task_type: str) -> FollowUps:
    """Then… (follow-up steps): each row adds a step; the JSON box shows them, and can be edited."""
    presets = style_presets()
    with gr.Accordion("Then… (follow-up steps)", open=False, elem_id=f"then-{task_type}"):
        rows = []
        for index in range(STEP_ROWS):
            with gr.Row():
                operation = gr.Dropdown(
                    FOLLOW_UPS, value=NOTHING, label=f"Then, step {index + 2}", elem_classes="then-operation"
                )
                style = gr.Dropdown([(title, name) for name, title in presets], value="mosaic", label="Style")
            rows.append((operation, style))
        steps = gr.Textbox(
            "",  # a value, so the Gradio API shows `then` as optional ("" = no steps)
            label="Steps as JSON (as the API's `then` takes them)",
            placeholder='[{"task_type": "background_removal"}]',
            elem_classes="then-steps",
        )
    section = FollowUps(steps, rows)
    widgets = [widget for row in rows for widget in row]
    for widget in widgets:
        widget.input(steps_text, widgets, steps, api_visibility="private")
    return section


@dataclass(frozen=True)
class Rendered:
    """What a tab hands the page: its task id box and batch section (for the Tasks tab), the Send to ▸
    buttons under its result, and its inputs that a sent image goes into (by send key)."""

    task_id: gr.Textbox
    batch: BatchSection
    result: gr.Image | None = None
    send: Mapping[str, gr.Button] = field(default_factory=dict)
    targets: Mapping[str, Any] = field(default_factory=dict)


def send_buttons(task_type: str) -> dict[str, gr.Button]:
    """The Send to ▸ row under a result."""
    buttons = {}
    with gr.Row(elem_id=f"send-{task_type}", elem_classes="send-to"):
        gr.Markdown("Send to ▸", elem_classes="send-label")
        for key, label in send_targets(task_type):
            buttons[key] = gr.Button(label, size="sm", elem_id=f"send-{task_type}-to-{key.replace('.', '-')}")
    return buttons


def wire_sending(tabs: gr.Tabs, rendered: Mapping[str, Rendered]) -> None:
    """Each Send to ▸ button: the result into the target tab's input, and that tab opened."""
    targets = {key: widget for tab in rendered.values() for key, widget in tab.targets.items()}
    for tab in rendered.values():
        for key, button in tab.send.items():
            if key in targets and tab.result is not None:
                button.click(partial(_send, key), tab.result, [targets[key], tabs], api_visibility="private")
