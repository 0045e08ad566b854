"""Staff sign-in against the running service, on both stores, with a fake clock: password and
TOTP, wrong password, lockout and its end, TOTP replay, recovery codes used once, idle and
absolute expiry, CSRF refusals and acceptance, sign-out and revocation by an administrator,
the cookie's attributes, per-address throttling, the audit trail, and no password, code or
secret in the logs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dissemination.api.app import SESSION_COOKIE
from tests.logcapture import LogLines
from tests.staffrig import Staff, staff_service

pytestmark = pytest.mark.slow


@pytest.fixture
async def staff(service_env: dict[str, str]) -> AsyncIterator[Staff]:
    async for rig in staff_service(service_env, DISSEMINATION_ACCOUNTS_MAX_FAILED_ATTEMPTS="3"):
        yield rig


async def test_password_then_totp_signs_in_with_a_strict_cookie(staff: Staff) -> None:
    account_id, password = await staff.make_account("vera", ["viewer"])
    first = await staff.sign_in("vera", password)
    assert first.status == 201
    assert first.body["enrolmentRequired"] is True
    morsel = first.cookies[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["secure"] is True  # the public URL is https
    unenrolled = staff.signed(first)
    # before enrolment the session may only enrol
    refused = await staff.call("GET", "/api/v1/lists", session=unenrolled)
    assert (refused.status, refused.body["error"]["code"]) == (403, "second_factor_required")

    _session, secret, codes = await staff.enrolled("vera", password)
    assert len(codes) == 10
    no_code = await staff.sign_in("vera", password)
    assert (no_code.status, no_code.body["error"]["code"]) == (401, "second_factor_required")
    signed = staff.signed(await staff.sign_in("vera", password, code=staff.code(secret)))
    assert signed.body["account"]["roles"] == ["viewer"]
    assert signed.body["account"]["clearance"]["maxTlp"] == "AMBER"
    shown = await staff.call("GET", "/api/v1/session", session=signed)
    assert (shown.status, shown.body["account"]["id"]) == (200, account_id)
    lists = await staff.call("GET", "/api/v1/lists", session=signed)
    assert lists.status == 200
    # a viewer may not change anything
    denied = await staff.call("POST", "/api/v1/lists", body={"name": "x"}, session=signed)
    assert (denied.status, denied.body["error"]["code"]) == (403, "forbidden")
    actions = [e["action"] for e in await staff.audit("account", account_id)]
    assert actions[:1] == ["create"]
    assert {"sign_in", "totp_enrolment_started", "totp_enrolled"} <= set(actions)


async def test_wrong_password_and_unknown_user_answer_alike(staff: Staff) -> None:
    _id, password = await staff.make_account("wes", ["viewer"])
    wrong = await staff.sign_in("wes", password + "x")
    unknown = await staff.sign_in("nobody", password)
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body
    assert SESSION_COOKIE not in wrong.cookies


async def test_lockout_after_failures_ends_after_the_period(staff: Staff) -> None:
    account_id, password = await staff.make_account("lou", ["viewer"])
    for _ in range(3):
        assert (await staff.sign_in("lou", "not the password")).status == 401
    locked = await staff.sign_in("lou", password)
    assert (locked.status, locked.body["error"]["code"]) == (423, "account_locked")
    staff.clock.advance(14 * 60)
    assert (await staff.sign_in("lou", password)).status == 423
    staff.clock.advance(61)
    assert (await staff.sign_in("lou", password)).status == 201
    actions = [e["action"] for e in await staff.audit("account", account_id)]
    assert actions.count("sign_in_failed") == 3
    assert actions.count("lockout") == 1
    assert actions.count("sign_in_refused") == 2
    assert actions[-1] == "sign_in"


async def test_failures_outside_the_window_do_not_lock(staff: Staff) -> None:
    _id, password = await staff.make_account("fay", ["viewer"])
    for _ in range(2):
        assert (await staff.sign_in("fay", "wrong")).status == 401
    staff.clock.advance(15 * 60)
    for _ in range(2):
        assert (await staff.sign_in("fay", "wrong")).status == 401
    assert (await staff.sign_in("fay", password)).status == 201


async def test_totp_code_is_accepted_once(staff: Staff) -> None:
    _id, password = await staff.make_account("rex", ["viewer"])
    _session, secret, _codes = await staff.enrolled("rex", password)
    code = staff.code(secret)
    assert (await staff.sign_in("rex", password, code=code)).status == 201
    replay = await staff.sign_in("rex", password, code=code)
    assert (replay.status, replay.body["error"]["code"]) == (401, "invalid_code")
    # an older step's code is refused too once a later one was used
    staff.clock.advance(30)
    assert (await staff.sign_in("rex", password, code=staff.code(secret))).status == 201
    assert (await staff.sign_in("rex", password, code=code)).status == 401


async def test_recovery_code_signs_in_once(staff: Staff) -> None:
    account_id, password = await staff.make_account("ria", ["viewer"])
    _session, _secret, codes = await staff.enrolled("ria", password)
    used = await staff.sign_in("ria", password, recoveryCode=codes[0].upper())
    assert used.status == 201
    again = await staff.sign_in("ria", password, recoveryCode=codes[0])
    assert (again.status, again.body["error"]["code"]) == (401, "invalid_code")
    entries = await staff.audit("account", account_id)
    uses = [e for e in entries if e["action"] == "recovery_code_used"]
    assert [e["after"] for e in uses] == [{"remaining": 9}]


async def test_sessions_end_when_idle_or_past_their_lifetime(staff: Staff) -> None:
    _id, password = await staff.make_account("ida", ["viewer"])
    _first, secret, _codes = await staff.enrolled("ida", password)
    session = staff.signed(await staff.sign_in("ida", password, code=staff.code(secret)))
    staff.clock.advance(29 * 60)
    assert (await staff.call("GET", "/api/v1/session", session=session)).status == 200
    staff.clock.advance(30 * 60 + 1)  # idle for more than 30 minutes
    assert (await staff.call("GET", "/api/v1/session", session=session)).status == 401

    staff.clock.advance(30)
    session = staff.signed(await staff.sign_in("ida", password, code=staff.code(secret)))
    uses = 0
    while uses < 30:  # used every 29 minutes, but 12 hours is the most it lives
        staff.clock.advance(29 * 60)
        answer = await staff.call("GET", "/api/v1/session", session=session)
        if answer.status != 200:
            break
        uses += 1
    assert answer.status == 401
    assert uses == 12 * 60 // 29
    assert answer.body["error"]["code"] == "unauthenticated"


async def test_cookie_changes_need_our_origin_and_the_csrf_token(staff: Staff) -> None:
    session = await staff.admin_session()
    body = {"name": "Night desk"}
    missing = await staff.call("POST", "/api/v1/lists", body=body, session=session, csrf="")
    assert (missing.status, missing.body["error"]["code"]) == (403, "csrf_token")
    wrong = await staff.call("POST", "/api/v1/lists", body=body, session=session, csrf="x" * 43)
    assert (wrong.status, wrong.body["error"]["code"]) == (403, "csrf_token")
    foreign = await staff.call(
        "POST", "/api/v1/lists", body=body, session=session, origin="https://evil.example"
    )
    assert (foreign.status, foreign.body["error"]["code"]) == (403, "csrf_origin")
    no_origin = await staff.call("POST", "/api/v1/lists", body=body, session=session, origin=None)
    assert (no_origin.status, no_origin.body["error"]["code"]) == (403, "csrf_origin")
    cross_site = await staff.call(
        "POST",
        "/api/v1/lists",
        body=body,
        session=session,
        origin=None,
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status == 403
    same_site = await staff.call(
        "POST",
        "/api/v1/lists",
        body=body,
        session=session,
        origin=None,
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert same_site.status == 201, same_site.body
    accepted = await staff.call("POST", "/api/v1/lists", body={"name": "Day"}, session=session)
    assert accepted.status == 201
    # a sign-in posted from another origin is refused too
    foreign_sign_in = await staff.call(
        "POST",
        "/api/v1/session",
        body={"username": "ada", "password": "whatever-it-is"},
        origin="https://evil.example",
    )
    assert foreign_sign_in.status == 403
    # the audit log names the account that made the list
    entries = await staff.audit("distribution_list")
    assert {e["actor"]["name"] for e in entries} == {"ada"}


async def test_sign_out_and_revocation_by_an_administrator(staff: Staff) -> None:
    admin = await staff.admin_session()
    account_id, password = await staff.make_account("sam", ["analyst"])
    _enrolling, secret, _codes = await staff.enrolled("sam", password)
    one = staff.signed(await staff.sign_in("sam", password, code=staff.code(secret)))
    assert (await staff.call("DELETE", "/api/v1/session", session=one)).status == 204
    assert (await staff.call("GET", "/api/v1/session", session=one)).status == 401

    staff.clock.advance(30)
    two = staff.signed(await staff.sign_in("sam", password, code=staff.code(secret)))
    revoked = await staff.call("DELETE", f"/api/v1/accounts/{account_id}/sessions", session=admin)
    assert (revoked.status, revoked.body["revoked"]) == (200, 2)  # two and the enrolling one
    assert (await staff.call("GET", "/api/v1/session", session=two)).status == 401
    actions = [e["action"] for e in await staff.audit("account", account_id)]
    assert {"sign_out", "revoke_sessions"} <= set(actions)


async def test_one_address_is_throttled(service_env: dict[str, str]) -> None:
    async for staff in staff_service(
        service_env, DISSEMINATION_ACCOUNTS_ATTEMPTS_PER_ADDRESS_PER_MINUTE="4"
    ):
        answers = [(await staff.sign_in(f"u{i}", "wrong-password")).status for i in range(6)]
        assert answers == [401, 401, 401, 401, 429, 429]
        staff.clock.advance(61)
        assert (await staff.sign_in("u9", "wrong-password")).status == 401


async def test_no_password_code_or_secret_is_logged(staff: Staff, logged: LogLines) -> None:
    _id, password = await staff.make_account("lee", ["viewer"])
    _session, secret, codes = await staff.enrolled("lee", password)
    code = staff.code(secret)
    signed = staff.signed(await staff.sign_in("lee", password, code=code))
    await staff.sign_in("lee", password + "-wrong", code=code)
    await staff.sign_in("lee", password, recoveryCode=codes[1])
    entries = await staff.audit("account")
    text = "\n".join(logged.lines) + repr(entries)
    for secret_text in (password, secret, code, codes[1], signed.cookie, signed.csrf):
        assert secret_text not in text
