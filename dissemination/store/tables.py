"""The ledger's tables as SQLAlchemy Core metadata: the one description that queries use.
The schema itself is created and changed only by the versioned migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which keeps no zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = MetaData()
CONTENT_TYPE_LENGTH = 200

payloads = Table(
    "payloads",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("content_type", String(CONTENT_TYPE_LENGTH), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("purged_at", UtcDateTime),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("sender", Text, nullable=False),
    Column("identifier", Text, nullable=False),
    Column("sent", Text, nullable=False),
    Column("sent_at", UtcDateTime, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("msg_type", String(20), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("tlp", String(20), nullable=False),
    Column("caveats", JSON, nullable=False),
    Column("state", String(20), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("expires_at", UtcDateTime),
    Column("headline", Text),
    Column("source_format", String(20), nullable=False),
    Column("document", JSON, nullable=False),
    Column("payload_sha256", String(64), ForeignKey("payloads.sha256"), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("revalidated_at", UtcDateTime),
    Column("purged_at", UtcDateTime),
    Column("handling_conflict", JSON),
    Column("first_delivered_at", UtcDateTime),
    UniqueConstraint("sender", "identifier", "sent", name="uq_alerts_key"),
)

alert_references = Table(
    "alert_references",
    metadata,
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("ref_sender", Text, nullable=False),
    Column("ref_identifier", Text, nullable=False),
    Column("ref_sent", Text, nullable=False),
    Column("ref_alert_id", String(36), nullable=False),
    Column("resolved", Integer, nullable=False),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("source", String(20), nullable=False),
    Column("message_id", Text),
    Column("reason", String(60), nullable=False),
    Column("errors", JSON, nullable=False),
    Column("content_type", String(CONTENT_TYPE_LENGTH)),
    Column("body", LargeBinary, nullable=False),  # a prefix: ledger.alerts.REJECTED_BODY_PREFIX
    Column("body_size", BigInteger),  # of the whole body
    Column("body_sha256", String(64)),  # of the whole body
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("alert_id", String(36), nullable=False),
    Column("reason", String(60), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("document", JSON, nullable=False),
    Column("payload_sha256", String(64), ForeignKey("payloads.sha256"), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("alert_id", String(36), ForeignKey("alerts.id"), nullable=False),
    Column("stakeholder_id", String(36), nullable=False),
    Column("subscription_id", String(36)),
    Column("channel", String(20), nullable=False),
    Column("address", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("provider_id", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("contact_id", String(36)),
    Column("fallback_channels", JSON, nullable=False),
    Column("ack_required", Boolean, nullable=False),
    Column("subscriptions", JSON, nullable=False),
    Column("detail", Text),
    Column("origin", String(20), nullable=False),
    Column("resent", Boolean, nullable=False, default=False),
    Column("not_before", UtcDateTime),
    Column("fallback_of", String(36)),
)

sms_opt_outs = Table(
    "sms_opt_outs",
    metadata,
    Column("address", Text, primary_key=True),
    Column("keyword", String(20), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

provider_statuses = Table(
    "provider_statuses",
    metadata,
    Column("channel", String(20), primary_key=True),
    Column("provider_id", Text, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("error_code", Text),
    Column("reason", Text),
    Column("received_at", UtcDateTime, nullable=False),
)

sms_inbound = Table(
    "sms_inbound",
    metadata,
    Column("message_sid", Text, primary_key=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("reply", Text),
)

acks = Table(
    "acks",
    metadata,
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("stakeholder_id", String(36), primary_key=True),
    Column("token_id", String(32), nullable=False, unique=True),
    Column("code", String(8), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("acknowledged_at", UtcDateTime),
    Column("channel", String(20)),
    Column("actor_id", String(36)),
    Column("actor_name", Text),
    Column("comment", Text),
    Column("reason", Text),
)

service_secrets = Table(
    "service_secrets",
    metadata,
    Column("name", String(60), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

escalation_policies = Table(
    "escalation_policies",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

escalations = Table(
    "escalations",
    metadata,
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("stakeholder_id", String(36), primary_key=True),
    Column("policy_id", String(36), nullable=False),
    Column("steps", JSON, nullable=False),
    Column("state", String(20), nullable=False),
    Column("next_step", Integer, nullable=False),
    Column("started_at", UtcDateTime),
    Column("next_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("state", String(20), nullable=False),
    Column("rule", Text, nullable=False),
    Column("submitted_by", Text),
    Column("held_at", UtcDateTime, nullable=False),
    Column("decided_by", Text),
    Column("decided_by_name", Text),
    Column("decided_at", UtcDateTime),
    Column("reason", Text),
)

special_releases = Table(
    "special_releases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("alert_id", String(36), ForeignKey("alerts.id"), nullable=False),
    Column("stakeholder_id", String(36), nullable=False),
    Column("justification", Text, nullable=False),
    Column("released_by", Text, nullable=False),
    Column("released_by_name", Text, nullable=False),
    Column("released_at", UtcDateTime, nullable=False),
    Column("deliveries", JSON, nullable=False),
    Column("reviewed_by", Text),
    Column("reviewed_at", UtcDateTime),
    Column("review_note", Text),
)

cap_acks = Table(
    "cap_acks",
    metadata,
    Column("alert_id", String(36), ForeignKey("alerts.id"), primary_key=True),
    Column("identifier", Text, nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime),
)

dissemination_records = Table(
    "dissemination_records",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Text, nullable=False),
    Column("alert_id", String(36), nullable=False),
    Column("delivery_id", String(36)),
    Column("stakeholder_id", String(36), nullable=False),
    Column("organization", Text),
    Column("channel", String(20), nullable=False),
    Column("address", Text, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("rule", JSON, nullable=False),
    Column("justification", Text, nullable=False),
    Column("content_sha256", String(64)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(16)),
)

dissemination_chain = Table(
    "dissemination_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("senders", JSON),
    # personal tokens: the account that owns it (None: a shared token from before accounts)
    Column("owner_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE")),
    Column("expires_at", UtcDateTime),
    UniqueConstraint("name", name="uq_api_tokens_name"),
)

stakeholders = Table(
    "stakeholders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("organization", Text, nullable=False),
    Column("sector", String(40), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("jurisdiction", JSON, nullable=False),
    Column("clearance", JSON, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("quiet_hours", JSON),
    Column("active", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "stakeholder_id",
        String(36),
        ForeignKey("stakeholders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("channel", String(20), nullable=False),
    Column("address", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("secret", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("stakeholder_id", "channel", "address", name="uq_contacts_address"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "stakeholder_id",
        String(36),
        ForeignKey("stakeholders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("rule", JSON, nullable=False),
    Column("channels", JSON, nullable=False),
    Column("ack_required", Boolean, nullable=False),
    Column("escalation_id", String(36)),
    Column("enabled", Boolean, nullable=False),
    Column("include_exercises", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor_id", String(36)),
    Column("actor_name", Text, nullable=False),
    Column("action", String(40), nullable=False),
    Column("entity", String(40), nullable=False),
    Column("entity_id", String(36)),
    Column("before", JSON),
    Column("after", JSON),
    Column("reason", Text),
)

scheduled_runs = Table(
    "scheduled_runs",
    metadata,
    Column("job", String(40), primary_key=True),
    Column("last_run_at", UtcDateTime, nullable=False),
)

distribution_lists = Table(
    "distribution_lists",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("name_key", Text, nullable=False, unique=True),  # the name case-folded
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

distribution_list_members = Table(
    "distribution_list_members",
    metadata,
    Column(
        "list_id",
        String(36),
        ForeignKey("distribution_lists.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("member_kind", String(20), primary_key=True),  # stakeholder | list
    Column("member_id", String(36), primary_key=True),
    Column("added_at", UtcDateTime, nullable=False),
)

sends = Table(
    "sends",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("alert_id", String(36), nullable=False),  # the alert it becomes (indexed)
    Column("sender", Text, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("routing_key", String(100), nullable=False),
    Column("headline", Text),
    Column("audience", JSON, nullable=False),  # subscriptions.audience.Audience.to_json
    Column("content_type", String(CONTENT_TYPE_LENGTH), nullable=False),
    Column("body", LargeBinary, nullable=False),  # the alert as it is published
    Column("state", String(20), nullable=False),  # scheduled | releasing | released | cancelled
    Column("send_at", UtcDateTime, nullable=False),
    Column("claimed_until", UtcDateTime),  # a release in progress, until then
    Column("submitted_by", Text),  # the principal (token:<id>), as approval compares it
    Column("submitter_name", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("released_at", UtcDateTime),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),  # lower case
    Column("display_name", Text, nullable=False),
    Column("organization", Text, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("clearance", JSON, nullable=False),
    Column("senders", JSON, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("totp_secret", Text),  # set at enrolment, live once totp_enabled
    Column("totp_enabled", Boolean, nullable=False),
    Column("totp_last_step", BigInteger),  # the last accepted time-step: no replay
    Column("failed_attempts", Integer, nullable=False),
    Column("failed_since", UtcDateTime),
    Column("locked_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

account_recovery_codes = Table(
    "account_recovery_codes",
    metadata,
    Column(
        "account_id",
        String(36),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code_sha256", String(64), primary_key=True),
    Column("used_at", UtcDateTime),
)

account_sessions = Table(
    "account_sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "account_id",
        String(36),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("csrf_sha256", String(64), nullable=False),
    Column("second_factor", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)
