"""Diffusion benchmark: the engine's own time per step, what the queue adds, and full-size SD-Turbo on a GPU.

    .venv/bin/python benchmarks/diffusion.py [--n 10] [--compile]

1. The tiny random pipeline (tests/support/tiny_diffusion.py) on the CPU, called directly.
2. The same jobs through the stack `make run` starts (REST submit → SUCCESS) against the direct call.
3. With a CUDA GPU: SD-Turbo's architecture (SD 2.1 UNet, VAE and OpenCLIP-H text encoder) built from
   its configs with random weights (nothing downloaded) at 512², fp16, 1 and 4 steps, optionally
   torch.compile'd. Skipped with a note when there is no GPU.
Compare within one run: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
_models = tempfile.TemporaryDirectory(prefix="atelier-bench-models-")
# Before settings are read anywhere: the direct calls and the stack's workers use the tiny model.
os.environ["ATELIER_MODELS_DIR"] = _models.name
os.environ["ATELIER_GENERATION_MODEL"] = str(Path(_models.name) / "tiny-sd")

from run import FINISHED, stack, table  # noqa: E402  (benchmarks/run.py: the shared harness)

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


def sd_turbo_random(torch: Any) -> Any:
    """SD-Turbo's architecture (stabilityai/sd-turbo's configs) with random weights, fp16 on CUDA."""
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
    return pipe.to("cuda", torch.float16)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="runs per row")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd UNet on the GPU")
    parser.add_argument("--skip-stack", action="store_true", help="leave out section 2")
    args = parser.parse_args()
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
