"""Quiet hours: a stakeholder's daily local-time window in which low-severity alerts wait
until the window ends. Severe and Extreme alerts, and alerts marked urgent (CAP urgency
Immediate), go at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.alert import Alert
from subscriptions.model import QuietHours

OVERRIDING_SEVERITIES = frozenset({"Severe", "Extreme"})


def overrides_quiet_hours(alert: Alert) -> bool:
    return (
        any(
            info.severity in OVERRIDING_SEVERITIES or info.urgency == "Immediate"
            for info in alert.infos
        )
        or not alert.infos
    )


def quiet_until(quiet: QuietHours | None, timezone: str, now: datetime) -> datetime | None:
    """The end of the quiet window that `now` falls in (UTC), or None outside any window.
    A window may wrap midnight (22:00-06:00); start == end means no window."""
    if quiet is None or quiet.start == quiet.end:
        return None
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
        end_day = local.date()
    else:
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    end = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end.astimezone(UTC)
