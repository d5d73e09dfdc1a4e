"""The generation model as a :class:`~pipelines.downloads.Model`: a Hub id fetched into the Hub cache
(through ``HF_ENDPOINT`` when a mirror is set), or a local diffusers folder, which is never fetched.

The Hub client reports bytes through a tqdm class; :func:`transfer_tqdm` turns its bars into
:class:`~pipelines.downloads.Transfer` reports (a job's progress message, a command's progress bar).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.downloads import DownloadKind, Model, OnTransfer, Throttled, Transfer
from settings import Settings

_patching = threading.Lock()
LICENSE_LINE = re.compile(r"^license(?:_name)?:\s*(\S.*)$", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class HubModel(Model):
    """``settings.generation_model``: shared by every diffusion engine, so fetched once for all."""

    def download_kind(self, settings: Settings) -> DownloadKind:
        from pipelines.diffusion import _looks_like_path

        return "manual" if _looks_like_path(self.name) or Path(self.name).expanduser().is_dir() else "auto"

    def location(self, settings: Settings) -> Path | None:
        from pipelines.diffusion import _looks_like_path, hub_cache

        folder = Path(self.name).expanduser()
        if folder.is_dir() or _looks_like_path(self.name):
            return folder if (folder / "model_index.json").is_file() else None
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(self.name, "model_index.json", cache_dir=hub_cache(settings))
        return Path(index).parent if isinstance(index, str) else None

    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        from pipelines.diffusion import DOWNLOAD_ADVICE, locate_model

        bridge = transfer_tqdm(self.name, on_transfer)
        return Path(locate_model(self.name, settings, download=True, advice=DOWNLOAD_ADVICE, tqdm_class=bridge))

    def loaded_key(self, settings: Settings) -> str | None:
        from pipelines.diffusion import pipeline_key

        return pipeline_key(settings) if self.name == settings.generation_model else None


def generation_model(settings: Settings) -> HubModel:
    key = (settings.generation_model, str(settings.models_dir))
    license = _licenses.get(key) or hub_license(settings)
    if not license.startswith("see "):  # found in its model card: it will not change
        _licenses[key] = license
    return HubModel(name=settings.generation_model, license=license, default=True)


_licenses: dict[tuple[str, str], str] = {}


def hub_license(settings: Settings) -> str:
    """The licence its model card names, when the card is here; else where to read it."""
    model = settings.generation_model
    folder = Path(model).expanduser()
    card: Path | None = folder / "README.md" if folder.is_dir() else None
    if card is None and "/" in model and not model.startswith((".", "/", "~")):
        from pipelines.diffusion import hub_cache

        with contextlib.suppress(Exception):  # a malformed id: the card is simply not found
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "README.md", cache_dir=hub_cache(settings))
            card = Path(cached) if isinstance(cached, str) else None
    if card is not None and card.is_file():
        found = LICENSE_LINE.findall(card.read_text(errors="replace")[:4000])
        if found:
            return str(found[-1]).strip()  # license_name, when present, names an "other" licence
    return "see its model card" if folder.is_dir() else f"see https://huggingface.co/{model}"


class _NoOutput:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def transfer_tqdm(name: str, on_transfer: OnTransfer) -> type:
    """A tqdm class for huggingface_hub's ``tqdm_class``: its byte bar (the sum over the files it
    fetches, in several threads) reported as one :class:`Transfer` of ``name``; nothing printed."""
    from tqdm import tqdm

    report = Throttled(on_transfer)

    class TransferBar(tqdm):  # type: ignore[misc]  # tqdm ships no types
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = _NoOutput()
            self.counts_bytes = kwargs.get("unit") == "B" and kwargs.get("desc") != "Downloading bytes"
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if self.counts_bytes:  # the other B bar counts the same bytes again, as they arrive (xet)
                report(Transfer(name, int(self.n), int(self.total) if self.total else None))
            return shown

    return TransferBar


@contextlib.contextmanager
def hub_progress(tqdm_class: type | None) -> Iterator[None]:
    """Hand ``tqdm_class`` to the snapshot_download that diffusers' ``DiffusionPipeline.download``
    calls (diffusers 0.42 passes none on): for the length of one download, one at a time."""
    if tqdm_class is None:
        yield
        return
    from diffusers.pipelines import pipeline_utils

    namespace = vars(pipeline_utils)  # the module's globals: where its DiffusionPipeline.download looks the name up
    with _patching:
        original = namespace["snapshot_download"]
        namespace["snapshot_download"] = functools.partial(original, tqdm_class=tqdm_class)
        try:
            yield
        finally:
            namespace["snapshot_download"] = original
