"""The Gradio API's batch endpoints: ``submit_batch``, ``batch_status``, ``cancel_batch``, ``batch_result``.

Scripts call them with gradio_client; the ids are the REST API's (``/api/v1/batches/{id}/``).
The page's batch sections and Tasks tab use the same functions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gradio as gr

from jobs import get_client
from ui.batch import (
    BatchRequest,
    answering,
    batch_id_of,
    cancel_unfinished,
    file_items,
    generation_items,
    prompt_lines,
    save_archive,
    start,
)
from ui.common import caller, error

# The image field each file fills, where it is not ``image``: face swap's files are the photos
# whose faces are replaced; the one source face is shared.
ITEM_FIELDS = {"face_swap": "target_image"}


def _invalid(field: str, message: str) -> gr.Error:
    return error(f"Invalid input — {field}: {message}", title="Invalid input")


def parameters_of(text: str | None) -> dict[str, Any]:
    """The shared parameters from their JSON text ("" = none)."""
    if not (text or "").strip():
        return {}
    try:
        parameters = json.loads(text or "")
    except ValueError as exc:
        raise _invalid("parameters", f"parameters must be a JSON object: {exc}") from None
    if not isinstance(parameters, dict):
        raise _invalid("parameters", 'parameters must be a JSON object such as {"model": "u2net"}')
    return parameters


def seeds_of(text: str | None) -> list[int | None]:
    """Seeds from "7, 8, 9" ("" = one image per prompt, the parameters' seed or a random one)."""
    words = [word for word in re.split(r"[\s,]+", text or "") if word]
    if not all(re.fullmatch(r"\d{1,10}", word) and int(word) < 2**32 for word in words):
        raise _invalid("seeds", "seeds must be whole numbers from 0 to 4294967295, separated by commas")
    return [int(word) for word in words] or [None]


def batch_request(
    task_type: str,
    files: list[str] | None,
    parameters: str,
    prompt: str,
    shared: dict[str, str | None],
    seeds: str,
) -> BatchRequest:
    """The batch that ``submit_batch``'s arguments describe."""
    fields: dict[str, Any] = {"task_type": task_type, "parameters": parameters_of(parameters)}
    fields |= {name: Path(path).read_bytes() for name, path in shared.items() if path}
    if task_type == "image_generation":
        if files:
            raise _invalid("files", "image_generation takes no files: each line of the prompt is an item")
        lines = prompt_lines(prompt)
        if not lines:
            raise _invalid("prompt", "Prompt is required for image_generation: one item per line")
        return BatchRequest(fields, generation_items(lines, seeds_of(seeds)))
    if (seeds or "").strip():
        raise _invalid("seeds", "seeds are for image_generation")
    if prompt:
        fields["prompt"] = prompt  # the job's validation says whether the operation takes one
    items = file_items(files, ITEM_FIELDS.get(task_type, "image"))
    if not items:
        raise _invalid("files", "files are required: one item per image")
    return BatchRequest(fields, items)


def submit_batch(
    task_type: str,
    files: list[str] | None = None,
    parameters: str = "",
    prompt: str = "",
    mask: str | None = None,
    source_face: str | None = None,
    style_image: str | None = None,
    seeds: str = "",
) -> str:
    """Queue a batch and return its id at once: one item per file (face_swap: per target photo,
    with the face of `source_face`); image_generation: one item per prompt line and seed.
    `parameters` (JSON text), `prompt`, `mask` (object_removal) and `style_image` are shared."""
    task_type = (task_type or "").strip()
    if source_face and task_type != "face_swap":
        raise _invalid("source_face", "source_face is for face_swap")
    if task_type == "face_swap" and not source_face:
        raise _invalid("source_face", "source_face is required for face_swap: the face put onto every photo")
    shared = {"mask": mask, "style_image": style_image, "image": source_face}
    request = batch_request(task_type, files, parameters, prompt, shared, seeds)
    batch_id: str = start(request)["batch_id"]
    return batch_id


def batch_status(batch_id: str) -> dict[str, Any]:
    """A batch's status, as GET /api/v1/batches/{id}/ gives it: counts, progress and each item's state."""
    batch_id = batch_id_of(batch_id)
    with answering(batch_id):
        client = get_client()
        return client.batch_status(batch_id, caller(client)).model_dump(mode="json")


def cancel_batch(batch_id: str) -> dict[str, Any]:
    """Cancel every unfinished item of a batch; its status afterwards (a finished batch stays as it is)."""
    batch_id = batch_id_of(batch_id)
    with answering(batch_id):
        return cancel_unfinished(batch_id, caller(get_client())).model_dump(mode="json")


def batch_result(batch_id: str) -> str:
    """A zip of the items finished so far (named after the items) and manifest.json."""
    batch_id = batch_id_of(batch_id)
    with answering(batch_id):
        return save_archive(batch_id, caller(get_client()))


def render() -> None:
    """The endpoints, on hidden widgets: the page's own batch sections are in the tabs."""
    with gr.Group(visible=False):
        task_type = gr.Textbox(label="Operation")
        files = gr.File(label="Files", file_count="multiple", type="filepath")
        parameters = gr.Textbox("", label="Parameters (JSON)")
        prompt = gr.Textbox("", label="Prompt")
        mask = gr.File(label="Mask", type="filepath")
        source_face = gr.File(label="Source face", type="filepath")
        style_image = gr.File(label="Style image", type="filepath")
        seeds = gr.Textbox("", label="Seeds")
        batch_id = gr.Textbox(label="Batch id")
        status = gr.JSON(label="Batch status")
        archive = gr.File(label="Results (zip)")
        hidden = gr.Button()
    inputs = [task_type, files, parameters, prompt, mask, source_face, style_image, seeds]
    hidden.click(submit_batch, inputs, batch_id, api_name="submit_batch", concurrency_limit=None)
    hidden.click(batch_status, batch_id, status, api_name="batch_status", concurrency_limit=None)
    hidden.click(cancel_batch, batch_id, status, api_name="cancel_batch", concurrency_limit=None)
    hidden.click(batch_result, batch_id, archive, api_name="batch_result", concurrency_limit=None)
