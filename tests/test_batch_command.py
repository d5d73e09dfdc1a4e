"""``python app.py batch``: its helpers, then the command itself as a subprocess against the live server
(real Redis, real workers)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

import batch_command
from batch_command import item_errors, list_inputs, output_names, parse_param, read_image, write_atomically
from tests.support.operations import register
from tests.support.stack import job_ids, settle, wait_until

register()  # the live server (this process) must accept test_steps; the session's workers know it

ROOT = Path(__file__).resolve().parent.parent
SIZE = (64, 48)


def command_env(**extra: str) -> dict[str, str]:
    return {**{key: value for key, value in os.environ.items() if key != "ATELIER_TOKEN"}, **extra}


def run_command(*args: str | Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``python app.py batch *args``, as a user runs it (``env`` added to the environment)."""
    argv = [sys.executable, "app.py", "batch", *map(str, args)]
    return subprocess.run(argv, cwd=ROOT, env=command_env(**env), capture_output=True, text=True, timeout=timeout)


def picture(index: int, size: tuple[int, int] = SIZE) -> Image.Image:
    image = Image.new("RGB", size, (30 + 20 * index, 40, 90))
    ImageDraw.Draw(image).ellipse((4 + 3 * index, 8, 30 + 3 * index, 34), fill=(240, 220, 40))
    return image


def folder_of(path: Path, count: int, fmt: str = "JPEG", suffix: str = ".jpg") -> list[Path]:
    path.mkdir(parents=True, exist_ok=True)
    files = [path / f"photo-{index:02d}{suffix}" for index in range(count)]
    for index, file in enumerate(files):
        picture(index).save(file, format=fmt)
    return files


def mask_file(path: Path) -> Path:
    mask = Image.new("L", SIZE, 0)
    ImageDraw.Draw(mask).rectangle((20, 16, 40, 32), fill=255)
    mask.save(path)
    return path


def pngs(folder: Path) -> dict[str, Image.Image]:
    found = {}
    for file in sorted(folder.iterdir()):
        with Image.open(file) as image:
            image.load()
            assert image.format == "PNG", file
            found[file.name] = image
    return found


# Helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps=4", ("steps", 4)),
        ("strength=0.8", ("strength", 0.8)),
        ("preserve_color=true", ("preserve_color", True)),
        ("style=mosaic", ("style", "mosaic")),
        ('style="12"', ("style", "12")),
        ("seed=null", ("seed", None)),
        ("prompt=a cat=dog", ("prompt", "a cat=dog")),
        ("x=NaN", ("x", "NaN")),
        ("x=", ("x", "")),
    ],
)
def test_a_param_is_json_when_it_parses_else_text(text: str, expected: tuple[str, Any]) -> None:
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["steps", "=4", " =4"])
def test_a_param_without_a_name_is_refused(text: str) -> None:
    with pytest.raises(Exception, match="is not NAME=VALUE"):
        parse_param(text)


def test_outputs_are_named_after_the_stems_and_shared_stems_keep_their_extension() -> None:
    sources = [Path(name) for name in ("a.jpg", "A.png", "b.webp", "c.tiff", "c.png", "c-tiff.png")]
    expected = ["a-jpg.png", "A-png.png", "b.png", "c-tiff.png", "c-png.png", "c-tiff-2.png"]
    assert output_names(sources) == expected
    assert output_names([Path("My Photo.JPG")]) == ["My Photo.png"]


def test_inputs_are_the_folder_images_sorted_without_hidden_files_or_subfolders(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", ".hidden.png", "notes.txt", "c.gif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [path.name for path in list_inputs(tmp_path)] == ["a.png", "b.JPG", "c.gif"]


def test_formats_the_server_reads_go_as_they_are_others_as_png(tmp_path: Path) -> None:
    jpeg, bmp, text = tmp_path / "a.jpg", tmp_path / "b.bmp", tmp_path / "c.png"
    picture(0).save(jpeg)
    picture(1).save(bmp)
    text.write_text("not an image")
    assert read_image(jpeg) == jpeg.read_bytes()
    with Image.open(io.BytesIO(read_image(bmp))) as converted:
        assert converted.format == "PNG" and converted.size == SIZE
    with pytest.raises(ValueError, match="could not be read as an image"):
        read_image(text)


def test_a_result_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.png"
    write_atomically(target, b"whole")
    assert target.read_bytes() == b"whole" and [path.name for path in tmp_path.iterdir()] == ["a.png"]

    def interrupted(self: Path, other: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "b.png", b"half")
    assert [path.name for path in tmp_path.iterdir()] == ["a.png"]


def test_a_400_names_the_refused_items_or_blames_a_shared_field() -> None:
    details = {"items[1].image": ["image is truncated or corrupt"], "items[3].mask": ["mask is 2×2", "bad"]}
    assert item_errors(details, 4) == {1: "image is truncated or corrupt", 3: "mask is 2×2; bad"}
    assert item_errors({"items[0].image": ["x"], "items": ["51 more items have problems"]}, 60) == {0: "x"}
    assert item_errors({"parameters.dilate": ["too big"], "items[0].image": ["x"]}, 4) is None
    assert item_errors({"items": ["At most 500 items"]}, 4) is None


def test_nothing_to_do_exits_0_without_a_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    folder_of(source, 2)
    out.mkdir()
    for name in ("photo-00.png", "photo-01.png"):
        (out / name).write_bytes(b"done before")
    unreachable = "http://127.0.0.1:9"
    assert batch_command.main(["style_transfer", str(source), str(out), "--server", unreachable]) == 0
    assert "Nothing to do: all 2 outputs are in" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert batch_command.main(["style_transfer", str(empty), str(out), "--server", unreachable]) == 0
    assert "Nothing to do: no images" in capsys.readouterr().out


def test_the_output_folder_must_not_be_the_input_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder_of(tmp_path, 1)
    assert batch_command.main(["style_transfer", str(tmp_path), str(tmp_path / ".")]) == 2
    assert "OUTPUT_DIR must not be INPUT_DIR" in capsys.readouterr().err


def test_no_server_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    folder_of(tmp_path / "in", 1)
    done = run_command("style_transfer", tmp_path / "in", tmp_path / "out", "--server", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert done.stderr.strip() == "No Atelier at http://127.0.0.1:9 — start it with `make run`, or pass --server URL"
    assert not (tmp_path / "out").exists()


# The command against the live server


def test_a_folder_becomes_pngs_and_a_second_run_resumes(live_server: str, tmp_path: Path, redis_client: Any) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    folder_of(source, 6)
    mask = mask_file(tmp_path / "mask.png")
    args = ("object_removal", source, out, "--mask", mask, "--param", "engine=telea", "--server", live_server)
    done = run_command(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 to do, 0 skipped" in done.stdout
    assert "Written 6 to" in done.stdout and "failed 0" in done.stdout
    results = pngs(out)
    assert sorted(results) == [f"photo-{index:02d}.png" for index in range(6)]  # no temporary file left
    assert all(image.size == SIZE for image in results.values())

    (out / "photo-03.png").unlink()
    before = job_ids(redis_client)
    again = run_command(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 to do, 5 skipped" in again.stdout and "Written 1 to" in again.stdout
    assert len(job_ids(redis_client) - before) == 1  # only the missing one was sent
    assert sorted(pngs(out)) == sorted(results)

    third = run_command(*args)
    assert third.returncode == 0 and "Nothing to do: all 6 outputs are in" in third.stdout


def test_other_formats_and_shared_stems_through_style_transfer(live_server: str, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    picture(0).save(source / "cup.jpg")
    picture(1).save(source / "cup.bmp")
    picture(2).convert("P").save(source / "logo.gif")
    params = ("--param", "style=mosaic", "--param", "engine=fast")
    done = run_command("style_transfer", source, out, *params, "--server", live_server)
    assert done.returncode == 0, done.stdout + done.stderr
    results = pngs(out)
    assert sorted(results) == ["cup-bmp.png", "cup-jpg.png", "logo.png"]
    assert all(image.size == SIZE for image in results.values())


def test_one_face_onto_every_image_of_the_folder(
    live_server: str, engines: Path, faces: tuple[Path, Path], tmp_path: Path
) -> None:
    source_face, target = faces
    (tmp_path / "in").mkdir()
    for name in ("guest-1.png", "guest-2.png"):
        (tmp_path / "in" / name).write_bytes(target.read_bytes())
    done = run_command("face_swap", tmp_path / "in", tmp_path / "out", "--source", source_face, "--server", live_server)
    assert done.returncode == 0, done.stdout + done.stderr
    results = pngs(tmp_path / "out")
    assert sorted(results) == ["guest-1.png", "guest-2.png"]
    assert all(image.size == Image.open(target).size for image in results.values())


def test_bad_files_fail_alone_and_the_exit_status_is_1(live_server: str, tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    folder_of(source, 3)
    (source / "notes.jpg").write_text("not an image at all")  # refused here, never sent
    whole = io.BytesIO()
    picture(5).save(whole, format="PNG")
    (source / "torn.png").write_bytes(whole.getvalue()[:-200])  # its header reads: the server refuses it
    picture(6, (640, 480)).save(source / "wide.png")  # not the mask's size
    mask = mask_file(tmp_path / "mask.png")
    done = run_command("object_removal", source, out, "--mask", mask, "--server", live_server)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Written 3 to" in done.stdout and "failed 3" in done.stdout
    assert "failed     notes.jpg: could not be read as an image" in done.stdout
    assert "failed     torn.png: image is truncated or corrupt" in done.stdout
    assert "failed     wide.png: mask is 64×48 but image is 640×480; they must match" in done.stdout
    assert sorted(pngs(out)) == ["photo-00.png", "photo-01.png", "photo-02.png"]

    # Alone in its request, an image the shared mask does not fit still fails alone (exit 1, not 2).
    for name in ("notes.jpg", "torn.png"):
        (source / name).unlink()
    again = run_command("object_removal", source, out, "--mask", mask, "--server", live_server)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 to do, 3 skipped" in again.stdout
    assert "failed     wide.png: mask: mask is 64×48 but image is 640×480; they must match" in again.stdout


def test_items_failing_on_the_worker_are_summarised(live_server: str, tmp_path: Path) -> None:
    folder_of(tmp_path / "in", 2)
    params = ("--param", "fail=true", "--param", "steps=1", "--param", "delay=0")
    done = run_command("test_steps", tmp_path / "in", tmp_path / "out", *params, "--server", live_server)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Written 0 to" in done.stdout and "failed 2" in done.stdout
    assert "failed     photo-00.jpg: Asked to fail" in done.stdout
    assert not list((tmp_path / "out").iterdir())


def test_a_bad_shared_field_exits_2_with_the_server_details(live_server: str, tmp_path: Path) -> None:
    folder_of(tmp_path / "in", 2)
    mask = mask_file(tmp_path / "mask.png")
    args = ("object_removal", tmp_path / "in", tmp_path / "out", "--mask", mask, "--param", "dilate=999")
    done = run_command(*args, "--server", live_server)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "The server refused the batch:" in done.stderr
    assert "  parameters.dilate: " in done.stderr


def test_ctrl_c_cancels_the_batch(live_server: str, tmp_path: Path, redis_client: Any) -> None:
    settle(redis_client)
    folder_of(tmp_path / "in", 6)
    before = set(redis_client.scan_iter("atelier:batch:*"))
    slow = ("--param", "steps=600", "--param", "delay=0.05")  # 30 s an item: it is cancelled, never waited out
    argv = ["app.py", "batch", "test_steps", tmp_path / "in", tmp_path / "out", *slow, "--server", live_server]
    process = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=command_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    http = httpx.Client(base_url=live_server, timeout=10)

    def batch() -> dict[str, Any]:
        status: dict[str, Any] = http.get(f"/api/v1/batches/{batch_id}/").json()
        return status

    try:
        made = wait_until(lambda: set(redis_client.scan_iter("atelier:batch:*")) - before, 30, what="the batch")
        batch_id = next(iter(made)).decode().rsplit(":", 1)[1]
        wait_until(lambda: batch()["status"] == "PROCESSING", 30, what="an item running")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert "Interrupted: written 0 to" in out and "cancelled what was left" in out
    status = batch()
    assert status["status"] == "REVOKED" and status["counts"]["REVOKED"] == 6, status
    settle(redis_client)  # the running item stops at its next step


TOKEN = "batch-command-test-token-0123456789"


@pytest.fixture(scope="module")
def strict_server(live_server: str) -> Any:
    """The REST API of the same stack with a token, small limits and a rate limit."""
    from api import create_api
    from jobs.client import JobClient
    from settings import Settings
    from tasks import get_app
    from tests.support.stack import serving

    settings = Settings(max_upload_mb=0.03, max_batch_items=2, api_tokens=TOKEN, rate_limit="4/2s")
    client = JobClient(settings, get_app())
    with serving(create_api(lambda: client, settings)) as url:
        yield url


def test_a_strict_server_gets_smaller_chunks_in_time(strict_server: str, tmp_path: Path) -> None:
    import numpy as np

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    noise = np.random.default_rng(7)
    for index in range(6):  # about 9 KB each: three fit the 30 KB limit, not six
        Image.fromarray(noise.integers(0, 255, (*SIZE[::-1], 3), dtype=np.uint8)).save(source / f"n{index}.png")
    mask = mask_file(tmp_path / "mask.png")
    refused = run_command("object_removal", source, out, "--mask", mask, "--server", strict_server)
    assert refused.returncode == 2
    assert "refused the credentials (401): pass --token" in refused.stderr
    done = run_command("object_removal", source, out, "--mask", mask, "--server", strict_server, ATELIER_TOKEN=TOKEN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sending smaller chunks" in done.stderr  # 413
    assert "sending 1 at a time" in done.stderr  # over ATELIER_MAX_BATCH_ITEMS
    assert "Over the server's rate limit" in done.stderr  # 429
    assert len(pngs(out)) == 6
