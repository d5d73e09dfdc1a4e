"""Reading a submission's body: JSON with base64 images, or multipart with files, within the byte limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from api.errors import BodyError, error, invalid
from jobs.archive import ArchiveRejected, read_archive
from pipelines.base import IMAGE_FIELDS

CONTENT_TYPES = ("application/json", "multipart/form-data")


def too_large(limit: int) -> JSONResponse:
    megabytes = round(limit / 2**20, 2)
    return error(413, "Payload too large", message=f"The request body is over the limit of {megabytes:g} MB")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyError(too_large(limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(too_large(limit))
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.form() parse what was read
    return body


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object (NaN and Infinity refused); :class:`BodyError` with a 400 otherwise."""
    try:
        fields = json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BodyError(invalid({"body": [f"Malformed JSON: {exc}"]})) from None
    except RecursionError:
        raise BodyError(invalid({"body": ["Malformed JSON: nested too deeply"]})) from None
    if not isinstance(fields, dict):
        raise BodyError(invalid({"body": ["The body must be a JSON object"]}))
    return fields


def parse_parameters(fields: dict[str, Any]) -> None:
    """A form's ``parameters`` field, JSON text, parsed in place; a 400 naming it if it is not JSON."""
    text = fields.get("parameters")
    if not isinstance(text, str):
        return
    try:
        fields["parameters"] = json.loads(text, parse_constant=_no_constants) if text.strip() else None
    except (ValueError, RecursionError) as exc:
        raise BodyError(invalid({"parameters": [f"parameters must be a JSON object: {exc}"]})) from None


async def parse_form(request: Request, limit: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A multipart form's text fields and files; each name once, ``parameters`` as JSON text."""
    try:
        form = await request.form(max_part_size=limit, max_files=len(IMAGE_FIELDS), max_fields=20)
    except Exception as exc:
        raise BodyError(invalid({"body": [f"Malformed multipart body: {exc}"]})) from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    repeated: set[str] = set()
    for name, value in form.multi_items():
        if name in fields or name in files:
            repeated.add(name)
        if isinstance(value, str):
            fields[name] = value
        else:
            files[name] = await value.read()
    if repeated:
        raise BodyError(invalid({name[:80]: [f"{name[:80]} was given more than once"] for name in sorted(repeated)}))
    parse_parameters(fields)
    return fields, files


async def parse_submission(request: Request, limit: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(fields, files) of a submit request; :class:`BodyError` (400, 413, 415) for a bad body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        raise BodyError(error(415, "Unsupported media type", message="Send application/json or multipart/form-data"))
    body = await read_body(request, limit)
    if content_type == "application/json":
        return parse_json(body), {}
    return await parse_form(request, limit)


async def parse_batch(request: Request, limit: int, max_items: int) -> tuple[dict[str, Any], Any]:
    """(shared fields, items) of a batch request. JSON: ``items`` is the list sent. Multipart: every
    file under ``item_field`` (default ``image``) is an item named by its filename, or one ``archive``
    zip holds the items; other image fields, given once, are shared."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        raise BodyError(error(415, "Unsupported media type", message="Send application/json or multipart/form-data"))
    body = await read_body(request, limit)
    if content_type == "application/json":
        document = parse_json(body)
        return document, document.pop("items", None)
    form = await _batch_form(request, limit, max_items)
    item_field = str(form.get("item_field") or "image")
    if item_field not in IMAGE_FIELDS:
        raise BodyError(invalid({"item_field": [f"item_field must be one of {', '.join(IMAGE_FIELDS)}"]}))
    fields: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    for name, value in form.multi_items():
        if name == "item_field":
            continue
        if isinstance(value, str) or name not in (item_field, "archive"):
            if name in fields:
                raise BodyError(invalid({name[:80]: [f"{name[:80]} was given more than once"]}))
            fields[name] = value if isinstance(value, str) else await value.read()
        elif name == item_field:
            items.append({item_field: await value.read(), "name": value.filename or None})
        else:
            items.extend(_archive_items(await value.read(), item_field, max_items, limit))
    parse_parameters(fields)
    return fields, items


async def _batch_form(request: Request, limit: int, max_items: int) -> Any:
    try:
        return await request.form(max_part_size=limit, max_files=max_items + len(IMAGE_FIELDS), max_fields=20)
    except Exception as exc:
        if "too many files" in str(exc).lower():
            message = f"At most {max_items} items per batch (ATELIER_MAX_BATCH_ITEMS); send the rest as another batch"
            raise BodyError(invalid({"items": [message]})) from None
        raise BodyError(invalid({"body": [f"Malformed multipart body: {exc}"]})) from None


def _archive_items(data: bytes, item_field: str, max_items: int, limit: int) -> list[dict[str, Any]]:
    try:
        images = read_archive(data, max_items, max_bytes=2 * limit)
    except ArchiveRejected as exc:
        raise BodyError(invalid({"archive": [str(exc)]})) from None
    return [{item_field: content, "name": name} for name, content in images]
