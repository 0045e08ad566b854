"""What the admin API tests share: the service started with a client holding a token per
role, a stakeholder body, and creating one through the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dissemination.api.tokens import Role, TokenStore
from dissemination.service import Service
from dissemination.settings import load_settings
from tests.alerts import TEST_SENDERS


@dataclass
class Api:
    """A client for the running service with one token per role."""

    session: aiohttp.ClientSession
    base: str
    tokens: dict[str, str]
    service: Service

    async def call(
        self, method: str, path: str, role: str | None = "admin", body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        if body is not None:
            kwargs["data"] = json.dumps(body)
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            raw = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(raw)
            return response.status, raw.decode()


async def api_client(env: dict[str, str]) -> AsyncIterator[Api]:
    """The service started with `env`, and a client holding one token per role."""
    service = Service(
        load_settings(env | {"DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"})
    )
    await service.start()
    try:
        store = TokenStore(service.database)
        tokens = {}
        for role in Role:
            _info, tokens[role.value] = await store.create(
                f"{role.value}-1", role, datetime.now(UTC), TEST_SENDERS
            )
        host, port = service.http.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            yield Api(session, f"http://{host}:{port}", tokens, service)
    finally:
        await service.stop()


async def create_stakeholder(api: Api, **overrides: Any) -> str:
    """A stakeholder created through the API (`stakeholder(**overrides)`); its id."""
    status, body = await api.call("POST", "/api/v1/stakeholders", body=stakeholder(**overrides))
    assert status == 201, body
    return str(body["id"])


def stakeholder(**overrides: Any) -> dict[str, Any]:
    """A valid stakeholder body, with `overrides`."""
    body: dict[str, Any] = {
        "name": "Duty Officer Lee",
        "organization": "Example County Sheriff",
        "sector": "law_enforcement",
        "jurisdiction": {"geocodes": [{"valueName": "SAME", "value": "006109"}]},
        "clearance": {"maxTlp": "AMBER", "caveats": ["LES"], "lawEnforcement": True},
        "timezone": "America/Los_Angeles",
        "quietHours": {"start": "22:00", "end": "06:00"},
    }
    return body | overrides
