"""Sign-in never tells which usernames exist: a username no account has fails, locks, stays
locked and is let go exactly as an account does (the same answers, the unlock time included),
every attempt runs one password verification (a locked or unknown one too, so the time taken
tells nothing), and the in-memory counts of unknown usernames stay bounded under a spray."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dissemination.accounts import passwords
from dissemination.accounts.signin import UnknownFailures
from tests.staffrig import Answer, Staff, sqlite_only_fixture, staff_service  # noqa: F401

LIMIT = 3
LOCKOUT_MINUTES = 15


@pytest.fixture
async def staff(service_env: dict[str, str]) -> AsyncIterator[Staff]:
    async for rig in staff_service(
        service_env, DISSEMINATION_ACCOUNTS_MAX_FAILED_ATTEMPTS=str(LIMIT)
    ):
        yield rig


def _seen(answer: Answer) -> tuple[int, str, str]:
    return answer.status, answer.body["error"]["code"], answer.body["error"]["message"]


async def test_an_unknown_username_is_counted_and_locked_as_an_account_is(staff: Staff) -> None:
    _id, password = await staff.make_account("alice", ["viewer"])
    answers: dict[str, list[tuple[int, str, str]]] = {}
    for username in ("alice", "Nobody-Here"):
        failures = [await staff.sign_in(username, "wrong password 123") for _ in range(LIMIT)]
        # while locked, even the right password is refused, with the unlock time
        locked = await staff.sign_in(username, password)
        answers[username] = [_seen(a) for a in [*failures, locked]]
    assert answers["alice"] == answers["Nobody-Here"]
    until = (staff.clock() + timedelta(minutes=LOCKOUT_MINUTES)).isoformat()
    assert answers["alice"][-1] == (
        423,
        "account_locked",
        f"too many failed sign-ins: locked until {until}",
    )
    assert {a[:2] for a in answers["alice"][:-1]} == {(401, "invalid_credentials")}
    # the same username however it is typed
    again = await staff.sign_in("  NOBODY-here ", "wrong password 123")
    assert _seen(again) == answers["alice"][-1]

    staff.clock.advance(LOCKOUT_MINUTES * 60 - 1)
    assert (await staff.sign_in("nobody-here", password)).status == 423
    staff.clock.advance(1)  # the lock has ended: counting starts again, from one
    assert (await staff.sign_in("alice", password)).status == 201
    for _ in range(LIMIT):
        assert (await staff.sign_in("nobody-here", password)).status == 401
    assert (await staff.sign_in("nobody-here", password)).status == 423

    unknown = [e for e in await staff.audit("account") if e["entityId"] is None]
    actions = [e["action"] for e in unknown]
    assert actions.count("sign_in_failed") == 2 * LIMIT
    assert actions.count("lockout") == 2
    assert actions.count("sign_in_refused") == 4
    assert "nobody" not in repr(unknown).lower()  # what was typed is never kept


async def test_every_attempt_runs_one_password_verification(
    staff: Staff, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    real = passwords._verify

    def counted(hasher: Any, stored: str, password: str) -> tuple[bool, bool]:
        verified.append(password)
        return real(hasher, stored, password)

    monkeypatch.setattr(passwords, "_verify", counted)
    _id, password = await staff.make_account("bob", ["viewer"])
    for username in ("bob", "nobody"):
        for attempt in range(LIMIT + 2):  # failures, then refusals while locked
            offered = password if attempt >= LIMIT else f"attempt {attempt}"
            verified.clear()
            answer = await staff.sign_in(username, offered)
            assert answer.status == (401 if attempt < LIMIT else 423)
            assert verified == [offered], (username, attempt)


def test_unknown_usernames_are_remembered_within_a_bound() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    failures = UnknownFailures(3, timedelta(minutes=15), timedelta(minutes=15), max_usernames=100)
    for _ in range(3):
        failures.fail("target", now)
    until = failures.locked_until("target", now)
    assert until == now + timedelta(minutes=15)
    # a spray of other usernames, however long, neither grows the memory past its bound
    # (each kept as a digest of fixed size) nor pushes the lock out: only locks do that
    for n in range(1000):
        failures.fail(f"sprayed-{n}-" + "x" * 10_000, now)
        assert len(failures) <= 101
    assert {len(key) for key in failures._counting} == {16}
    assert failures.locked_until("target", now) == until
    assert failures.locked_until("target", until) is None
    assert len(failures) == 100  # the ended lock is gone
