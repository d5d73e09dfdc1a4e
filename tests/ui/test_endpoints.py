"""Each tab's Gradio endpoints: one function makes both, with the signature gradio_client sees,
and the defaults of the job's schema and settings. Builds the page; needs no Redis."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import gradio as gr
import pytest
from gradio.helpers import special_args

import settings
import ui.endpoints
from tests.support.loop import run_async
from ui import build_ui
from ui.endpoints import Submission, endpoints

# The Gradio API's contract (DESIGN.md "Gradio API"): what scripts pass, in this order, to `T` and `submit_T`.
INPUTS = {
    "image_generation": [
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "steps",
        "guidance_scale",
        "seed",
        "num_images",
        "then",
    ],
    "face_swap": ["image", "target_image", "face_index", "then"],
    "background_removal": ["image", "model", "alpha_matting", "bgcolor", "only_mask", "post_process_mask", "then"],
    "object_removal": ["image", "mask", "engine", "dilate", "then"],
    "style_transfer": ["image", "style", "style_image", "strength", "engine", "preserve_color", "then"],
}  # `then` (follow-up steps as JSON text) last on every endpoint, after the tab's own inputs


@pytest.fixture
def background_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ATELIER_BACKGROUND_MODEL", "silueta")
    settings.get_settings.cache_clear()
    yield "silueta"
    settings.get_settings.cache_clear()  # before the variable goes: nothing reads the settings in between


def endpoint_fn(demo: gr.Blocks, api_name: str) -> Any:
    return next(block.fn for block in demo.fns.values() if block.api_name == api_name)


def parameters(demo: gr.Blocks, api_name: str) -> dict[str, Any]:
    endpoint = demo.get_api_info()["named_endpoints"][f"/{api_name}"]
    return {p["parameter_name"]: p for p in endpoint["parameters"]}


def test_the_background_model_setting_is_the_tabs_and_its_endpoints_default(background_model: str) -> None:
    demo = build_ui()
    for api_name in ("background_removal", "submit_background_removal"):
        model = parameters(demo, api_name)["model"]
        assert model["parameter_has_default"] and model["parameter_default"] == background_model
        assert inspect.signature(endpoint_fn(demo, api_name)).parameters["model"].default == background_model
    dropdowns = [block for block in demo.blocks.values() if isinstance(block, gr.Dropdown) and block.label == "Model"]
    assert [dropdown.value for dropdown in dropdowns] == [background_model]


def test_each_tab_serves_its_inputs_on_both_endpoints_and_streams_progress() -> None:
    demo = build_ui()
    for task_type, names in INPUTS.items():
        streaming, immediate = endpoint_fn(demo, task_type), endpoint_fn(demo, f"submit_{task_type}")
        assert list(parameters(demo, task_type)) == list(parameters(demo, f"submit_{task_type}")) == names
        assert inspect.isasyncgenfunction(streaming) and not inspect.isasyncgenfunction(immediate)
        assert special_args(streaming)[1] == len(names)  # Gradio hands it a progress tracker after the inputs
        assert special_args(immediate)[1] is None
        assert (streaming.__name__, immediate.__name__) == (task_type, f"submit_{task_type}")
    assert parameters(demo, "style_transfer")["strength"]["parameter_default"] == 1.0  # the schema's
    then = parameters(demo, "submit_style_transfer")["then"]  # optional: scripts written before it keep working
    assert then["parameter_has_default"] and then["parameter_default"] == ""


def typed(image: str | None, count: float, label: str) -> Submission:
    """Make something."""
    return {"images": {"image": image}, "parameters": {"count": count, "label": label}}


def test_the_endpoints_bind_arguments_as_their_signature_says(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def submitted(task_type: str, job: Any, labels: Any) -> str:
        sent.append((task_type, job()))
        return "id-1"

    monkeypatch.setattr(ui.endpoints, "submitted", submitted)
    monkeypatch.setattr(ui.endpoints, "parameter_defaults", lambda task_type: {"count": 2, "other": 0})
    api = endpoints("thing_making", typed, label="plain")
    assert dict(api.defaults) == {"count": 2, "label": "plain"}
    signature = "(image: str | None, count: float = 2, label: str = 'plain', then: str = '') -> str"
    assert str(inspect.signature(api.submit)) == signature
    assert api.submit("a.png") == api.submit(image="a.png", label="plain") == "id-1"
    job = {"images": {"image": "a.png"}, "parameters": {"count": 2, "label": "plain"}, "then": None}
    assert sent == 2 * [("thing_making", job)]
    assert api.submit("a.png", then='[{"task_type": "background_removal"}]') == "id-1"
    assert sent[-1][1]["then"] == [{"task_type": "background_removal"}]
    assert api.run.__doc__ == "Make something."
    assert api.submit.__doc__ == "Queue a thing making and return its task id at once."


def test_the_streaming_endpoint_passes_its_progress_on(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run(task_type: str, progress: Any, job: Any, labels: Any) -> AsyncIterator[Any]:
        yield task_type, progress, job()

    monkeypatch.setattr(ui.endpoints, "run", run)
    monkeypatch.setattr(ui.endpoints, "parameter_defaults", lambda task_type: {})
    api = endpoints("thing_making", typed)
    tracker = gr.Progress()

    async def stream() -> list[Any]:
        return [update async for update in api.run("a.png", 3, "x", "", tracker)]

    updates = run_async(stream())
    job = {"images": {"image": "a.png"}, "parameters": {"count": 3, "label": "x"}, "then": None}
    assert updates == [("thing_making", tracker, job)]


def test_a_page_default_for_no_input_is_refused() -> None:
    with pytest.raises(ValueError, match="page defaults for no input: \\['lable'\\]"):
        endpoints("face_swap", typed, lable="plain")
