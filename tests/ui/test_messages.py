"""What the page says: errors in a tab's labels, pop-up headlines, "Done" with what to know, download names."""

from __future__ import annotations

from ui.common import done_message, download_name, explain, headline

FACE_SWAP = {"image": "Source face", "target_image": "Target photo", "face_index": "Face to replace"}


def test_field_errors_use_the_tabs_labels_not_the_api_names() -> None:
    details = {
        "image": ["image is required for face_swap"],
        "target_image": ["target_image could not be decoded as an image (use PNG, JPEG or WebP)"],
        "parameters.face_index": ["Input should be greater than or equal to -1"],
    }
    assert explain(details, FACE_SWAP) == (
        "Source face is required; Target photo could not be decoded as an image (use PNG, JPEG or WebP); "
        "Face to replace: Input should be greater than or equal to -1"
    )
    style = {"image": "Photo", "style": "Style", "style_image": "Style image"}
    worded = explain({"parameters.style": ["Give a style preset (parameters.style) or a style_image"]}, style)
    assert worded == "Style: Give a style preset (“Style”) or a style image"
    assert explain({"image": ["image is required"]}).startswith("Invalid input — image:")  # scripts' batches


def test_a_pop_up_shows_the_headline_without_server_paths() -> None:
    wall = (
        "The LaMa engine needs its weights at /srv/models/lama/big-lama.pt: download big-lama.pt from "
        "https://example.org/big-lama.pt (or run `python app.py download-models big-lama`) and put it there."
    )
    assert headline(wall) == "The LaMa engine needs its weights"
    assert headline("No face found in the source image. Try another photo.") == "No face found in the source image."


def test_done_says_what_ran_instead_and_when_the_result_was_scaled() -> None:
    fallback = {
        "metadata": {"fallback": {"note": "Done with the basic engine (OpenCV) — LaMa's weights are not installed"}}
    }
    assert done_message(fallback) == "Done with the basic engine (OpenCV) — LaMa's weights are not installed"
    styled = {"width": 7200, "height": 4800, "metadata": {"operation": "style_transfer", "engine": "fast",
              "parameters": {"max_size": 1536}}}  # fmt: skip
    assert done_message(styled) == "Done — worked at 1536 px on the longest side, then scaled to 7200×4800"
    assert done_message({"width": 600, "height": 400, "metadata": styled["metadata"]}) == "Done"


def test_downloads_are_named_after_the_photo_and_the_operation() -> None:
    style = {"metadata": {"operation": "style_transfer", "parameters": {"style": "mosaic"}}}
    assert download_name(style, "photo") == "photo-style-mosaic.png"
    cutout = {"metadata": {"operation": "background_removal", "parameters": {}}}
    assert download_name(cutout, "Chelsea the Cat") == "chelsea-the-cat-no-background.png"
    generated = {
        "prompt_used": "A lighthouse at dusk, oil painting",
        "metadata": {"operation": "image_generation", "seed": 7},
    }
    assert download_name(generated) == "a-lighthouse-at-dusk-oil-painting-seed-7.png"
    assert download_name({"metadata": {"operation": "object_removal"}}) == "object-removed.png"
