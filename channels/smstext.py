"""The text an alert becomes over SMS: GSM-7 (look-alikes replaced, accents dropped), at most
two segments, the marking first and the acknowledgment code and link whole; the alert's own
web link is left out when it would not fit whole."""

from __future__ import annotations

import functools
import unicodedata
from urllib.parse import quote

from channels.content import AlertContent, Rendering

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")  # each sent as escape + character: two septets
_GSM_ALL = _GSM_BASIC | _GSM_EXTENSION
_SUBSTITUTES = str.maketrans(
    dict.fromkeys("\u2018\u2019\u201a\u201b`\u00b4", "'")
    | dict.fromkeys("\u201c\u201d\u201e\u00ab\u00bb", '"')
    | dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212", "-")
    | {"\u2026": "...", "\u2022": "*", "\u00b7": "."}
)
_URL_SAFE = ":/?#[]@!$&'()*+,;=%-._~"  # everything else (non-ASCII, `, {, |) is escaped


def gsm7_septets(text: str) -> int | None:
    """Septets `text` takes in the GSM-7 alphabet, or None when it cannot be encoded: one a
    character, two for each of the extension table's (counted in C, not a loop a character:
    a fan-out counts every row's text several times)."""
    if not _GSM_ALL.issuperset(text):
        return None
    return len(text) + sum(text.count(char) for char in _GSM_EXTENSION)


def segments(text: str) -> int:
    """SMS segments `text` is sent in: GSM-7 (160, or 153 per part) when it encodes, else UCS-2
    (70, or 67 per part); an escape pair or surrogate pair is never split across parts."""
    septets = gsm7_septets(text)
    if septets is not None and septets <= 160:
        return 1
    gsm = septets is not None
    sizes = [
        (2 if c in _GSM_EXTENSION else 1) if gsm else len(c.encode("utf-16-le")) // 2 for c in text
    ]
    if sum(sizes) <= (160 if gsm else 70):
        return 1
    count, used, limit = 1, 0, 153 if gsm else 67
    for size in sizes:
        if used + size > limit:
            count, used = count + 1, 0
        used += size
    return count


@functools.lru_cache(maxsize=4096)  # a fan-out converts the same few alert texts per row
def to_gsm7(text: str) -> str:
    """`text` on one line in GSM-7: look-alikes replaced, accents dropped, the rest "?"."""
    out = []
    for char in " ".join(text.split()).translate(_SUBSTITUTES):
        if char in _GSM_BASIC or char in _GSM_EXTENSION:
            out.append(char)
            continue
        decomposed = unicodedata.normalize("NFKD", char)
        plain = "".join(c for c in decomposed if c in _GSM_BASIC or c in _GSM_EXTENSION)
        out.append(plain or "?")
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _fit(text: str, budget: int) -> str:
    """GSM-7 `text`, or as much of its start as fits in `budget` septets with "..."."""
    if (gsm7_septets(text) or 0) <= budget:
        return text
    kept, used = [], 3
    for char in text:
        used += 2 if char in _GSM_EXTENSION else 1
        if used > budget:
            break
        kept.append(char)
    start = "".join(kept)
    if (space := start.rfind(" ", max(0, len(start) - 20))) > 0:
        start = start[:space]  # end on a word when one ends nearby
    return start.rstrip() + "..." if start.strip() else ""


WITHHELD_NOTE = "Personal data withheld (no PII entitlement)"


WEB_LINK_MAX_SEPTETS = 153
"""The alert's own `web` link takes at most one segment's worth of the two; a longer one is
left out (a cut link leads nowhere), so the alert's words always keep their room."""


def _link(content: AlertContent, rendering: Rendering) -> str:
    """The link the text ends with: the ack link or portal, else (shareable alerts only) the
    alert's web link if it is short enough."""
    ours = rendering.ack_url or rendering.portal_url
    if ours:
        return quote(ours, safe=_URL_SAFE)
    if content.restricted or not content.web:
        return ""
    web = quote(content.web, safe=_URL_SAFE)
    return web if (gsm7_septets(web) or 0) <= WEB_LINK_MAX_SEPTETS else ""


def _compose(content: AlertContent, rendering: Rendering, budget: int) -> str:
    ack = f"Reply ACK {to_gsm7(rendering.ack_code)}" if rendering.ack_code else ""
    tail = [part for part in (ack, _link(content, rendering)) if part]
    parts = [to_gsm7(" ".join(filter(None, (content.status_label, content.marking))))]
    withheld = WITHHELD_NOTE if content.withheld else ""
    if content.restricted:
        middle = [content.headline, withheld]
    else:
        headline = content.headline if content.headline != content.event else ""
        areas = "Area: " + ", ".join(content.areas) if any(content.areas) else ""
        middle = [
            f"{content.severity} {content.event}",
            headline,
            withheld,
            areas,
            content.instruction,
        ]
    room = budget - (gsm7_septets("\n".join(parts + tail)) or 0)
    if room < 0:
        raise ValueError("the marking, ack code and link alone exceed two SMS segments")
    for text in middle:
        piece = _fit(to_gsm7(text), room - 1)  # one septet for the newline before it
        if piece:
            parts.append(piece)
            room -= (gsm7_septets(piece) or 0) + 1
    return "\n".join(parts + tail)


def sms_text(content: AlertContent, rendering: Rendering) -> str:
    """The SMS for an alert: GSM-7, at most two segments, marking first and the ack code and
    link whole; restricted alerts carry only marking, headline, ack code and link.
    ValueError when the marking, code and link alone do not fit."""
    text = _compose(content, rendering, 306)
    # 305 septets always fit two parts even when an escape pair would straddle the boundary
    return text if segments(text) <= 2 else _compose(content, rendering, 305)
