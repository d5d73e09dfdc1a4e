"""``python app.py batch TASK_TYPE INPUT_DIR OUTPUT_DIR``: a folder of images through Atelier's batch API.

A plain HTTP client (httpx, tqdm, Pillow), for the local stack or a remote server. It sends the
folder in chunks that fit the server's limits, writes each result as ``OUTPUT_DIR/<stem>.png``
as soon as it is done (atomically: an interrupted run never leaves half a PNG), skips inputs
whose output is there already (so a second run resumes), and cancels the batch on Ctrl-C.
Exit status: 0 all written, 1 some item failed or was cancelled, 2 bad usage or no usable
server, 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
SENT_AS_IS = {"PNG", "JPEG", "WEBP"}  # what the server decodes; other formats are sent as PNG
DEFAULT_SERVER = "http://127.0.0.1:7860"
FINISHED = {"SUCCESS", "FAILURE", "REVOKED"}
POLL_SECONDS = 0.4
REFILL_BELOW = 16  # send the next chunk when fewer items than this are still unfinished
PATIENCE_SECONDS = 60.0  # how long a lost connection or a 503 is retried before giving up
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ITEM_KEY = re.compile(r"^items\[(\d+)\]")


class CommandError(Exception):
    """Stops the command with exit status 2; the message is the one line the user sees."""


@dataclass
class Item:
    """One input file, its output path, and what became of it."""

    source: Path
    output: Path
    task_id: str | None = None
    state: str = ""  # "" until it ends: SUCCESS, FAILURE or REVOKED
    message: str = ""


@dataclass
class Submission:
    """What every chunk sends besides its items."""

    fields: dict[str, str]
    shared: dict[str, tuple[str, bytes]]
    item_field: str = "image"


@dataclass
class Tally:
    written: list[Item] = field(default_factory=list)
    failed: list[Item] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py batch",
        description="Send a folder of images through one operation as a batch; write OUTPUT_DIR/<stem>.png "
        "for each, as each finishes. Outputs already there are skipped, so running again resumes.",
        epilog="Examples: app.py batch style_transfer photos/ out/ --param style=mosaic --param engine=fast; "
        "app.py batch object_removal shots/ clean/ --mask mask.png; app.py batch face_swap crowd/ "
        "swapped/ --source face.png. Exit status: 0 all written, 1 an item failed or was cancelled, "
        "2 bad usage or no usable server, 130 Ctrl-C (the batch is cancelled).",
    )
    parser.add_argument(
        "task_type", metavar="TASK_TYPE", help="object_removal, style_transfer, face_swap, background_removal, ..."
    )
    parser.add_argument(
        "input_dir",
        metavar="INPUT_DIR",
        type=Path,
        help=f"Folder of images ({' '.join(IMAGE_SUFFIXES)}), not recursive",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", type=Path, help="Folder for the PNGs (created if missing)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=parse_param,
        help="An operation parameter; VALUE is JSON when it parses (4, 0.8, true), else text",
    )
    parser.add_argument("--prompt", metavar="P", help="The prompt, for operations that take one")
    parser.add_argument(
        "--mask", metavar="FILE", type=Path, help="object_removal: one mask for every image (white = remove)"
    )
    parser.add_argument(
        "--source", metavar="FILE", type=Path, help="face_swap: the face to put on every image of the folder"
    )
    parser.add_argument(
        "--style-image", metavar="FILE", type=Path, help="style_transfer: a style picture instead of a preset"
    )
    parser.add_argument(
        "--server", metavar="URL", default=DEFAULT_SERVER, help=f"Atelier's address (default {DEFAULT_SERVER})"
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get("ATELIER_TOKEN"),
        help="API token of a server with ATELIER_API_TOKENS (default: $ATELIER_TOKEN)",
    )
    parser.add_argument("--user", metavar="USER:PASSWORD", help="Login of a server with ATELIER_AUTH")
    parser.add_argument(
        "--chunk-items", metavar="N", type=_count(1, 500), default=100, help="Items per request (default 100)"
    )
    parser.add_argument(
        "--chunk-mb", metavar="MB", type=_count(1, 10_000), default=40, help="Megabytes per request (default 40)"
    )
    return parser


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)

    return parse


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` to (name, value): VALUE as JSON when it parses (numbers, true, null), else the text."""
    name, equals, raw = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        value = json.loads(raw, parse_constant=_refuse)
    except ValueError:
        value = raw
    return name.strip(), value


def _refuse(name: str) -> None:
    raise ValueError(name)  # NaN, Infinity: not JSON the server takes; keep them as text


def list_inputs(folder: Path) -> list[Path]:
    """The images directly in ``folder`` (hidden files left out), sorted by name."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def output_names(sources: Sequence[Path]) -> list[str]:
    """One PNG name per input: ``<stem>.png``, or ``<stem>-<ext>.png`` for every input whose stem
    another input shares (compared without case, as some file systems do). Each name depends on
    the folder's names only, never on which outputs exist, so a second run finds the same ones."""
    stems: dict[str, int] = {}
    for source in sources:
        stems[source.stem.lower()] = stems.get(source.stem.lower(), 0) + 1
    names = [
        f"{source.stem}-{source.suffix[1:]}" if stems[source.stem.lower()] > 1 else source.stem for source in sources
    ]
    used: set[str] = set()
    files = []
    for name in names:  # `a-jpg.png` may also be the name of an input `a-jpg.png`: number the later one
        candidate, repeat = name, 2
        while candidate.lower() in used:
            candidate, repeat = f"{name}-{repeat}", repeat + 1
        used.add(candidate.lower())
        files.append(f"{candidate}.png")
    return files


def read_image(path: Path) -> bytes:
    """The bytes to send for ``path``: PNG, JPEG and WebP as they are, other formats as PNG.
    :class:`ValueError` when it is not an image Pillow can read."""
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in SENT_AS_IS:
                return data
            image.seek(0)  # a GIF's first frame
            alpha = "A" in image.getbands() or "transparency" in image.info
            buffer = io.BytesIO()
            image.convert("RGBA" if alpha else "RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "could not be read as an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"{reason} (use PNG, JPEG, WebP, BMP, TIFF or GIF)") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file renamed into place: it is whole, or absent."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def format_details(body: Any) -> str:
    """A 400's ``details`` as readable lines: ``  parameters.style: Unknown style ...``."""
    if not isinstance(body, dict):
        return str(body)
    details = body.get("details")
    if not isinstance(details, dict) or not details:
        return str(body.get("message") or body.get("error") or body)
    return "\n".join(f"  {key}: {'; '.join(map(str, value))}" for key, value in details.items())


def item_errors(details: Any, count: int) -> dict[int, str] | None:
    """The items a 400 refused, ``{index: message}``; None when a shared field is at fault."""
    if not isinstance(details, dict):
        return None
    rejected: dict[int, str] = {}
    for key, messages in details.items():
        match = ITEM_KEY.match(str(key))
        if match and int(match[1]) < count:
            text = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            previous = rejected.get(int(match[1]))
            rejected[int(match[1])] = f"{previous}; {text}" if previous else text
        elif key != "items":  # "items": "N more items have problems": they are found on the next try
            return None
    return rejected or None


def note(text: str) -> None:
    """A line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


class Server:
    """Atelier's REST API: retries what is worth retrying, turns the rest into one clear line."""

    def __init__(self, url: str, token: str | None = None, user: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user:
            headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(120, connect=5))

    def check(self) -> None:
        """Exit 2 unless an Atelier answers at the URL with its Redis."""
        try:
            response = self.http.get("/healthz", timeout=10)
        except httpx.HTTPError:
            raise CommandError(f"No Atelier at {self.url} — start it with `make run`, or pass --server URL") from None
        body = _json(response)
        if response.status_code == 503:
            raise CommandError(f"Atelier at {self.url} cannot reach its Redis: {body.get('message', '')}")
        if response.status_code != 200 or "queues" not in body:
            raise CommandError(f"{self.url} answers, but not as Atelier (GET /healthz: {response.status_code})")

    def request(self, method: str, path: str, busy: tuple[int, ...] = (503,), **kwargs: Any) -> httpx.Response:
        """One call; a lost connection or a ``busy`` answer is tried again for a minute, a 429 after
        its Retry-After. 401 and 403 stop the command."""
        deadline, delay = time.monotonic() + PATIENCE_SECONDS, 0.5
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise CommandError(f"Lost Atelier at {self.url}: {exc or type(exc).__name__}") from None
            else:
                if response.status_code in (401, 403):
                    raise CommandError(
                        f"Atelier at {self.url} refused the credentials ({response.status_code}): "
                        "pass --token (or set ATELIER_TOKEN) or --user USER:PASSWORD"
                    )
                if response.status_code == 429:
                    wait = _retry_after(response)
                    note(f"Over the server's rate limit: waiting {wait:g} s")
                    time.sleep(wait)
                    continue
                if response.status_code not in busy or time.monotonic() > deadline:
                    return response
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def submit(self, job: Submission, items: Sequence[tuple[str, bytes]]) -> httpx.Response:
        """POST one batch. Its Idempotency-Key makes a retry after a lost answer safe: the server
        answers the first submit again (200) instead of making a second batch (409: still at it)."""
        files = [(name, shared) for name, shared in job.shared.items()]
        files += [(job.item_field, (name, data)) for name, data in items]
        data = {**job.fields, "item_field": job.item_field}
        headers = {"Idempotency-Key": f"atelier-batch-command-{uuid.uuid4()}"}
        return self.request("POST", "/api/v1/batches/", (503, 409), data=data, files=files, headers=headers)

    def status(self, batch_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/api/v1/batches/{batch_id}/")
        if response.status_code == 404:
            return {"items": []}  # expired: its unfinished items are told as such
        _expect(response, 200, "read the batch's status")
        return _json(response)

    def result(self, task_id: str) -> httpx.Response:
        return self.request("GET", f"/api/v1/tasks/{task_id}/result/", params={"format": "png"})

    def cancel(self, batch_id: str) -> None:
        self.http.post(f"/api/v1/batches/{batch_id}/cancel/", timeout=10)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        body = _json(response)
        reason = body.get("message") or body.get("error") or response.text[:200]
        raise CommandError(f"Could not {what}: {response.status_code} {reason}")


def _retry_after(response: httpx.Response) -> float:
    text = response.headers.get("retry-after", "")
    return max(0.5, min(float(text), 300.0)) if text.replace(".", "", 1).isdigit() else 1.0


class FolderBatch:
    """Sends the items chunk by chunk, follows their batches, writes each result as it finishes."""

    def __init__(self, server: Server, job: Submission, items: Sequence[Item], max_items: int, max_bytes: int) -> None:
        from tqdm import tqdm

        self.server, self.job = server, job
        self.max_items, self.max_bytes = max_items, max_bytes
        self.waiting = deque(items)
        self.active: dict[str, list[Item]] = {}  # batch id → its items, in order
        self.accepted = False  # a chunk was taken: the shared fields are good
        self.tally = Tally()
        # No bar where stderr is no terminal (a log file): the summary says it all there.
        self.bar = tqdm(total=len(items), unit="img", desc=job.fields["task_type"], file=sys.stderr, disable=None)
        self._show()

    def run(self) -> None:
        """Until every item has ended: keep the server fed, poll, write what finished."""
        while self.waiting or self.active:
            while self.waiting and self.unfinished() < REFILL_BELOW:
                self.submit(self.next_chunk())
            self.poll()
            if self.active:
                time.sleep(POLL_SECONDS)
        self.bar.close()

    def unfinished(self) -> int:
        return sum(1 for items in self.active.values() for item in items if not item.state)

    def next_chunk(self) -> list[tuple[Item, bytes]]:
        """The next items that fit one request; a file that is no image fails here, unsent."""
        chunk: list[tuple[Item, bytes]] = []
        size = sum(len(data) for _, data in self.job.shared.values())
        while self.waiting and len(chunk) < self.max_items:
            item = self.waiting[0]
            try:
                data = read_image(item.source)
            except (OSError, ValueError) as exc:
                self.waiting.popleft()
                self.end(item, "FAILURE", str(exc))
                continue
            if chunk and size + len(data) > self.max_bytes:
                break
            self.waiting.popleft()
            chunk.append((item, data))
            size += len(data)
        return chunk

    def submit(self, chunk: list[tuple[Item, bytes]]) -> None:
        """Send a chunk as one batch: items the server refuses fail and the rest go again; a body
        over its limit is halved."""
        while chunk:
            response = self.server.submit(self.job, [(item.source.name, data) for item, data in chunk])
            if response.status_code in (200, 202):  # 200: the answer to a retried submit
                self.started(chunk, _json(response))
                return
            if response.status_code == 413:
                chunk = self.split(chunk, response)
                continue
            body = _json(response)
            if response.status_code != 400:
                _expect(response, 202, "submit the batch")
            chunk = self.refused(chunk, body)

    def refused(self, chunk: list[tuple[Item, bytes]], body: dict[str, Any]) -> list[tuple[Item, bytes]]:
        """After a 400: the items it names fail; the rest is returned, to be sent again. A problem of
        the shared fields stops the command, unless it can only be this chunk's: a shared image that
        does not suit the chunk's one item (a mask of another size), or anything once a chunk with
        the same fields was taken."""
        details = body.get("details")
        rejected = item_errors(details, len(chunk))
        if rejected is not None:
            for index, (item, _) in enumerate(chunk):
                if index in rejected:
                    self.end(item, "FAILURE", rejected[index])
            return [pair for index, pair in enumerate(chunk) if index not in rejected]
        if isinstance(details, dict) and set(details) <= {"items", "body"} and len(chunk) > 1:
            # Over its ATELIER_MAX_BATCH_ITEMS (told under "items", or "body" when its form parser counts the files)
            self.max_items = len(chunk) // 2
            note(f"The server took no batch of {len(chunk)}: sending {self.max_items} at a time (see --chunk-items)")
            return self.halve(chunk)
        shared_images = isinstance(details, dict) and all(str(key).split(".")[0] in self.job.shared for key in details)
        if not (self.accepted or (len(chunk) == 1 and shared_images)):
            raise CommandError(f"The server refused the batch:\n{format_details(body)}")
        message = "; ".join(line.strip() for line in format_details(body).splitlines())
        for item, _ in chunk:
            self.end(item, "FAILURE", message)
        return []

    def split(self, chunk: list[tuple[Item, bytes]], response: httpx.Response) -> list[tuple[Item, bytes]]:
        """After a 413: smaller requests from now on; the first half goes now, the rest is returned."""
        if len(chunk) == 1:
            self.end(chunk[0][0], "FAILURE", f"over the server's upload limit: {_json(response).get('message', '')}")
            return []
        size = sum(len(data) for _, data in chunk)
        self.max_bytes = min(self.max_bytes, size // 2)
        note(f"The server refused {size / 2**20:.1f} MB in one request; sending smaller chunks (see --chunk-mb)")
        return self.halve(chunk)

    def halve(self, chunk: list[tuple[Item, bytes]]) -> list[tuple[Item, bytes]]:
        """Send the first half of ``chunk`` now; return the rest."""
        half = len(chunk) // 2
        self.submit(chunk[:half])
        return chunk[half:]

    def started(self, chunk: list[tuple[Item, bytes]], answer: dict[str, Any]) -> None:
        self.accepted = True
        for (item, _), task_id in zip(chunk, answer["task_ids"], strict=True):
            item.task_id = task_id
        self.active[answer["batch_id"]] = [item for item, _ in chunk]

    def poll(self) -> None:
        """Read each active batch's status once; write or record every item that has just ended."""
        for batch_id, items in list(self.active.items()):
            statuses = {entry["task_id"]: entry for entry in self.server.status(batch_id)["items"]}
            for item in items:
                entry = statuses.get(item.task_id or "", {"status": "FAILURE", "message": "The batch expired"})
                if item.state or entry["status"] not in FINISHED:
                    continue
                if entry["status"] == "SUCCESS":
                    self.save(item)
                else:
                    self.end(item, entry["status"], entry.get("message") or entry["status"].title())
            if all(item.state for item in items):
                del self.active[batch_id]

    def save(self, item: Item) -> None:
        response = self.server.result(item.task_id or "")
        if response.status_code != 200:
            body = _json(response)
            self.end(item, "FAILURE", f"result not available: {body.get('message') or response.status_code}")
            return
        write_atomically(item.output, response.content)
        self.end(item, "SUCCESS")

    def end(self, item: Item, state: str, message: str = "") -> None:
        item.state, item.message = state, message
        if state == "SUCCESS":
            self.tally.written.append(item)
        else:
            self.tally.failed.append(item)
            self.bar.write(
                f"{'cancelled' if state == 'REVOKED' else 'failed'}: {item.source.name}: {message}", file=sys.stderr
            )
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix_str(f"{len(self.tally.written)} written, {len(self.tally.failed)} failed")

    def cancel(self) -> list[str]:
        """Cancel every batch still running; the ids that could not be cancelled."""
        missed = []
        for batch_id in self.active:
            try:
                self.server.cancel(batch_id)
            except httpx.HTTPError:
                missed.append(batch_id)
        self.bar.close()
        return missed


def summary(tally: Tally, skipped: int, output_dir: Path) -> list[str]:
    """The closing lines: counts, then each item that failed or was cancelled, and why."""
    cancelled = [item for item in tally.failed if item.state == "REVOKED"]
    failed = [item for item in tally.failed if item.state != "REVOKED"]
    line = f"Written {len(tally.written)} to {output_dir}, skipped {skipped} (already there), failed {len(failed)}"
    lines = [line + (f", cancelled {len(cancelled)}" if cancelled else "")]
    lines += [f"  failed     {item.source.name}: {item.message}" for item in failed]
    lines += [f"  cancelled  {item.source.name}: {item.message}" for item in cancelled]
    return lines


def shared_files(args: argparse.Namespace) -> tuple[dict[str, tuple[str, bytes]], str]:
    """The images every item shares (by field) and the field the folder's images go in."""
    shared: dict[str, tuple[str, bytes]] = {}
    for option, field_name in (("mask", "mask"), ("source", "image"), ("style_image", "style_image")):
        path: Path | None = getattr(args, option)
        if path is None:
            continue
        try:
            shared[field_name] = (path.name, read_image(path))
        except (OSError, ValueError) as exc:
            raise CommandError(f"--{option.replace('_', '-')} {path}: {exc}") from None
    return shared, "target_image" if args.source is not None else "image"


def plan(args: argparse.Namespace) -> tuple[list[Item], int]:
    """(the items to send, how many were skipped), from the folders named on the command line."""
    if not args.input_dir.is_dir():
        raise CommandError(f"INPUT_DIR {args.input_dir} is not a folder")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise CommandError(f"OUTPUT_DIR {args.output_dir} is a file, not a folder")
    if args.output_dir.exists() and args.output_dir.resolve() == args.input_dir.resolve():
        raise CommandError("OUTPUT_DIR must not be INPUT_DIR: the results would overwrite the images")
    sources = list_inputs(args.input_dir)
    items = [Item(source, args.output_dir / name) for source, name in zip(sources, output_names(sources), strict=True)]
    todo = [item for item in items if not item.output.exists()]
    return todo, len(items) - len(todo)


def run(args: argparse.Namespace) -> int:
    todo, skipped = plan(args)
    if not todo:
        found = f"all {skipped} outputs are in {args.output_dir} already" if skipped else "no images"
        print(f"Nothing to do: {found} ({args.input_dir}: {' '.join(IMAGE_SUFFIXES)})")
        return EXIT_OK
    shared, item_field = shared_files(args)
    fields = {"task_type": args.task_type, "parameters": json.dumps(dict(args.param))}
    if args.prompt is not None:
        fields["prompt"] = args.prompt
    server = Server(args.server, args.token, args.user)
    server.check()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    print(f"{args.task_type}: {len(todo)} to do, {skipped} skipped (already in {args.output_dir}), on {server.url}")
    batch = FolderBatch(server, Submission(fields, shared, item_field), todo, args.chunk_items, args.chunk_mb << 20)
    try:
        batch.run()
    except KeyboardInterrupt:
        missed = batch.cancel()
        left = f"; could not cancel batch {', '.join(missed)}" if missed else ", and cancelled what was left"
        print(f"Interrupted: written {len(batch.tally.written)} to {args.output_dir}{left}. Run again to resume.")
        return EXIT_INTERRUPTED
    except CommandError:
        batch.cancel()
        if batch.accepted:  # some work was done: say what
            print("\n".join(summary(batch.tally, skipped, args.output_dir)))
        raise
    print("\n".join(summary(batch.tally, skipped, args.output_dir)))
    return EXIT_FAILED if batch.tally.failed else EXIT_OK


def main(argv: Iterable[str] | None = None) -> int:
    """The ``batch`` command; returns its exit status."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    # Ctrl-C cancels the batch even where SIGINT came in ignored (a background job of a script).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(args)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before anything was sent
        print("Interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
