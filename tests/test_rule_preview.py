"""The rule preview (`POST /api/v1/match/rule`) never tries an alert above the caller's
clearance: whether a rule of the caller's own words (keywords, senders, an area) selects an
alert would tell its content one guess at a time. Such alerts are only counted."""

from __future__ import annotations

from typing import Any

from tests.alerts import fixture_document
from tests.brokerutil import wait_until
from tests.consolerig import signed_in
from tests.deliveryrig import recorded
from tests.people import enrol
from tests.staffrig import (  # noqa: F401 - fixtures
    Staff,
    sqlite_only_fixture,
    staff_fixture,
)


async def test_an_alert_above_the_callers_clearance_is_counted_never_tried(
    staff: Staff,
) -> None:
    analyst = await signed_in(staff, "pat", ["analyst"], clearance={"maxTlp": "AMBER"})
    ids = []
    for identifier, tlp, headline in (
        ("PREVIEW-AMBER", "AMBER", "Operation Falcon surveillance target"),
        ("PREVIEW-GREEN", "GREEN", "Road closed at the bridge"),
    ):
        document = fixture_document("bolo_minimal.json") | {
            "identifier": identifier,
            "headline": headline,
            "handling": {"tlp": tlp},
            "expires": "2099-01-01T00:00:00Z",
        }
        posted = await staff.call("POST", "/api/v1/alerts", body=document, session=analyst)
        assert posted.status == 202, posted.body
        ids.append(str(posted.body["id"]))
        await wait_until(lambda: recorded(staff.service, ids[-1]), what="the alert recorded")
    amber, green = ids
    desk = await enrol(staff.service, "Desk", {"email": "desk@example.org"})
    viewer = await signed_in(staff, "vic", ["viewer"], clearance={"maxTlp": "GREEN"})

    async def preview(rule: dict[str, Any], session: Any) -> dict[str, Any]:
        answer = await staff.call(
            "POST",
            "/api/v1/match/rule",
            body={"stakeholderId": desk.id, "rule": rule},
            session=session,
        )
        assert answer.status == 200, answer.body
        return dict(answer.body)

    for rule in (
        {"keywords": ["falcon"]},  # a word of the AMBER alert's headline
        {"keywords": ["eagle"]},  # one it does not have
        {"senders": ["bolo@fusion.example.gov"]},
        {"kinds": ["bolo"]},
    ):
        answer = await preview(rule, viewer)
        assert answer["withheld"] == {"items": 1, "reason": "above_clearance"}, rule
        assert answer["considered"] == 1, rule
        assert amber not in str(answer), rule

    assert [a["id"] for a in (await preview({"kinds": ["bolo"]}, viewer))["alerts"]] == [green]
    # the analyst, cleared for AMBER, tries both and sees the match with its content
    cleared = await preview({"keywords": ["falcon"]}, analyst)
    assert (cleared["considered"], cleared["matched"], "withheld" in cleared) == (2, 1, False)
    assert cleared["alerts"][0]["id"] == amber
    assert cleared["alerts"][0]["headline"] == "Operation Falcon surveillance target"
