"""What the approval tests share: API tokens, calls through the service's public URL, a
local alert submitted through HTTP ingest, and waiting for an alert's rows to be held."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp

from dissemination.api.tokens import Role, TokenStore
from dissemination.service import Service
from tests.alerts import TEST_SENDERS
from tests.brokerutil import wait_until
from tests.deliveryrig import Sinks, rows_of


async def token(service: Service, name: str, role: Role = Role.ADMIN) -> dict[str, str]:
    """The Authorization header of a new API token with `role`."""
    assert service.database is not None
    _, secret = await TokenStore(service.database).create(
        name, role, datetime.now(UTC), TEST_SENDERS
    )
    return {"Authorization": f"Bearer {secret}"}


async def call(
    sinks: Sinks, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    """One API call: its status and JSON answer."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sinks.public_url + path, headers=headers, json=body) as response,
    ):
        return response.status, await response.json()


async def submit(sinks: Sinks, headers: dict[str, str], document: dict[str, Any]) -> str:
    """Publish a local alert through HTTP ingest as the token's holder; its alert id."""
    status, body = await call(sinks, "POST", "/api/v1/alerts", headers, document)
    assert status == 202, body
    return str(body["id"])


async def held_rows(service: Service, alert_id: str, count: int) -> list[dict[str, Any]]:
    """The alert's rows once there are `count`, every one held."""

    async def all_held() -> bool:
        rows = await rows_of(service, alert_id)
        return len(rows) == count and all(row["state"] == "held" for row in rows)

    await wait_until(all_held, what=f"{count} held rows")
    return await rows_of(service, alert_id)
