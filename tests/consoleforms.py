"""Console pages driven without a browser: a signed-in staff session's cookie, its form
token and our origin on each request, forms posted as a browser posts them. For the fast
tests of bad input and refusals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dissemination.api.app import SESSION_COOKIE
from dissemination.console.auth import FORM_TOKEN_FIELD, form_token
from tests.staffrig import Staff

Form = Sequence[tuple[str, str]]


@dataclass
class Page:
    status: int
    text: str


@dataclass
class SignedIn:
    """One staff member's session, making requests as the console's pages do."""

    staff: Staff
    cookie: str
    account_id: str

    async def get(self, path: str) -> Page:
        headers = {"Cookie": f"{SESSION_COOKIE}={self.cookie}"}
        async with self.staff.http.get(
            self.staff.base + path, headers=headers, allow_redirects=False
        ) as response:
            return Page(response.status, await response.text())

    async def post(self, path: str, form: Form, *, with_token: bool = True) -> Page:
        fields = list(form)
        if with_token:
            fields.append((FORM_TOKEN_FIELD, form_token(self.cookie)))
        headers = {
            "Cookie": f"{SESSION_COOKIE}={self.cookie}",
            "Origin": self.staff.public_url,
        }
        async with self.staff.http.post(
            self.staff.base + path, data=fields, headers=headers, allow_redirects=False
        ) as response:
            return Page(response.status, await response.text())


async def signed_in(staff: Staff, username: str, roles: list[str], max_tlp: str = "AMBER",
                    **extra: object) -> SignedIn:  # fmt: skip
    """A new account with its second factor enrolled, signed in."""
    account_id, password = await staff.make_account(username, roles, max_tlp, **extra)
    session, _secret, _codes = await staff.enrolled(username, password)
    return SignedIn(staff, session.cookie, account_id)
