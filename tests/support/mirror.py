"""A loopback HTTP server playing ATELIER_MODEL_MIRROR: it serves the files a test puts in it, at
``/<folder>/<file>``, and can be slow, break a connection half-way or ignore ``Range``, so downloads
can be watched, interrupted and resumed. It counts the requests it gets. Tests never touch the network.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Served:
    data: bytes
    pieces: int = 1  # sent in this many parts...
    delay: float = 0.0  # ...with this many seconds between them
    break_after: int | None = None  # the next answer stops after this many bytes (then the file is whole again)


@dataclass
class Mirror:
    url: str
    files: dict[str, Served] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    ranges: list[str] = field(default_factory=list)  # the Range headers received
    honour_range: bool = True

    def put(self, path: str, data: bytes, **options: Any) -> None:
        self.files[path.lstrip("/")] = Served(data, **options)


def _handler(mirror: Mirror) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0].lstrip("/")
            mirror.requests[path] += 1
            served = mirror.files.get(path)
            if served is None:
                self.send_error(404)
                return
            start = self._range_start(len(served.data))
            body = served.data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(served.data) - 1}/{len(served.data)}")
            self.end_headers()
            limit, served.break_after = served.break_after, None
            self._send(body if limit is None else body[:limit], served)
            if limit is not None:
                self.close_connection = True

        def _range_start(self, size: int) -> int:
            header = self.headers.get("Range")
            if header:
                mirror.ranges.append(header)
            if not header or not mirror.honour_range or not header.startswith("bytes="):
                return 0
            start = int(header.removeprefix("bytes=").split("-")[0] or 0)
            return start if start < size else 0

        def _send(self, body: bytes, served: Served) -> None:
            step = max(1, -(-len(body) // served.pieces))
            try:
                for offset in range(0, len(body), step):
                    self.wfile.write(body[offset : offset + step])
                    self.wfile.flush()
                    if offset + step < len(body):
                        time.sleep(served.delay)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a cancelled download)
                self.close_connection = True

    return Handler


@contextmanager
def serving_mirror() -> Iterator[Mirror]:
    """A mirror on a free loopback port, for the length of the ``with``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(Mirror("")))
    mirror = Mirror(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(mirror)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="mirror", daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dead_address() -> Iterator[str]:
    """A loopback URL where nothing listens (a bound socket that never listens: refused at once),
    reserved while the ``with`` lasts: "offline"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
