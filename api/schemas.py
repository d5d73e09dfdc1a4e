"""Request and response schemas, for /openapi.json and generated clients. A job's status is
``jobs.JobStatus`` itself: one model for the client, this API, the page and the tests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from jobs import JobState, JobStatus
from pipelines import OPERATIONS
from pipelines.base import IMAGE_FIELDS

StatusResponse = JobStatus
WEBHOOK_HELP = (
    "A URL Atelier POSTs the status JSON to, signed as Standard Webhooks says (webhook-id, webhook-timestamp, "
    "webhook-signature); needs ATELIER_WEBHOOK_SECRET on the server"
)
WEBHOOK_EVENTS_HELP = 'Any of start, progress (at most two a second), completed; default ["completed"]'


class SubmitRequest(BaseModel):
    task_type: str = Field(description=f"One of: {', '.join(OPERATIONS)}")
    prompt: str | None = Field(default=None, max_length=5000)
    image: str | None = Field(default=None, description="Base64 PNG/JPEG/WebP; a data: prefix is allowed")
    target_image: str | None = Field(default=None, description="face_swap: the photo whose faces are replaced")
    mask: str | None = Field(default=None, description="object_removal: white = remove, same size as image")
    style_image: str | None = Field(default=None, description="style_transfer: a picture to take the style from")
    parameters: dict[str, Any] | None = Field(default=None, description="Operation parameters")
    webhook: str | None = Field(default=None, max_length=2048, description=WEBHOOK_HELP)
    webhook_events: list[str] | None = Field(default=None, description=WEBHOOK_EVENTS_HELP)


# The same fields as a multipart form: images as files, parameters as JSON text.
SUBMIT_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["task_type"],
    "properties": {
        "task_type": {"type": "string"},
        "prompt": {"type": "string"},
        "parameters": {"type": "string", "description": "A JSON object"},
        "webhook": {"type": "string", "description": WEBHOOK_HELP},
        "webhook_events": {"type": "string", "description": "start,progress,completed or a JSON list"},
        **{name: {"type": "string", "format": "binary"} for name in IMAGE_FIELDS},
    },
}


class BatchItemRequest(BaseModel):
    name: str | None = Field(default=None, description="A file name; the result in the zip is named after it")
    image: str | None = Field(default=None, description="Base64 PNG/JPEG/WebP (BMP, TIFF, GIF converted)")
    target_image: str | None = None
    mask: str | None = None
    style_image: str | None = None
    prompt: str | None = Field(default=None, max_length=5000)
    parameters: dict[str, Any] | None = Field(default=None, description="Added to (or overriding) the shared ones")


class BatchRequest(BaseModel):
    task_type: str = Field(description=f"One of: {', '.join(OPERATIONS)}")
    prompt: str | None = Field(default=None, max_length=5000, description="Shared by every item without its own")
    parameters: dict[str, Any] | None = Field(default=None, description="Shared operation parameters")
    image: str | None = Field(default=None, description="An image field shared by every item (e.g. one mask)")
    target_image: str | None = None
    mask: str | None = None
    style_image: str | None = None
    items: list[BatchItemRequest] = Field(description="One per job; at most ATELIER_MAX_BATCH_ITEMS (500)")
    webhook: str | None = Field(default=None, max_length=2048, description=WEBHOOK_HELP + "; the batch's status")
    webhook_events: list[str] | None = Field(default=None, description=WEBHOOK_EVENTS_HELP)


BATCH_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["task_type"],
    "properties": {
        "task_type": {"type": "string"},
        "prompt": {"type": "string"},
        "parameters": {"type": "string", "description": "A JSON object"},
        "item_field": {"type": "string", "description": "The image field the item files fill (default image)"},
        "webhook": {"type": "string", "description": WEBHOOK_HELP + "; the batch's status"},
        "webhook_events": {"type": "string", "description": "start,progress,completed or a JSON list"},
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "The items"},
        "archive": {"type": "string", "format": "binary", "description": "A zip of images, one item each"},
        **{name: {"type": "string", "format": "binary"} for name in IMAGE_FIELDS if name != "image"},
    },
}


class BatchSubmitResponse(BaseModel):
    batch_id: str
    task_ids: list[str] = Field(description="The items' task ids, in the items' order")
    status: JobState = JobState.PENDING
    total: int
    task_type: str
    message: str


class SubmitResponse(BaseModel):
    task_id: str
    status: JobState = JobState.PENDING
    message: str


class JobResult(BaseModel):
    status: JobState = JobState.SUCCESS
    image_data: str = Field(description="Base64 PNG")
    prompt_used: str | None = None
    metadata: dict[str, Any]


class ResultResponse(BaseModel):
    task_id: str
    status: JobState = JobState.SUCCESS
    result: JobResult


class CancelResponse(BaseModel):
    task_id: str
    status: JobState = JobState.REVOKED
    message: str


class PngInfoRequest(BaseModel):
    image: str = Field(description="A PNG as base64 (a data: prefix is allowed)")


PNG_INFO_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary"}},
}


class PngInfoResponse(BaseModel):
    source: str = Field(description="atelier (its own chunks), a1111 (a parameters text) or none")
    operation: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    parameters: dict[str, Any] = Field(description="In Atelier's names: steps, guidance_scale, seed, width, ...")


class TaskListEntry(BaseModel):
    task_id: str
    task_type: str
    status: JobState
    created_at: float = Field(description="Submit time, Unix seconds")
    message: str
    progress: int
    batch_id: str | None = Field(default=None, description="A batch item's batch")
    steps: int | None = Field(default=None, description="A chain's number of steps")


class TaskList(BaseModel):
    tasks: list[TaskListEntry]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null on the last")


class ErrorResponse(BaseModel):
    error: str
    message: str | None = None
    details: dict[str, list[str]] | None = None
    status: str | None = None
    task_id: str | None = None
    batch_id: str | None = None
    retry_after: int | None = Field(default=None, description="429: seconds until the client may submit again")


class QueueHealth(BaseModel):
    workers: list[str] = Field(description="Live workers consuming this queue")
    waiting: int = Field(description="Jobs waiting in this queue")


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or unavailable (with 503)")
    redis: dict[str, Any] = Field(description="reachable, latency_ms")
    queues: dict[str, QueueHealth]


class StylePresetInfo(BaseModel):
    name: str
    title: str
    engine: str
    thumbnail_url: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown, malformed or expired task id"}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse, "description": "Redis unreachable"}}
BATCH_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown, malformed or expired batch id"}
}
