"""Secrets masked out of text that is shown or logged: the password of a URL
(`scheme://user:password@host`) becomes `***`, keeping the scheme, user and host so that the
URL can still be recognized, and known secrets are replaced wherever they occur."""

from __future__ import annotations

import re

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):\S*@")


def mask_value(value: object) -> object:
    """`value` (a setting as given: text, or lists and tables of them) with the password of
    every URL in it masked. Text is taken as one URL: everything between the user's ":" and
    the last "@" is the password, as lenient URL parsers read it."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list | tuple):
        return type(value)(mask_value(item) for item in value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    return value


def mask_url(text: str) -> str:
    """`text`, taken as one URL, with its password masked (see `mask_value`)."""
    at = text.rfind("@")
    if at < 0:
        return text
    scheme = text.find("://", 0, at)
    start = scheme + 3 if scheme >= 0 else 0
    if scheme < 0 and any(c.isspace() for c in text[:at]):
        return text  # prose with an "@" in it, not a URL without a scheme
    colon = text.find(":", start, at)
    return text if colon < 0 else text[: colon + 1] + MASK + text[at:]


def mask_text(text: str, *secrets: str | None) -> str:
    """`text` (a message, perhaps a library's) with the password of every URL in it masked
    and every given secret replaced."""
    masked = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, MASK)
    return masked
