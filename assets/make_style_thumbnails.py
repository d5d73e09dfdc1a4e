"""Render assets/styles/<preset>.jpg from a scikit-image sample photo: python assets/make_style_thumbnails.py"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.style_transfer import STYLE_PRESETS, load_fast_engine
from settings import get_settings


def main() -> None:
    from skimage import data

    photo = Image.fromarray(data.chelsea()).crop((60, 0, 360, 300)).resize((192, 192), Image.Resampling.LANCZOS)
    engine = load_fast_engine(get_settings())
    out = Path(__file__).parent / "styles"
    out.mkdir(exist_ok=True)
    for preset in STYLE_PRESETS.values():
        engine.stylize(photo, style=preset.index).save(out / f"{preset.name}.jpg", quality=85)
        print(out / f"{preset.name}.jpg")


if __name__ == "__main__":
    main()
