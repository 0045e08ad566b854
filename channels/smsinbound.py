"""What Twilio's webhooks tell us, as pure functions: whether a request is signed by Twilio,
and what an inbound text (an opt-out keyword, an acknowledgment) or a status callback says."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from twilio.request_validator import RequestValidator


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether `X-Twilio-Signature` is Twilio's for this URL and form (HMAC-SHA1, auth token)."""
    return bool(signature) and bool(RequestValidator(auth_token).validate(url, params, signature))


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


_KEYWORDS = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), Keyword.STOP),
    **dict.fromkeys(("REVOKE", "OPTOUT"), Keyword.STOP),
    **dict.fromkeys(("START", "YES", "UNSTOP"), Keyword.START),
    **dict.fromkeys(("HELP", "INFO"), Keyword.HELP),
}


def opt_keyword(body: str) -> Keyword | None:
    """The opt-out, opt-in or help keyword an inbound SMS consists of, if it is one."""
    return _KEYWORDS.get(body.strip().upper())


_ACK_REPLY = re.compile(
    r"(?:(?:ACK|ACKNOWLEDGE|ACKNOWLEDGED|CONFIRM|CONFIRMED|RECEIVED|YES|Y|OK|1)"
    r"(?:\s*#?\s*(?P<code>\d{4}|\d{6}))?|#?(?P<bare>\d{4}|\d{6}))[.!]*"
)


@dataclass(frozen=True, slots=True)
class AckReply:
    """An inbound text that acknowledges: with the code it quotes, or None for "the newest"."""

    code: str | None


def ack_reply(body: str) -> AckReply | None:
    """The acknowledgment an inbound SMS makes, if it is one: `ACK`, `ACK 4821`, `1`, `YES`,
    `4821` (case and surrounding spaces ignored)."""
    match = _ACK_REPLY.fullmatch(body.strip().upper())
    if match is None:
        return None
    return AckReply(match["code"] or match["bare"])


_FINAL_STATES = {"delivered": "delivered", "undelivered": "undelivered", "failed": "failed"}


def status_update(params: Mapping[str, str]) -> tuple[str, str, str | None] | None:
    """(MessageSid, final state, ErrorCode) from a status callback form; None if not final."""
    sid = params.get("MessageSid") or params.get("SmsSid")
    state = _FINAL_STATES.get(params.get("MessageStatus") or params.get("SmsStatus") or "")
    if not sid or state is None:
        return None
    return sid, state, params.get("ErrorCode") or None
