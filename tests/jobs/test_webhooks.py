"""Webhooks without Redis: what a submission may ask for, which targets are refused (names resolved,
never connected to), the signature as Standard Webhooks libraries verify it, the notifier's events,
and one attempt's redirects against a receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import itertools
import socket
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from jobs.notifier import Seen, Watch, decide
from jobs.status import JobStatus, WebhookReport, summarise_batch, webhook_report
from jobs.webhooks import (
    TargetRefused,
    check_target,
    check_webhook,
    new_client,
    post,
    sign,
    signed_headers,
    split_webhook,
    with_webhook_errors,
)
from pipelines.validation import InvalidSubmission
from settings import Settings
from tasks.states import JobState
from tests.support.receiver import failing_first, receiving, redirect_to

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NOTHING_ALLOWED: Any = (frozenset(), ())
LOOPBACK_ALLOWED = Settings(webhook_secret=SECRET, webhook_allow="127.0.0.0/8").webhook_allowed


def settings(**extra: Any) -> Settings:
    return Settings(webhook_secret=SECRET, **extra)


# -- targets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("http://172.16.0.1:8080/hook", "private"),
        ("http://127.0.0.1/hook", "loopback"),
        ("http://localhost:9000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # an IPv4-mapped address is judged as its IPv4
        ("http://[64:ff9b::a00:1]/hook", "private"),  # NAT64 of 10.0.0.1
        ("http://224.0.0.1/hook", "multicast"),
        ("http://100.64.0.1/hook", "non-public"),  # carrier-grade NAT
    ],
)
def test_private_loopback_and_link_local_targets_are_refused(url: str, kind: str) -> None:
    with pytest.raises(TargetRefused, match=f"is an? {kind} address.*ATELIER_WEBHOOK_ALLOW"):
        check_target(url, NOTHING_ALLOWED)
    webhook, details = check_webhook({"webhook": url}, settings())
    assert webhook is None and kind in details["webhook"][0]


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is resolved (here by a stand-in for the system's resolver: no DNS, no connection)."""
    asked: list[tuple[str, int]] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(TargetRefused, match=r"hooks\.example\.com resolves to 10\.1\.2\.3, which is a private address"):
        check_target("https://Hooks.Example.com./atelier", NOTHING_ALLOWED)
    assert asked == [("hooks.example.com", 443)]
    # One private address among public ones is enough to refuse: any of them may be the one connected to.
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::1", port, 0, 0)),
    ])  # fmt: skip
    with pytest.raises(TargetRefused, match="fd00::1"):
        check_target("https://hooks.example.com/", NOTHING_ALLOWED)


def test_public_targets_pass_and_unresolvable_names_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: public)
    target = check_target("https://hooks.example.com/atelier?x=1", NOTHING_ALLOWED)
    assert target.addresses == ("93.184.216.34",) and target.host == "hooks.example.com"

    def nowhere(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", nowhere)
    webhook, details = check_webhook({"webhook": "https://no-such-host.invalid/"}, settings())
    assert webhook is None and "no-such-host.invalid does not resolve" in details["webhook"][0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "must start with https:// or http://"),
        ("file:///etc/passwd", "must start with https:// or http://"),
        ("http:///hook", "has no host"),
        ("https://", "has no host"),
        ("not a url", "must start with https://"),
        ("http://exa mple.com/", "Not a valid host name"),
        ("http://example.com:99999/", "Not a valid port"),
        ("http://example.com/\r\nX-Injected: 1", "Not a valid URL"),
        ("//example.com/hook", "must start with https://"),
        ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    webhook, details = check_webhook({"webhook": url}, settings())
    assert webhook is None and message in details["webhook"][0], details


def test_the_allow_list_admits_networks_and_hostnames() -> None:
    allowed = settings(webhook_allow="127.0.0.1/8, localhost").webhook_allowed
    assert check_target("http://127.0.0.1:9/hook", allowed).addresses == ("127.0.0.1",)
    assert check_target("http://127.3.4.5/hook", allowed)
    assert check_target("http://localhost/hook", allowed)  # the name itself is allowed, whatever it resolves to
    with pytest.raises(TargetRefused, match="private"):
        check_target("http://10.0.0.1/hook", allowed)
    assert check_target("http://10.9.9.9/", settings(webhook_allow="10.0.0.0/8").webhook_allowed)
    webhook, details = check_webhook({"webhook": "http://127.0.0.1:8/x"}, settings(webhook_allow="127.0.0.0/8"))
    assert details == {} and webhook is not None and webhook.events == ("completed",)


def test_the_allow_list_and_the_secret_are_checked_at_start() -> None:
    for bad in ("hooks..internal", "10.0.0.0/33", "http://x"):
        with pytest.raises(ValidationError, match="ATELIER_WEBHOOK_ALLOW"):
            Settings(webhook_allow=bad)
    for bad in ("s3cr3t-Value", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValidationError, match="whsec_ followed by the base64") as refused:
            Settings(webhook_secret=bad)
        assert bad not in str(refused.value)  # a secret, even a wrong one, is never echoed
    assert Settings(webhook_retry_delays="0.1, 0.2").webhook_retry_delays == (0.1, 0.2)
    assert Settings(webhook_retry_delays="[1, 2]").webhook_retry_delays == (1.0, 2.0)


# -- what a submission asks for --------------------------------------------------------------------
def test_events_default_to_completed_and_accept_form_text() -> None:
    url = "http://127.0.0.1:9/hook"
    loopback = settings(webhook_allow="127.0.0.0/8")
    for value, expected in [
        (None, ("completed",)),
        (["start", "completed"], ("start", "completed")),
        ("start, progress", ("start", "progress")),  # a multipart field
        ('["progress"]', ("progress",)),
        (["completed", "completed"], ("completed",)),
    ]:
        webhook, details = check_webhook({"webhook": url, "webhook_events": value}, loopback)
        assert details == {} and webhook is not None and webhook.events == expected, value
    for value in (["finished"], "start,done", [1], {"start": True}, [" "]):
        webhook, details = check_webhook({"webhook": url, "webhook_events": value}, loopback)
        assert webhook is None and list(details) == ["webhook_events"], value
    assert check_webhook({"webhook_events": ["start"]}, loopback)[1] == {
        "webhook_events": ["webhook_events needs a webhook URL"]
    }
    assert check_webhook({}, loopback) == (None, {})


def test_without_a_secret_webhooks_are_refused() -> None:
    webhook, details = check_webhook({"webhook": "https://example.com/hook"}, Settings(webhook_secret=None))
    assert webhook is None and "ATELIER_WEBHOOK_SECRET is not set" in details["webhook"][0]
    webhook, details = check_webhook({"webhook": 42}, settings())
    assert webhook is None and "must be a URL" in details["webhook"][0]


def test_webhook_problems_are_told_with_the_other_fields() -> None:
    rest, asked = split_webhook({"task_type": "x", "webhook": "ftp://a", "webhook_events": ["done"]})
    assert rest == {"task_type": "x"} and set(asked) == {"webhook", "webhook_events"}
    webhook_errors = {"webhook": ["bad"]}
    with pytest.raises(InvalidSubmission) as both, with_webhook_errors(webhook_errors):
        raise InvalidSubmission({"prompt": ["Prompt is required"]})
    assert both.value.details == {"prompt": ["Prompt is required"], "webhook": ["bad"]}
    with pytest.raises(InvalidSubmission) as alone, with_webhook_errors(webhook_errors):
        pass
    assert alone.value.details == webhook_errors
    with with_webhook_errors({}):
        pass


# -- signing ---------------------------------------------------------------------------------------
def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    key = settings().webhook_key
    assert key == bytes(range(32))
    body = '{"task_id":"3f2c","status":"SUCCESS","message":"Done · 100 %"}'.encode()
    headers = signed_headers(key, "msg_1", body, "completed")
    assert headers["webhook-id"] == "msg_1" and headers["content-type"] == "application/json"
    assert Webhook(SECRET).verify(body, headers) == {"task_id": "3f2c", "status": "SUCCESS", "message": "Done · 100 %"}
    assert Webhook(SECRET).verify(body.decode(), headers)  # the library takes the text too
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"SUCCESS", b"FAILURE"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "msg_2"})
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    # The library's own signature of the same message is ours, to the byte.
    timestamp = int(headers["webhook-timestamp"])
    from datetime import UTC, datetime

    assert Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(timestamp, UTC), body.decode()) == sign(
        key, "msg_1", timestamp, body
    )


# -- the notifier's events -------------------------------------------------------------------------
def processing(progress: int, message: str = "Working") -> Seen:
    return Seen(JobState.PROCESSING, (progress, message))


def test_events_follow_what_the_watch_asked_for() -> None:
    all_events = Watch("http://x", ("start", "progress", "completed"))
    assert decide(all_events, Seen(JobState.PENDING), 0)[0] is None
    event, started = decide(all_events, processing(0, "Starting"), 10.0)
    assert event == "start" and started.started and started.sent == (0, "Starting")
    assert decide(started, processing(0, "Starting"), 11.0)[0] is None  # nothing new
    assert decide(started, processing(5), 10.2)[0] is None  # too soon after the last one: throttled
    event, later = decide(started, processing(5), 10.5)
    assert event == "progress" and later.sent == (5, "Working") and later.at == 10.5
    assert decide(later, Seen(JobState.SUCCESS), 10.6)[0] == "completed"

    only_completed = Watch("http://x", ("completed",))
    event, watched = decide(only_completed, processing(3), 1.0)
    assert event is None and watched.started
    assert decide(watched, processing(50), 5.0)[0] is None
    assert decide(watched, Seen(JobState.REVOKED), 6.0)[0] == "completed"

    progress_only = Watch("http://x", ("progress",))
    assert decide(progress_only, processing(3), 1.0)[0] == "progress"  # its first sighting counts
    assert decide(Watch("http://x", ("start",)), Seen(JobState.FAILURE), 1.0)[0] is None


def test_progress_events_come_at_most_twice_a_second() -> None:
    watch = Watch("http://x", ("progress",))
    sent = []
    for tick in range(40):  # the notifier looks every 0.25 s, and progress moves at every look
        now = tick * 0.25
        event, watch = decide(watch, processing(tick), now)
        if event:
            sent.append(now)
    assert len(sent) == 20 and all(b - a >= 0.5 for a, b in itertools.pairwise(sent))


# -- the status ------------------------------------------------------------------------------------
def test_the_status_shows_the_webhook_only_when_there_is_one() -> None:
    record = {"task_type": "test_steps", "queue": "cpu"}
    assert webhook_report(record) is None
    report = webhook_report({**record, "webhook": "{}", "webhook_delivered": "1", "webhook_failed": "2"})
    assert report == WebhookReport(delivered=1, failed=2)
    plain = JobStatus(task_id="a", status=JobState.SUCCESS, progress=100, message="Done", result_available=True,
                      task_type="test_steps", queue="cpu")  # fmt: skip
    assert "webhook" not in plain.as_dict()
    with_webhook = plain.model_copy(update={"webhook": report})
    assert with_webhook.as_dict()["webhook"] == {"delivered": 1, "failed": 2}
    failing = WebhookReport(delivered=0, failed=1, last_error="HTTP 500 (attempt 1 of 6; trying again in 5 s)")
    assert plain.model_copy(update={"webhook": failing}).as_dict()["webhook"]["last_error"].startswith("HTTP 500")
    batch = summarise_batch("b", "test_steps", [], False)
    assert "webhook" not in batch.model_dump(mode="json")
    assert summarise_batch("b", "test_steps", [], False, report).model_dump(mode="json")["webhook"]["delivered"] == 1


# -- one attempt, against a receiver on 127.0.0.1 --------------------------------------------------
def test_an_attempt_follows_redirects_and_checks_each_target() -> None:
    body = b'{"status":"SUCCESS"}'
    headers = signed_headers(bytes(32), "msg_r", body, "completed")
    with receiving() as receiver, new_client() as client:
        receiver.answers["/moved"] = redirect_to("/here")
        receiver.answers["/to-private"] = redirect_to("http://10.0.0.1/steal")
        receiver.answers["/loop"] = redirect_to("/loop")
        receiver.answers["/broken"] = failing_first(1)
        assert post(client, receiver.url + "/moved", body, headers, LOOPBACK_ALLOWED) is None
        here = receiver.to("/here")
        assert len(here) == 1 and here[0].body == body and here[0].headers["webhook-id"] == "msg_r"
        assert here[0].headers["host"] == receiver.url.removeprefix("http://")
        error = post(client, receiver.url + "/to-private", body, headers, LOOPBACK_ALLOWED)
        assert error is not None and error.startswith("refused: 10.0.0.1 is a private address")
        assert post(client, receiver.url + "/loop", body, headers, LOOPBACK_ALLOWED) == "more than 3 redirects"
        assert len(receiver.to("/loop")) == 4
        assert post(client, receiver.url + "/broken", body, headers, LOOPBACK_ALLOWED) == "HTTP 500"
        assert post(client, receiver.url + "/broken", body, headers, LOOPBACK_ALLOWED) is None
        # Without the allow list, the receiver on loopback is refused before any connection.
        before = len(receiver.received)
        error = post(client, receiver.url + "/here", body, headers, NOTHING_ALLOWED)
        assert error is not None and "loopback" in error and len(receiver.received) == before
    with new_client() as client:  # nobody listens there any more
        error = post(client, receiver.url + "/gone", body, headers, LOOPBACK_ALLOWED)
        assert error is not None and error.startswith("ConnectError")
    assert isinstance(new_client(), httpx.Client)


def test_logs_never_show_a_receivers_path_or_query() -> None:
    from jobs.webhook_worker import safe_url

    assert safe_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc") == "https://hooks.slack.com/…"
    assert safe_url("http://127.0.0.1:8000/x") == "http://127.0.0.1:8000/…"
    assert safe_url("http://[::1/") == "an invalid URL"
