"""A webhook receiver on 127.0.0.1 for tests: records every request, answers as each path says."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


# What a path answers: (status, extra headers) for the request, given the requests to it so far.
Answer = Callable[[Received, list[Received]], tuple[int, dict[str, str]]]


class Receiver:
    """Requests by path; ``answers[path]`` decides the answer (default 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, Answer] = {}
        self.lock = threading.Lock()
        self.url = ""

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.received if request.path == path]

    def handle(self, request: Received) -> tuple[int, dict[str, str]]:
        with self.lock:
            earlier = [seen for seen in self.received if seen.path == request.path]
            self.received.append(request)
        answer = self.answers.get(request.path)
        return answer(request, earlier) if answer else (200, {})


def failing_first(times: int) -> Answer:
    """Answer 500 to the first ``times`` requests, then 200."""
    return lambda request, earlier: (500, {}) if len(earlier) < times else (200, {})


def redirect_to(location: str) -> Answer:
    return lambda request, earlier: (307, {"location": location})


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1, in a thread; ``receiver.url`` is its base."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = Received(self.path, {key.lower(): value for key, value in self.headers.items()},
                               self.rfile.read(length))  # fmt: skip
            status, headers = receiver.handle(request)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
