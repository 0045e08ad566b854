"""An address whose local part goes beyond ASCII (RFC 6531), as the directory stores it
(`validate_contact`, email_validator): composed by the `email` package and sent with
SMTPUTF8 to a real SMTP server on loopback (testbed/smtp.py), refused unsent by a relay
without SMTPUTF8, and held to every check an ASCII address is held to."""

from __future__ import annotations

import email.message
import hashlib

import pytest

from channels.base import Outcome
from channels.email import EmailChannel, as_sent, build, mail_bytes
from channels.mailtext import check_address
from subscriptions.codec import validate_contact
from testbed.smtp import start_smtp_sink
from tests.emailrig import DOMAIN, FROM, config, message

JOSE = "josé@example.org"


async def stored(address: str) -> str:
    """`address` as the directory stores an email contact."""
    contact = {"stakeholderId": "s-1", "channel": "email", "address": address}
    normalized: str = (await validate_contact(contact, ()))["address"]
    return normalized


@pytest.mark.parametrize("address", ["José@example.org", "用户@例え.jp", "ü.x+tag@exämple.org"])
async def test_a_non_ascii_local_part_is_sent_with_smtputf8(address: str) -> None:
    to = await stored(address)
    assert not to.partition("@")[0].isascii()
    mail = build(message(to=to), FROM, DOMAIN)
    assert isinstance(mail, email.message.EmailMessage)  # not written as plain ASCII
    assert f"\r\nTo: {to}\r\n".encode() in as_sent(mail)  # UTF-8 as it is, no encoded word
    async with start_smtp_sink() as sink:
        channel = EmailChannel(config(sink))
        try:
            result = await channel.send(message(to=to))
        finally:
            await channel.close()
        received = await sink.message(0)
    assert result.outcome is Outcome.SENT, result.detail
    assert (received.mail_from, received.rcpt_tos) == (FROM, (to,))
    assert received.parsed()["To"] == to
    assert result.content_sha256 == hashlib.sha256(received.raw).hexdigest()


async def test_a_non_ascii_local_part_to_a_relay_without_smtputf8_fails_permanently() -> None:
    async with start_smtp_sink(smtputf8=False) as sink:
        channel = EmailChannel(config(sink))
        try:
            result = await channel.send(message(to=await stored(JOSE)))
        finally:
            await channel.close()
    assert result.outcome is Outcome.PERMANENT
    assert "SMTPUTF8" in result.detail
    assert sink.messages == []


@pytest.mark.parametrize(
    "address",
    [
        f"{JOSE}\r\nBcc: victim@example.net",
        f"{JOSE}\nBcc: victim@example.net",
        f"José <{JOSE}>",
        f"<{JOSE}>",
        f"{JOSE}, victim@example.net",
        f"{JOSE} victim@example.net",
        "josé",
        "josé@",
        "@exämple.org",
        "josé@@example.org",
        f"{JOSE}\x00",
        "jos\x85é@example.org",  # NEL, a C1 control
        "josé\u2028@example.org",  # line separator
        "jo\u3000sé@example.org",  # ideographic space
        "jos\u200bé@example.org",  # zero width space: a format character, not text
        "jos\u202eé@example.org",  # right-to-left override
        "jos\ud800é@example.org",  # a lone surrogate: no UTF-8 for it
        '"josé"@example.org',
        "=?utf-8?q?jos=C3=A9?=@example.org",
        "=?utf-8?q?jos=C3=A9?=é@example.org\r\nBcc: victim@example.net",
    ],
)
def test_every_check_on_an_address_holds_beyond_ascii(address: str) -> None:
    """`josé@example.org` is an address; none of these is one to send to."""
    assert check_address(JOSE) == JOSE
    with pytest.raises(ValueError, match="address"):
        check_address(address)
    with pytest.raises(ValueError, match="address"):
        mail_bytes(message(to=address), FROM, DOMAIN)
    with pytest.raises(ValueError, match="address"):
        mail_bytes(message(), address, DOMAIN)
