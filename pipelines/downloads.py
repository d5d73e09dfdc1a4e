"""Model weights: what each engine uses, and one careful way of fetching a file.

Each engine declares its models (:class:`Model`: name, licence, size; for a file also its
:class:`Source`, the public URL and checksum). The workers' reports, a job's download on first use,
``python app.py download-models`` and the mirror layout all read those declarations.

A file is streamed to ``<file>.part`` (resumed with an HTTP Range when an earlier attempt left one),
verified (sha256 or md5 as its source publishes; a mirror's ``<file>.sha256`` replaces the built-in
checksum) and renamed into place, so a partial or corrupt file is never used. An exclusive lock on
``<file>.lock`` (``fcntl.flock``: between processes and threads alike) makes concurrent jobs wait for
one download, after which they find the file. Imports only the standard library at module level.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from PIL import Image

from pipelines.base import Engine, JobInput, JobOutput, ModelUnavailable, PipelineError, Progress
from settings import Settings

log = logging.getLogger(__name__)
CHUNK = 1 << 20
TIMEOUT = 15.0  # seconds without a byte before a connection counts as dead
ATTEMPTS = 3  # an interrupted download is resumed (or restarted) this many times in all
DOWNLOAD_SHARE = 0.5  # of a job's progress that its downloads on first use take; its work takes the rest
REPORT_EVERY = 0.25  # seconds between progress reports while bytes flow
LOCK_POLL = 0.5  # seconds between looks at a lock another download holds
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
DownloadKind = Literal["auto", "manual", "none"]


@dataclass(frozen=True)
class Transfer:
    """How far one download is: what a job's progress message and a progress bar show."""

    name: str  # what is fetched: "u2net.onnx", "stabilityai/sd-turbo"
    done: int = 0
    total: int | None = None
    waiting: bool = False  # another process or thread holds the file's lock

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def message(self) -> str:
        if self.waiting:
            return f"Waiting for {self.name}: another job is downloading it"
        if not self.total:
            return f"Downloading {self.name} — {megabytes(self.done, self.done)} MB"
        return f"Downloading {self.name} — {megabytes(self.done, self.total)} of {megabytes(self.total, self.total)} MB"


OnTransfer = Callable[[Transfer], None]


def megabytes(value: int, scale: int) -> str:
    """``value`` in MB (10^6 bytes, as release pages count), with decimals only for small ``scale``s."""
    if not scale:
        return "0"
    digits = 0 if scale >= 10e6 else 1 if scale >= 1e6 else 2
    return f"{value / 1e6:.{digits}f}"


class DownloadFailed(PipelineError):
    """A download that did not complete or verify; the message says why and what to do."""


class _Interrupted(Exception):
    """The connection ended early: the .part file stays, the next attempt resumes it."""


@dataclass(frozen=True)
class Source:
    """Where one file comes from: ``url`` at its public source (None: none publishes it), or
    ``<ATELIER_MODEL_MIRROR>/<folder>/<file>`` when a mirror is set."""

    folder: str  # the engine's folder on a mirror: "rembg", "insightface", "lama"
    file: str  # the file's name on a mirror and on disk: "u2net.onnx"
    url: str | None
    sha256: str | None = None
    md5: str | None = None

    def location(self, settings: Settings) -> str | None:
        if settings.model_mirror:
            return f"{settings.model_mirror}/{quote(self.folder)}/{quote(self.file)}"
        return self.url


@dataclass(frozen=True, kw_only=True)
class Model(ABC):
    """One model an engine can use: listed by the reports, fetched on first use and by download-models."""

    name: str  # unique over all engines: "u2net", "buffalo_l", "big-lama", a Hub id
    license: str
    size: int | None = None  # bytes to download, as published (approximate); None: unknown
    default: bool = False  # what the engine uses when a job names no other (download-models fetches these)

    def download_kind(self, settings: Settings) -> DownloadKind:
        """``auto``: fetched on first use; ``manual``: a person provides it; ``none``: nothing to fetch."""
        return "auto"

    @abstractmethod
    def location(self, settings: Settings) -> Path | None:
        """Where the model is on this machine; None while it is missing. Cheap: looks at files only."""

    @abstractmethod
    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        """Download the model (raises :class:`DownloadFailed`, or ModelUnavailable with advice); where it now is."""

    def loaded_key(self, settings: Settings) -> str | None:
        """Its ``load_once`` key in a worker process (the report's "loaded"), if it loads as one."""
        return None

    def size_on_disk(self, settings: Settings) -> int | None:
        path = self.location(settings)
        if path is None:
            return None
        if path.is_file():
            return path.stat().st_size
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


@dataclass(frozen=True, kw_only=True)
class FileModel(Model):
    """A model that is one file from a :class:`Source`, saved at ``target``."""

    source: Source
    hint: str = ""  # where a person gets it, for a file no public source publishes

    @abstractmethod
    def target(self, settings: Settings) -> Path:
        """Where the download goes (and where the engine reads it)."""

    def no_source(self, target: Path) -> DownloadFailed:
        where = f"; {self.hint}" if self.hint else ""
        return DownloadFailed(
            f"{self.source.file} has no public download{where}. Put it at {target}, or serve it from "
            f"ATELIER_MODEL_MIRROR as <mirror>/{self.source.folder}/{self.source.file}"
        )

    def download_kind(self, settings: Settings) -> DownloadKind:
        return "auto" if self.source.location(settings) else "manual"

    def location(self, settings: Settings) -> Path | None:
        path = self.target(settings)
        return path if path.is_file() and path.stat().st_size > 0 else None

    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        target = self.target(settings)
        if self.source.location(settings) is None:
            raise self.no_source(target)
        with exclusive(target.with_name(target.name + ".lock"), self.source.file, on_transfer):
            found = self.location(settings)
            if found is not None:  # another job fetched it while this one waited
                return found
            part = target.with_name(target.name + ".part")
            download(self.source, part, settings, on_transfer)
            self.install(part, target)
        return target

    def install(self, part: Path, target: Path) -> None:
        part.replace(target)  # atomic: an engine never sees half a file


@dataclass(frozen=True, kw_only=True)
class ZipModel(FileModel):
    """A model shipped as a zip (insightface's packs): unpacked into the folder ``target`` names."""

    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        folder = self.target(settings)
        with exclusive(folder.with_name(self.source.file + ".lock"), self.source.file, on_transfer):
            if self.location(settings) is None:
                part = folder.with_name(self.source.file + ".part")
                download(self.source, part, settings, on_transfer)
                unpack(part, folder)
                part.unlink()
        return folder


@dataclass(frozen=True, kw_only=True)
class Builtin(Model):
    """An engine with nothing to fetch (OpenCV, weights inside a pip package): present where ``library`` imports."""

    library: str

    def download_kind(self, settings: Settings) -> DownloadKind:
        return "none"

    def location(self, settings: Settings) -> Path | None:
        import importlib.util

        spec = importlib.util.find_spec(self.library)
        return Path(spec.origin).parent if spec is not None and spec.origin else None

    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        path = self.location(settings)
        if path is None:
            raise DownloadFailed(f"{self.name} comes with the {self.library} package: pip install it")
        return path

    def size_on_disk(self, settings: Settings) -> int | None:
        return None


@contextlib.contextmanager
def exclusive(lock: Path, name: str, on_transfer: OnTransfer) -> Iterator[None]:
    """Hold ``lock`` (an flock); while another holds it, report waiting (which raises once the job is cancelled)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                on_transfer(Transfer(name, waiting=True))
                time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(source: Source, part: Path, settings: Settings, on_transfer: OnTransfer) -> None:
    """Fetch ``source`` into ``part``, complete and verified; raises :class:`DownloadFailed`."""
    url = source.location(settings)
    if url is None:
        raise DownloadFailed(f"{source.file} has no public download")
    from pipelines.diffusion import hub_unreachable  # the fast offline probe (name resolution has no timeout)

    reason = hub_unreachable(url)
    if reason:
        raise DownloadFailed(f"Could not download {source.file} from {url}: {reason}")
    algorithm, expected = expected_checksum(source, settings)
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            digest = stream(url, part, source.file, on_transfer, algorithm)
            break
        except _Interrupted as exc:
            if attempt == ATTEMPTS:
                raise DownloadFailed(
                    f"Could not download {source.file} from {url}: {exc}, {ATTEMPTS} times; "
                    "the part fetched so far is kept, so the next try resumes it"
                ) from None
            log.warning("Download of %s interrupted (%s); resuming", source.file, exc)
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        raise DownloadFailed(
            f"{source.file} from {url} is corrupt: its {algorithm} is {digest}, expected {expected}. "
            "The download was deleted; try again, or check the file on the server"
        )


def expected_checksum(source: Source, settings: Settings) -> tuple[str, str | None]:
    """(algorithm, expected hex digest or None): a mirror's ``<file>.sha256``, else the built-in one."""
    if settings.model_mirror:
        published = mirror_sha256(f"{source.location(settings)}.sha256", source.file)
        if published:
            return "sha256", published
    if source.sha256:
        return "sha256", source.sha256.lower()
    if source.md5:
        return "md5", source.md5.lower()
    return "sha256", None


def mirror_sha256(url: str, name: str) -> str | None:
    """The digest a mirror publishes beside a file, or None when it publishes none (404)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            text = response.read(4096).decode("ascii", "replace").strip()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise DownloadFailed(f"Could not read {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadFailed(f"Could not download {name} from the mirror: {getattr(exc, 'reason', exc)}") from None
    digest = text.split()[0] if text else ""
    if not SHA256.fullmatch(digest):
        raise DownloadFailed(f"{url} should hold a sha256 hex digest (64 hex digits), not {text[:80]!r}")
    return digest.lower()


def stream(url: str, part: Path, name: str, on_transfer: OnTransfer, algorithm: str) -> str:
    """Append the rest of ``url`` to ``part`` (all of it when the server ignores the Range); the file's digest."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is no prefix of this file (or is all of it): start over
            part.unlink()
            raise _Interrupted("the server refused to resume it") from None
        raise DownloadFailed(f"Could not download {name} from {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadFailed(f"Could not download {name} from {url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        resumed = bool(have) and response.status == 206
        digest = hashlib.new(algorithm)
        if resumed:
            with part.open("rb") as earlier:
                for block in iter(lambda: earlier.read(CHUNK), b""):
                    digest.update(block)
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else None
        report = Throttled(on_transfer)
        report(Transfer(name, done, total), force=True)
        with part.open("ab" if resumed else "wb") as out:
            while True:
                try:
                    chunk = response.read1(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Interrupted(
                        f"the connection broke after {megabytes(done, total or done)} MB ({exc})"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                report(Transfer(name, done, total))
            out.flush()
            os.fsync(out.fileno())
    if total is not None and done < total:
        raise _Interrupted(f"the connection closed after {done} of {total} bytes")
    report(Transfer(name, done, total or done), force=True)
    return digest.hexdigest()


class Throttled:
    """``on_transfer`` at most every REPORT_EVERY seconds (each report may cost the job a Redis round trip),
    from one thread at a time (the Hub client downloads files in several)."""

    def __init__(self, on_transfer: OnTransfer) -> None:
        self.on_transfer = on_transfer
        self.last = -REPORT_EVERY
        self.lock = threading.Lock()

    def __call__(self, transfer: Transfer, force: bool = False) -> None:
        with self.lock:
            now = time.monotonic()
            if force or now - self.last >= REPORT_EVERY:
                self.last = now
                self.on_transfer(transfer)


def unpack(archive: Path, folder: Path) -> None:
    """Unzip ``archive`` into ``folder`` (a single top folder named like it is stripped); each file is
    written beside and renamed into place, and paths that would leave the folder are refused."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [info for info in zipped.infolist() if not info.is_dir()]
            tops = {Path(info.filename).parts[0] for info in members}
            strip = len(tops) == 1 and tops == {folder.name} and all(len(Path(i.filename).parts) > 1 for i in members)
            for info in members:
                parts = Path(info.filename).parts[1 if strip else 0 :]
                if not parts or Path(info.filename).is_absolute() or ".." in parts:
                    raise DownloadFailed(f"{archive.name} holds a path outside its folder: {info.filename!r}")
                destination = folder.joinpath(*parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                staging = destination.with_name(destination.name + ".part")
                with zipped.open(info) as source, staging.open("wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                staging.replace(destination)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise DownloadFailed(
            f"{archive.name.removesuffix('.part')} is not a valid zip ({exc}); it was deleted"
        ) from None


# -- a job's download on first use -----------------------------------------------------------------
def run_with_downloads(engine: Engine, job: JobInput, progress: Progress) -> JobOutput:
    """Run ``job`` on ``engine``, first fetching the models it needs that this machine lacks (with
    ATELIER_AUTO_DOWNLOAD). When that fails (offline, say), the engine's own check says what is
    missing and how to provide it, as it would without a download, and the failure is added."""
    settings = job.settings
    if not settings.auto_download:
        return engine.run(job, progress)
    wanted = [
        model
        for model in engine.models_for(job)
        if model.download_kind(settings) == "auto" and model.location(settings) is None
    ]
    if not wanted:
        return engine.run(job, progress)
    try:
        fetch_all(wanted, settings, progress, DOWNLOAD_SHARE)
    except DownloadFailed as failure:
        try:
            return engine.run(job, progress)
        except ModelUnavailable as missing:
            raise ModelUnavailable(f"{missing} (The download on first use failed: {failure})") from None
    return engine.run(job, scaled(progress, DOWNLOAD_SHARE, 1.0))


def fetch_all(models: list[Model], settings: Settings, progress: Progress, end: float) -> None:
    """Fetch ``models`` one after the other, their progress spanning 0 to ``end`` of ``progress`` by size."""
    sizes = [model.size or 1 for model in models]
    start = 0.0
    for model, size in zip(models, sizes, strict=True):
        span = end * size / sum(sizes)

        def on_transfer(transfer: Transfer, start: float = start, span: float = span) -> None:
            progress(start + span * transfer.fraction, transfer.message())

        model.fetch(settings, on_transfer)
        start += span


def scaled(progress: Progress, start: float, end: float) -> Progress:
    """``progress`` with the fractions 0-1 mapped onto ``start``-``end``."""

    def report(fraction: float, message: str, preview: Image.Image | None = None) -> None:
        progress(start + (end - start) * fraction, message, preview)

    return report
