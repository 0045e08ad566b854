"""The HTTP face: health and readiness probes, and alert ingest with bearer-token roles.
Ingest answers 202 only for what the broker confirmed, and the alert then reaches the ledger."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from core.alert import alert_id_for
from dissemination.api.app import RUNTIME, Runtime, create_app
from dissemination.api.ingest import add_ingest_routes
from dissemination.api.tokens import Role, TokenStore
from dissemination.broker.publisher import AlertPublisher
from dissemination.intake.pipeline import AlertPipeline
from dissemination.ledger.alerts import Ledger
from dissemination.service import Service
from dissemination.settings import Settings, StoreSettings
from dissemination.store.database import Database
from testbed.alerts import cap_json, cap_json_bytes, cap_xml
from testbed.ports import free_port
from tests.alerts import TEST_SENDERS
from tests.brokerutil import open_connection, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def base_url(service: Service) -> str:
    assert service.http is not None
    host, port = service.http.addresses[0][:2]
    return f"http://{host}:{port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _token(service: Service, role: Role) -> str:
    assert service.database is not None
    _info, secret = await TokenStore(service.database).create(
        f"{role.value}-test", role, datetime.now(UTC), TEST_SENDERS
    )
    return secret


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_probes_report_live_and_ready(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base_url}/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})
    async with http.get(f"{base_url}/readyz") as response:
        assert response.status == 200
        assert await response.json() == {
            "status": "ready",
            "checks": {"service": "ok", "broker": "ok", "store": "ok"},
        }


async def test_readiness_is_503_when_store_and_broker_are_unreachable(
    settings: Settings, tmp_path: Path
) -> None:
    dead_store = Database.from_settings(
        StoreSettings("postgresql+asyncpg://postgres@127.0.0.1:1/none", 1, 0.05, 0.2), tmp_path
    )
    processor = AlertPipeline(Ledger(dead_store), settings.intake)
    runtime = Runtime(dead_store, Ledger(dead_store), TokenStore(dead_store), processor)
    app = create_app(runtime, settings.http)
    add_ingest_routes(app)
    server = web.AppRunner(app)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    host, port = server.addresses[0][:2]
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/readyz") as response,
        ):
            assert response.status == 503
            assert await response.json() == {
                "status": "not_ready",
                "checks": {"service": "ok", "broker": "unavailable", "store": "unavailable"},
            }
    finally:
        await server.cleanup()
        await dead_store.close()


async def test_readiness_waits_for_the_whole_start_and_ends_with_the_stop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP answers before the workers and the intake consumer take work: until they do, and
    again once stopping begins, the service is not ready, though broker and store are up.
    The probe is asked as the first worker starts, the last step before the service takes
    work."""
    port = free_port()
    service = Service(replace(settings, http=replace(settings.http, port=port)))
    seen: list[tuple[int, dict[str, str]]] = []
    start_worker = Service._start_worker

    async def probe_then_start(self: Service, worker: Any) -> None:
        if not seen:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/readyz") as response,
            ):
                seen.append((response.status, (await response.json())["checks"]))
        await start_worker(self, worker)

    monkeypatch.setattr(Service, "_start_worker", probe_then_start)
    await service.start()
    try:
        assert seen == [(503, {"service": "starting", "broker": "ok", "store": "ok"})]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            assert response.status == 200
    finally:
        runtime = service._runtime
        await service.stop()
    assert runtime is not None
    assert runtime.started is False


async def test_ingest_requires_a_publisher_or_admin_token(
    service: Service, base_url: str, http: aiohttp.ClientSession
) -> None:
    url = f"{base_url}/api/v1/alerts"
    viewer = await _token(service, Role.VIEWER)
    cases = [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401, "unauthenticated"),
        (_auth("fdt_not-a-real-token"), 401, "unauthenticated"),
        (_auth(viewer), 403, "forbidden"),
    ]
    for headers, status, code in cases:
        async with http.post(url, data=cap_json_bytes(), headers=headers) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (status, code), headers
    publisher = await _token(service, Role.PUBLISHER)
    assert service.database is not None
    await TokenStore(service.database).revoke("publisher-test", datetime.now(UTC))
    async with http.post(url, data=cap_json_bytes(), headers=_auth(publisher)) as response:
        assert response.status == 401


async def test_ingest_publishes_with_confirms_and_the_alert_is_stored(
    service: Service, base_url: str, http: aiohttp.ClientSession
) -> None:
    publisher = await _token(service, Role.PUBLISHER)
    headers = {**_auth(publisher), "Content-Type": "application/cap+xml"}
    async with http.post(
        f"{base_url}/api/v1/alerts", data=cap_xml("HTTP-1"), headers=headers
    ) as response:
        assert response.status == 202
        body = await response.json()
    expected_id = alert_id_for("alerts@fusion.example.gov", "HTTP-1", "2026-11-24T10:00:00-05:00")
    assert body == {"id": expected_id, "ids": [expected_id]}
    assert service.database is not None
    ledger = Ledger(service.database)

    async def stored() -> bool:
        return await ledger.alert_row(expected_id) is not None

    await wait_until(stored, what="the ingested alert in the ledger")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "path"),
    [
        (
            json.dumps(cap_json(status="Bogus")).encode(),
            "application/json",
            422,
            "schema_violation",
            "$.status",
        ),
        (b'{"identifier": ', "application/json", 400, "invalid_json", "$"),
        (b'{"a": 1, "a": 2}', "application/json", 400, "duplicate_key", "$"),
        (cap_json_bytes(), "text/plain", 415, "unsupported_content_type", "$"),
        (b"<alert>&x;</alert>", "application/cap+xml", 400, "invalid_xml", "$"),
        (b'{"pad": "' + b"x" * 1_100_000 + b'"}', "application/json", 413, "body_too_large", None),
        # Inputs that passed decoding and then answered 500 (or 202, and never got stored):
        (
            cap_json_bytes()[:-1] + b', "n": ' + b"7" * 5000 + b"}",
            "application/json",
            400,
            "number_out_of_range",
            "$",
        ),
        (
            json.dumps(cap_json(sent="9999-12-31T23:59:59-23:59")).encode(),
            "application/json",
            422,
            "invalid_field",
            "$.sent",
        ),
        (
            json.dumps(cap_json("NUL\u0000")).encode(),
            "application/json",
            400,
            "nul_character",
            "$.identifier",
        ),
        (
            cap_json_bytes(),
            "application/json; p=" + "x" * 300,
            415,
            "unsupported_content_type",
            "$",
        ),
        (
            cap_xml()
            .decode()
            .replace('encoding="UTF-8"', 'encoding="UTF-16"')
            .replace("<scope>", '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude"/><scope>')
            .encode("utf-16"),
            "application/cap+xml",
            400,
            "xml_forbidden_construct",
            "$",
        ),
    ],
)
async def test_ingest_rejects_bad_input_with_the_errors_and_publishes_nothing(
    service: Service,
    base_url: str,
    http: aiohttp.ClientSession,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
    path: str | None,
) -> None:
    headers = {**_auth(await _token(service, Role.PUBLISHER)), "Content-Type": content_type}
    async with http.post(f"{base_url}/api/v1/alerts", data=body, headers=headers) as response:
        error = (await response.json())["error"]
    assert (response.status, error["code"]) == (status, code)
    if path is not None:
        assert path in [detail["path"] for detail in error["details"]]
    assert service.database is not None
    assert (await Ledger(service.database).counts())["rejections"] == 0


async def test_ingest_never_answers_2xx_without_a_broker_confirm(
    service: Service, settings: Settings
) -> None:
    """An exchange with no bound queue returns the mandatory message: no confirm, so 503."""
    assert service.http is not None
    runtime = service.http.app[RUNTIME]
    connection = await open_connection(settings)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        unbound = await channel.declare_exchange(
            f"{settings.broker.exchange}.unbound", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        runtime.publisher = AlertPublisher(unbound)
        runtime.broker = connection
        host, port = service.http.addresses[0][:2]
        token = await _token(service, Role.ADMIN)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://{host}:{port}/api/v1/alerts", data=cap_json_bytes(), headers=_auth(token)
            ) as response,
        ):
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "broker_unavailable"
        runtime.broker = None
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://{host}:{port}/api/v1/alerts", data=cap_json_bytes(), headers=_auth(token)
            ) as response,
        ):
            assert response.status == 503
    finally:
        await connection.close()


async def test_a_body_that_cannot_be_read_is_400_not_500(
    service: Service, base_url: str, http: aiohttp.ClientSession
) -> None:
    headers = {
        **_auth(await _token(service, Role.PUBLISHER)),
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with http.post(
        f"{base_url}/api/v1/alerts", data=b"not gzip at all", headers=headers
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_body"


async def test_the_unauthenticated_ack_api_answers_unreadable_bodies_with_400(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    for body in (b'{"token": ' + b"9" * 5000 + b"}", b'{"token": "a\\u0000"}', b"[1e999]"):
        async with http.post(f"{base_url}/api/v1/acks", data=body) as response:
            assert response.status == 400, body[:40]
            assert (await response.json())["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    "query",
    [
        "/api/v1/alerts?limit=" + "1" * 5000,
        "/api/v1/alerts?limit=" + "0" * 4999 + "1",
        "/api/v1/audit?after=" + "1" * 5000,
        "/api/v1/events?seconds=" + "1" * 5000,
        "/api/v1/alerts?since=9999-12-31T23:59:59-23:59",
        "/api/v1/alerts?until=0001-01-01T00:00:00%2B23:00",
        "/api/v1/dissemination-records?since=9999-12-31T23:59:59-23:59",
        "/api/v1/alerts?after=" + base64.urlsafe_b64encode(b"2026-01-01T00:00:00|x").decode(),
        "/api/v1/alerts?after=" + base64.urlsafe_b64encode(b"9999-12-31T23:59:59-23:59|x").decode(),
    ],
)
async def test_query_parameters_the_parsers_cannot_take_are_400(
    service: Service, base_url: str, http: aiohttp.ClientSession, query: str
) -> None:
    headers = _auth(await _token(service, Role.ADMIN))
    async with http.get(base_url + query, headers=headers) as response:
        assert response.status == 400, query[:60]
        assert (await response.json())["error"]["code"] == "invalid_parameter"
