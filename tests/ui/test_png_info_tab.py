"""The PNG Info tab's pure parts: the summary in words and the values Send to Generate fills in."""

from __future__ import annotations

import io
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ui.png_info import generate_values, shown, summary_of

A1111 = "a red fox in snow\nNegative prompt: blurry\nSteps: 6, Sampler: Euler, CFG scale: 1.5, Seed: 7, Size: 256x192"


def a1111_png(path: Path) -> Path:
    chunks = PngInfo()
    chunks.add_text("parameters", A1111)
    Image.new("RGB", (8, 8)).save(path, pnginfo=chunks)
    return path


def test_an_a1111_png_is_shown_and_fills_generate(tmp_path: Path) -> None:
    path = str(a1111_png(tmp_path / "a.png"))
    preview, summary, prompt, negative, parameters = shown(path)
    assert preview == path
    assert (prompt, negative) == ("a red fox in snow", "blurry")
    assert parameters["steps"] == 6 and parameters["seed"] == 7
    assert "AUTOMATIC1111" in summary and "256×192" in summary and "Seed 7" in summary
    assert generate_values(prompt, negative, parameters) == ["a red fox in snow", "blurry", 256, 192, 6, 1.5, 7]


def test_a_png_that_says_nothing_is_told_and_sends_nothing(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    (tmp_path / "plain.png").write_bytes(buffer.getvalue())
    _, summary, prompt, negative, parameters = shown(str(tmp_path / "plain.png"))
    assert summary.startswith("This PNG says nothing") and summary == summary_of({"source": "none"})
    with pytest.raises(gr.Error, match="Upload a PNG that says how it was made"):
        generate_values(prompt, negative, parameters)


def test_missing_settings_are_left_as_they_are() -> None:
    values = generate_values("", "", {"style": "mosaic"})
    assert values[:2] == ["", ""] and all(value == gr.skip() for value in values[2:])
