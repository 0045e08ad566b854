"""Bad input to the compose, record and accounts pages, without a browser: an unknown kind,
oversize fields, bad dates and a missing audience come back as the form again, as typed,
with each problem next to its field; a POST without the form token is refused; an
Exercise message is not sent; the administrators' pages refuse everyone else."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from dissemination.store.tables import sends
from tests.alerts import TEST_SENDERS
from tests.consoleforms import Form, SignedIn, signed_in
from tests.people import enrol
from tests.staffrig import (  # noqa: F401 - fixtures
    Staff,
    sqlite_only_fixture,
    staff_fixture,
)


@pytest.fixture
async def analyst(staff: Staff) -> SignedIn:
    return await signed_in(staff, "ana", ["analyst"], senders=[TEST_SENDERS[2]])


def bolo_form(action: str = "dry-run", **changes: str) -> Form:
    fields = {
        "kind": "bolo",
        "action": action,
        "issuingAgency.name": "Example County Sheriff's Office",
        "subjectType": "vehicle",
        "reason": "stolen",
        "details": "White box truck taken overnight from a rental lot.",
        "vehicles.0.description": "White 16 ft box truck",
        "status": "Actual",
        "msgType": "Alert",
        "scope": "Restricted",
        "tlp": "AMBER",
        "caseNumber": "24-0094",
    } | changes
    return [(k, v) for k, v in fields.items() if v is not None]


def invalid(page_text: str, name: str) -> bool:
    """The field `name` is marked invalid and described by its error."""
    tag = re.search(rf'<[a-z]+ [^>]*id="{re.escape(name)}"[^>]*>', page_text)
    if tag is None:
        return False
    described = re.search(r'aria-describedby="([^"]*)"', tag.group(0))
    return 'aria-invalid="true"' in tag.group(0) and (
        described is not None and f"{name}-error" in described.group(1).split()
    )


async def sends_stored(staff: Staff) -> int:
    async with staff.service.database.reading() as conn:
        return int(await conn.scalar(select(func.count()).select_from(sends)) or 0)


async def test_an_unknown_kind_is_a_clear_404(analyst: SignedIn) -> None:
    page = await analyst.get("/console/compose?kind=nuclear")
    assert page.status == 404
    assert "there is no alert kind &#39;nuclear&#39; to compose" in page.text
    posted = await analyst.post("/console/compose", [("kind", "nuclear"), ("action", "send")])
    assert posted.status == 404


async def test_a_post_without_the_form_token_is_refused(analyst: SignedIn, staff: Staff) -> None:
    page = await analyst.post("/console/compose", bolo_form("send"), with_token=False)
    assert page.status == 403
    assert "stale or foreign" in page.text
    assert await sends_stored(staff) == 0


async def test_oversize_fields_and_bad_dates_come_back_next_to_their_fields(
    analyst: SignedIn, staff: Staff
) -> None:
    page = await analyst.post(
        "/console/compose",
        bolo_form(
            "send",
            details="x" * 20001,
            reason="",
            **{"lastSeen.at": "yesterday", "lastSeen.location": "Route 1"},
        ),
    )
    assert page.status == 422, page.text[:2000]
    for name in ("details", "reason", "lastSeen.at"):
        assert invalid(page.text, name), name
    assert 'class="error-summary"' in page.text
    assert page.text.count("x" * 20001) == 1  # typed text kept, not echoed in the errors
    assert 'value="24-0094"' in page.text
    assert "Route 1</textarea>" in page.text
    assert await sends_stored(staff) == 0


async def test_a_missing_audience_and_bad_send_times_are_named(analyst: SignedIn) -> None:
    page = await analyst.post("/console/compose", bolo_form())
    assert page.status == 422
    assert 'id="audience-error"' in page.text
    page = await analyst.post("/console/compose", bolo_form("schedule"))
    assert page.status == 422
    assert invalid(page.text, "sendAt")
    page = await analyst.post("/console/compose", bolo_form("schedule", sendAt="next tuesday"))
    assert page.status == 422
    assert invalid(page.text, "sendAt")
    assert 'value="next tuesday"' in page.text


async def test_an_exercise_message_is_not_sent(analyst: SignedIn, staff: Staff) -> None:
    page = await analyst.post("/console/compose", bolo_form("send", status="Exercise"))
    assert page.status == 422
    assert invalid(page.text, "status")
    assert "The console sends only Actual messages" in page.text
    assert await sends_stored(staff) == 0


async def test_an_unknown_action_is_refused(analyst: SignedIn) -> None:
    page = await analyst.post("/console/compose", bolo_form("launch"))
    assert page.status == 400
    assert "unknown action" in page.text


async def test_administrators_pages_refuse_others(analyst: SignedIn) -> None:
    for path in ("/console/accounts", "/console/record", "/console/audit"):
        page = await analyst.get(path)
        assert page.status == 403, path
    posted = await analyst.post("/console/accounts", [("username", "mallory")])
    assert posted.status == 403


async def test_bad_record_filters_are_named(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"], "RED")
    page = await admin.get("/console/record?since=soon&alert=" + "a" * 300)
    assert page.status == 422
    assert invalid(page.text, "since")
    assert invalid(page.text, "alert")
    page = await admin.get("/console/audit?since=2026-12-06T10:00&until=2026-12-05T10:00")
    assert page.status == 422
    assert invalid(page.text, "until")
    export = await admin.get("/console/record/export?format=xml")
    assert export.status == 400


async def test_a_bad_account_is_refused_next_to_its_fields(staff: Staff) -> None:
    admin = await signed_in(staff, "ada", ["administrator"], "RED")
    page = await admin.post(
        "/console/accounts",
        [("username", "Not Valid!"), ("organization", "County"), ("clearance.maxTlp", "GREEN")],
    )
    assert page.status == 422, page.text[:1500]
    assert invalid(page.text, "username")
    assert 'id="roles-error"' in page.text
    assert 'value="Not Valid!"' in page.text


async def test_a_dry_run_of_an_exercise_shows_that_the_service_would_deliver_it(
    analyst: SignedIn, staff: Staff
) -> None:
    ana = await enrol(staff.service, "Ana", {"email": "ana@example.org"})
    form = [*bolo_form(status="Exercise"), ("stakeholders", ana.id)]
    page = await analyst.post("/console/compose", form)
    assert page.status == 200, page.text[:1500]
    assert "1 recipient would receive it; 0 withheld" in page.text
    assert "ana@example.org" in page.text
    assert "Status Exercise: the service would deliver this message" in page.text
    assert await sends_stored(staff) == 0
    test_form = [*bolo_form("send", status="Test"), ("stakeholders", ana.id)]
    sent = await analyst.post("/console/compose", test_form)
    assert sent.status == 422
    assert await sends_stored(staff) == 0
