"""Downloading model files against a loopback mirror (tests/support/mirror.py): in place whole or not at
all, verified, resumed, cancelled, once for concurrent callers, fast offline; and a job's first-use download."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipelines.base import Engine, JobCancelled, JobInput, JobOutput, ModelUnavailable, Progress
from pipelines.downloads import (
    DownloadFailed,
    FileModel,
    Model,
    Source,
    Transfer,
    ZipModel,
    run_with_downloads,
)
from settings import Settings, get_settings
from tests.support.mirror import Mirror, dead_address, serving_mirror

PAYLOAD = bytes(range(256)) * 400  # 100 kB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Weights(FileModel):
    def target(self, settings: Settings) -> Path:
        return settings.models_dir / "demo" / self.source.file


@dataclass(frozen=True, kw_only=True)
class Pack(ZipModel):
    def target(self, settings: Settings) -> Path:
        return settings.models_dir / "packs" / self.name

    def location(self, settings: Settings) -> Path | None:
        folder = self.target(settings)
        return folder if (folder / "a.onnx").is_file() else None


def weights(name: str = "demo.bin", **checksum: str) -> Weights:
    source = Source("demo", name, "https://example.invalid/demo.bin", **({"md5": MD5} | checksum))
    return Weights(name=name, license="MIT", size=len(PAYLOAD), default=True, source=source)


@pytest.fixture
def mirror() -> Any:
    with serving_mirror() as served:
        yield served


def settings_for(tmp_path: Path, url: str, **changes: Any) -> Settings:
    return get_settings().model_copy(update={"models_dir": tmp_path, "model_mirror": url, **changes})


def test_transfer_messages() -> None:
    assert Transfer("u2net.onnx", 45_300_000, 176_000_000).message() == "Downloading u2net.onnx — 45 of 176 MB"
    assert Transfer("u2netp.onnx", 1_250_000, 4_600_000).message() == "Downloading u2netp.onnx — 1.2 of 4.6 MB"
    assert Transfer("x.pt", waiting=True).message() == "Waiting for x.pt: another job is downloading it"


def test_a_download_lands_whole_with_its_progress(tmp_path: Path, mirror: Mirror) -> None:
    mirror.put("demo/demo.bin", PAYLOAD, pieces=4, delay=0.15)
    seen: list[Transfer] = []
    path = weights().fetch(settings_for(tmp_path, mirror.url), seen.append)
    assert path == tmp_path / "demo" / "demo.bin" and path.read_bytes() == PAYLOAD
    assert not path.with_name("demo.bin.part").exists()
    done = [transfer.done for transfer in seen]
    assert done == sorted(done) and len(set(done)) >= 3 and seen[-1].fraction == 1.0
    assert seen[-1].message() == "Downloading demo.bin — 0.10 of 0.10 MB"


def test_a_corrupt_download_is_refused_and_deleted(tmp_path: Path, mirror: Mirror) -> None:
    mirror.put("demo/demo.bin", PAYLOAD[:-1] + b"!")
    with pytest.raises(DownloadFailed, match=r"demo.bin from .* is corrupt: its md5 is \w+, expected " + MD5):
        weights().fetch(settings_for(tmp_path, mirror.url), lambda transfer: None)
    assert sorted(path.name for path in (tmp_path / "demo").iterdir()) == ["demo.bin.lock"]


def test_a_mirrors_checksum_replaces_the_built_in_one(tmp_path: Path, mirror: Mirror) -> None:
    settings = settings_for(tmp_path, mirror.url)
    mirror.put("demo/own.bin", PAYLOAD)  # the mirror's own build: not what the built-in md5 says
    mirror.put("demo/own.bin.sha256", f"{hashlib.sha256(PAYLOAD).hexdigest()}  own.bin\n".encode())
    assert weights("own.bin", md5="0" * 32).fetch(settings, lambda transfer: None).read_bytes() == PAYLOAD
    mirror.put("demo/bad.bin", PAYLOAD)
    mirror.put("demo/bad.bin.sha256", b"f" * 64)
    with pytest.raises(DownloadFailed, match="its sha256 is"):
        weights("bad.bin").fetch(settings, lambda transfer: None)


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path: Path, mirror: Mirror) -> None:
    half = len(PAYLOAD) // 2
    mirror.put("demo/demo.bin", PAYLOAD, break_after=half)
    path = weights().fetch(settings_for(tmp_path, mirror.url), lambda transfer: None)
    assert path.read_bytes() == PAYLOAD and mirror.requests["demo/demo.bin"] == 2
    assert mirror.ranges == [f"bytes={half}-"]


def test_an_interrupted_download_restarts_cleanly_without_range_support(tmp_path: Path, mirror: Mirror) -> None:
    mirror.honour_range = False
    mirror.put("demo/demo.bin", PAYLOAD, break_after=len(PAYLOAD) // 3)
    path = weights().fetch(settings_for(tmp_path, mirror.url), lambda transfer: None)
    assert path.read_bytes() == PAYLOAD and mirror.requests["demo/demo.bin"] == 2


def test_a_cancelled_download_stops_and_a_later_one_resumes_it(tmp_path: Path, mirror: Mirror) -> None:
    mirror.put("demo/demo.bin", PAYLOAD, pieces=10, delay=0.2)
    settings = settings_for(tmp_path, mirror.url)

    def cancel_once_started(transfer: Transfer) -> None:
        if transfer.done:
            raise JobCancelled("job-1")

    started = time.monotonic()
    with pytest.raises(JobCancelled):
        weights().fetch(settings, cancel_once_started)
    assert time.monotonic() - started < 1.5  # not the 2 s the whole file takes
    part = tmp_path / "demo" / "demo.bin.part"
    kept = part.stat().st_size
    assert not (tmp_path / "demo" / "demo.bin").exists() and 0 < kept < len(PAYLOAD)
    mirror.put("demo/demo.bin", PAYLOAD)
    assert weights().fetch(settings, lambda transfer: None).read_bytes() == PAYLOAD  # the lock was let go
    assert mirror.ranges == [f"bytes={kept}-"]


def test_concurrent_callers_wait_for_one_download(tmp_path: Path, mirror: Mirror) -> None:
    mirror.put("demo/demo.bin", PAYLOAD, pieces=5, delay=0.1)
    settings = settings_for(tmp_path, mirror.url)
    seen: list[list[Transfer]] = [[], []]
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(weights().fetch(settings, seen[i].append))) for i in (0, 1)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(10)
    assert len(results) == 2 and all(path.read_bytes() == PAYLOAD for path in results)
    assert mirror.requests["demo/demo.bin"] == 1
    assert any(transfer.waiting for transfer in seen[1])


def test_offline_fails_within_seconds(tmp_path: Path) -> None:
    with dead_address() as url:
        started = time.monotonic()
        with pytest.raises(
            DownloadFailed, match=rf"Could not download demo.bin from {url}/demo/demo.bin: cannot reach"
        ):
            weights().fetch(settings_for(tmp_path, url), lambda transfer: None)
    assert time.monotonic() - started < 3
    assert not (tmp_path / "demo" / "demo.bin").exists()


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_is_unpacked_into_its_folder_and_a_hostile_one_refused(tmp_path: Path, mirror: Mirror) -> None:
    settings = settings_for(tmp_path, mirror.url)
    mirror.put("demo/pack.zip", zipped({"pack/a.onnx": b"a", "pack/b.onnx": b"b"}))
    pack = Pack(name="pack", license="MIT", source=Source("demo", "pack.zip", None))
    folder = pack.fetch(settings, lambda transfer: None)
    assert sorted(path.name for path in folder.iterdir()) == ["a.onnx", "b.onnx"]
    assert not (folder.parent / "pack.zip.part").exists()
    mirror.put("demo/evil.zip", zipped({"../../a.onnx": b"x"}))
    evil = Pack(name="evil", license="MIT", source=Source("demo", "evil.zip", None))
    with pytest.raises(DownloadFailed, match="holds a path outside its folder"):
        evil.fetch(settings, lambda transfer: None)
    assert not (tmp_path / "a.onnx").exists()


class NeedsWeights(Engine):
    """An engine whose one model is ``weights()``: its check fails with its own message while missing."""

    name = "needs-weights"

    def models(self, settings: Settings) -> list[Model]:
        return [weights()]

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        if weights().location(job.settings) is None:
            raise ModelUnavailable("demo.bin is missing: run `python app.py download-models demo.bin`")
        progress(0.0, "Loading")
        progress(1.0, "Done")
        return JobOutput(Image.new("RGB", (8, 8)))


def run_job(settings: Settings) -> list[tuple[float, str]]:
    steps: list[tuple[float, str]] = []
    job = JobInput(images={}, parameters=None, settings=settings)
    run_with_downloads(NeedsWeights(), job, lambda fraction, message, preview=None: steps.append((fraction, message)))
    return steps


def test_a_job_downloads_what_it_lacks_first_with_progress(tmp_path: Path, mirror: Mirror) -> None:
    mirror.put("demo/demo.bin", PAYLOAD, pieces=4, delay=0.15)
    steps = run_job(settings_for(tmp_path, mirror.url))
    downloading = [(fraction, message) for fraction, message in steps if message.startswith("Downloading demo.bin")]
    fractions = [fraction for fraction, _ in downloading]
    assert len(set(fractions)) >= 3 and fractions == sorted(fractions) and max(fractions) == 0.5
    assert steps[-2:] == [(0.5, "Loading"), (1.0, "Done")]  # the work takes the rest of the bar
    assert run_job(settings_for(tmp_path, mirror.url)) == [(0.0, "Loading"), (1.0, "Done")]  # there now


def test_offline_a_job_fails_fast_with_the_engines_own_message(tmp_path: Path) -> None:
    with dead_address() as url:
        started = time.monotonic()
        with pytest.raises(ModelUnavailable) as caught:
            run_job(settings_for(tmp_path, url))
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert message.startswith("demo.bin is missing: run `python app.py download-models demo.bin`")
    assert "(The download on first use failed: Could not download demo.bin" in message


def test_without_auto_download_nothing_is_fetched(tmp_path: Path, mirror: Mirror) -> None:
    mirror.put("demo/demo.bin", PAYLOAD)
    with pytest.raises(ModelUnavailable, match=r"demo\.bin is missing"):
        run_job(settings_for(tmp_path, mirror.url, auto_download=False))
    assert not mirror.requests
