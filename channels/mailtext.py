"""What an alert mail says, whatever form it is sent in: its subject line, its text and HTML
bodies from the templates, and the checks that keep alert text out of the headers and each
mail to the one recipient of its row.

Alert text in a header is one line, and the "=?" that would start an RFC 2047 encoded word
is broken by an invisible WORD JOINER: the `email` package decodes encoded words in every
header value it is given, and one decoding to CR/LF would be written out raw, as header
lines or as the blank line that ends the headers. `check_folded` is the backstop: a header
as written may break its line only to continue it (CRLF, then a space or tab)."""

from __future__ import annotations

import functools
import re
import secrets
import unicodedata
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import escape

from channels.content import AlertContent, Rendering

SUBJECT_LIMIT = 200
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_ID_PART = re.compile(r"[A-Za-z0-9._-]+")
_DEFUSED_EW_START = "=\u2060?"  # "=?" with a WORD JOINER (U+2060) between: not an encoded word
_BROKEN_FOLD = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n")
_templates = Environment(
    loader=PackageLoader("channels", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    auto_reload=False,  # package files: never changed under a running service (no stat a mail)
)


def header_text(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """`text` on one line: control characters and line breaks become single spaces, a WORD
    JOINER goes between the "=" and "?" of every "=?" (shown as before, but starting no
    encoded word for the `email` package to decode), and anything over `limit` characters
    is cut at a word boundary where one is near."""
    spaced = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    line = " ".join(spaced.split()).replace("=?", _DEFUSED_EW_START)
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if cut.rfind(" ") > limit * 3 // 4:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "…"


def is_plain_address(address: str) -> bool:
    """True for an ASCII addr-spec of dot-atoms, the common address: any relay takes it
    without SMTPUTF8, and the `email` package reads it back unchanged without parsing it
    (an encoded word, "=?", it would decode)."""
    return "=?" not in address and _DOT_ATOM_ADDRESS.fullmatch(address) is not None


def check_address(address: str) -> str:
    """`address` if it is exactly one addr-spec (no display name, no list), else ValueError.
    Its local part may hold letters, marks, digits, punctuation and symbols beyond ASCII
    (RFC 6531, sent with SMTPUTF8), as its domain may."""
    if is_plain_address(address):
        return address
    if any(unicodedata.category(c) == "Cc" or c.isspace() for c in address):
        raise ValueError(f"email address contains whitespace or control characters: {address!r}")
    # `Address` refuses any non-ASCII local part; its parser reads such a character as atom
    # text, as it reads "x", so the address is checked with each printable one as an "x".
    probe = "".join(
        "x" if not c.isascii() and unicodedata.category(c)[0] in "LMNPS" else c for c in address
    )
    try:
        parsed = Address(addr_spec=probe)
    except (ValueError, IndexError, HeaderParseError) as error:
        raise ValueError(f"not a single email address: {address!r}") from error
    if not parsed.username or not parsed.domain or parsed.addr_spec != probe:
        raise ValueError(f"not a single email address: {address!r}")
    return address


def check_folded(folded: str) -> str:
    """`folded`, one header as written (ending in CRLF), if every other line break in it
    continues the header (CRLF, then a space or tab); else ValueError: a break that did not
    would start a header line, or end the headers, made of what the header showed."""
    if not folded.endswith("\r\n") or _BROKEN_FOLD.search(folded, 0, len(folded) - 2):
        name = folded.partition(":")[0][:40]
        raise ValueError(f"the {name!r} header would break out of its line")
    return folded


def message_id(delivery_id: str, domain: str) -> str:
    """The Message-ID of a row's mail, the same on every retry; ValueError unless both parts
    are letters, digits, . _ - (so a row id cannot smuggle anything into the header)."""
    if not (_ID_PART.fullmatch(delivery_id) and _ID_PART.fullmatch(domain)):
        raise ValueError("delivery id and Message-ID domain must be letters, digits, . _ -")
    return f"<{delivery_id}@{domain}>"


def subject(content: AlertContent) -> str:
    """The subject line, before `header_text`: status, marking, severity, event, headline."""
    line = f"[{content.marking}] {content.severity}: {content.event}"
    if content.headline != content.event:
        line += f" - {content.headline}"
    if content.status_label:
        line = f"{content.status_label} {line}"
    return line


def bodies(content: AlertContent, rendering: Rendering) -> tuple[str, str]:
    """The text and HTML bodies, with `\\n` line ends: exactly `rendered_bodies`, but the
    templates run once per alert content and kind of links, not once per mail; each mail's
    own links go into the kept rendering in place of markers no alert text contains."""
    ack, portal = rendering.ack_url, rendering.portal_url
    text, html = _bodies_with_markers(content, ack is not None, portal is not None)
    for marker, url in ((_ACK_MARKER, ack), (_PORTAL_MARKER, portal)):
        if url is not None:
            text = text.replace(marker, url)
            html = html.replace(marker, str(escape(url)))
    if "\r" in text or "\r" in html:  # a link with a carriage return: as `_render` does
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        html = html.replace("\r\n", "\n").replace("\r", "\n")
    return text, html


def rendered_bodies(content: AlertContent, rendering: Rendering) -> tuple[str, str]:
    """The text and HTML bodies, each rendered from its template."""
    context: dict[str, Any] = {"alert": content, "rendering": rendering}
    return _render("email.txt.j2", context), _render("email.html.j2", context)


_ACK_MARKER = f"\x00ack-{secrets.token_hex(8)}\x00"
_PORTAL_MARKER = f"\x00portal-{secrets.token_hex(8)}\x00"


@functools.lru_cache(maxsize=256)
def _bodies_with_markers(content: AlertContent, ack: bool, portal: bool) -> tuple[str, str]:
    rendering = Rendering(
        "", ack_url=_ACK_MARKER if ack else None, portal_url=_PORTAL_MARKER if portal else None
    )
    return rendered_bodies(content, rendering)


def _render(name: str, context: dict[str, Any]) -> str:
    text = _templates.get_template(name).render(context)
    return text.replace("\r\n", "\n").replace("\r", "\n")
