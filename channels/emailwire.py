"""An alert mail as the exact bytes submitted over SMTP, written directly rather than through
an `EmailMessage`: byte for byte what `email.as_sent(email.compose(...))` gives for the same
delivery, apart from the random MIME boundary and the Date.

The `email` package parses every header value it is given into header objects and refolds
them when the message is written: 2.7 ms of CPU a mail (compose, flatten for sending,
flatten again for the record's hash), against 0.09 ms here. Here the headers that are the
same for every mail of an alert (Subject, From, X-Alert-Id) are folded once by the same
policy and kept, as is the Date for a second; the ones that change per mail (To,
Message-ID) are plain ASCII tokens written as they are; the bodies come from templates run
once an alert (`mailtext.bodies`) and are quoted-printable by the same encoder. Every header
the policy folds is checked to break its line only to continue it (`mailtext.check_folded`).

Only mails whose addresses are plain ASCII dot-atoms are written here (`wire_mail` returns
None otherwise): an international address needs SMTPUTF8, which `email.compose` handles.
"""

from __future__ import annotations

import email.policy
import email.quoprimime
import email.utils
import functools
import secrets
import sys
import time
from datetime import UTC, datetime

from channels.content import AlertContent, Rendering
from channels.mailtext import (
    bodies,
    check_address,
    check_folded,
    header_text,
    is_plain_address,
    message_id,
    subject,
)

_POLICY = email.policy.SMTP
_LINE_LIMIT = _POLICY.max_line_length or 78
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
_TEXT_PART = (
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
    b"\r\n"
)
# The stdlib's add_alternative leaves MIME-Version on the part it moves; kept, to stay the same.
_HTML_PART = (
    b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
    b"MIME-Version: 1.0\r\n\r\n"
)


def _fold(name: str, value: str) -> bytes:
    """`name: value` as the SMTP policy writes it (parsed, encoded and folded); ValueError if
    it would break out of its line (`check_folded`)."""
    folded: str = _POLICY.header_factory(name, value).fold(policy=_POLICY)
    return check_folded(folded).encode("ascii")


@functools.lru_cache(maxsize=1024)
def _text_header(name: str, text: str) -> bytes:
    """A header showing alert text (`header_text`), the same for every mail of an alert."""
    return _fold(name, header_text(text))


@functools.lru_cache(maxsize=16)
def _from_header(address: str) -> bytes:
    return _fold("From", address)


@functools.lru_cache(maxsize=4)
def _date_header(second: int) -> bytes:
    """The Date header for a whole second since the epoch (the header shows no finer)."""
    date = email.utils.format_datetime(datetime.fromtimestamp(second, UTC))
    return b"Date: %s\r\n" % date.encode("ascii")


def _token_line(name: str, value: str) -> bytes:
    """A header whose value is one ASCII token (an address, a Message-ID): written as it is
    when it fits a line, as the policy would; folded by the policy when it does not."""
    line = f"{name}: {value}\r\n"
    if len(line) - 2 <= _LINE_LIMIT:
        return line.encode("ascii")
    return _fold(name, value)


def _quoted_printable(text: str) -> bytes:
    """`text` as the stdlib's `set_content(..., cte="quoted-printable")` encodes it."""
    lines = text.encode("utf-8").splitlines()
    encoded = email.quoprimime.body_encode(
        (b"\n".join(lines) + b"\n").decode("latin-1"), _LINE_LIMIT
    )
    return encoded.replace("\n", "\r\n").encode("ascii")


def new_boundary() -> str:
    """A MIME boundary of the stdlib's form. Quoted-printable bodies cannot contain it: they
    write "=" as "=3D". Drawn from `secrets`, not the `random` module's shared generator, which
    it would move under anything else seeded from it."""
    return "=" * 15 + f"{secrets.randbelow(sys.maxsize):0{_BOUNDARY_DIGITS}d}" + "=="


def wire_mail(
    content: AlertContent,
    rendering: Rendering,
    to: str,
    from_address: str,
    message_id_domain: str,
    now: datetime | None = None,
) -> bytes | None:
    """The mail for one delivery as the bytes to submit, or None when an address is not a
    plain ASCII dot-atom. ValueError when it cannot be addressed, as `email.compose`."""
    if not (is_plain_address(to) and is_plain_address(from_address)):
        check_address(to)  # a clear error for a bad address, before anything else
        return None
    mail_id = message_id(rendering.delivery_id, message_id_domain)
    text, html = bodies(content, rendering)
    boundary = new_boundary().encode("ascii")
    second = int(now.timestamp()) if now is not None else int(time.time())
    parts = [
        _text_header("Subject", subject(content)),
        _from_header(from_address),
        _token_line("To", to),
        _date_header(second),
        _token_line("Message-ID", mail_id),
        b"Auto-Submitted: auto-generated\r\n",
    ]
    if content.alert_id:
        parts.append(_text_header("X-Alert-Id", content.alert_id))
    parts += (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="%s"\r\n\r\n'
        % boundary,
        b"--%s\r\n%s%s" % (boundary, _TEXT_PART, _quoted_printable(text)),
        b"\r\n--%s\r\n%s%s" % (boundary, _HTML_PART, _quoted_printable(html)),
        b"\r\n--%s--\r\n" % boundary,
    )
    return b"".join(parts)
