"""The diffusion engines in-process, on the tiny random pipeline loaded through the real code path."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import OPERATIONS
from pipelines.base import JobInput, ModelUnavailable, PipelineError
from pipelines.diffusion import (
    StepProgress,
    hub_unreachable,
    latents_preview,
    load_model,
    locate_model,
    native_bf16,
    pipeline_key,
)
from pipelines.image_generation import ImageGenerationParameters, generate_image
from pipelines.models import load_counts
from pipelines.object_removal import ObjectRemovalParameters, remove_object
from pipelines.style_transfer import StyleTransferParameters, transfer_style
from settings import Settings, get_settings
from tests.support.tiny_diffusion import build_tiny_pipeline


@pytest.fixture(scope="module", autouse=True)
def tiny_sd() -> Path:
    return build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))


class Recorder:
    """A progress callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, Image.Image | None]] = []

    def __call__(self, fraction: float, message: str, preview: Image.Image | None = None) -> None:
        self.calls.append((fraction, message, preview))


def generate(
    prompt: str = "a lighthouse at dusk", progress: Any = None, settings: Settings | None = None, **parameters: Any
) -> Any:
    params = ImageGenerationParameters(**{"width": 64, "height": 64, "steps": 2, **parameters})
    job = JobInput(images={}, parameters=params, prompt=prompt, settings=settings or get_settings())
    return generate_image(job, progress or Recorder())


@pytest.mark.parametrize(("width", "height"), [(64, 64), (128, 72), (200, 96)])
def test_output_size_is_the_requested_size(width: int, height: int) -> None:
    output = generate(width=width, height=height, seed=1)
    assert output.image.size == (width, height)
    assert output.image.mode == "RGB"
    assert np.asarray(output.image).std() > 1  # an actual picture, not a blank


def test_same_seed_same_image_other_seed_other_image() -> None:
    first, again, other = generate(seed=42), generate(seed=42), generate(seed=43)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert first.metadata["seed"] == 42
    assert generate(seed=42, prompt="something else entirely").image.tobytes() != first.image.tobytes()


def test_unset_seed_is_picked_and_reported() -> None:
    output = generate()
    seed = output.metadata["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert generate(seed=seed).image.tobytes() == output.image.tobytes()


def test_metadata_names_engine_model_and_timings(tiny_sd: Path) -> None:
    output = generate(seed=3)
    meta = output.metadata
    assert meta["engine"] == "diffusers"
    assert meta["model"] == str(tiny_sd)
    assert meta["device"] == "cpu" and meta["dtype"] == ("bfloat16" if native_bf16() else "float32")
    assert meta["decoder"] == "full"  # no TAESD in the test models folder: the model's own VAE
    assert set(meta["timings"]) == {"load", "run"} and meta["timings"]["run"] > 0
    assert meta["steps"] == 2
    assert output.prompt_used == "a lighthouse at dusk"


def test_several_images_come_as_a_grid_with_their_seeds() -> None:
    output = generate(seed=10, num_images=2)
    assert output.image.size == (128, 64)
    assert output.metadata["seeds"] == [10, 11]
    assert output.metadata["grid"] == {"columns": 2, "rows": 1}
    # Each tile is the image its own seed gives alone (batching changes float rounding only).
    alone = np.asarray(generate(seed=11).image, dtype=np.int16)
    tile = np.asarray(output.image.crop((64, 0, 128, 64)), dtype=np.int16)
    assert np.abs(alone - tile).mean() < 2
    four = generate(seed=10, num_images=4)
    assert four.image.size == (128, 128) and four.metadata["seeds"] == [10, 11, 12, 13]


def test_progress_counts_steps_with_previews() -> None:
    recorder = Recorder()
    generate(steps=5, seed=0, progress=recorder)
    fractions = [fraction for fraction, _, _ in recorder.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    steps = [message for _, message, _ in recorder.calls if "step" in message]
    assert steps == [f"Generating image — step {i}/5" for i in range(1, 6)]
    previews = [preview for _, message, preview in recorder.calls if "step" in message]
    assert previews[0] is not None and previews[0].size == (8, 8)  # latent size: 64 / 8
    assert all(preview is not None for preview in previews)


def test_previews_are_throttled() -> None:
    bridge = StepProgress(Recorder(), "Generating image")
    latents = {"latents": __import__("torch").zeros(1, 4, 8, 8)}

    class Pipe:
        num_timesteps = 50

    for step in range(50):
        bridge(Pipe(), step, 0, latents)
    assert bridge.previews == 1  # 50 fast steps: one new preview, then at most ~4 a second
    assert bridge.steps == 50


def test_latent_preview_maps_channels_to_colours() -> None:
    import torch

    latents = torch.zeros(1, 4, 4, 6)
    latents[0, 1] = 1.0  # the channel that weighs most on green
    preview = latents_preview(latents)
    assert preview is not None and preview.size == (6, 4)
    red, green, blue = np.asarray(preview)[0, 0]
    assert green > red and green > blue
    assert latents_preview(torch.zeros(1, 16, 4, 4)) is None  # another latent space: no preview


def test_cancel_stops_the_pipeline_at_the_next_step() -> None:
    from pipelines.base import JobCancelled

    calls = []

    def cancelling(fraction: float, message: str, preview: Image.Image | None = None) -> None:
        calls.append(message)
        if "step 2/" in message:
            raise JobCancelled("job")

    with pytest.raises(JobCancelled):
        generate(steps=20, seed=0, progress=cancelling)
    assert calls[-1] == "Generating image — step 2/20"


def test_style_and_inpainting_share_the_one_loaded_model(photo: Image.Image, tiny_sd: Path) -> None:
    settings = get_settings()
    key = pipeline_key(settings)
    assert str(tiny_sd) in key
    generate(seed=5)
    model = load_model(settings)
    small = photo.resize((120, 80))
    styled = transfer_style(
        JobInput(
            images={"image": small},
            parameters=StyleTransferParameters(style="mosaic", engine="diffusion"),
            settings=settings,
        ),
        Recorder(),
    )
    mask = Image.new("L", small.size, 0)
    ImageDraw.Draw(mask).rectangle((40, 20, 80, 60), fill=255)
    removed = remove_object(
        JobInput(
            images={"image": small, "mask": mask},
            parameters=ObjectRemovalParameters(engine="diffusion"),
            settings=settings,
        ),
        Recorder(),
    )
    assert load_counts[key] == 1
    assert styled.metadata["model_loads_in_process"] == removed.metadata["model_loads_in_process"] == 1
    assert model.image_to_image().unet is model.text_to_image.unet
    assert model.inpainting().vae is model.text_to_image.vae
    assert model.image_to_image() is model.image_to_image()  # built once, then reused

    assert styled.image.size == small.size and styled.metadata["engine"] == "diffusion"
    assert styled.prompt_used == "mosaic style artwork"
    assert removed.image.size == small.size and removed.prompt_used == "background"
    before, after = np.asarray(small, dtype=np.int16), np.asarray(removed.image, dtype=np.int16)
    outside = np.ones(before.shape[:2], bool)
    outside[15:66, 35:86] = False  # the mask plus its soft seam of 5 px
    assert np.array_equal(before[outside], after[outside])
    assert np.abs(before[25:55, 45:75] - after[25:55, 45:75]).mean() > 5  # the masked area was repainted


def test_diffusion_style_needs_a_prompt_or_preset(photo: Image.Image) -> None:
    params = StyleTransferParameters(engine="diffusion")
    images = {"image": photo.resize((64, 64)), "style_image": photo}
    job = JobInput(images=images, parameters=params, settings=get_settings())
    with pytest.raises(PipelineError, match=r"style preset .* or a prompt"):
        transfer_style(job, Recorder())
    prompted = transfer_style(JobInput(job.images, params, prompt="a watercolour", settings=job.settings), Recorder())
    assert prompted.prompt_used == "a watercolour"


def test_object_removal_takes_a_prompt_now() -> None:
    assert OPERATIONS["object_removal"].prompt == "optional"


def test_missing_hub_model_fails_fast_and_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never touch the network in tests
    hub_model = get_settings().model_copy(update={"generation_model": "stabilityai/sd-turbo"})
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as error:
        generate(seed=1, settings=hub_model)
    assert time.monotonic() - started < 10  # not the Hub client's ~20 s of retries
    message = str(error.value)
    assert "'stabilityai/sd-turbo'" in message
    assert "ATELIER_GENERATION_MODEL" in message and "download-models" in message
    assert "Traceback" not in message
    assert load_counts[pipeline_key(hub_model)] == 0  # a failed load is not cached


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"folder .*nowhere does not exist"):
        locate_model(str(tmp_path / "nowhere"), get_settings())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"no model_index\.json"):
        locate_model(str(tmp_path / "empty"), get_settings())


def test_unreachable_hub_is_reported_not_waited_for() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reason = hub_unreachable(f"http://127.0.0.1:{port}", timeout=2)
    assert reason is not None and f"127.0.0.1:{port}" in reason
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=2) is None
