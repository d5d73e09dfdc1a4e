"""Diffusion benchmark: the engine's own time per step, what the queue adds, and full-size SD-Turbo on a GPU or CPU.

    .venv/bin/python benchmarks/diffusion.py [--n 10] [--compile]
    .venv/bin/python benchmarks/diffusion.py --cpu [--n 3] [--skip-stack]     (section 4 alone, ~15 min on 2 cores)

1. The tiny random pipeline (tests/support/tiny_diffusion.py) on the CPU, called directly.
2. The same jobs through the stack `make run` starts (REST submit → SUCCESS) against the direct call.
3. With a CUDA GPU: SD-Turbo's architecture (SD 2.1 UNet, VAE and OpenCLIP-H text encoder) built from
   its configs with random weights (nothing downloaded) at 512², fp16, 1 and 4 steps, optionally
   torch.compile'd. Skipped with a note when there is no GPU.
4. With --cpu: the same architecture on the CPU at 512², plain diffusers float32 with the full VAE (the
   baseline) against Atelier's engines as a worker runs them (bfloat16 where native, the tiny decoder
   TAESD: AutoencoderTiny's default architecture, random weights), interleaved; generation also through
   the REST stack; then where the time goes (text encoder, UNet, decode, encode).
Compare within one run: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
_models = tempfile.TemporaryDirectory(prefix="atelier-bench-models-")
# Before settings are read anywhere: the direct calls and the stack's workers use the tiny model.
os.environ["ATELIER_MODELS_DIR"] = _models.name
os.environ["ATELIER_GENERATION_MODEL"] = str(Path(_models.name) / "tiny-sd")

from run import FINISHED, interleaved, stack, table  # noqa: E402  (benchmarks/run.py: the shared harness)

SIZES = (64, 256)


def direct_call(size: int, steps: int) -> tuple[float, float]:
    """(total seconds, engine run seconds) of one in-process generation."""
    from pipelines.base import JobInput, no_progress
    from pipelines.image_generation import ImageGenerationParameters, generate_image
    from settings import get_settings

    params = ImageGenerationParameters(width=size, height=size, steps=steps, seed=0)
    job = JobInput(images={}, parameters=params, prompt="a lighthouse", settings=get_settings())
    started = time.perf_counter()
    output = generate_image(job, no_progress)
    return time.perf_counter() - started, output.metadata["timings"]["run"]


def tiny_on_cpu(n: int) -> None:
    from pipelines.diffusion import load_model
    from settings import get_settings

    load_started = time.perf_counter()
    load_model(get_settings())
    load_seconds = time.perf_counter() - load_started
    rows = []
    for size in SIZES:
        per_steps = {}
        for steps in (1, 4, 20):
            direct_call(size, steps)  # warm-up
            per_steps[steps] = min(direct_call(size, steps)[0] for _ in range(n))  # best of n: least noise
        per_step = (per_steps[20] - per_steps[4]) / 16  # the slope: one step, without encode/decode
        fixed = per_steps[4] - 4 * per_step
        rows.append([f"{size}×{size}", per_step * 1000, fixed * 1000, per_steps[1] * 1000, per_steps[4] * 1000,
                     per_steps[20] * 1000])  # fmt: skip
    table(
        f"1. Tiny random SD pipeline on the CPU ({os.cpu_count()} cores, torch threads "
        f"{__import__('torch').get_num_threads()}), direct call, best of {n}; load {load_seconds * 1000:.0f} ms",
        ["size", "ms per step", "ms fixed (text encoder, VAE decode)", "1 step ms", "4 steps ms", "20 steps ms"],
        rows,
    )


def queue_overhead(n: int) -> None:
    import httpx

    rows = []
    with stack() as (base_url, _redis_url, _app), httpx.Client(base_url=base_url, timeout=120) as http:

        def rest(size: int, steps: int) -> tuple[float, float]:
            body = {"task_type": "image_generation", "prompt": "a lighthouse",
                    "parameters": {"width": size, "height": size, "steps": steps, "seed": 0}}  # fmt: skip
            started = time.perf_counter()
            task_id = http.post("/api/v1/tasks/submit/", json=body).json()["task_id"]
            while (status := http.get(f"/api/v1/tasks/{task_id}/status/").json()["status"]) not in FINISHED:
                time.sleep(0.005)
            total = time.perf_counter() - started
            assert status == "SUCCESS", status
            result = http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
            base64.b64decode(result["image_data"])
            return total, result["metadata"]["timings"]["run"]

        rest(64, 1)  # the worker's first job loads the model
        for size in SIZES:
            for steps in (1, 4):
                # Interleaved, so both paths see the same load on a shared machine.
                samples, floors = [], []
                for _ in range(n):
                    floors.append(direct_call(size, steps)[0])
                    samples.append(rest(size, steps))
                total = statistics.median(sample[0] for sample in samples)
                engine = statistics.median(sample[1] for sample in samples)
                floor = statistics.median(floors)
                rows.append([f"{size}×{size}, {steps} steps", floor * 1000, engine * 1000, total * 1000,
                             (total - floor) * 1000])  # fmt: skip
    table(
        f"2. Queue overhead: REST submit → SUCCESS (poll 5 ms) against the direct call, interleaved, median of {n}",
        ["job", "direct call ms", "engine run in worker ms", "REST total ms", "overhead ms (REST − direct)"],
        rows,
    )


def sd_turbo_random(torch: Any, device: str = "cuda", dtype: Any = None) -> Any:
    """SD-Turbo's architecture (stabilityai/sd-turbo's configs) with random weights (default fp16 on CUDA)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.support.tiny_diffusion import write_tokenizer_files

    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=768,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                       projection_dim=512, hidden_act="gelu", vocab_size=49408, bos_token_id=516, eos_token_id=517)
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:  # a real CLIP vocabulary is not needed to time the network
        vocab, merges = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype or torch.float16)


def full_size_on_gpu(n: int, compile_unet: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        print(f"\n### 3. SD-Turbo architecture on a GPU\n\nSkipped: torch {torch.__version__} sees no CUDA GPU here.")
        return
    pipe = sd_turbo_random(torch)
    variants = [("eager", pipe.unet)]
    if compile_unet:
        variants.append(("torch.compile", torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs")))
    rows = []
    for name, unet in variants:
        pipe.unet = unet
        for steps in (1, 4):

            def once(steps: int = steps) -> float:
                generator = torch.Generator("cpu").manual_seed(0)
                torch.cuda.synchronize()
                started = time.perf_counter()
                pipe("a lighthouse", width=512, height=512, num_inference_steps=steps, guidance_scale=0.0,
                     generator=generator, output_type="pil")  # fmt: skip
                torch.cuda.synchronize()
                return time.perf_counter() - started

            warm_started = time.perf_counter()
            once()  # warm-up (and compilation)
            warm = time.perf_counter() - warm_started
            rows.append([name, steps, statistics.median(once() for _ in range(n)) * 1000, warm * 1000])
    memory = torch.cuda.max_memory_allocated() / 2**30
    table(
        f"3. SD-Turbo architecture, random weights, 512×512 fp16 on {torch.cuda.get_device_name()} "
        f"(median of {n}; peak {memory:.1f} GiB)",
        ["unet", "steps", "ms per image (text + UNet + VAE + PIL)", "first call ms"],
        rows,
    )


# -- 4. full size on the CPU -----------------------------------------------------------------------
CPU_SIZE = 512
CPU_OPERATIONS = {  # each operation's job at its default parameters, and the prompt its engine uses then
    "image_generation": "a lighthouse",  # one step: the target is ≤ 5 s for this job
    "style_transfer": "mosaic style artwork",  # preset mosaic: img2img at strength 0.75, 3 of 4 steps
    "object_removal": "background",  # inpainting, strength 1, 4 steps
}


def cpu_inputs() -> tuple[Any, Any]:
    """A 512² photo and a mask (a centred disc, a third of the photo across)."""
    from PIL import Image, ImageDraw

    photo = Image.open(ROOT / "assets" / "examples" / "coffee.jpg").convert("RGB").resize((CPU_SIZE, CPU_SIZE))
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((171, 171, 341, 341), fill=255)
    return photo, mask


def plain_calls(pipe: Any, photo: Any, mask: Any) -> dict[str, Callable[[], Any]]:
    """The baseline: plain diffusers in float32 with the model's own VAE, the same calls Atelier's engines make."""
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    from pipelines.diffusion import img2img_steps
    from pipelines.style_transfer import DIFFUSION_MAX_STRENGTH

    img2img, inpaint = AutoPipelineForImage2Image.from_pipe(pipe), AutoPipelineForInpainting.from_pipe(pipe)
    for view in (img2img, inpaint):
        view.set_progress_bar_config(disable=True)
    prompts = CPU_OPERATIONS
    strength = DIFFUSION_MAX_STRENGTH  # the style engine's at parameters.strength 1 (the default)

    def seeded() -> dict[str, Any]:
        return {"guidance_scale": 0.0, "generator": torch.Generator("cpu").manual_seed(0)}

    return {
        "image_generation": lambda: pipe(prompts["image_generation"], width=CPU_SIZE, height=CPU_SIZE,
                                         num_inference_steps=1, **seeded()),
        "style_transfer": lambda: img2img(prompts["style_transfer"], image=photo, strength=strength,
                                          num_inference_steps=img2img_steps(strength), **seeded()),
        "object_removal": lambda: inpaint(prompts["object_removal"], image=photo, mask_image=mask, width=CPU_SIZE,
                                          height=CPU_SIZE, strength=1.0, num_inference_steps=4, **seeded()),
    }  # fmt: skip


def atelier_jobs(settings: Any, photo: Any, mask: Any) -> dict[str, Callable[[], Any]]:
    """Atelier's engines as a worker runs them: the operation's run() on a JobInput with default parameters."""
    from pipelines import OPERATIONS
    from pipelines.base import JobInput, no_progress
    from pipelines.image_generation import ImageGenerationParameters
    from pipelines.object_removal import ObjectRemovalParameters
    from pipelines.style_transfer import StyleTransferParameters

    jobs = {
        "image_generation": JobInput({}, ImageGenerationParameters(width=CPU_SIZE, height=CPU_SIZE, steps=1, seed=0),
                                     prompt=CPU_OPERATIONS["image_generation"], settings=settings),
        "style_transfer": JobInput({"image": photo}, StyleTransferParameters(style="mosaic", engine="diffusion"),
                                   settings=settings),
        "object_removal": JobInput({"image": photo, "mask": mask}, ObjectRemovalParameters(engine="diffusion"),
                                   settings=settings),
    }  # fmt: skip
    return {name: functools.partial(OPERATIONS[name].run, job, no_progress) for name, job in jobs.items()}


@contextlib.contextmanager
def rest_generation(model: Path, decoder: Path) -> Iterator[Callable[[], Any]]:
    """A one-step 512² generation through the stack `make run` starts (REST submit → SUCCESS, polled every 50 ms)."""
    import httpx

    os.environ |= {"ATELIER_GENERATION_MODEL": str(model), "ATELIER_GENERATION_DECODER": str(decoder)}
    body = {"task_type": "image_generation", "prompt": CPU_OPERATIONS["image_generation"],
            "parameters": {"width": CPU_SIZE, "height": CPU_SIZE, "steps": 1, "seed": 0}}  # fmt: skip
    with stack() as (base_url, _redis_url, _app), httpx.Client(base_url=base_url, timeout=600) as http:

        def job() -> None:
            task_id = http.post("/api/v1/tasks/submit/", json=body).json()["task_id"]
            while (status := http.get(f"/api/v1/tasks/{task_id}/status/").json())["status"] not in FINISHED:
                time.sleep(0.05)  # not faster: the web process shares the 2 cores with the worker
            assert status["status"] == "SUCCESS", status

        yield job


def parts_of(pipe: Any) -> dict[str, Callable[[], Any]]:
    """Each network of ``pipe`` alone, on inputs of a 512² job in the pipeline's dtype."""
    import torch

    dtype, generator = pipe.unet.dtype, torch.Generator("cpu").manual_seed(0)
    ids = pipe.tokenizer(["a lighthouse"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents = torch.randn(1, pipe.unet.config.in_channels, CPU_SIZE // 8, CPU_SIZE // 8, generator=generator).to(dtype)
    embeddings = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=generator).to(dtype)
    pixels = (torch.rand(1, 3, CPU_SIZE, CPU_SIZE, generator=generator) * 2 - 1).to(dtype)
    timestep = torch.tensor([999])
    return {
        "text encoder (77 tokens)": lambda: pipe.text_encoder(ids),
        "UNet, one step": lambda: pipe.unet(latents, timestep, encoder_hidden_states=embeddings),
        "decode 512²": lambda: pipe.vae.decode(latents),
        "encode 512² (img2img, inpainting)": lambda: pipe.vae.encode(pixels),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "unknown CPU"


def build_full_size(torch: Any) -> tuple[Any, Path, Path]:
    """SD-Turbo's architecture in float32 (the baseline), saved as a model folder, and TAESD's, saved apart."""
    from diffusers import AutoencoderTiny

    plain = sd_turbo_random(torch, "cpu", torch.float32)
    folder, taesd = Path(_models.name) / "sd-turbo-random", Path(_models.name) / "taesd-random"
    plain.save_pretrained(folder)
    AutoencoderTiny().save_pretrained(taesd)  # TAESD's architecture is AutoencoderTiny's default
    return plain, folder, taesd


def full_size_on_cpu(n: int, rest: bool) -> None:
    import torch

    from pipelines.diffusion import load_model
    from settings import get_settings

    started = time.perf_counter()
    plain, folder, taesd = build_full_size(torch)
    built = time.perf_counter() - started
    settings = get_settings().model_copy(update={"generation_model": str(folder), "generation_decoder": str(taesd)})
    started = time.perf_counter()
    model = load_model(settings)
    loaded = time.perf_counter() - started
    photo, mask = cpu_inputs()
    baseline, ours = plain_calls(plain, photo, mask), atelier_jobs(settings, photo, mask)
    load_before = os.getloadavg()[0]
    samples = {}
    with rest_generation(folder, taesd) if rest else contextlib.nullcontext() as rest_job:
        baseline["image_generation"]()  # warm-up (and the worker's load)
        ours["image_generation"]()
        if rest_job is not None:
            rest_job()
        for name in CPU_OPERATIONS:
            paths = {"plain": baseline[name], "atelier": ours[name]}
            if rest_job is not None and name == "image_generation":
                paths["rest"] = rest_job
            samples[name] = interleaved(paths, n)
    with torch.inference_mode():
        plain_parts, our_parts = parts_of(plain), parts_of(model.text_to_image)
        parts = interleaved({f"{side} {part}": calls[part] for part in plain_parts
                            for side, calls in (("plain", plain_parts), ("atelier", our_parts))}, n)  # fmt: skip
    where = (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
             f"threads, load average {load_before:.2f} → {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(
        f"\nBuilt and saved in {built:.0f} s; Atelier's load ({model.dtype}, decoder {model.decoder}): {loaded:.1f} s"
    )
    report_cpu(samples, parts, n, where, f"{model.dtype} + TAESD")


def report_cpu(samples: dict[str, dict[str, list[float]]], parts: dict[str, list[float]], n: int, where: str,
               ours: str) -> None:  # fmt: skip
    median = statistics.median
    rows = []
    for name, paths in samples.items():
        plain, atelier = median(paths["plain"]), median(paths["atelier"])
        rest = f"{median(paths['rest']):.2f}" if "rest" in paths else "–"
        steps = {"image_generation": "1 step", "style_transfer": "3 steps", "object_removal": "4 steps"}[name]
        rows.append([f"{name} ({steps})", plain, atelier, rest, f"{plain / atelier:.1f}×"])
    table(
        f"4. SD-Turbo architecture, random weights, 512² on the CPU ({where}); median of {n}, interleaved",
        ["job", "plain diffusers float32, full VAE, s", f"Atelier job ({ours}), s", "through REST, s", "speed-up"],
        rows,
    )
    names = dict.fromkeys(key.split(" ", 1)[1] for key in parts)
    part_rows = []
    for part in names:
        plain, atelier = median(parts[f"plain {part}"]), median(parts[f"atelier {part}"])
        part_rows.append([part, plain, atelier, f"{plain / atelier:.1f}×"])
    table("4b. Where the time goes: each network alone, s", ["part", "float32, full VAE", ours, "speed-up"], part_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, help="runs per row (default 10; 3 with --cpu)")
    parser.add_argument("--cpu", action="store_true", help="only section 4: full size on the CPU (~15 min)")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd UNet on the GPU")
    parser.add_argument("--skip-stack", action="store_true", help="leave out section 2")
    args = parser.parse_args()
    if args.cpu:
        print(f"Atelier diffusion benchmark, CPU — {time.strftime('%Y-%m-%d %H:%M')}")
        full_size_on_cpu(args.n or 3, rest=not args.skip_stack)
        return
    args.n = args.n or 10
    from tests.support.tiny_diffusion import build_tiny_pipeline

    build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))
    print(f"Atelier diffusion benchmark — {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    tiny_on_cpu(args.n)
    if not args.skip_stack:
        queue_overhead(args.n)
    full_size_on_gpu(args.n, args.compile)


if __name__ == "__main__":
    try:
        main()
    finally:
        _models.cleanup()
