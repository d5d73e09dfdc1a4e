"""Reading a submission's body: JSON or multipart, limits and malformed input, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request

from api.body import parse_submission
from api.errors import BodyError
from tests.support.loop import run_async

LIMIT = 1024


def request(body: bytes, content_type: str, length: int | None = None) -> Request:
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-type", content_type.encode())]
    headers.append((b"content-length", str(len(body) if length is None else length).encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def parse(body: bytes, content_type: str, length: int | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    return run_async(parse_submission(request(body, content_type, length), LIMIT))


def refusal(body: bytes, content_type: str, length: int | None = None) -> tuple[int, dict[str, Any]]:
    with pytest.raises(BodyError) as caught:
        parse(body, content_type, length)
    return caught.value.response.status_code, json.loads(caught.value.response.body)


def multipart(*parts: tuple[str, str | bytes, str | None]) -> tuple[bytes, str]:
    boundary = "atelierboundary"
    lines = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        data = value.encode() if isinstance(value, str) else value
        lines.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(lines) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_json_objects_are_read_whole() -> None:
    fields, files = parse(b'{"task_type": "image_generation", "prompt": "a cat"}', "application/json; charset=utf-8")
    assert fields == {"task_type": "image_generation", "prompt": "a cat"} and files == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Malformed JSON"),
        (b"[1, 2]", "The body must be a JSON object"),
        (b'{"seed": NaN}', "NaN is not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "Malformed JSON"),
    ],
)
def test_bad_json_is_a_400_on_the_body(body: bytes, message: str) -> None:
    code, answer = refusal(body[:LIMIT], "application/json")
    assert code == 400 and answer["error"] == "Invalid input"
    assert message in answer["details"]["body"][0]


def test_other_content_types_are_415() -> None:
    code, answer = refusal(b"task_type=x", "application/x-www-form-urlencoded")
    assert code == 415 and "application/json or multipart/form-data" in answer["message"]


def test_a_body_over_the_limit_is_413_declared_or_not() -> None:
    assert refusal(b"{}", "application/json", length=LIMIT + 1)[0] == 413  # by its Content-Length alone
    code, answer = refusal(b'{"prompt": "' + b"x" * LIMIT + b'"}', "application/json", length=10)
    assert code == 413 and answer["message"] == "The request body is over the limit of 0 MB"


def test_multipart_fields_files_and_parameters() -> None:
    body, content_type = multipart(
        ("task_type", "background_removal", None),
        ("parameters", '{"only_mask": true}', None),
        ("image", b"\x89PNG...", "../../etc/passwd"),
    )
    fields, files = parse(body, content_type)
    assert fields == {"task_type": "background_removal", "parameters": {"only_mask": True}}
    assert files == {"image": b"\x89PNG..."}


def test_multipart_refuses_repeated_names_and_bad_parameters() -> None:
    body, content_type = multipart(("image", b"a", "a.png"), ("image", b"b", "b.png"))
    code, answer = refusal(body, content_type)
    assert code == 400 and answer["details"] == {"image": ["image was given more than once"]}
    body, content_type = multipart(("task_type", "x", None), ("parameters", "{oops", None))
    code, answer = refusal(body, content_type)
    assert code == 400 and list(answer["details"]) == ["parameters"]


def test_empty_parameters_text_means_none() -> None:
    body, content_type = multipart(("task_type", "x", None), ("parameters", "  ", None))
    assert parse(body, content_type)[0] == {"task_type": "x", "parameters": None}
