"""Generation on a CPU: the bfloat16 choice, the tiny decoder (TAESD) and what they change, on tiny models."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import diffusion
from pipelines.base import JobInput, ModelUnavailable, no_progress
from pipelines.diffusion import (
    TinyDecoder,
    cpu_flags,
    decoder_for,
    decoder_models,
    load_model,
    model_family,
    torch_dtype,
)
from pipelines.downloads import DownloadFailed
from pipelines.image_generation import ImageGenerationParameters, generate_image
from pipelines.inventory import find_models
from pipelines.object_removal import ObjectRemovalParameters, remove_object
from pipelines.style_transfer import StyleTransferParameters, transfer_style
from settings import Settings, get_settings
from tests.support.tiny_diffusion import build_tiny_autoencoder, build_tiny_pipeline, put_in_hub_cache

# bfloat16 keeps 8 bits of mantissa: on the tiny model its pictures differ from float32's by about
# 0.1-0.5 levels of 255 on average (measured), a few levels at most.
BF16_MEAN_TOLERANCE = 1.5
BF16_MAX_TOLERANCE = 12


@pytest.fixture(scope="module")
def tiny_sd() -> Path:
    return build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))


@pytest.fixture(scope="module")
def tiny_taesd() -> Path:
    return build_tiny_autoencoder(get_settings().models_dir / "tiny-taesd")


def configured(tiny_sd: Path, **update: Any) -> Settings:
    return get_settings().model_copy(update={"generation_model": str(tiny_sd), **update})


def generate(settings: Settings, seed: int = 7, size: int = 64) -> Any:
    params = ImageGenerationParameters(width=size, height=size, steps=2, seed=seed)
    return generate_image(JobInput(images={}, parameters=params, prompt="a lighthouse", settings=settings), no_progress)


def test_cpu_flags_say_where_bfloat16_is_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    assert {"avx512_bf16", "sse2"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "none") == frozenset()  # no /proc (macOS): no native bfloat16 assumed

    auto = get_settings().model_copy(update={"generation_dtype": "auto"})
    assert str(torch_dtype(auto, "cuda")) == "torch.float16"
    for native, expected in ((True, "torch.bfloat16"), (False, "torch.float32")):
        monkeypatch.setattr(diffusion, "native_bf16", lambda native=native: native)
        assert str(torch_dtype(auto, "cpu")) == expected
    chosen = auto.model_copy(update={"generation_dtype": "float32"})
    assert str(torch_dtype(chosen, "cpu")) == "torch.float32"  # an explicit dtype is kept


@pytest.mark.parametrize("decoder", ["full", "tiny"])
def test_bfloat16_pictures_match_float32_within_tolerance(tiny_sd: Path, tiny_taesd: Path, decoder: str) -> None:
    choice = str(tiny_taesd) if decoder == "tiny" else "full"
    images = {}
    for dtype in ("float32", "bfloat16"):
        output = generate(configured(tiny_sd, generation_dtype=dtype, generation_decoder=choice), seed=11)
        assert output.metadata["dtype"] == dtype
        images[dtype] = np.asarray(output.image, dtype=np.float64)
    difference = np.abs(images["bfloat16"] - images["float32"])
    assert images["float32"].std() > 1  # a picture, not a blank
    assert difference.mean() < BF16_MEAN_TOLERANCE, difference.mean()
    assert difference.max() <= BF16_MAX_TOLERANCE, difference.max()


def test_a_tiny_decoder_folder_decodes_and_encodes_for_every_engine(
    tiny_sd: Path, tiny_taesd: Path, photo: Image.Image
) -> None:
    from diffusers import AutoencoderTiny

    settings = configured(tiny_sd, generation_decoder=str(tiny_taesd), generation_dtype="bfloat16")
    output = generate(settings, size=72)
    assert output.image.size == (72, 72) and np.asarray(output.image).std() > 1
    assert output.metadata["decoder"] == str(tiny_taesd) and output.metadata["dtype"] == "bfloat16"

    model = load_model(settings)
    import torch

    # img2img and inpainting are from_pipe views: the same tiny autoencoder, in the same dtype.
    for view in (model.text_to_image, model.image_to_image(), model.inpainting()):
        assert isinstance(view.vae, AutoencoderTiny) and view.vae is model.text_to_image.vae
        assert view.vae.dtype == view.unet.dtype == torch.bfloat16
    small = photo.resize((96, 64))
    styled = transfer_style(
        JobInput({"image": small}, StyleTransferParameters(style="mosaic", engine="diffusion"), settings=settings),
        no_progress,
    )
    mask = Image.new("L", small.size, 0)
    ImageDraw.Draw(mask).rectangle((30, 16, 60, 48), fill=255)
    removed = remove_object(
        JobInput({"image": small, "mask": mask}, ObjectRemovalParameters(engine="diffusion"), settings=settings),
        no_progress,
    )
    for result in (styled, removed):
        assert result.image.size == small.size
        assert result.metadata["decoder"] == str(tiny_taesd) and result.metadata["dtype"] == "bfloat16"
    assert np.abs(np.asarray(styled.image, dtype=int) - np.asarray(small, dtype=int)).mean() > 1  # repainted


def test_auto_takes_the_family_taesd_from_the_hub_cache_on_the_cpu_only(
    tiny_sd: Path, tiny_taesd: Path, tmp_path: Path
) -> None:
    settings = configured(tiny_sd, models_dir=tmp_path)
    assert model_family(settings) == "sd"
    assert decoder_for(settings, "cpu") is None  # not here yet: the model's own VAE
    put_in_hub_cache(tiny_taesd, tmp_path / "huggingface", "madebyollin/taesd")
    assert decoder_for(settings, "cpu") == "madebyollin/taesd"
    assert decoder_for(settings, "cuda") is None  # on a GPU the full VAE costs little
    assert decoder_for(settings.model_copy(update={"generation_decoder": "full"}), "cpu") is None
    assert generate(settings).metadata["decoder"] == "madebyollin/taesd"


def test_the_decoder_is_declared_for_downloads(tiny_sd: Path, tmp_path: Path) -> None:
    settings = configured(tiny_sd, models_dir=tmp_path)
    (taesd,) = decoder_models(settings)
    assert (taesd.name, taesd.license, taesd.download_kind(settings)) == ("madebyollin/taesd", "MIT", "auto")
    assert taesd.default and taesd.location(settings) is None  # fetched on first use on this (CPU) machine
    assert "madebyollin/taesd" in [model.name for model in find_models([], settings)]  # download-models
    assert decoder_models(settings.model_copy(update={"generation_decoder": "full"})) == []
    assert decoder_models(settings.model_copy(update={"generation_model": "stabilityai/sdxl-turbo"}))[0].name == (
        "madebyollin/taesdxl"
    )
    (folder,) = decoder_models(settings.model_copy(update={"generation_decoder": str(tmp_path / "mine")}))
    assert folder.download_kind(settings) == "manual"


def test_model_family_comes_from_the_pipeline_class(tmp_path: Path) -> None:
    def family(pipeline: str) -> str | None:
        folder = tmp_path / pipeline
        folder.mkdir()
        (folder / "model_index.json").write_text(f'{{"_class_name": "{pipeline}"}}')
        return model_family(get_settings().model_copy(update={"generation_model": str(folder)}))

    assert family("StableDiffusionPipeline") == "sd"
    assert family("StableDiffusionXLPipeline") == "sdxl"
    assert family("StableDiffusion3Pipeline") is None  # 16-channel latents: no TAESD of ours
    assert family("FluxPipeline") is None


def test_a_missing_decoder_fails_fast_and_says_how_to_fix(
    tiny_sd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diffusion, "_decoder_fetch_failed", {})
    named = configured(tiny_sd, models_dir=tmp_path, generation_decoder="madebyollin/taesd")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as error:
        generate(named)
    message = str(error.value)
    assert "'madebyollin/taesd'" in message and "download-models" in message and "ATELIER_GENERATION_DECODER" in message
    with pytest.raises(DownloadFailed, match="Hub is unavailable"):  # HF_ENDPOINT is a dead loopback port
        TinyDecoder(name="madebyollin/taesd", license="MIT").fetch(named, lambda transfer: None)
    with pytest.raises(DownloadFailed, match="a moment ago"):  # and is not probed again before every job
        TinyDecoder(name="madebyollin/taesd", license="MIT").fetch(named, lambda transfer: None)
    assert time.monotonic() - started < 10
    with pytest.raises(ModelUnavailable, match=r"decoder folder .*nowhere does not exist"):
        generate(named.model_copy(update={"generation_decoder": str(tmp_path / "nowhere")}))


def test_a_decoder_for_other_latents_is_refused(tiny_sd: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    other = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                            num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4, latent_channels=16)  # fmt: skip
    other.save_pretrained(tmp_path / "taesd3")
    with pytest.raises(ModelUnavailable, match="16-channel latents but the model makes 4"):
        load_model(configured(tiny_sd, generation_decoder=str(tmp_path / "taesd3")))
