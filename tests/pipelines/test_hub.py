"""The generation model as a model to fetch: its download's bytes, as the Hub client reports them to a tqdm
class, become the job's "Downloading <model> — x of y MB". The Hub itself is stood in for at the one
function diffusers calls (snapshot_download): tests never touch the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.downloads import Transfer
from pipelines.hub import HubModel, generation_model, hub_progress, transfer_tqdm
from settings import get_settings


def model_folder(path: Path) -> Path:
    """A diffusers folder as far as finding it goes (nothing here loads it)."""
    path.mkdir(parents=True)
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return path


def fake_snapshot_download(folder: Path, sizes: list[int]) -> Any:
    """What huggingface_hub's snapshot_download does with a tqdm_class: one byte bar summed over the
    files it fetches (total growing as files start), then the snapshot's folder."""

    def snapshot_download(repo_id: str, cache_dir: Any = None, tqdm_class: Any = None, **kwargs: Any) -> str:
        assert tqdm_class is not None, "diffusers' download got no tqdm_class"
        transfer = tqdm_class(desc="Downloading bytes", total=0, unit="B", unit_scale=True)
        bar = tqdm_class(desc="Reconstructing (incomplete total...)", total=0, unit="B", unit_scale=True)
        for size in sizes:
            bar.total += size
            transfer.total += size
            for _ in range(4):
                bar.update(size // 4)
        return str(folder)

    return snapshot_download


def test_transfer_bars_report_the_bytes_of_the_one_bar_that_counts_them() -> None:
    seen: list[Transfer] = []
    bar_class = transfer_tqdm("org/model", seen.append)
    other = bar_class(desc="Downloading bytes", total=10, unit="B")
    other.update(5)
    bar = bar_class(desc="Reconstructing (incomplete total...)", total=300_000_000, unit="B")
    bar.update(120_000_000)
    assert seen == [Transfer("org/model", 120_000_000, 300_000_000)]
    assert seen[0].message() == "Downloading org/model — 120 of 300 MB"


def test_a_hub_download_reports_progress_through_diffusers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import DiffusionPipeline
    from diffusers.pipelines import pipeline_utils

    import pipelines.diffusion

    snapshot = model_folder(tmp_path / "snapshot")
    fake = fake_snapshot_download(snapshot, [40_000_000] * 3)
    monkeypatch.setattr(pipeline_utils, "snapshot_download", fake)
    monkeypatch.setattr(pipelines.diffusion, "hub_unreachable", lambda endpoint: None)

    def download(name: str, cache_dir: Any = None, local_files_only: bool = False, **kwargs: Any) -> str:
        if local_files_only:
            raise OSError("not cached")
        return str(pipeline_utils.snapshot_download(name, cache_dir=cache_dir))  # as diffusers' download does

    monkeypatch.setattr(DiffusionPipeline, "download", download)
    settings = get_settings().model_copy(update={"models_dir": tmp_path, "generation_model": "org/model"})
    seen: list[Transfer] = []
    with monkeypatch.context() as quick:
        quick.setattr("pipelines.downloads.REPORT_EVERY", 0.0)
        assert generation_model(settings).fetch(settings, seen.append) == snapshot
    done = [transfer.done for transfer in seen]
    assert done == sorted(done) and seen[-1] == Transfer("org/model", 120_000_000, 120_000_000)
    assert "Downloading org/model — 10 of 40 MB" in [transfer.message() for transfer in seen]
    assert pipeline_utils.snapshot_download is fake  # as it was before the download


def test_hub_progress_puts_diffusers_back_as_it_was() -> None:
    from diffusers.pipelines import pipeline_utils

    before = pipeline_utils.snapshot_download
    with hub_progress(object), pytest.raises(RuntimeError):
        assert pipeline_utils.snapshot_download.keywords == {"tqdm_class": object}  # type: ignore[attr-defined]
        raise RuntimeError("a failed download")
    assert pipeline_utils.snapshot_download is before


def test_a_local_folder_is_never_fetched_and_a_hub_id_is(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "mine")
    settings = get_settings()
    assert HubModel(name=str(folder), license="x").download_kind(settings) == "manual"
    assert HubModel(name=str(folder), license="x").location(settings) == folder
    assert HubModel(name=str(tmp_path / "absent"), license="x").location(settings) is None
    hub = HubModel(name="stabilityai/sd-turbo", license="x")
    assert (
        hub.download_kind(settings) == "auto"
        and hub.location(settings.model_copy(update={"models_dir": tmp_path})) is None
    )
    (folder / "README.md").write_text("---\nlicense: other\nlicense_name: sai-nc-community\n---\n# Mine\n")
    assert generation_model(settings.model_copy(update={"generation_model": str(folder)})).license == "sai-nc-community"
