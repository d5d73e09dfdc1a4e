"""The tabs' examples: real files, their sources noted, and each demonstrating its operation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ui import face_swap, object_removal

ROOT = Path(__file__).resolve().parents[2]


def test_face_swap_takes_one_person_s_face_onto_another() -> None:
    source, target, _ = face_swap.EXAMPLES[0]
    assert source != target and (ROOT / source).is_file() and (ROOT / target).is_file()


def test_the_object_removal_example_masks_the_spoon_not_the_coffee() -> None:
    editor, mask = object_removal.EXAMPLES[0]
    spoon = np.asarray(Image.open(ROOT / mask)) > 127
    assert Image.open(ROOT / editor["background"]).size == Image.open(ROOT / mask).size
    assert not spoon[140:170, 260:320].any()  # the espresso's middle: nothing to remove there
    assert spoon[283, 366] and spoon[90, 408]  # the spoon's bowl, its handle above the rim


def test_every_example_file_has_its_source_noted() -> None:
    sources = (ROOT / "assets" / "examples" / "SOURCES.md").read_text()
    for path in (ROOT / "assets" / "examples").iterdir():
        if path.suffix in (".jpg", ".png"):
            assert path.name in sources, path.name
