"""Settings as frozen dataclasses, read from `config/default.toml`, an optional file named by
DISSEMINATION_CONFIG, and DISSEMINATION_<SECTION>_<KEY> environment variables (in that order
of precedence, last wins). Secrets are accepted only from the environment. A bad value fails
at start-up with a ConfigError naming the key and the value (never a secret's, and no URL's
password)."""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError
from core.masking import MASK
from dissemination.settingchecks import CHECKS

ENV_PREFIX = "DISSEMINATION_"
SECRET_KEYS = frozenset(
    {
        "broker.password",
        "store.password",
        "email.password",
        "sms.auth_token",
        "ack.signing_keys",
        "record.key",
    }
)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Process-wide settings."""

    data_dir: str
    log_level: str
    shutdown_grace_seconds: float
    directory_poll_seconds: float
    max_subscriptions_per_stakeholder: int = 250
    log_format: str = "console"
    instance_name: str = ""
    workers: int = 0
    """Service processes `run` starts (0: one per core; SQLite: one)."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """RabbitMQ connection and the intake topology."""

    url: str
    username: str
    exchange: str
    inbound_queue: str
    dead_letter_exchange: str
    dead_letter_queue: str
    routing_key_pattern: str
    prefetch: int
    concurrency: int
    delivery_limit: int
    connect_timeout_seconds: float
    heartbeat_seconds: int
    delivery_exchange: str
    delivery_queue_prefix: str
    task_batch_size: int
    retry_delay_seconds: float
    max_attempts: int
    stuck_after_seconds: float
    retry_max_delay_seconds: float
    delivery_prefetch: int
    publishers: tuple[str, ...] = ()
    """Which senders other broker users may publish as: "user=sender" entries."""
    failover_urls: tuple[str, ...] = ()
    """Other nodes of the same cluster, tried in turn after `url` on (re)connect."""
    password: str = field(default="guest", repr=False)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The ledger database (SQLite embedded, PostgreSQL shared)."""

    url: str
    pool_size: int
    retry_initial_seconds: float
    retry_max_seconds: float
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    """Limits and defaults applied to every inbound alert."""

    max_body_bytes: int
    max_json_depth: int
    default_tlp: str
    public_scope_tlp: str


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP server (health, ingest, admin API)."""

    host: str
    port: int
    public_url: str
    max_body_bytes: int
    max_connections: int = 256
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Webhook destinations: networks allowed despite being private (empty in production),
    and how long one request may take in all (connecting takes at most a third of it)."""

    allowed_networks: tuple[str, ...]
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Delivery workers: which channels this process sends, how many sends run at once (in
    all, and to one destination host), and when a failing host's circuit opens."""

    channels: tuple[str, ...]
    concurrency: int
    per_host_concurrency: int
    breaker_failures: int
    breaker_cooldown_seconds: float


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """The SMTP relay that email deliveries go through; an empty `host` means none, and mail
    is written to the outbox under the data directory instead."""

    host: str
    port: int
    security: str
    username: str
    from_address: str
    pool_size: int
    timeout_seconds: float
    validate_certs: bool
    message_id_domain: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SmsSettings:
    """Twilio: the account, the sender (messaging service or number), and the API base
    (empty for Twilio itself; tests point it at a loopback fake). `transport`: "auto" (Twilio
    when `account_sid` is set, else the outbox under the data directory), "outbox", or "off"
    (every SMS row falls back to the next channel)."""

    transport: str
    account_sid: str
    messaging_service_sid: str
    from_number: str
    api_base: str
    timeout_seconds: float
    messages_per_second: float
    auth_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AckSettings:
    """Acknowledgment tokens: the keys that sign them (the first signs, the others still
    verify until `retired_keys_until`), and how long a token lives when its alert sets no
    expiry."""

    default_lifetime_hours: float
    retired_keys_until: str
    signing_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def retired_keys_deadline(self) -> datetime | None:
        return datetime.fromisoformat(self.retired_keys_until) if self.retired_keys_until else None


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    """How often the escalation engine looks for steps that have come due."""

    poll_seconds: float


@dataclass(frozen=True, slots=True)
class SendSettings:
    """Ad-hoc sends: the most stakeholders one send may name, and how often scheduled sends
    are looked for (one is released at most this late)."""

    max_audience: int = 500
    poll_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class CapAckSettings:
    """CAP Ack messages for originators that ask for them: which alert senders, the exchange
    and routing key they are published to, and the `sender` the Acks carry."""

    senders: tuple[str, ...]
    exchange: str
    routing_key: str
    sender: str


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long alert content is kept unless revalidated (28 CFR 23.20(h): five years), and
    how often the service purges what is due (0: never; `dissemination retention run` only)."""

    days: int
    interval_hours: float = 24


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    """Which alerts wait for a second administrator's approval (`controls.approval`)."""

    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """The dissemination record's key, kept outside the database: DISSEMINATION_RECORD_KEY,
    the same on every instance (on the embedded store, a key file is made in the data
    directory when it is unset). `unkeyed_entries`: how many entries at the start of the
    chain were written before it was keyed (0 for a record begun keyed). Every
    `anchor_interval_minutes` (0: never) the service verifies what was appended since the
    last anchor and appends the head to `anchor_file` (relative: under the data directory)."""

    unkeyed_entries: int = 0
    key: str = field(default="", repr=False)
    anchor_interval_minutes: float = 60
    anchor_file: str = "record-anchors.log"


@dataclass(frozen=True, slots=True)
class AccountsSettings:
    """Staff sign-in: session timeouts, lockout of failed attempts, per-address throttling,
    whether a second factor is required, and personal API tokens' lifetimes."""

    session_idle_minutes: float = 30
    session_absolute_hours: float = 12
    max_failed_attempts: int = 5
    failure_window_minutes: float = 15
    lockout_minutes: float = 15
    attempts_per_address_per_minute: int = 30
    require_totp: bool = True
    totp_issuer: str = "Fusion Dissemination"
    token_default_days: int = 90
    token_max_days: int = 365


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus metrics: a listener of their own on `port` (0: none; a full service also
    serves them at /metrics on its HTTP port), and how often the gauges that need the store
    or the broker are refreshed."""

    host: str = "127.0.0.1"
    port: int = 0
    refresh_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings, one frozen section per concern."""

    service: ServiceSettings
    broker: BrokerSettings
    store: StoreSettings
    intake: IntakeSettings
    http: HttpSettings
    webhook: WebhookSettings
    delivery: DeliverySettings
    email: EmailSettings
    sms: SmsSettings
    ack: AckSettings
    escalation: EscalationSettings
    cap_ack: CapAckSettings
    retention: RetentionSettings
    approval: ApprovalSettings
    record: RecordSettings = field(default_factory=RecordSettings)
    sends: SendSettings = field(default_factory=SendSettings)
    accounts: AccountsSettings = field(default_factory=AccountsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    base_dir: Path = field(default_factory=Path.cwd)
    """What a relative `service.data_dir` is relative to (see `settings_base_dir`)."""

    @property
    def data_path(self) -> Path:
        return (self.base_dir / Path(self.service.data_dir).expanduser()).resolve()


SectionT = TypeVar("SectionT")


def _shown(key: str, value: Any) -> Any:
    """A setting's value as an error may show it: never a secret's (and ConfigError masks the
    password of any URL in what it is given)."""
    return MASK if key in SECRET_KEYS else value


def _coerce(key: str, raw: Any, annotation: Any) -> Any:
    if typing.get_origin(annotation) is tuple:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple):
            raise ConfigError(key, _shown(key, raw), "expected a list")
        return tuple(str(item).strip() for item in items if str(item).strip())
    target = annotation
    if isinstance(annotation, types.UnionType | typing._UnionGenericAlias):  # type: ignore[attr-defined]
        target = next(a for a in typing.get_args(annotation) if a is not type(None))
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if target is int and isinstance(raw, bool | float):
            raise ValueError
        if target is float and isinstance(raw, bool):
            raise ValueError
        return target(raw)
    except (TypeError, ValueError):
        raise ConfigError(key, _shown(key, raw), f"expected {target.__name__}") from None


def _section(
    cls: type[SectionT], name: str, values: Mapping[str, Any], env: Mapping[str, str]
) -> SectionT:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for unknown in sorted(set(values) - known):
        # not echoed: it may be a secret under a misspelt name
        raise ConfigError(f"{name}.{unknown}", MASK, "unknown setting")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key = f"{name}.{f.name}"
        env_name = f"{ENV_PREFIX}{name}_{f.name}".upper()
        if key in SECRET_KEYS and f.name in values:
            raise ConfigError(key, MASK, f"secrets are read only from the environment ({env_name})")
        if env_name in env:
            raw: Any = env[env_name]
        elif f.name in values:
            raw = values[f.name]
        elif key in SECRET_KEYS:
            continue
        else:
            raise ConfigError(key, None, "missing")
        value = _coerce(key, raw, hints[f.name])
        check = CHECKS.get(key)
        problem = check(value) if check and value is not None else None
        if problem:
            raise ConfigError(key, _shown(key, value), problem)
        kwargs[f.name] = value
    return cls(**kwargs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("DISSEMINATION_CONFIG", str(path), f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("DISSEMINATION_CONFIG", str(path), f"not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overlay.items():
        if section not in merged:
            keys = sorted(values) if isinstance(values, dict) else MASK  # names, not values
            raise ConfigError(section, keys, "unknown settings section")
        if not isinstance(values, dict):
            raise ConfigError(section, values, "expected a table of settings")
        merged[section].update(values)
    return merged


SECTIONS: dict[str, type[Any]] = {
    "service": ServiceSettings,
    "broker": BrokerSettings,
    "store": StoreSettings,
    "intake": IntakeSettings,
    "http": HttpSettings,
    "webhook": WebhookSettings,
    "delivery": DeliverySettings,
    "email": EmailSettings,
    "sms": SmsSettings,
    "ack": AckSettings,
    "escalation": EscalationSettings,
    "cap_ack": CapAckSettings,
    "retention": RetentionSettings,
    "approval": ApprovalSettings,
    "record": RecordSettings,
    "sends": SendSettings,
    "accounts": AccountsSettings,
    "metrics": MetricsSettings,
}


def settings_base_dir(config_file: Path | None) -> Path:
    """What a relative `service.data_dir` is relative to, so that every command finds the same
    data wherever it is run from: the directory of the settings file in use, if any; else the
    source checkout this code runs from (the directory holding `config/` and
    `pyproject.toml`, where `scripts/serve` runs); else the working directory."""
    if config_file is not None:
        return config_file.expanduser().resolve().parent
    package = resources.files("config")
    if isinstance(package, Path) and (package.parent / "pyproject.toml").is_file():
        return package.parent.resolve()
    return Path.cwd()


def load_settings(
    env: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Build Settings from the defaults, an optional overlay file (`config_file`, else the
    one DISSEMINATION_CONFIG names) and the environment."""
    env = os.environ if env is None else env
    default_text = resources.files("config").joinpath("default.toml").read_text("utf-8")
    values = tomllib.loads(default_text)
    path = config_file or (
        Path(env["DISSEMINATION_CONFIG"]) if env.get("DISSEMINATION_CONFIG") else None
    )
    if path is not None:
        overlay = _read_toml(path)
        for section, keys in overlay.items():
            for key in keys if isinstance(keys, dict) else ():
                if f"{section}.{key}" in SECRET_KEYS:
                    env_name = f"{ENV_PREFIX}{section}_{key}".upper()
                    raise ConfigError(
                        f"{section}.{key}",
                        MASK,
                        f"secrets are read only from the environment ({env_name})",
                    )
        values = _merge(values, overlay)
    sections = {
        name: _section(cls, name, values.get(name, {}), env) for name, cls in SECTIONS.items()
    }
    return Settings(**sections, base_dir=settings_base_dir(path))
