"""Validate a submission against the registry before anything is stored or enqueued."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import ValidationError

from pipelines import OPERATIONS
from pipelines.base import IMAGE_FIELDS, JobRequest, Operation
from pipelines.images import CONVERTED, ImageRejected, decode_base64, encode_png, open_image

MAX_PROMPT = 5000
MAX_REPORTED = 20  # errors listed per request; a flood of bad names must not make a flood of output
TOP_LEVEL_FIELDS = {"task_type", "prompt", "parameters", *IMAGE_FIELDS}

Details = dict[str, list[str]]


class InvalidSubmission(ValueError):
    """Field path → messages, as the API's ``details``."""

    def __init__(self, details: Details) -> None:
        super().__init__("Invalid input")
        self.details = details


@dataclass(frozen=True)
class Submission:
    """A validated job: the operation, the prompt, the original image bytes and clean parameters."""

    operation: Operation
    prompt: str | None
    image_bytes: dict[str, bytes]
    parameters: dict[str, Any]
    sizes: dict[str, tuple[int, int]]


def _add(details: Details, field: str, message: str) -> None:
    details.setdefault(field, []).append(message)


def _echo(name: str, limit: int = 80) -> str:
    """A client-chosen name, cut short before it is echoed back."""
    return name if len(name) <= limit else name[:limit] + "…"


def _error_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(["parameters", *(str(part) for part in loc)]) if loc else "parameters"


def validate_parameters(operation: Operation, raw: Any) -> tuple[Any, Details]:
    """The operation's parameters model, or field errors keyed ``parameters.<name>``."""
    details: Details = {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, {"parameters": ["parameters must be a JSON object"]}
    try:
        # Through JSON so that strict mode judges types as a JSON client sent them.
        return operation.parameters.model_validate_json(json.dumps(raw)), details
    except ValidationError as exc:
        errors = exc.errors()
        if len(errors) > MAX_REPORTED:
            _add(details, "parameters", f"{len(errors) - MAX_REPORTED} more problems not listed")
        for error in errors[:MAX_REPORTED]:
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                known = ", ".join(operation.parameters.model_fields) or "none"
                message = f"Unknown parameter for {operation.name}; known: {known}"
            elif message.startswith("Value error, "):
                message = message.removeprefix("Value error, ")
            _add(details, _echo(_error_path(error["loc"])), message)
        return None, details


def _operation(task_type: Any) -> Operation:
    if task_type is None or task_type == "":
        raise InvalidSubmission({"task_type": [f"task_type is required; one of: {', '.join(OPERATIONS)}"]})
    if not isinstance(task_type, str) or task_type not in OPERATIONS:
        shown = _echo(task_type) if isinstance(task_type, str) else task_type
        raise InvalidSubmission({"task_type": [f"Unknown task_type {shown!r}; available: {', '.join(OPERATIONS)}"]})
    return OPERATIONS[task_type]


def _check_names(details: Details, names: set[str]) -> None:
    unknown = sorted(names - TOP_LEVEL_FIELDS)
    for name in unknown[:MAX_REPORTED]:
        _add(details, _echo(name), f"Unknown field; allowed: {', '.join(sorted(TOP_LEVEL_FIELDS))}")
    if len(unknown) > MAX_REPORTED:
        _add(details, "body", f"{len(unknown) - MAX_REPORTED} more unknown fields")


def _check_prompt(details: Details, operation: Operation, prompt: Any) -> str | None:
    """The prompt to keep (None when absent or blank), adding its problems to ``details``."""
    task_type = operation.name
    if prompt is not None and not isinstance(prompt, str):
        _add(details, "prompt", "prompt must be a string")
    elif operation.prompt == "required" and (prompt is None or not prompt.strip()):
        _add(details, "prompt", f"Prompt is required for {task_type}")
    elif prompt is not None and len(prompt) > MAX_PROMPT:
        _add(details, "prompt", f"Prompt must be at most {MAX_PROMPT} characters (got {len(prompt)})")
    elif operation.prompt == "unused" and prompt is not None and prompt.strip():
        _add(details, "prompt", f"prompt is not used by {task_type}")  # as an image it does not use
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def _read_images(
    details: Details, operation: Operation, fields: Mapping[str, Any], files: Mapping[str, bytes], max_pixels: int
) -> tuple[dict[str, bytes], dict[str, Image.Image]]:
    """Each image field's bytes and opened image, adding the problems of the others to ``details``."""
    task_type = operation.name
    image_bytes: dict[str, bytes] = {}
    images: dict[str, Image.Image] = {}
    for name in IMAGE_FIELDS:
        value: Any = files.get(name, fields.get(name))
        if value is None or value == "" or value == b"":
            if name in operation.required_images:
                _add(details, name, f"{name} is required for {task_type}")
            continue
        if name not in operation.image_fields:
            _add(details, name, f"{name} is not used by {task_type}")
            continue
        try:
            if isinstance(value, str):
                value = decode_base64(value)
            elif not isinstance(value, bytes):
                raise ImageRejected("must be a base64 string or an uploaded file")
            # Pixels are decoded here only where the operation's check reads them; the worker decodes the rest.
            images[name] = open_image(value, max_pixels, decode=name in operation.check_reads)
            # BMP, TIFF and GIF arrive converted: stored (and run) as PNG.
            image_bytes[name] = encode_png(images[name]) if CONVERTED in images[name].info else value
        except ImageRejected as exc:
            _add(details, name, f"{name} {exc}")
    return image_bytes, images


def validate_submission(
    fields: Mapping[str, Any], files: Mapping[str, bytes], max_pixels: int
) -> tuple[Submission, JobRequest]:
    """Check a submission; raise :class:`InvalidSubmission` with every problem found.

    ``fields`` holds the JSON members (images as base64 strings); ``files`` holds raw
    image bytes from a multipart upload. Returns the submission to store and the decoded
    request (images already opened, so the caller need not decode twice).
    """
    operation = _operation(fields.get("task_type"))
    details: Details = {}
    _check_names(details, set(fields) | set(files))
    prompt = _check_prompt(details, operation, fields.get("prompt"))
    image_bytes, images = _read_images(details, operation, fields, files, max_pixels)
    parameters, parameter_errors = validate_parameters(operation, fields.get("parameters"))
    details.update(parameter_errors)
    if details:
        raise InvalidSubmission(details)

    job = JobRequest(images=images, parameters=parameters, prompt=prompt)
    details.update(operation.check(job))
    if details:
        raise InvalidSubmission(details)
    submission = Submission(
        operation=operation,
        prompt=prompt,
        image_bytes=image_bytes,
        parameters=parameters.model_dump(mode="json", exclude_unset=True),
        sizes={name: image.size for name, image in images.items()},
    )
    return submission, job
