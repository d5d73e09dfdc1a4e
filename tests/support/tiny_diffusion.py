"""A tiny random Stable Diffusion pipeline, saved the way a real model folder is laid out.

The weights are random, so the pictures are noise, but every part is the real code path:
``AutoPipelineForText2Image.from_pretrained`` reads its ``model_index.json``, the UNet, VAE,
CLIP text encoder, tokenizer and scheduler load from their subfolders, and the VAE downsamples
by 8 like SD's, so any size that is a multiple of 8 works. About 2 MB; 64×64 in well under 0.1 s.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

# CLIP's byte-level BPE alphabet: every byte has a printable stand-in, so any prompt tokenizes.
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
BOS_ID, EOS_ID = 516, 517


def _byte_alphabet() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = 0
    alphabet = []
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + extra))
            extra += 1
    return alphabet


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A minimal CLIP vocabulary (single characters, with and without ``</w>``), a few merges, then
    ``<|startoftext|>`` (id 516) and ``<|endoftext|>`` (id 517, also the padding)."""
    alphabet = _byte_alphabet()
    tokens = [*alphabet, *(f"{char}</w>" for char in alphabet)]
    merges = ["t h", "a t</w>", "th e</w>", "o n</w>"]
    tokens += [merge.replace(" ", "") for merge in merges]
    tokens += list(SPECIAL_TOKENS)
    vocab = {token: index for index, token in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_tiny_pipeline(path: Path, seed: int = 0) -> Path:
    """Save a tiny random SD pipeline (Euler, trailing timesteps, like SD-Turbo) at ``path``; skip if present."""
    if (path / "model_index.json").exists():
        return path
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)  # the parts are built in this order, so a seed gives the same weights
    unet, vae, text_encoder = tiny_unet(), tiny_vae(), tiny_text_encoder()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save_atomically(pipeline, path)
    return path


def tiny_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )


def tiny_vae() -> Any:
    """Four blocks: the VAE scale factor is 2 ** 3 = 8, as in Stable Diffusion."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=64,
    )


def tiny_text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        vocab_size=1000,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config)


def tiny_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77)
    assert tokenizer.bos_token_id == BOS_ID and tokenizer.eos_token_id == EOS_ID
    return tokenizer


def save_atomically(pipeline: Any, path: Path) -> None:
    """Write next to the target and rename, so a concurrent reader never sees half a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-sd-", dir=path.parent))
    pipeline.save_pretrained(staging, safe_serialization=True)
    try:
        staging.rename(path)
    except OSError:  # someone else finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


def build_tiny_autoencoder(path: Path, seed: int = 0) -> Path:
    """Save a tiny random ``AutoencoderTiny`` (TAESD's kind and layout: config.json and
    diffusion_pytorch_model.safetensors) at ``path``; skip if present. Four blocks: 8× like SD's VAE."""
    if (path / "config.json").exists():
        return path
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    autoencoder = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-taesd-", dir=path.parent))
    autoencoder.save_pretrained(staging, safe_serialization=True)
    try:
        staging.rename(path)
    except OSError:  # someone else finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return path


def put_in_hub_cache(folder: Path, cache: Path, repo: str, commit: str = "0" * 40) -> Path:
    """Copy ``folder``'s files into the Hub cache ``cache`` the way the Hub client lays out a download of
    ``repo`` (refs/main → snapshots/<commit>/), so lookups in the cache find them with no network."""
    import shutil

    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot
