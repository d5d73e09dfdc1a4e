"""Webhooks: what a submission may ask for, which targets may be called, how a delivery is signed
and sent. The submit paths validate with these; the workers' senders check every attempt's target
(and every redirect's) again, since a name may resolve elsewhere by then.

Signatures follow the Standard Webhooks specification: ``webhook-signature: v1,<base64 HMAC-SHA256
of "<webhook-id>.<webhook-timestamp>.<body>">``, keyed by the base64-decoded part of
``ATELIER_WEBHOOK_SECRET`` after ``whsec_``, so that any Standard Webhooks library verifies them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from pipelines.validation import Details, InvalidSubmission
from settings import HOSTNAME, IPNetwork, Settings

EVENTS = ("start", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
FIELDS = ("webhook", "webhook_events")  # taken out of a submission before the operation's validation
MAX_URL = 2048
TIMEOUT = 10.0  # seconds for each step of an attempt: connecting, sending, the answer's headers
MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}
MAX_ERROR = 200  # characters of a failed attempt's description kept for the status

Allowed = tuple[frozenset[str], tuple[IPNetwork, ...]]  # Settings.webhook_allowed
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class WebhookRequest:
    """A validated webhook: the URL to POST to and the events the submitter wants."""

    url: str
    events: tuple[str, ...]

    def as_record(self) -> dict[str, Any]:
        return {"url": self.url, "events": list(self.events)}


class TargetRefused(ValueError):
    """A webhook target that may not be called; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked target: its URL, its host name (ASCII), the Host header it needs, and the
    addresses allowed for it."""

    url: httpx.URL
    name: str
    host: str
    addresses: tuple[str, ...]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an address literal resolves to itself, without DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """The IPv4 addresses an IPv6 address carries (6to4, Teredo, NAT64): checked as well."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    carried: list[IPAddress | None] = [ip.sixtofour, ip.teredo[1] if ip.teredo else None]
    if ip in NAT64:
        carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [address for address in carried if address is not None]


def _kind(ip: IPAddress) -> str:
    for kind in ("unspecified", "loopback", "link-local", "multicast", "private", "reserved"):
        if getattr(ip, "is_" + kind.replace("-", "_")):
            return kind
    return "non-public"


def refusal(address: str, networks: Sequence[IPNetwork]) -> str | None:
    """Why ``address`` may not be called (its kind: loopback, private, ...), or None when it may:
    a public address, or one in an allowed network."""
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone ("fe80::1%eth0") says nothing of the range
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:a.b.c.d is a.b.c.d
        ip = ip.ipv4_mapped
    for candidate in (ip, *_embedded(ip)):
        if any(candidate.version == net.version and candidate in net for net in networks):
            continue
        if not candidate.is_global or candidate.is_multicast:
            return _kind(candidate)
    return None


def parse_url(url: str) -> tuple[httpx.URL, str]:
    """(the URL, its host in ASCII, lower-case); :class:`TargetRefused` unless an http(s) URL with a host."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"The URL is longer than {MAX_URL} characters")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").strip("[]").lower().rstrip(".")
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise TargetRefused(f"Not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused(f"The URL must start with https:// or http://, got {parsed.scheme or 'none'!r}")
    if not host:
        raise TargetRefused("The URL has no host")
    if not (HOSTNAME.fullmatch(host) or _is_address(host)):
        raise TargetRefused(f"Not a valid host name: {host[:80]!r}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise TargetRefused(f"Not a valid port: {parsed.port}")
    return parsed, host


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_target(url: str, allowed: Allowed, resolver: Resolver = resolve) -> Target:
    """The target of ``url`` with the addresses it resolves to, once every one of them may be
    called; :class:`TargetRefused` with the reason otherwise (a name that does not resolve too)."""
    parsed, host = parse_url(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise TargetRefused(f"{host} does not resolve ({exc})") from None
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    hosts, networks = allowed
    if host not in hosts:
        for address in addresses:
            kind = refusal(address, networks)
            if kind is not None:
                shown = host if host == address.split("%")[0] else f"{host} resolves to {address}, which"
                article = "an" if kind[0] in "aeiou" else "a"
                raise TargetRefused(
                    f"{shown} is {article} {kind} address: webhooks may not call it unless ATELIER_WEBHOOK_ALLOW "
                    "lists it"
                )
    return Target(parsed, host, parsed.netloc.decode("ascii"), tuple(addresses))


def _events(value: Any) -> tuple[tuple[str, ...], list[str]]:
    """(the events, problems); a list, or in a form field JSON text or comma-separated names."""
    if value is None or value == "":
        return DEFAULT_EVENTS, []
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        except ValueError:
            return (), ['webhook_events must be a list such as ["start", "completed"] or text such as start,completed']
    if not isinstance(value, list) or not all(isinstance(event, str) for event in value):
        return (), ['webhook_events must be a list of event names such as ["start", "completed"]']
    events = tuple(dict.fromkeys(event.strip() for event in value if event.strip()))
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        shown = ", ".join(repr(event[:40]) for event in unknown[:5])
        return (), [f"Unknown webhook event {shown}; known: {', '.join(EVENTS)}"]
    if not events:
        return (), [f"webhook_events must name at least one of {', '.join(EVENTS)}"]
    return events, []


def check_webhook(
    fields: Mapping[str, Any], settings: Settings, resolver: Resolver = resolve
) -> tuple[WebhookRequest | None, Details]:
    """The webhook a submission asks for (None when it asks for none), and its problems keyed
    ``webhook`` and ``webhook_events``."""
    url, events_value = fields.get("webhook"), fields.get("webhook_events")
    if url is None or url == "":
        if events_value is None or events_value == "":
            return None, {}
        return None, {"webhook_events": ["webhook_events needs a webhook URL"]}
    details: Details = {}
    events, problems = _events(events_value)
    if problems:
        details["webhook_events"] = problems
    if not isinstance(url, str):
        details["webhook"] = ["webhook must be a URL such as https://example.com/hooks/atelier"]
    elif settings.webhook_key is None:
        details["webhook"] = ["Webhooks are off on this server: ATELIER_WEBHOOK_SECRET is not set"]
    else:
        try:
            check_target(url, settings.webhook_allowed, resolver)
        except TargetRefused as exc:
            details["webhook"] = [str(exc)]
    if details:
        return None, details
    assert isinstance(url, str)
    return WebhookRequest(url=url, events=events), {}


def split_webhook(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the submission's fields without the webhook's, the webhook's): the operation's validation
    refuses fields it does not know."""
    rest = {key: value for key, value in fields.items() if key not in FIELDS}
    return rest, {key: fields[key] for key in FIELDS if key in fields}


@contextlib.contextmanager
def with_webhook_errors(details: Details) -> Iterator[None]:
    """Raise the webhook's problems with the other fields' (one 400 naming them all), or alone."""
    try:
        yield
    except InvalidSubmission as exc:
        if details:
            raise InvalidSubmission({**exc.details, **details}) from None
        raise
    if details:
        raise InvalidSubmission(details)


# -- signing and sending -------------------------------------------------------------------------
def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, message_id: str, body: bytes, event: str, now: float | None = None) -> dict[str, str]:
    """The headers of one attempt: signed afresh (a retry keeps its id, its timestamp is the attempt's)."""
    timestamp = int(time.time() if now is None else now)
    return {
        "content-type": "application/json",
        "user-agent": "Atelier-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
        "atelier-event": event,
    }


def new_client() -> httpx.Client:
    """An HTTP client for a sender: no redirects followed by itself (each target is checked first),
    no proxies from the environment, and no kept connections (two names may share one address)."""
    return httpx.Client(
        timeout=TIMEOUT,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def _post_once(client: httpx.Client, target: Target, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
    """POST to the checked addresses in turn (never a fresh lookup), the Host header and TLS name
    being the URL's; the answer's body is not read."""
    for index, address in enumerate(target.addresses):
        pinned = target.url.copy_with(host=address.split("%")[0])
        extensions = {"sni_hostname": target.name} if target.url.scheme == "https" else {}
        try:
            request = client.build_request(
                "POST", pinned, content=body, headers={**headers, "host": target.host}, extensions=extensions
            )
            response = client.send(request, stream=True)
            response.close()
            return response
        except httpx.ConnectError:
            if index == len(target.addresses) - 1:
                raise
    raise httpx.ConnectError("no address to connect to")


def post(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    allowed: Allowed,
    resolver: Resolver = resolve,
) -> str | None:
    """One delivery attempt, following up to MAX_REDIRECTS redirects (each target checked like the
    first): None when the receiver answered 2xx, else what went wrong."""
    for hop in range(MAX_REDIRECTS + 1):
        try:
            response = _post_once(client, check_target(url, allowed, resolver), body, headers)
        except TargetRefused as exc:
            return f"refused: {exc}"[:MAX_ERROR]
        except httpx.TimeoutException:
            return f"no answer within {TIMEOUT:g} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        if 200 <= response.status_code < 300:
            return None
        location = response.headers.get("location")
        if response.status_code in REDIRECTS and location:
            if hop == MAX_REDIRECTS:
                return f"more than {MAX_REDIRECTS} redirects"
            url = urljoin(url, location)
            continue
        return f"HTTP {response.status_code}"
    return f"more than {MAX_REDIRECTS} redirects"  # not reached
