"""The pure parts of batches: archives in and out, result names, the aggregate status, validation."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from jobs.archive import ArchiveRejected, read_archive, result_names, safe_stem, write_zip
from jobs.status import BatchItemStatus, summarise_batch
from pipelines.batch_validation import validate_batch
from pipelines.validation import InvalidSubmission
from tasks.states import JobState
from tasks.store import LEVEL_SPAN, broker_list, level_for, queue_score


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def zipped(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_archive_gives_its_images_by_file_name_skipping_what_archivers_add() -> None:
    data = zipped(
        {"shoot/a.png": png(), "b.PNG": png(), "__MACOSX/._a.png": b"x", "shoot/.DS_Store": b"x", "shoot/": b""}
    )
    assert [name for name, _ in read_archive(data, 10, 1 << 20)] == ["shoot-a.png", "b.PNG"]


def test_archive_items_in_folders_keep_the_folders_below_the_one_all_share() -> None:
    zipped_folder = zipped({"shoot/front/01.jpg": png(), "shoot/back/01.jpg": png(), "shoot/02.jpg": png()})
    names = [name for name, _ in read_archive(zipped_folder, 10, 1 << 20)]
    assert names == ["front-01.jpg", "back-01.jpg", "02.jpg"]
    assert result_names(names) == ["front-01.png", "back-01.png", "02.png"]
    one_folder = zipped({"shoot/a.png": png(), "shoot/b.png": png()})
    assert [name for name, _ in read_archive(one_folder, 10, 1 << 20)] == ["a.png", "b.png"]


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ({"../x.png": png()}, "outside the archive"),
        ({"a/../../x.png": png()}, "outside the archive"),
        ({"/abs.png": png()}, "outside the archive"),
        ({"C:\\x.png": png()}, "outside the archive"),
        ({"notes.txt": b"hi"}, "not an image"),
        ({}, "no images"),
        ({f"{index}.png": png() for index in range(4)}, "at most 3 items"),
    ],
)
def test_archives_that_are_refused(entries: dict[str, bytes], words: str) -> None:
    with pytest.raises(ArchiveRejected, match=words):
        read_archive(zipped(entries), 3, 1 << 20)


def test_a_zip_bomb_is_refused_by_ratio_and_by_what_is_really_read() -> None:
    with pytest.raises(ArchiveRejected, match="zip bomb"):
        read_archive(zipped({"bomb.png": b"\0" * (10 << 20)}), 3, 100 << 20)
    with pytest.raises(ArchiveRejected, match=r"over the limit|more than"):
        read_archive(zipped({"a.png": png((300, 300)), "b.png": png((300, 300))}, zipfile.ZIP_STORED), 3, 1000)
    with pytest.raises(ArchiveRejected, match="not a zip"):
        read_archive(b"PK\x03\x04garbage", 3, 1000)


def test_result_names_are_safe_and_unique() -> None:
    names = ["shoe-01.jpg", "Shoe-01.png", None, "../../etc/passwd", "a b/c:d?.webp", "..", "   ", "résumé.jpg"]
    assert result_names(names) == [
        "shoe-01.png",
        "Shoe-01-2.png",
        "item-0003.png",
        "passwd.png",
        "c-d.png",
        "item-0006.png",
        "item-0007.png",
        "résumé.png",
    ]
    assert safe_stem("C:\\photos\\cat.tiff") == "cat" and safe_stem(".hidden") == "hidden"


def test_write_zip_holds_the_files_and_a_manifest() -> None:
    archive = zipfile.ZipFile(write_zip([("a.png", png())], {"items": [{"name": "a"}]}))
    assert archive.namelist() == ["a.png", "manifest.json"]
    assert json.loads(archive.read("manifest.json")) == {"items": [{"name": "a"}]}


def item(state: JobState, progress: int = 0) -> BatchItemStatus:
    return BatchItemStatus(task_id="t", status=state, progress=progress, message="")


@pytest.mark.parametrize(
    ("states", "cancelled", "expected"),
    [
        ([JobState.PENDING, JobState.PENDING], False, JobState.PENDING),
        ([JobState.PROCESSING, JobState.PENDING], False, JobState.PROCESSING),
        ([JobState.SUCCESS, JobState.PENDING], False, JobState.PROCESSING),
        ([JobState.SUCCESS, JobState.SUCCESS], False, JobState.SUCCESS),
        ([JobState.SUCCESS, JobState.FAILURE], False, JobState.FAILURE),
        ([JobState.SUCCESS, JobState.REVOKED], True, JobState.REVOKED),
        ([JobState.FAILURE, JobState.REVOKED], True, JobState.REVOKED),
        ([JobState.PROCESSING, JobState.REVOKED], True, JobState.PROCESSING),
    ],
)
def test_the_batch_status_follows_its_items(states: list[JobState], cancelled: bool, expected: JobState) -> None:
    status = summarise_batch("b", "test", [item(state) for state in states], cancelled)
    assert status.status == expected
    assert sum(status.counts.values()) == len(states)


def test_batch_progress_runs_over_all_items_and_reaches_100_only_at_the_end() -> None:
    status = summarise_batch(
        "b", "t", [item(JobState.SUCCESS, 100), item(JobState.PROCESSING, 50), item(JobState.PENDING)], False
    )
    assert status.progress == 50 and status.message == "1 of 3 done · 1 running"
    almost = summarise_batch("b", "t", [item(JobState.SUCCESS, 100)] * 199 + [item(JobState.PROCESSING, 99)], False)
    assert almost.progress == 99
    done = summarise_batch("b", "t", [item(JobState.SUCCESS, 100), item(JobState.FAILURE)], False)
    assert done.progress == 100 and done.message == "1 of 2 done · 1 failed"


def test_owners_take_turns_and_batch_items_queue_after_single_jobs() -> None:
    assert [level_for(waiting, batched=False) for waiting in (0, 1, 5, 6, 300)] == [0, 1, 5, 6, 6]
    assert [level_for(waiting, batched=True) for waiting in (0, 1, 2, 300)] == [7, 8, 9, 9]
    last_single, first_item = queue_score(2_000_000_000.0, level_for(300, False)), queue_score(1.0, level_for(0, True))
    assert last_single < first_item  # a batch item never goes before a single job
    assert queue_score(5.0, 7) == 7 * LEVEL_SPAN + 5.0
    assert broker_list("cpu", 0) == "cpu" and broker_list("cpu", 9) == "cpu\x06\x169"
    assert broker_list("gpu", 4) == "gpu\x06\x164"


def test_batch_validation_names_the_item_and_reports_shared_problems_once() -> None:
    image = png()
    with pytest.raises(InvalidSubmission) as refused:
        validate_batch(
            {"task_type": "background_removal", "parameters": {"model": 5}, "prompt": "a cat"},
            [{"image": image}, {"image": b"nope"}],
            10_000,
            10,
        )
    assert set(refused.value.details) == {"parameters.model", "prompt"}
    with pytest.raises(InvalidSubmission) as refused:
        validate_batch({"task_type": "background_removal"}, [{"image": image}, {"image": b"nope"}, {}], 10_000, 10)
    assert set(refused.value.details) == {"items[1].image", "items[2].image"}
    operation, items = validate_batch(
        {"task_type": "image_generation", "parameters": {"steps": 2}},
        [{"prompt": "a red shoe"}, {"prompt": "a blue shoe", "parameters": {"seed": 7}, "name": "blue"}],
        10_000,
        10,
    )
    assert operation.name == "image_generation"
    assert [item.submission.prompt for item in items] == ["a red shoe", "a blue shoe"]
    assert items[1].submission.parameters == {"steps": 2, "seed": 7} and items[1].name == "blue"


def test_a_value_an_item_gave_itself_is_that_items_problem_even_when_every_item_has_it() -> None:
    image, mask = png(), png()
    shared = {"task_type": "object_removal", "parameters": {"engine": "telea"}, "mask": mask}
    bad = {"image": image, "parameters": {"radius": -1}}
    for items in ([bad], [bad, bad]):
        with pytest.raises(InvalidSubmission) as refused:
            validate_batch(shared, items, 10_000, 10)
        assert set(refused.value.details) == {f"items[{i}].parameters.radius" for i in range(len(items))}
    with pytest.raises(InvalidSubmission) as refused:  # the shared mask is fine; the item's own is not
        validate_batch(shared, [{"image": image, "mask": b"zz"}], 10_000, 10)
    assert set(refused.value.details) == {"items[0].mask"}
    with pytest.raises(InvalidSubmission) as refused:  # an item's own bad value beside one every item shares
        validate_batch({**shared, "parameters": {"engine": "telea", "radius": 0}}, [{"image": image}] * 2, 10_000, 10)
    assert set(refused.value.details) == {"parameters.radius"}
    with pytest.raises(InvalidSubmission) as refused:  # a mask neither the batch nor any item gives: told once
        validate_batch({"task_type": "object_removal"}, [{"image": image}] * 3, 10_000, 10)
    assert set(refused.value.details) == {"mask"}
