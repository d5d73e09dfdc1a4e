"""Webhooks in the worker: threads of each worker's main process (never its pool processes, so a
delivery never waits behind a job) look for events and send the due deliveries.

Celery imports this module in every worker (``tasks.celery_app``'s ``include``); a worker with
``ATELIER_WEBHOOK_SECRET`` set starts one loop (the notifier, under a lock so that one worker at a
time looks, then the claim of due deliveries) and SENDERS sender threads. Daemon threads: a worker
that stops leaves its claimed deliveries to be claimed again once their lease runs out.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from typing import Any

import httpx
from celery import Celery, signals

from jobs.deliveries import Delivery, DeliveryQueue
from jobs.notifier import LOOK_EVERY, Notifier
from jobs.webhooks import new_client, post, signed_headers
from settings import Settings
from tasks.celery_app import make_celery
from tasks.store import JobStore, connect

log = logging.getLogger(__name__)
SENDERS = 4  # deliveries in flight per worker
SENDER_THREAD = "atelier-webhook-sender"
_stop = threading.Event()


class WebhookService:
    """One worker's share of the webhooks: the notifier's looks and the senders."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        assert settings.webhook_key is not None
        self.key, self.allowed = settings.webhook_key, settings.webhook_allowed
        store = JobStore(connect(settings.broker_url), settings.result_ttl)
        self.deliveries = DeliveryQueue(store.redis, settings.result_ttl, settings.webhook_retry_delays)
        holder = f"{socket.gethostname()}#{os.getpid()}"
        self.notifier = Notifier(store, celery, self.deliveries, holder)
        self.work: queue.Queue[str] = queue.Queue()
        self.idle = SENDERS
        self.lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self.run, name="atelier-webhooks", daemon=True).start()
        for index in range(SENDERS):
            threading.Thread(target=self.send_loop, name=f"{SENDER_THREAD}-{index}", daemon=True).start()

    def run(self) -> None:
        while not _stop.is_set():
            try:
                self.notifier.look()
                self.dispatch()
            except Exception as exc:  # Redis away: keep trying, as the heartbeat does
                log.debug("webhooks: %s", exc)
            _stop.wait(LOOK_EVERY)

    def dispatch(self) -> None:
        """Claim as many due deliveries as there are idle senders, and hand them over."""
        with self.lock:
            free = self.idle - self.work.qsize()
        if free > 0 and self.deliveries.pending():
            for delivery_id in self.deliveries.claim(free):
                self.work.put(delivery_id)

    def send_loop(self) -> None:
        client = new_client()
        while True:
            delivery_id = self.work.get()
            with self.lock:
                self.idle -= 1
            try:
                self.deliver(client, delivery_id)
            except Exception:  # Redis away as it settles: the lease runs out and it is sent again
                log.exception("webhook delivery %s", delivery_id)
            finally:
                with self.lock:
                    self.idle += 1

    def deliver(self, client: Any, delivery_id: str) -> None:
        """One attempt of one delivery, settled in Redis: delivered, retried later, or given up."""
        delivery: Delivery | None = self.deliveries.load(delivery_id)
        if delivery is None:
            return
        body = delivery.body.encode()
        headers = signed_headers(self.key, delivery_id, body, delivery.event)
        try:
            error = post(client, delivery.url, body, headers, self.allowed)
        except Exception as exc:  # whatever the receiver did, this attempt failed; the next may not
            error = f"{type(exc).__name__}: {exc}"[:200]
        if error is None:
            self.deliveries.delivered(delivery_id, delivery)
            return
        delay = self.deliveries.failed(delivery_id, delivery, error)
        log.warning(
            "Webhook %s (%s) to %s failed: %s; %s",
            delivery_id,
            delivery.event,
            safe_url(delivery.url),
            error,
            "given up" if delay is None else f"trying again in {delay:g} s",
        )


def safe_url(url: str) -> str:
    """The URL as logs may show it: a receiver's path or query is often its secret (Slack's are)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}/…"


class QuietSenders(logging.Filter):
    """httpx logs every request's URL at INFO: not the senders', for the same reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith(SENDER_THREAD)


@signals.worker_ready.connect
def start_webhooks(sender: Any = None, **kwargs: Any) -> None:
    settings: Settings = sender.app.conf.atelier_settings
    if settings.webhook_key is None:
        return  # webhooks are refused at submit without a secret; another worker may have one
    logging.getLogger("httpx").addFilter(QuietSenders())
    WebhookService(settings, make_celery(settings)).start()  # its own connections, as the heartbeat's


@signals.worker_shutting_down.connect
def stop_webhooks(**kwargs: Any) -> None:
    _stop.set()
