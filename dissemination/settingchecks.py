"""The checks each setting value must pass: a missing or bad value fails start-up with a
ConfigError that names the key, the value (masked for secrets) and what is wrong."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from channels.base import CHANNEL_NAMES
from core.alert import Tlp


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than zero"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be zero (off) or more"


def _tlp(value: str) -> str | None:
    try:
        Tlp.parse(value)
    except ValueError:
        return f"must be one of {', '.join(t.value for t in Tlp)}"
    return None


def _log_level(value: str) -> str | None:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    return None if value.upper() in levels else f"must be one of {', '.join(levels)}"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


def _url(*schemes: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        scheme = urlsplit(value).scheme
        if scheme not in schemes:
            return f"scheme must be one of {', '.join(schemes)}"
        if urlsplit(value).password:
            return "must not carry a password; set it in the environment"
        return None

    return check


def _urls(*schemes: str) -> Callable[[tuple[str, ...]], str | None]:
    def check(values: tuple[str, ...]) -> str | None:
        return next(filter(None, (_url(*schemes)(value) for value in values)), None)

    return check


WIDEST_ALLOWED = {4: 8, 6: 7}
"""The shortest prefix `webhook.allowed_networks` takes, by IP version: the widest private
block (10.0.0.0/8, fc00::/7). A wider network holds public space, which needs no
allowing, so it would only open the rest: 0.0.0.0/0 admits loopback and the cloud metadata
address 169.254.169.254 to anyone who may save a webhook URL."""


def _networks(values: tuple[str, ...]) -> str | None:
    for value in values:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a network such as 127.0.0.1/32"
        widest = WIDEST_ALLOWED[network.version]
        if network.prefixlen < widest:
            return (
                f"{value!r} is wider than /{widest}: list only the internal networks the"
                " receivers are on (public addresses need no allowing)"
            )
    return None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _optional_timestamp(value: str) -> str | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return "must be an ISO 8601 date and time such as 2026-12-01T00:00:00+00:00"
    return None if moment.tzinfo is not None else "must carry a UTC offset"


def _signing_keys(values: tuple[str, ...]) -> str | None:
    if any(len(value) < 32 for value in values):
        return "each key must be at least 32 characters (e.g. `openssl rand -hex 32`)"
    return None


def _optional_url(*schemes: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return _url(*schemes)(value) if value else None

    return check


def _grants(values: tuple[str, ...]) -> str | None:
    for entry in values:
        user, equals, sender = entry.partition("=")
        if not equals or not user.strip() or not sender.strip():
            return f"{entry!r} is not user=sender"
    return None


def _channels(values: tuple[str, ...]) -> str | None:
    unknown = [v for v in values if v not in CHANNEL_NAMES]
    return f"unknown channel {unknown[0]!r}; known: {', '.join(CHANNEL_NAMES)}" if unknown else None


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "service.log_level": _log_level,
    "service.log_format": _one_of("console", "json"),
    "service.shutdown_grace_seconds": _positive,
    "service.directory_poll_seconds": _positive,
    "service.max_subscriptions_per_stakeholder": _positive,
    "service.workers": _not_negative,
    "broker.url": _url("amqp", "amqps"),
    "broker.failover_urls": _urls("amqp", "amqps"),
    "broker.publishers": _grants,
    "broker.prefetch": _positive,
    "broker.concurrency": _positive,
    "broker.delivery_limit": _positive,
    "broker.connect_timeout_seconds": _positive,
    "broker.task_batch_size": _positive,
    "broker.retry_delay_seconds": _positive,
    "broker.max_attempts": _positive,
    "broker.stuck_after_seconds": _positive,
    "broker.retry_max_delay_seconds": _positive,
    "broker.delivery_prefetch": _positive,
    "delivery.channels": _channels,
    "delivery.concurrency": _positive,
    "delivery.per_host_concurrency": _positive,
    "delivery.breaker_failures": _positive,
    "delivery.breaker_cooldown_seconds": _positive,
    "email.port": _port,
    "email.security": _one_of("none", "starttls", "tls"),
    "email.pool_size": _positive,
    "email.timeout_seconds": _positive,
    "sms.transport": _one_of("auto", "outbox", "off"),
    "sms.api_base": _optional_url("http", "https"),
    "sms.timeout_seconds": _positive,
    "sms.messages_per_second": _positive,
    "store.url": _url("sqlite+aiosqlite", "postgresql+asyncpg"),
    "store.pool_size": _positive,
    "store.retry_initial_seconds": _positive,
    "store.retry_max_seconds": _positive,
    "intake.max_body_bytes": _positive,
    "intake.max_json_depth": _positive,
    "intake.default_tlp": _tlp,
    "intake.public_scope_tlp": _tlp,
    "http.port": _port,
    "metrics.port": _port,
    "metrics.refresh_seconds": _positive,
    "http.public_url": _url("http", "https"),
    "http.max_body_bytes": _positive,
    "http.max_connections": _positive,
    "http.header_timeout_seconds": _positive,
    "http.body_timeout_seconds": _positive,
    "webhook.allowed_networks": _networks,
    "webhook.timeout_seconds": _positive,
    "ack.default_lifetime_hours": _positive,
    "escalation.poll_seconds": _positive,
    "sends.max_audience": _positive,
    "sends.poll_seconds": _positive,
    "retention.days": _positive,
    "retention.interval_hours": _not_negative,
    "record.anchor_interval_minutes": _not_negative,
    "ack.retired_keys_until": _optional_timestamp,
    "ack.signing_keys": _signing_keys,
    "accounts.session_idle_minutes": _positive,
    "accounts.session_absolute_hours": _positive,
    "accounts.max_failed_attempts": _positive,
    "accounts.failure_window_minutes": _positive,
    "accounts.lockout_minutes": _positive,
    "accounts.attempts_per_address_per_minute": _positive,
    "accounts.token_default_days": _positive,
    "accounts.token_max_days": _positive,
}
