"""Staff accounts on both stores: the first administrator from the CLI (no standard input, the
temporary password on the last line), administrators managing accounts through the API with
every change audited, the last administrator kept, and personal API tokens (a role the owner
holds, expiry, revocation by the owner and by administrators, shared tokens assigned an
owner)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from dissemination.api.tokens import Role, TokenStore
from dissemination.cli import main
from tests.staffrig import Staff, staff_service

pytestmark = pytest.mark.slow


@pytest.fixture
async def staff(service_env: dict[str, str]) -> AsyncIterator[Staff]:
    async for rig in staff_service(service_env):
        yield rig


async def test_first_administrator_from_the_cli_signs_in(
    staff: Staff,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    status = await asyncio.to_thread(
        main, ["accounts", "create-admin", "--username", "Root", "--caveat", "LES"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    password = out.splitlines()[-1]
    assert len(password) == 24
    session, _secret, _codes = await staff.enrolled("root", password)
    shown = await staff.call("GET", "/api/v1/session", session=session)
    assert shown.body["account"]["roles"] == ["administrator"]
    assert shown.body["account"]["clearance"] == {
        "maxTlp": "RED",
        "caveats": ["LES"],
        "lawEnforcement": False,
    }
    # a taken username is refused with exit status 2
    again = await asyncio.to_thread(main, ["accounts", "create-admin", "--username", "root"])
    assert again == 2
    assert "taken" in capsys.readouterr().err
    created = [e for e in await staff.audit("account") if e["action"] == "create"]
    assert created[0]["actor"] == {"id": None, "name": "cli"}
    assert "password" not in repr(created).lower().replace("temporarypassword", "")


async def test_administrators_manage_accounts_with_audit(staff: Staff) -> None:
    admin = await staff.admin_session()
    body = {
        "username": "ana",
        "displayName": "Ana Analyst",
        "organization": "State Fusion Center",
        "roles": ["analyst"],
        "clearance": {"maxTlp": "AMBER", "caveats": ["PII"]},
        "senders": ["sfc@example.gov"],
    }
    created = await staff.call("POST", "/api/v1/accounts", body=body, session=admin)
    assert created.status == 201, created.body
    account_id, password = created.body["id"], created.body["temporaryPassword"]
    assert created.body["roles"] == ["analyst"]
    duplicate = await staff.call("POST", "/api/v1/accounts", body=body, session=admin)
    assert (duplicate.status, duplicate.body["error"]["code"]) == (409, "duplicate_username")
    bad = await staff.call(
        "POST", "/api/v1/accounts", body=body | {"roles": ["root"], "x": 1}, session=admin
    )
    assert bad.status == 422

    listed = await staff.call("GET", "/api/v1/accounts", session=admin)
    assert [a["username"] for a in listed.body["items"]] == ["ana", "ada"][::-1]
    read = await staff.call("GET", f"/api/v1/accounts/{account_id}", session=admin)
    assert read.body["senders"] == ["sfc@example.gov"]
    assert (await staff.call("GET", "/api/v1/accounts/nope", session=admin)).status == 404

    ana, secret, _codes = await staff.enrolled("ana", password)
    # an analyst may not manage accounts, nor may a viewer token
    assert (await staff.call("GET", "/api/v1/accounts", session=ana)).status == 403
    changed = await staff.call(
        "PATCH",
        f"/api/v1/accounts/{account_id}",
        body={"roles": ["viewer"], "clearance": {"maxTlp": "GREEN"}},
        session=admin,
    )
    assert changed.status == 200, changed.body
    assert changed.body["clearance"] == {"maxTlp": "GREEN"}
    # losing a role ends the account's sessions
    assert (await staff.call("GET", "/api/v1/session", session=ana)).status == 401

    reset = await staff.call("POST", f"/api/v1/accounts/{account_id}/password", session=admin)
    new_password = reset.body["temporaryPassword"]
    assert new_password != password
    wrong = await staff.sign_in("ana", password, code=staff.code(secret))
    assert wrong.status == 401
    assert (
        await staff.call("DELETE", f"/api/v1/accounts/{account_id}/totp", session=admin)
    ).status == 200
    again = await staff.sign_in("ana", new_password)
    assert again.status == 201
    assert again.body["enrolmentRequired"] is True

    disabled = await staff.call(
        "PATCH", f"/api/v1/accounts/{account_id}", body={"active": False}, session=admin
    )
    assert disabled.body["active"] is False
    assert (await staff.sign_in("ana", new_password)).status == 401

    actions = [e["action"] for e in await staff.audit("account", account_id)]
    assert actions[0] == "create"
    assert {"update", "reset_password", "reset_totp", "sign_in_refused"} <= set(actions)
    updates = [e for e in await staff.audit("account", account_id) if e["action"] == "update"]
    assert updates[0]["before"]["roles"] == ["analyst"]
    assert updates[0]["after"]["roles"] == ["viewer"]
    assert updates[0]["actor"]["name"] == "ada"


async def test_the_last_administrator_is_kept(staff: Staff) -> None:
    admin = await staff.admin_session()
    me = (await staff.call("GET", "/api/v1/session", session=admin)).body["account"]["id"]
    for change in ({"active": False}, {"roles": ["viewer"]}):
        refused = await staff.call("PATCH", f"/api/v1/accounts/{me}", body=change, session=admin)
        assert (refused.status, refused.body["error"]["code"]) == (409, "last_administrator")


async def test_personal_tokens(staff: Staff) -> None:
    admin = await staff.admin_session()
    analyst_id, password = await staff.make_account("abe", ["analyst"], senders=["abe@x.gov"])
    abe, totp, _codes = await staff.enrolled("abe", password)
    made_at = staff.clock()
    above = await staff.call(
        "POST", "/api/v1/account/tokens", body={"name": "abe-admin", "role": "admin"}, session=abe
    )
    assert (above.status, above.body["error"]["code"]) == (403, "role_not_held")
    too_long = await staff.call(
        "POST",
        "/api/v1/account/tokens",
        body={"name": "abe-long", "role": "viewer", "expiresInDays": 366},
        session=abe,
    )
    assert (too_long.status, too_long.body["error"]["code"]) == (422, "expiry_too_long")
    made = await staff.call(
        "POST", "/api/v1/account/tokens", body={"name": "abe-pub", "role": "publisher"}, session=abe
    )
    assert made.status == 201, made.body
    assert made.body["senders"] == ["abe@x.gov"]
    assert made.body["owner"] == analyst_id
    assert made.body["expiresAt"] == (made_at + timedelta(days=90)).isoformat()
    secret = made.body["secret"]
    viewer = await staff.call(
        "POST",
        "/api/v1/account/tokens",
        body={"name": "abe-read", "role": "viewer", "expiresInDays": 1},
        session=abe,
    )
    read_token = viewer.body["secret"]
    assert (await staff.call("GET", "/api/v1/lists", token=read_token)).status == 200
    # a token cannot make tokens
    by_token = await staff.call(
        "POST", "/api/v1/account/tokens", body={"name": "t", "role": "viewer"}, token=read_token
    )
    assert by_token.status == 403
    owned = await staff.call("GET", "/api/v1/account/tokens", token=read_token)
    assert {t["name"] for t in owned.body["items"]} == {"abe-pub", "abe-read"}
    # the viewer token expires after its day
    staff.clock.advance(24 * 3600)
    expired = await staff.call("GET", "/api/v1/lists", token=read_token)
    assert expired.status == 401
    # the publisher token lives on; its owner (signed in again) revokes it
    abe = staff.signed(await staff.sign_in("abe", password, code=staff.code(totp)))
    admin = await staff.admin_session("ada2")
    listed = await staff.call("GET", "/api/v1/account/tokens", session=abe)
    pub = next(t for t in listed.body["items"] if t["name"] == "abe-pub")
    assert (await staff.call("GET", "/api/v1/account/tokens", token=secret)).status == 200
    revoked = await staff.call("DELETE", f"/api/v1/account/tokens/{pub['id']}", session=abe)
    assert revoked.status == 204
    assert (await staff.call("GET", "/api/v1/account/tokens", token=secret)).status == 401
    # an administrator lists and revokes another account's tokens
    again = await staff.call(
        "POST", "/api/v1/account/tokens", body={"name": "abe-2", "role": "viewer"}, session=abe
    )
    theirs = await staff.call("GET", f"/api/v1/accounts/{analyst_id}/tokens", session=admin)
    assert {t["name"] for t in theirs.body["items"]} == {"abe-pub", "abe-read", "abe-2"}
    gone = await staff.call(
        "DELETE", f"/api/v1/accounts/{analyst_id}/tokens/{again.body['id']}", session=admin
    )
    assert gone.status == 204
    assert (await staff.call("GET", "/api/v1/lists", token=again.body["secret"])).status == 401
    actions = [(e["action"], e["actor"]["name"]) for e in await staff.audit("api_token")]
    assert ("revoke", "ada2") in actions
    assert ("create", "abe") in actions


async def test_a_token_stops_when_its_owner_is_disabled_or_demoted(staff: Staff) -> None:
    admin = await staff.admin_session()
    account_id, password = await staff.make_account("pat", ["analyst"])
    pat, _secret, _codes = await staff.enrolled("pat", password)
    made = await staff.call(
        "POST", "/api/v1/account/tokens", body={"name": "pat-pub", "role": "publisher"}, session=pat
    )
    token = made.body["secret"]
    assert (await staff.call("GET", "/api/v1/account/tokens", token=token)).status == 200
    await staff.call(
        "PATCH", f"/api/v1/accounts/{account_id}", body={"roles": ["viewer"]}, session=admin
    )
    assert (await staff.call("GET", "/api/v1/account/tokens", token=token)).status == 401


async def test_shared_tokens_keep_working_until_assigned(
    staff: Staff,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert staff.service.database is not None
    tokens = TokenStore(staff.service.database)
    _info, shared = await tokens.create("desk-viewer", Role.VIEWER, staff.clock())
    assert (await staff.call("GET", "/api/v1/lists", token=shared)).status == 200
    await staff.make_account("val", ["viewer"])
    await staff.make_account("pip", ["analyst"])
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    _admin_info, _ = await tokens.create("desk-admin", Role.ADMIN, staff.clock())
    refused = await asyncio.to_thread(main, ["tokens", "assign", "desk-admin", "--account", "val"])
    assert refused == 2
    assert "does not hold the role admin" in capsys.readouterr().err
    assert (
        await asyncio.to_thread(main, ["tokens", "assign", "desk-viewer", "--account", "val"]) == 0
    )
    assert "now belongs to val" in capsys.readouterr().out
    owned = await staff.call("GET", "/api/v1/account/tokens", token=shared)
    assert [t["name"] for t in owned.body["items"]] == ["desk-viewer"]


async def test_an_approver_decides_but_does_not_administer(staff: Staff) -> None:
    _id, password = await staff.make_account("apu", ["approver"])
    apu, _secret, _codes = await staff.enrolled("apu", password)
    assert (await staff.call("GET", "/api/v1/approvals", session=apu)).status == 200
    assert (await staff.call("GET", "/api/v1/lists", session=apu)).status == 200
    denied = await staff.call("POST", "/api/v1/lists", body={"name": "x"}, session=apu)
    assert denied.status == 403
    assert (await staff.call("GET", "/api/v1/accounts", session=apu)).status == 403
