"""Diffusers engines on one loaded model: text to image, img2img style and inpainting share it.

``settings.generation_model`` (a Hub id such as ``stabilityai/sd-turbo`` or a local diffusers
folder) loads once per worker process as a text-to-image pipeline; img2img and inpainting are
built from its components with ``from_pipe``, so they cost no second load and no memory.
Weights come from the folder, else the Hub cache under ``models_dir/huggingface``, else the Hub
(first use or ``python app.py download-models``). With no weights and no Hub a job fails in
well under a second with a message that says how to provide them, instead of the Hub client's
retries (about 20 s here, unbounded behind a firewall that drops packets).

On the CPU the model runs in bfloat16 where the CPU has native support for it, and decodes (and
encodes) with the tiny autoencoder of its family (TAESD) when its weights are here: a 512² one-step
image takes 4-5 s on 2 cores instead of about 23 s (BENCHMARKS.md, "Generation on a CPU").

torch and diffusers are imported inside the functions: the web process imports this module.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from PIL import Image, ImageFilter

from pipelines.base import JobCancelled, ModelUnavailable, PipelineError, Progress, Stopwatch
from pipelines.downloads import DownloadFailed, DownloadKind, Model, OnTransfer
from pipelines.images import with_alpha_of
from pipelines.models import cache_key, load_counts, load_once, torch_device
from settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import torch

ENGINE = "diffusers"
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of CPUs with native bfloat16
# The tiny autoencoders (TAESD, MIT) by model family; one file each, about 10 MB.
TINY_DECODERS = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}
TINY_DECODER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
TINY_DECODER_BYTES = 9_800_000
FULL_DECODER = "full"
HUB_PROBE_SECONDS = 3.0
PREVIEW_EVERY = 0.25  # seconds between new step previews: at most ~4 a second
MAX_WORKING_SIDE = 768  # img2img and inpainting run at most this large, then scale back
# Stable Diffusion 1.x/2.x latents (4 channels) → RGB, a linear fit that needs no VAE decode.
LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def hub_cache(settings: Settings) -> Path:
    return settings.models_dir / "huggingface"


def pipeline_key(settings: Settings) -> str:
    """The ``load_once`` key (and ``load_counts`` entry) of the pipeline ``settings`` select."""
    return cache_key(
        "diffusion",
        settings.generation_model,
        settings.models_dir,
        settings.device,
        settings.generation_dtype,
        settings.generation_decoder,
        settings.attention_slicing,
        settings.cpu_offload,
    )


# -- finding the weights ---------------------------------------------------------------------------
DOWNLOAD_ADVICE = (
    "Run this again with network access (HTTPS_PROXY is used if set), or set ATELIER_GENERATION_MODEL "
    "to a local diffusers folder."
)


def _how_to_provide(model: str, settings: Settings) -> str:
    return (
        "Set ATELIER_GENERATION_MODEL to a local diffusers folder, or run `python app.py download-models` "
        f"on a machine with network access (it saves {model!r} under ATELIER_MODELS_DIR={settings.models_dir})."
    )


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a folder."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model)


def hub_unreachable(endpoint: str, timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hub (or the HTTPS proxy in front of it) cannot be reached within ``timeout``; None if it can."""
    proxy = urllib.request.getproxies().get("https")
    target = urlsplit(proxy if proxy else endpoint)
    host, port = target.hostname or "huggingface.co", target.port or (443 if target.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:  # in a thread: name resolution itself has no timeout
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    threading.Thread(target=connect, name="hub-probe", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    error = outcome[0]
    return None if error is None else f"cannot reach {host}:{port} ({error})"


def model_present(settings: Settings) -> bool:
    """Whether the generation model is here without a download: its folder, or its files in the Hub cache."""
    model = settings.generation_model
    path = Path(model).expanduser()
    if path.is_dir() or _looks_like_path(model):
        return (path / "model_index.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "model_index.json", cache_dir=hub_cache(settings)), str)


def locate_model(
    model: str, settings: Settings, download: bool | None = None, advice: str | None = None, tqdm_class: Any = None
) -> str:
    """The local folder holding ``model``, downloading it into the Hub cache when allowed (``download``,
    default ATELIER_AUTO_DOWNLOAD) and possible; ``tqdm_class`` gets the download's progress.

    ``advice`` replaces the usual "how to provide it" of the error messages."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{path} is not a diffusers model folder (it has no model_index.json). Point "
                "ATELIER_GENERATION_MODEL at a folder saved with save_pretrained() (one with model_index.json, "
                "unet/, vae/, text_encoder/, tokenizer/, scheduler/), or at a Hub id such as stabilityai/sd-turbo."
            )
        return str(path)
    if _looks_like_path(model):
        raise ModelUnavailable(
            f"The generation model folder {model} does not exist. {advice or _how_to_provide(model, settings)}"
        )
    from diffusers import DiffusionPipeline
    from huggingface_hub import constants

    cache = hub_cache(settings)
    try:
        return str(DiffusionPipeline.download(model, cache_dir=cache, local_files_only=True))
    except (OSError, ValueError):
        pass  # not cached (or only partly): fetch it, if the Hub can be reached at all
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else hub_unreachable(constants.ENDPOINT)
    if not (settings.auto_download if download is None else download) or reason:
        where = f"not in {cache}" + (f" and the Hugging Face Hub is unavailable: {reason}" if reason else "")
        raise ModelUnavailable(
            f"The generation model {model!r} is {where}. {advice or _how_to_provide(model, settings)}"
        )
    from pipelines.hub import hub_progress

    try:
        with hub_progress(tqdm_class):
            return str(DiffusionPipeline.download(model, cache_dir=cache))
    except JobCancelled:
        raise
    except Exception as exc:  # the Hub client raises many kinds; all mean the same here
        raise ModelUnavailable(f"Downloading the generation model {model!r} failed: {exc}") from exc


# -- the decoder: the model's own VAE, or a tiny autoencoder (TAESD) -------------------------------
# On 2 CPU cores the full SD VAE takes ~20 s to decode 512² (float32), TAESD ~0.5 s (bfloat16). TAESD's
# pictures are slightly softer; on a GPU the full VAE costs little, so ``auto`` keeps it there.
PIPELINE_FAMILIES = {
    **dict.fromkeys(("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
                     "LatentConsistencyModelPipeline", "LatentConsistencyModelImg2ImgPipeline"), "sd"),
    **dict.fromkeys(("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                     "StableDiffusionXLInpaintPipeline"), "sdxl"),
}  # fmt: skip
DECODER_RETRY_SECONDS = 600.0  # a failed fetch of a tiny decoder is not tried again sooner in this process
_decoder_fetch_failed: dict[str, float] = {}


def model_family(settings: Settings) -> str | None:
    """``sd`` (Stable Diffusion 1.x/2.x) or ``sdxl``, from the pipeline class in the model's
    model_index.json (before its download, guessed from its name); None for families whose latents
    TAESD does not read (SD3, Flux...)."""
    from pipelines.hub import HubModel

    folder = HubModel(name=settings.generation_model, license="").location(settings)
    if folder is None:
        return "sdxl" if "xl" in settings.generation_model.lower() else "sd"
    try:
        pipeline = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return PIPELINE_FAMILIES.get(str(pipeline))


def decoder_setting(settings: Settings) -> str:
    """ATELIER_GENERATION_DECODER: ``auto``, ``full``, or a tiny decoder's Hub id or folder."""
    choice = settings.generation_decoder.strip() or "auto"
    return choice.lower() if choice.lower() in ("auto", FULL_DECODER) else choice


def tiny_decoder_name(settings: Settings) -> str | None:
    """The AutoencoderTiny ATELIER_GENERATION_DECODER names (a Hub id or a folder; ``auto``: the model
    family's TAESD), or None for the model's own VAE."""
    choice = decoder_setting(settings)
    if choice == FULL_DECODER:
        return None
    return TINY_DECODERS.get(model_family(settings) or "") if choice == "auto" else choice


def tiny_decoder_location(name: str, settings: Settings) -> Path | None:
    """The folder holding the tiny decoder ``name`` (its folder, or its files in the Hub cache); None while missing."""
    path = Path(name).expanduser()
    if path.is_dir() or _looks_like_path(name):
        return path if (path / "config.json").is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = [try_to_load_from_cache(name, file, cache_dir=hub_cache(settings)) for file in TINY_DECODER_FILES]
    except ValueError:  # not a valid Hub id
        return None
    return Path(found[0]).parent if all(isinstance(file, str) for file in found) else None  # type: ignore[arg-type]


def decoder_for(settings: Settings, device: str) -> str | None:
    """The tiny decoder a load uses, or None for the model's own VAE. ``auto`` takes the family's TAESD on
    the CPU when it is here; a decoder named in the setting is always used."""
    name = tiny_decoder_name(settings)
    if name is not None and decoder_setting(settings) == "auto":
        return name if device == "cpu" and tiny_decoder_location(name, settings) is not None else None
    return name


def _missing_decoder(name: str, settings: Settings) -> str:
    if _looks_like_path(name) or Path(name).expanduser().is_dir():
        return (
            f"The decoder folder {name} does not exist or has no config.json. Set ATELIER_GENERATION_DECODER to a "
            "folder saved with AutoencoderTiny.save_pretrained(), to a Hub id such as madebyollin/taesd, or to auto "
            "or full (the model's own VAE)."
        )
    return (
        f"The decoder {name!r} is not in {hub_cache(settings)}. Run `python app.py download-models` on a machine "
        "with network access, or set ATELIER_GENERATION_DECODER to auto or full (the model's own VAE)."
    )


def load_tiny_decoder(name: str, settings: Settings, dtype: torch.dtype) -> Any:
    """The AutoencoderTiny ``name`` in ``dtype``; ModelUnavailable when it is missing or is none."""
    folder = tiny_decoder_location(name, settings)
    if folder is None:
        raise ModelUnavailable(_missing_decoder(name, settings))
    from diffusers import AutoencoderTiny

    try:
        return AutoencoderTiny.from_pretrained(str(folder), dtype=dtype, local_files_only=True)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"The decoder {name!r} could not be loaded from {folder} as an AutoencoderTiny: {exc}"
        ) from exc


@dataclass(frozen=True, kw_only=True)
class TinyDecoder(Model):
    """ATELIER_GENERATION_DECODER's AutoencoderTiny: a Hub id (its two files fetched into the Hub cache)
    or a folder, which is never fetched."""

    def download_kind(self, settings: Settings) -> DownloadKind:
        return "manual" if _looks_like_path(self.name) or Path(self.name).expanduser().is_dir() else "auto"

    def location(self, settings: Settings) -> Path | None:
        return tiny_decoder_location(self.name, settings)

    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        found = self.location(settings)
        if found is not None:
            return found
        if self.download_kind(settings) == "manual":
            raise ModelUnavailable(_missing_decoder(self.name, settings))
        from huggingface_hub import constants, snapshot_download

        from pipelines.hub import transfer_tqdm

        # A CPU worker without the Hub would otherwise probe it again before each job (auto falls back to the full VAE).
        if time.monotonic() - _decoder_fetch_failed.get(self.name, -math.inf) < DECODER_RETRY_SECONDS:
            raise DownloadFailed(f"Downloading the decoder {self.name!r} failed a moment ago; not trying again yet")
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else hub_unreachable(constants.ENDPOINT)
        try:
            if reason:
                raise DownloadFailed(f"the Hugging Face Hub is unavailable: {reason}")
            snapshot_download(self.name, cache_dir=hub_cache(settings), allow_patterns=list(TINY_DECODER_FILES),
                              tqdm_class=transfer_tqdm(self.name, on_transfer))  # fmt: skip
            found = self.location(settings)
            if found is None:
                raise DownloadFailed(f"it has no {' and '.join(TINY_DECODER_FILES)}: is it an AutoencoderTiny?")
        except JobCancelled:
            raise
        except Exception as exc:  # the Hub client raises many kinds; all mean the same here
            _decoder_fetch_failed[self.name] = time.monotonic()
            raise DownloadFailed(f"Downloading the decoder {self.name!r} failed: {exc}") from exc
        return found


def decoder_models(settings: Settings) -> list[Model]:
    """The tiny decoder the diffusion engines may use. Fetched on first use and by download-models where
    it will be used: always when named, with ``auto`` on CPU machines."""
    from pipelines.inventory import device

    name = tiny_decoder_name(settings)
    if name is None:
        return []
    taesd = name in TINY_DECODERS.values()
    used = decoder_setting(settings) != "auto" or device(settings) == "cpu"
    return [
        TinyDecoder(
            name=name,
            license="MIT" if taesd else "see its model card",
            size=TINY_DECODER_BYTES if taesd else None,
            default=used,
        )
    ]


# -- the loaded model ------------------------------------------------------------------------------
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; none where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def native_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively (AVX512-BF16 or AMX). Elsewhere bfloat16 is emulated
    and slower than float32."""
    return bool(cpu_flags() & BF16_FLAGS)


def torch_dtype(settings: Settings, device: str) -> torch.dtype:
    """settings.generation_dtype as torch's dtype (auto: float16 on CUDA; on the CPU bfloat16 where it is
    native, float32 elsewhere)."""
    import torch

    dtype_name = settings.generation_dtype
    if dtype_name == "auto":
        dtype_name = "float16" if device == "cuda" else "bfloat16" if native_bf16() else "float32"
    dtype: torch.dtype = getattr(torch, dtype_name)
    return dtype


@dataclass
class DiffusionModel:
    """One loaded model: its text-to-image pipeline and the img2img/inpainting views of its components."""

    text_to_image: Any
    name: str
    device: str
    dtype: str
    decoder: str  # "full" (the model's own VAE) or the tiny decoder's Hub id or folder
    folder: str
    load_seconds: float
    cache_key: str
    _views: dict[str, Any] = field(default_factory=dict)

    def image_to_image(self) -> Any:
        if "img2img" not in self._views:
            from diffusers import AutoPipelineForImage2Image

            self._views["img2img"] = self._quiet(AutoPipelineForImage2Image.from_pipe(self.text_to_image))
        return self._views["img2img"]

    def inpainting(self) -> Any:
        if "inpaint" not in self._views:
            from diffusers import AutoPipelineForInpainting

            self._views["inpaint"] = self._quiet(AutoPipelineForInpainting.from_pipe(self.text_to_image))
        return self._views["inpaint"]

    @staticmethod
    def _quiet(pipe: Any) -> Any:
        pipe.set_progress_bar_config(disable=True)  # progress goes through our callback, not tqdm
        return pipe

    def metadata(self) -> dict[str, Any]:
        return {
            "engine": ENGINE,
            "model": self.name,
            "device": self.device,
            "dtype": self.dtype,
            "decoder": self.decoder,
            "model_loads_in_process": load_counts[self.cache_key],
        }


def _load(settings: Settings, key: str) -> DiffusionModel:
    started = time.perf_counter()
    model = settings.generation_model
    device = torch_device(settings)
    dtype = torch_dtype(settings, device)
    folder = locate_model(model, settings)
    decoder = decoder_for(settings, device)
    # A tiny decoder replaces the VAE before the load, so the full one is not even read.
    components = {"vae": load_tiny_decoder(decoder, settings, dtype)} if decoder else {}
    from diffusers import AutoPipelineForText2Image

    try:
        pipe = AutoPipelineForText2Image.from_pretrained(folder, dtype=dtype, local_files_only=True, **components)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"The generation model {model!r} could not be loaded from {folder}: {exc}") from exc
    if settings.attention_slicing:
        pipe.enable_attention_slicing()
    if settings.cpu_offload and device == "cuda":
        pipe.enable_model_cpu_offload()  # each part moves to the GPU only while it runs
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    check_latents(pipe, decoder)
    dtype_name = str(dtype).removeprefix("torch.")
    seconds = time.perf_counter() - started
    return DiffusionModel(pipe, model, device, dtype_name, decoder or FULL_DECODER, folder, seconds, key)


def check_latents(pipe: Any, decoder: str | None) -> None:
    """A tiny decoder made for another latent space (TAESD3 for an SD 2 model, say) is refused, not run."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if not decoder or denoiser is None:
        return
    channels, made = pipe.vae.config.latent_channels, denoiser.config.out_channels
    if channels != made:
        raise ModelUnavailable(
            f"The decoder {decoder!r} reads {channels}-channel latents but the model makes {made}; "
            "set ATELIER_GENERATION_DECODER to auto, full or a matching AutoencoderTiny"
        )


def load_model(settings: Settings) -> DiffusionModel:
    """The configured generation model, loaded once per worker process."""
    key = pipeline_key(settings)
    return load_once(key, lambda: _load(settings, key))


# -- steps, seeds and previews ---------------------------------------------------------------------
def random_seed() -> int:
    return random.SystemRandom().randrange(2**32)


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: the same seed gives the same noise on any device."""
    import torch

    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def latents_preview(latents: torch.Tensor) -> Image.Image | None:
    """The first image of a batch of SD latents as a small RGB picture (latent size), no VAE needed."""
    import torch

    if latents.ndim != 4 or latents.shape[1] != len(LATENT_RGB_FACTORS):
        return None  # another latent space (SDXL-refiner, SD3, Flux): no cheap preview
    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("chw,cr->hwr", latents[0].float(), factors)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, "RGB")


def load_with_progress(
    progress: Progress, settings: Settings, message: str = "Loading the diffusion model"
) -> tuple[DiffusionModel, Stopwatch]:
    """The loaded model, and the job's stopwatch with its ``load`` lap (the ``run`` lap is the caller's)."""
    progress(0.02, message)
    watch = Stopwatch()
    model = load_model(settings)
    watch.lap("load")
    return model, watch


class StepProgress:
    """``callback_on_step_end`` → our ``progress``: "<label> — step i/n", a fraction between
    ``start`` and ``end`` and a latent preview. A cancelled job's JobCancelled propagates out of the
    pipeline call, so the run stops after the current step."""

    def __init__(self, progress: Progress, label: str, start: float = 0.05, end: float = 0.95) -> None:
        self.progress, self.label, self.start, self.end = progress, label, start, end
        self.preview: Image.Image | None = None
        self.previews = 0
        self.steps = 0
        self._previewed_at = -math.inf

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        total = max(int(getattr(pipe, "num_timesteps", 0) or 0), step + 1)
        done = step + 1
        now = time.monotonic()
        if done < total and now - self._previewed_at >= PREVIEW_EVERY and "latents" in callback_kwargs:
            self.preview = latents_preview(callback_kwargs["latents"])
            self._previewed_at = now
            self.previews += 1
        self.steps = done
        # The latest preview goes with every step so clients polling /status/ always find one.
        self.progress(self.start + (self.end - self.start) * done / total, f"{self.label} — step {done}/{total}",
                      self.preview)  # fmt: skip
        return callback_kwargs


def run_pipeline(pipe: Any, bridge: StepProgress, **arguments: Any) -> list[Image.Image]:
    """Call a diffusers pipeline with the step bridge; its argument errors become PipelineError."""
    bridge.progress(bridge.start, f"{bridge.label} — encoding the prompt")  # the first step may be long
    try:
        output = pipe(**arguments, callback_on_step_end=bridge, output_type="pil")
    except JobCancelled:
        raise
    except ValueError as exc:  # diffusers checks its inputs with readable ValueErrors
        raise PipelineError(f"The diffusion model refused the request: {exc}") from exc
    images: list[Image.Image] = output.images
    return images


def working_size(size: tuple[int, int], limit: int = MAX_WORKING_SIDE) -> tuple[int, int]:
    """``size`` scaled to fit ``limit`` and rounded down to multiples of 8 (at least 64)."""
    scale = min(1.0, limit / max(size))
    return tuple(max(64, int(side * scale) // 8 * 8) for side in size)  # type: ignore[return-value]


# -- the img2img and inpainting engines ------------------------------------------------------------
def img2img_steps(strength: float, steps: int = 4) -> int:
    """diffusers runs ``int(steps * strength)`` steps of img2img: make that at least one."""
    return max(steps, math.ceil(1 / strength))


def restyle(
    image: Image.Image, prompt: str, strength: float, progress: Progress, settings: Settings, seed: int = 0
) -> tuple[Image.Image, dict[str, Any]]:
    """Repaint ``image`` after ``prompt`` with img2img on the loaded model; ``strength`` in (0, 1]."""
    model, watch = load_with_progress(progress, settings)
    photo = image.convert("RGB")
    steps = img2img_steps(strength)
    bridge = StepProgress(progress, "Applying style")
    result = run_pipeline(
        model.image_to_image(),
        bridge,
        prompt=prompt,
        image=photo.resize(working_size(photo.size), Image.Resampling.LANCZOS),
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=0.0,
        generator=generators([seed]),
    )[0]
    if result.size != photo.size:
        result = result.resize(photo.size, Image.Resampling.LANCZOS)
    metadata = {
        **model.metadata(),
        "seed": seed,
        "steps": bridge.steps,
        "denoising_strength": strength,
        "timings": watch.lap("run"),
    }
    return result, metadata


def inpaint(
    image: Image.Image,
    mask: np.ndarray,
    prompt: str,
    progress: Progress,
    settings: Settings,
    steps: int = 4,
    seed: int = 0,
) -> tuple[Image.Image, dict[str, Any]]:
    """Fill the True area of ``mask`` after ``prompt``; pixels more than 5 px outside it are kept exactly."""
    model, watch = load_with_progress(progress, settings)
    photo = image.convert("RGB")
    mask_image = Image.fromarray(mask.astype("uint8") * 255, "L")
    width, height = working_size(photo.size)
    bridge = StepProgress(progress, "Filling the masked area")
    filled = run_pipeline(
        model.inpainting(),
        bridge,
        prompt=prompt,
        image=photo.resize((width, height), Image.Resampling.LANCZOS),
        mask_image=mask_image.resize((width, height), Image.Resampling.BILINEAR),
        width=width,
        height=height,
        strength=1.0,
        num_inference_steps=steps,
        guidance_scale=0.0,
        generator=generators([seed]),
    )[0]
    # Paste the fill back into the full-size original through a slightly soft mask.
    filled = filled.resize(photo.size, Image.Resampling.LANCZOS)
    soft = mask_image.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(1.5))
    result = with_alpha_of(image, Image.composite(filled, photo, soft))
    metadata = {
        **model.metadata(),
        "seed": seed,
        "steps": bridge.steps,
        "timings": watch.lap("run"),
    }
    return result, metadata
