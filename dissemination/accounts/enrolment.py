"""Enrolling the TOTP second factor: a new secret with its provisioning URI, a QR code and ten
recovery codes (stored as digests, each usable once); the enrolment is in force once a
first valid code confirms it, and the session that confirmed it counts as two-factor."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from core.clock import Clock
from dissemination.accounts.errors import AccountRefused
from dissemination.accounts.model import Account
from dissemination.accounts.signin import audit_own
from dissemination.accounts.totp import (
    accepted_step,
    new_recovery_codes,
    new_secret,
    provisioning_uri,
    qr_svg,
    recovery_digest,
)
from dissemination.store.database import Database
from dissemination.store.tables import account_recovery_codes, account_sessions, accounts


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What the person enrolling is shown once."""

    uri: str
    qr_svg: str
    recovery_codes: list[str]


class TotpEnrolment:
    """Begin and confirm enrolment."""

    def __init__(self, database: Database, issuer: str, clock: Clock) -> None:
        self.database = database
        self.issuer = issuer
        self.clock = clock

    async def begin(self, account: Account) -> Enrolment:
        """A new pending secret and recovery codes (replacing an unconfirmed enrolment);
        409 already_enrolled when a second factor is in force (an administrator resets it)."""
        if account.totp_enabled:
            raise AccountRefused(
                409, "already_enrolled", "a second factor is in force; an administrator resets it"
            )
        secret, codes, now = new_secret(), new_recovery_codes(), self.clock()
        async with self.database.transaction() as conn:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account.id, accounts.c.totp_enabled.is_(False))
                .values(totp_secret=secret, totp_last_step=None, updated_at=now)
            )
            await conn.execute(
                account_recovery_codes.delete().where(
                    account_recovery_codes.c.account_id == account.id
                )
            )
            await conn.execute(
                account_recovery_codes.insert(),
                [{"account_id": account.id, "code_sha256": recovery_digest(c)} for c in codes],
            )
            await audit_own(
                conn, now, account, "totp_enrolment_started", {"recoveryCodes": len(codes)}
            )
        uri = provisioning_uri(secret, account.username, self.issuer)
        return Enrolment(uri, qr_svg(uri), codes)

    async def confirm(self, account: Account, session_id: str, code: str) -> None:
        """Put the pending enrolment in force with its first valid code; 409 when there is
        none pending, 422 invalid_code for a wrong code."""
        now = self.clock()
        async with self.database.transaction() as conn:
            query = select(accounts.c.totp_secret, accounts.c.totp_enabled).where(
                accounts.c.id == account.id
            )
            row = (await conn.execute(query)).one()
            if row.totp_enabled or row.totp_secret is None:
                raise AccountRefused(
                    409, "not_enrolling", "no enrolment is waiting to be confirmed"
                )
            step = accepted_step(row.totp_secret, code, now, None)
            if step is None:
                raise AccountRefused(422, "invalid_code", "wrong or expired code")
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account.id)
                .values(totp_enabled=True, totp_last_step=step, updated_at=now)
            )
            await conn.execute(
                update(account_sessions)
                .where(account_sessions.c.id == session_id)
                .values(second_factor=True)
            )
            await audit_own(conn, now, account, "totp_enrolled", {"totpEnabled": True})
