"""Validate a batch: one operation, shared fields, and items that add to or override them.

Every item is checked as if it were submitted alone; nothing is stored unless every item passes.
A problem of a shared field is reported once, under its own name (``parameters.model``); a problem
of one item under the item's path (``items[3].image``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.base import IMAGE_FIELDS, Operation
from pipelines.images import ImageRejected, decode_base64, open_image
from pipelines.validation import (
    MAX_PROMPT,
    Details,
    InvalidSubmission,
    Submission,
    _add,
    _echo,
    _operation,
    validate_parameters,
    validate_submission,
)

BATCH_FIELDS = {"task_type", "prompt", "parameters", "items", *IMAGE_FIELDS}
ITEM_FIELDS = {"name", "prompt", "parameters", *IMAGE_FIELDS}
MAX_NAME = 255
MAX_ITEMS_REPORTED = 50  # items listed with their problems; the rest are counted


@dataclass(frozen=True)
class BatchItem:
    """One validated item: its name (as given, or None) and its job."""

    name: str | None
    submission: Submission


def validate_batch(
    fields: Mapping[str, Any], items: Any, max_pixels: int, max_items: int
) -> tuple[Operation, list[BatchItem]]:
    """Check a batch; raise :class:`InvalidSubmission` with every problem found, keyed by field path."""
    operation = _operation(fields.get("task_type"))
    details: Details = {}
    for name in sorted(set(fields) - BATCH_FIELDS)[:20]:
        _add(details, _echo(name), f"Unknown field; allowed: {', '.join(sorted(BATCH_FIELDS))}")
    if not isinstance(items, list) or not items:
        _add(details, "items", "items must be a non-empty list of objects, one per image")
    elif len(items) > max_items:
        _add(details, "items", f"At most {max_items} items per batch (ATELIER_MAX_BATCH_ITEMS), got {len(items)}")
    shared = {key: value for key, value in fields.items() if key in BATCH_FIELDS and key != "items"}
    shared_errors = _shared_errors(operation, shared, max_pixels)
    details.update(shared_errors)
    if details:
        raise InvalidSubmission(details)
    checked = [_check_item(index, item, shared, shared_errors, max_pixels) for index, item in enumerate(items)]
    details.update(_item_details([errors for errors, _ in checked], items))
    if details:
        raise InvalidSubmission(details)
    return operation, [item for _, item in checked if item is not None]


def _item_details(errors: list[Details], items: list[Any]) -> Details:
    """The items' problems, keyed ``items[i].<field>``. A problem every item has with a value none
    of them gave itself (a shared mask that covers everything, a mask that neither the batch nor any
    item gives) is told once, under the field's own name; what an item gave is that item's problem."""
    details: Details = {}
    common = None
    for item_errors, item in zip(errors, items, strict=True):
        unprefixed = {field.partition("].")[2]: tuple(messages) for field, messages in item_errors.items()}
        found = {
            (field, messages)
            for field, messages in unprefixed.items()
            if field and isinstance(item, dict) and not _from_item(field, item)
        }
        common = found if common is None else common & found
    for field, messages in sorted(common or ()):
        details[field] = list(messages)
    bad_items = 0
    for item_errors in errors:
        kept = {
            key: value
            for key, value in item_errors.items()
            if (key.partition("].")[2], tuple(value)) not in (common or ())
        }
        if kept:
            bad_items += 1
            if bad_items <= MAX_ITEMS_REPORTED:
                details.update(kept)
    if bad_items > MAX_ITEMS_REPORTED:
        _add(details, "items", f"{bad_items - MAX_ITEMS_REPORTED} more items have problems, not listed")
    return details


def _shared_errors(operation: Operation, shared: Mapping[str, Any], max_pixels: int) -> Details:
    """The problems of the shared fields on their own (what every item would otherwise repeat)."""
    details: Details = {}
    _, parameter_errors = validate_parameters(operation, shared.get("parameters"))
    details.update(parameter_errors)
    prompt = shared.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        _add(details, "prompt", "prompt must be a string")
    elif isinstance(prompt, str) and len(prompt) > MAX_PROMPT:
        _add(details, "prompt", f"Prompt must be at most {MAX_PROMPT} characters (got {len(prompt)})")
    elif isinstance(prompt, str) and prompt.strip() and operation.prompt == "unused":
        _add(details, "prompt", f"prompt is not used by {operation.name}")
    for name in IMAGE_FIELDS:
        value = shared.get(name)
        if value is None or value == "" or value == b"":
            continue
        if name not in operation.image_fields:
            _add(details, name, f"{name} is not used by {operation.name}")
            continue
        try:
            open_image(decode_base64(value) if isinstance(value, str) else _bytes(value), max_pixels, decode=False)
        except ImageRejected as exc:
            _add(details, name, f"{name} {exc}")
    return details


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ImageRejected("must be a base64 string or an uploaded file")
    return value


def _check_item(
    index: int, item: Any, shared: Mapping[str, Any], shared_errors: Details, max_pixels: int
) -> tuple[Details, BatchItem | None]:
    """(the item's problems keyed ``items[i]...``, the validated item or None)."""
    path = f"items[{index}]"
    if not isinstance(item, dict):
        return {path: [f'{path} must be a JSON object such as {{"image": "<base64>", "name": "a.jpg"}}']}, None
    details: Details = {}
    for name in sorted(set(item) - ITEM_FIELDS)[:20]:
        _add(details, f"{path}.{_echo(name)}", f"Unknown item field; allowed: {', '.join(sorted(ITEM_FIELDS))}")
    name = item.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        _add(details, f"{path}.name", f"name must be a string of at most {MAX_NAME} characters")
    if details:
        return details, None
    merged = {**shared, **{key: value for key, value in item.items() if key != "name"}}
    if isinstance(item.get("parameters"), dict) and isinstance(shared.get("parameters"), dict):
        merged["parameters"] = {**shared["parameters"], **item["parameters"]}
    try:
        submission, _ = validate_submission(merged, {}, max_pixels)
    except InvalidSubmission as exc:
        for field, messages in exc.details.items():
            if not _from_item(field, item) and field in shared_errors:
                continue  # reported once, under the shared field's own name
            details[f"{path}.{field}"] = messages
        return details or {path: ["This item is invalid together with the shared fields"]}, None
    return {}, BatchItem(name=name if isinstance(name, str) and name.strip() else None, submission=submission)


def _from_item(field: str, item: Mapping[str, Any]) -> bool:
    """Whether the item itself gave the value that ``field`` (a field path) names."""
    root, _, rest = field.partition(".")
    if root == "parameters" and rest:
        parameters = item.get("parameters")
        return isinstance(parameters, dict) and rest.split(".")[0] in parameters
    return root in item
