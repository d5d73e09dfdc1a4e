"""Atelier's one settings object, read from the environment (prefix ``ATELIER_``) and app.py flags."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

QUEUES = ("gpu", "cpu")
RATE = re.compile(r"(?P<count>\d+)\s*/\s*(?P<every>\d*)\s*(?P<unit>s|sec|second|m|min|minute|h|hour|d|day)s?")
RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WEBHOOK_SECRET_HELP = (
    "ATELIER_WEBHOOK_SECRET must be whsec_ followed by the base64 of 24 to 64 random bytes, as Standard Webhooks "
    "libraries take it; make one with: python -c \"import base64, os; print('whsec_' + "
    'base64.b64encode(os.urandom(32)).decode())"'
)
PLACEHOLDER_SECRETS = {"changeme", "changethis", "password", "password1", "secret", "admin", "12345678", "atelier"}


class Settings(BaseSettings):
    # Inputs are not echoed in errors: secrets (passwords, tokens, the webhook secret) must not reach logs.
    model_config = SettingsConfigDict(
        env_prefix="ATELIER_", extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    # Unset: app.py starts an embedded redis-server and sets this for its children.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ATELIER_REDIS_URL"))
    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    result_ttl: int = Field(default=3600, ge=1, description="Seconds a job and its images live")
    max_upload_mb: float = Field(default=50.0, gt=0)
    max_pixels: int = Field(default=40_000_000, ge=64 * 64)
    max_batch_items: int = Field(default=500, ge=1, description="Items per batch")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    generation_model: str = "stabilityai/sd-turbo"
    # Diffusion (generation, diffusion style and inpainting share one loaded model). auto: float16
    # on CUDA; on the CPU bfloat16 where it has native support (avx512_bf16 or AMX), else float32.
    # Slicing and CPU offload trade speed for memory on small GPUs.
    generation_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # The autoencoder that turns latents into pixels (and photos into latents): auto = on the CPU the
    # tiny one of the model's family (madebyollin/taesd, taesdxl) when its weights are here, else the
    # model's own VAE; full = always the model's own; or a Hub id or folder of an AutoencoderTiny.
    generation_decoder: str = "auto"
    attention_slicing: bool = False
    cpu_offload: bool = False
    # LaMa (object removal): big-lama.pt, by default models_dir/lama/big-lama.pt; a crop longer
    # than lama_resize_limit pixels is scaled down for the network and the fill scaled back up.
    lama_model: Path | None = None
    lama_resize_limit: int = Field(default=2048, ge=64)
    # Background removal: the rembg model a job gets when it names none; rembg's weights folder,
    # by default models_dir/rembg (rembg's own U2NET_HOME, when set, wins).
    background_model: str = "u2net"
    rembg_home: Path | None = Field(default=None, validation_alias=AliasChoices("U2NET_HOME", "ATELIER_REMBG_HOME"))
    # Face swap: insightface's detector + recognizer pack (models_dir/insightface/models/<pack>/)
    # and the swapper file (models_dir/insightface/<face_swap_model>).
    face_analysis_pack: str = "buffalo_l"
    face_swap_model: str = "inswapper_128.onnx"
    # Models: a job whose worker lacks weights downloads them first (auto_download); model_mirror,
    # a base URL, replaces every public source: a file is fetched from <mirror>/<engine>/<filename>
    # (Hub models go through HF_ENDPOINT instead).
    auto_download: bool = True
    model_mirror: str | None = None

    # A running job gets a SoftTimeLimitExceeded after job_time_limit seconds; the broker
    # redelivers an unacknowledged job after visibility_timeout, so it must be longer.
    job_time_limit: int = Field(default=900, ge=1)
    visibility_timeout: int = Field(default=3600, ge=1)
    worker_concurrency: int = Field(default=1, ge=1)
    # Seconds for the whole stop on SIGTERM or Ctrl-C (app.py and its children; a worker alone):
    # running jobs are handed back to their queue at their next progress step, and whatever is
    # still running then is killed, so that docker's 10 s grace period is never reached.
    stop_timeout: float = Field(default=8.0, gt=0, le=300)
    # Override the registry's routing, e.g. ATELIER_QUEUES='{"style_transfer": "cpu"}'.
    queues: dict[str, str] = Field(default_factory=dict)

    # Optional access control for the page, the Gradio API and REST alike (and Flower when app.py
    # starts it): ATELIER_AUTH="user:password,user2:password2"; scripts may use
    # ATELIER_API_TOKENS="token1,token2" as "Authorization: Bearer <token>".
    auth: str | None = None
    api_tokens: str | None = None
    # Submissions per client and window, counted in Redis (shared by every web process):
    # "120/minute", "10/second", "500/hour", "20/10s"; unset or 0 = no limit. A client is the
    # logged-in user or API token when access control is on, else its IP address. X-Forwarded-For
    # is ignored unless TRUSTED_PROXIES says how many reverse proxies in front append to it.
    rate_limit: str | None = None
    trusted_proxies: int = Field(default=0, ge=0)
    # Teams (with access control on): user or token names who see and cancel every job, and the most
    # queued + running jobs one owner may have (unset: no cap).
    admins: str | None = None
    max_active_per_user: int | None = Field(default=None, ge=1)

    # Webhooks (a submission's "webhook" URL): signed as Standard Webhooks says with webhook_secret
    # (whsec_ + base64; unset: webhooks are refused at submit), sent by the workers, which need the
    # same settings as the web process. Targets in private, loopback or link-local ranges are refused
    # unless webhook_allow names them ("hooks.internal,10.0.0.0/8"); a failed delivery is tried again
    # after each of webhook_retry_delays in turn (seconds; JSON or comma-separated), then given up.
    webhook_secret: SecretStr | None = None
    webhook_allow: str | None = None
    webhook_retry_delays: Annotated[tuple[float, ...], NoDecode] = (5.0, 30.0, 120.0, 300.0, 450.0)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value().strip() if value is not None else ""
        if not text:
            return None
        if not text.startswith("whsec_"):
            raise ValueError(WEBHOOK_SECRET_HELP)
        encoded = text.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(WEBHOOK_SECRET_HELP) from None
        if not 24 <= len(key) <= 64:
            raise ValueError(f"{WEBHOOK_SECRET_HELP} (this one holds {len(key)} bytes)")
        return SecretStr(text)

    @property
    def webhook_key(self) -> bytes | None:
        """The HMAC key: the base64-decoded part of the secret after whsec_."""
        if self.webhook_secret is None:
            return None
        encoded = self.webhook_secret.get_secret_value().removeprefix("whsec_")
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4))

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow(cls, value: str | None) -> str | None:
        entries = [entry.strip().lower() for entry in (value or "").split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not HOSTNAME.fullmatch(entry) or "/" in entry:
                    raise ValueError(
                        f"ATELIER_WEBHOOK_ALLOW entries must be hostnames or CIDRs (10.0.0.0/8, ::1), got {entry!r}"
                    ) from None
        return ",".join(entries) or None

    @property
    def webhook_allowed(self) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
        """(allowed hostnames, allowed networks) from ATELIER_WEBHOOK_ALLOW."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (self.webhook_allow or "").split(","):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry:
                    hosts.add(entry.rstrip("."))
        return frozenset(hosts), tuple(networks)

    @field_validator("webhook_retry_delays", mode="before")
    @classmethod
    def _retry_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                return json.loads(text) if text.startswith("[") else [part for part in text.split(",") if part.strip()]
            except ValueError:
                raise ValueError(
                    f"ATELIER_WEBHOOK_RETRY_DELAYS must be seconds such as 5,30,120, got {value!r}"
                ) from None
        return value

    @field_validator("webhook_retry_delays")
    @classmethod
    def _retry_delays_fit(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > 20 or any(not 0 <= delay <= 86400 for delay in value):
            raise ValueError("ATELIER_WEBHOOK_RETRY_DELAYS: at most 20 delays, each from 0 to 86400 seconds")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None or value.strip() in ("", "0"):
            return None
        match = RATE.fullmatch(value.strip().lower())
        if not match:
            raise ValueError(f"ATELIER_RATE_LIMIT must look like 120/minute, 10/second or 20/10s, got {value!r}")
        if match["every"] and int(match["every"]) == 0:
            raise ValueError(f"ATELIER_RATE_LIMIT's window must be at least one {match['unit']}, got {value!r}")
        return value.strip().lower()

    @property
    def rate_window(self) -> tuple[int, int] | None:
        """(submissions allowed, window in seconds), or None when there is no limit."""
        match = RATE.fullmatch(self.rate_limit or "")
        if match is None or int(match["count"]) == 0:
            return None
        return int(match["count"]), int(match["every"] or 1) * RATE_UNITS[match["unit"][0]]

    @field_validator("auth")
    @classmethod
    def _real_passwords(cls, value: str | None) -> str | None:
        for entry in (value or "").split(","):
            if not entry:
                continue
            user, _, password = entry.partition(":")
            if not user or len(password) < 8 or password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"ATELIER_AUTH entry for {user or '?'!r} needs user:password with a real password of 8+ characters"
                )
        return value or None

    @field_validator("api_tokens")
    @classmethod
    def _long_tokens(cls, value: str | None) -> str | None:
        for entry in (value or "").split(","):
            name, _, token = entry.rpartition(":")
            if entry and (len(token) < 16 or token.lower() in PLACEHOLDER_SECRETS):
                raise ValueError("each ATELIER_API_TOKENS token needs 16+ characters (e.g. `openssl rand -hex 24`)")
            if ":" in entry and not re.fullmatch(r"[\w.@-]{1,64}", name):
                raise ValueError(f"ATELIER_API_TOKENS names are letters, digits, '.', '@', '-' or '_', got {name!r}")
        return value or None

    @property
    def credentials(self) -> dict[str, str]:
        return dict(entry.partition(":")[::2] for entry in (self.auth or "").split(",") if entry)

    @property
    def tokens(self) -> dict[str, str | None]:
        """Each API token and its name (``name:token`` in ATELIER_API_TOKENS), or None for a nameless one."""
        named = (entry.rpartition(":") for entry in (self.api_tokens or "").split(",") if entry)
        return {token: name or None for name, _, token in named}

    @property
    def access_control(self) -> bool:
        """Whether callers log in (ATELIER_AUTH or ATELIER_API_TOKENS): each job then belongs to its submitter."""
        return bool(self.credentials or self.tokens)

    @property
    def admin_names(self) -> set[str]:
        return {name.strip() for name in (self.admins or "").split(",") if name.strip()}

    @field_validator("model_mirror")
    @classmethod
    def _mirror(cls, value: str | None) -> str | None:
        text = (value or "").strip().rstrip("/")
        if text and not re.match(r"https?://[^/\s]+", text):
            raise ValueError(f"ATELIER_MODEL_MIRROR must be an http:// or https:// base URL, got {value!r}")
        return text or None

    @field_validator("queues")
    @classmethod
    def _known_queues(cls, value: dict[str, str]) -> dict[str, str]:
        for task_type, queue in value.items():
            if queue not in QUEUES:
                raise ValueError(f"queue for {task_type!r} must be one of {', '.join(QUEUES)}, got {queue!r}")
        return value

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Settings:
        if self.visibility_timeout <= self.job_time_limit:
            raise ValueError(
                f"ATELIER_VISIBILITY_TIMEOUT ({self.visibility_timeout} s) must be longer than "
                f"ATELIER_JOB_TIME_LIMIT ({self.job_time_limit} s), or running jobs get delivered twice"
            )
        return self

    @property
    def broker_url(self) -> str:
        return self.redis_url or "redis://127.0.0.1:6379/0"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return Settings()
