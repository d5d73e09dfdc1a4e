"""Validate a chain's follow-up steps (``then``) at submit, each as if it were submitted alone.

A step's ``input`` (default ``image``) will receive the previous step's output, so the step is
checked with a stand-in image of the size that output will have: a mask that does not fit it is
refused now, not three minutes into the chain.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from PIL import Image

from pipelines import OPERATIONS
from pipelines.base import IMAGE_FIELDS, Operation
from pipelines.validation import Details, InvalidSubmission, Submission, _add, _echo, validate_submission

MAX_STEPS = 5
STEP_FIELDS = {"task_type", "prompt", "parameters", "input", *IMAGE_FIELDS}
Size = tuple[int, int]


@dataclass(frozen=True)
class ChainStep:
    """A validated follow-up step: the field the previous output fills, and the step's own submission
    (its ``image_bytes`` hold only the images the step brings itself)."""

    input: str
    submission: Submission

    @property
    def operation(self) -> Operation:
        return self.submission.operation


def output_size(operation: str, sizes: Mapping[str, Size], parameters: Mapping[str, Any]) -> Size | None:
    """The size of the image a job will make: a generated image's (a grid for several), a face swap's
    target, else its input photo's (every other operation keeps the photo's size)."""
    if operation == "image_generation":
        width, height = int(parameters.get("width", 512)), int(parameters.get("height", 512))
        count = int(parameters.get("num_images", 1))
        columns = 2 if count == 4 else count
        return width * columns, height * math.ceil(count / columns)
    if operation == "face_swap":
        return sizes.get("target_image")
    return sizes.get("image")


@lru_cache(maxsize=32)
def stand_in(size: Size) -> bytes:
    """A PNG of ``size`` (one bit per pixel: small and quick even for a large photo)."""
    buffer = io.BytesIO()
    Image.new("1", size, 1).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def validate_then(then: Any, first: Submission | None, max_pixels: int) -> list[ChainStep]:
    """The chain's follow-up steps, validated; :class:`InvalidSubmission` with ``then[k]...`` keys.
    ``first`` is the chain's first job (None when it was refused: the steps are checked all the same,
    but not against its output's size). ``then`` may be JSON text (a multipart form's field)."""
    if then is None:
        return []
    if isinstance(then, str):
        try:
            then = json.loads(then) if then.strip() else None
        except ValueError as exc:
            raise InvalidSubmission({"then": [f"then must be a JSON list of steps: {exc}"]}) from None
        if then is None:
            return []
    if not isinstance(then, list) or not then:
        raise InvalidSubmission({"then": ['then must be a non-empty list of steps, such as [{"task_type": ...}]']})
    if len(then) > MAX_STEPS:
        raise InvalidSubmission({"then": [f"A chain has at most {MAX_STEPS} follow-up steps, got {len(then)}"]})
    details: Details = {}
    steps = []
    size = output_size(first.operation.name, first.sizes, first.parameters) if first is not None else None
    for index, step in enumerate(then):
        checked = _check_step(details, f"then[{index}]", step, size, max_pixels)
        if checked is None:
            size = None  # what comes after a bad step cannot be sized: its size checks are skipped
            continue
        steps.append(checked)
        size = output_size(checked.operation.name, checked.submission.sizes, checked.submission.parameters)
    if details:
        raise InvalidSubmission(details)
    return steps


def _check_step(details: Details, path: str, step: Any, size: Size | None, max_pixels: int) -> ChainStep | None:
    if not isinstance(step, dict):
        _add(details, path, f'{path} must be an object such as {{"task_type": "background_removal"}}')
        return None
    for name in sorted(set(step) - STEP_FIELDS)[:20]:
        _add(details, f"{path}.{_echo(name)}", f"Unknown step field; allowed: {', '.join(sorted(STEP_FIELDS))}")
    task_type = step.get("task_type")
    operation = OPERATIONS.get(task_type) if isinstance(task_type, str) else None
    if operation is None:
        _add(details, f"{path}.task_type", f"task_type must be one of: {', '.join(OPERATIONS)}")
        return None
    if not operation.image_fields:
        _add(details, f"{path}.task_type", f"{operation.name} takes no image, so it can only be the first step")
        return None
    field = step.get("input", "image")
    if field not in operation.image_fields:
        _add(details, f"{path}.input", f"input must be one of {', '.join(operation.image_fields)} for {operation.name}")
        return None
    if step.get(field) not in (None, ""):
        _add(
            details,
            f"{path}.{field}",
            f"{field} is the previous step's output here; leave it out or name another input",
        )
        return None
    fields = {key: value for key, value in step.items() if key != "input"}
    fields[field] = stand_in(size or (512, 512))
    try:
        submission, _ = validate_submission(fields, {}, max_pixels)
    except InvalidSubmission as exc:
        for name, messages in exc.details.items():
            if size is None and name in (field, "mask"):
                continue  # sized against a stand-in: the step before it is refused already
            if name == field:
                messages = [f"{message} (this step's {field} is the previous step's output)" for message in messages]
            details.setdefault(f"{path}.{name}", []).extend(messages)
        return None
    own = {name: data for name, data in submission.image_bytes.items() if name != field}
    return ChainStep(input=field, submission=replace(submission, image_bytes=own))


def validate_batch_then(then: Any, firsts: list[Submission], max_pixels: int) -> list[list[ChainStep]]:
    """The follow-up steps of every item of a batch (each item is then a chain). A problem every item
    has is told once (``then[1].parameters.model``); one item's own, under its path (``items[3].then[0].mask``)."""
    if then is None:
        return [[] for _ in firsts]
    steps: list[list[ChainStep]] = []
    errors: list[Details] = []
    for first in firsts:
        try:
            steps.append(validate_then(then, first, max_pixels))
            errors.append({})
        except InvalidSubmission as exc:
            steps.append([])
            errors.append(exc.details)
    if not any(errors):
        return steps
    if all(item_errors == errors[0] for item_errors in errors):
        raise InvalidSubmission(errors[0])
    details = {f"items[{index}].{key}": value for index, item in enumerate(errors) for key, value in item.items()}
    raise InvalidSubmission(dict(list(details.items())[:50]))
