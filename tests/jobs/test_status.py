"""The status mapping and the start estimate: pure functions, no Redis."""

from __future__ import annotations

import pytest

from jobs.status import (
    JobStatus,
    QueueView,
    describe,
    describe_queued,
    failure_message,
    is_queued,
    ordinal,
    start_estimate,
)
from tasks.states import FINISHED, JobState

RECORD = {"task_type": "background_removal", "queue": "cpu"}


@pytest.mark.parametrize(
    ("meta", "state", "progress", "message"),
    [
        ({"status": "STARTED"}, JobState.PROCESSING, 0, "Starting"),
        ({"status": "PROCESSING", "result": {"progress": 42, "message": "Finding the subject"}}, "PROCESSING", 42,
         "Finding the subject"),
        ({"status": "PROCESSING", "result": None}, JobState.PROCESSING, 0, "Working"),
        ({"status": "RETRY", "result": "broker hiccup"}, JobState.PROCESSING, 0, "Retrying: broker hiccup"),
        ({"status": "SUCCESS", "result": {}}, JobState.SUCCESS, 100, "Done"),
        ({"status": "FAILURE", "result": {"exc_type": "JobFailed", "exc_message": ["No face found"]}},
         JobState.FAILURE, 0, "No face found"),
        ({"status": "FAILURE", "result": None}, JobState.FAILURE, 0, "Job failed"),
        ({"status": "REVOKED", "result": None}, JobState.REVOKED, 0, "Cancelled"),
    ],
)  # fmt: skip
def test_celery_states_map_to_the_five_client_states(meta: dict, state: str, progress: int, message: str) -> None:
    status = describe("id-1", RECORD, meta)
    assert (status.status, status.progress, status.message) == (state, progress, message)
    assert status.result_available == (state == JobState.SUCCESS)
    assert status.finished == (state in FINISHED)
    assert (status.task_type, status.queue) == ("background_removal", "cpu")


def test_a_cancel_wins_over_whatever_the_worker_wrote_last() -> None:
    meta = {"status": "PROCESSING", "result": {"progress": 80, "message": "almost"}}
    status = describe("id-1", {**RECORD, "outcome": "REVOKED"}, meta)
    assert (status.status, status.message) == (JobState.REVOKED, "Cancelled")
    assert not is_queued({**RECORD, "outcome": "REVOKED"}, {"status": "PENDING"})
    assert is_queued(RECORD, {"status": "PENDING"})


def test_a_state_clients_do_not_know_shows_as_processing() -> None:
    status = describe("id-1", RECORD, {"status": "RECEIVED"})
    assert (status.status, status.message) == (JobState.PROCESSING, "Received")


def test_progress_keeps_the_preview_and_when_it_was_published() -> None:
    meta = {"status": "PROCESSING", "result": {"progress": 10, "message": "step 1/4", "updated_at": 5.0, "preview": 3}}
    status = describe("id-1", RECORD, meta)
    assert status.updated_at == 5.0
    assert status.preview is None  # not a string: not passed on
    assert "preview" not in status.as_dict() and status.as_dict()["updated_at"] == 5.0


def test_failure_messages_read_celery_exception_info() -> None:
    assert failure_message({"exc_type": "ValueError", "exc_message": ("bad", "input")}) == "bad input"
    assert failure_message({"exc_type": "ValueError", "exc_message": []}) == "ValueError"
    assert failure_message("plain text") == "plain text"


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip


def test_queued_status_names_the_place_and_the_estimate() -> None:
    status = describe_queued("id-1", RECORD, QueueView(position=3, workers=1, typical_runtime=2.0))
    assert status.status == JobState.PENDING and status.position == 3
    assert status.eta_seconds == 4.0
    assert status.message == "Queued — 3rd in the cpu queue, starts in about 4 s"
    assert status.as_dict()["eta_seconds"] == 4.0


def test_queued_without_workers_says_so_and_gives_no_estimate() -> None:
    status = describe_queued("id-1", {**RECORD, "note": "retrying after a worker was lost"}, QueueView(1, 0, 2.0))
    assert status.eta_seconds is None
    assert status.message == (
        "Queued — 1st in the cpu queue (retrying after a worker was lost); "
        "no cpu worker is running, so it waits until one starts"
    )
    assert "eta_seconds" in status.as_dict()  # null while queued: the field is there


def test_queued_with_no_run_times_yet_has_no_estimate() -> None:
    status = describe_queued("id-1", RECORD, QueueView(2, 1, None))
    assert status.eta_seconds is None and status.message == "Queued — 2nd in the cpu queue"


def test_taken_off_the_queue_before_the_first_update_is_starting() -> None:
    status = describe_queued("id-1", RECORD, QueueView(None, 1, 2.0))
    assert (status.status, status.message, status.position) == (JobState.PROCESSING, "Starting", None)
    assert "position" not in status.as_dict() and "eta_seconds" not in status.as_dict()


def test_start_estimate_extrapolates_running_jobs_and_shares_the_queue() -> None:
    assert start_estimate(1, 1, 10.0, []) == 0.0
    assert start_estimate(3, 1, 10.0, []) == 20.0
    assert start_estimate(3, 2, 10.0, []) == 10.0
    # Half done after 4 s: 4 s left; then one job ahead at 10 s.
    assert start_estimate(2, 1, 10.0, [(4.0, 0.5)]) == pytest.approx(14.0)
    # Barely started: a typical job's time minus what it took, or half again what it took.
    assert start_estimate(1, 1, 10.0, [(2.0, 0.0)]) == pytest.approx(8.0)
    assert start_estimate(1, 1, 10.0, [(30.0, 0.01)]) == pytest.approx(15.0)


def test_waiting_clients_ignore_a_moving_estimate() -> None:
    def queued(eta: float) -> JobStatus:
        return describe_queued("id-1", RECORD, QueueView(2, 1, eta))

    assert queued(3.0).looks() == queued(9.0).looks()
    assert queued(3.0).looks() != describe_queued("id-1", RECORD, QueueView(1, 1, 3.0)).looks()


def test_the_start_countdown_is_steady_while_the_estimates_wobble() -> None:
    from jobs.status import StartCountdown, queued_message, steady_seconds

    countdown = StartCountdown()
    # Polls a second apart whose estimates jump about as running jobs speed up and slow down (6 → 7 → 9 → 10 → 1).
    shown = [countdown.seconds(eta, now) for now, eta in enumerate([6.0, 7.0, 9.0, 10.0, 4.0, 3.5, 2.0, 1.0])]
    assert shown == sorted(shown, reverse=True), shown  # never counts up by a second or two
    assert shown[0] == 6 and shown[-1] <= 2
    countdown = StartCountdown()
    assert countdown.seconds(5.0, 0.0) == 5
    assert countdown.seconds(60.0, 1.0) == 20  # a real change (a long job started ahead): shown, smoothed
    assert [steady_seconds(s) for s in (0.2, 9.4, 12, 58, 61, 150)] == [1, 9, 10, 60, 60, 120]
    status = describe_queued("t", RECORD, QueueView(2, 1, 4.0))
    assert queued_message(status, 35) == "Queued — 2nd in the cpu queue, starts in about 35 s"
    assert queued_message(status, 120) == "Queued — 2nd in the cpu queue, starts in about 2 min"
    assert queued_message(status, None) == "Queued — 2nd in the cpu queue"
