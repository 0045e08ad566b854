"""The service's half of a delivery: a claimed ledger row made into the channel-neutral
message a channel sends (`channels.base.OutboundMessage`).

Per row: the alert document as the recipient may see it (redacted unless the recipient is
entitled to PII, once per alert and entitlement), the signed acknowledgment token, its link
and SMS reply code, and for a supervisor's notice the notice itself, its `cleared` decided
here at send time (`sendcheck.notice_withheld`) rather than taken from the row: a notice to a
supervisor not cleared for the alert's marks then carries only the alert's id and marks.
Nothing on this path validates against a schema again; composing is the channel's.
"""

from __future__ import annotations

import json
from typing import Any

from channels.base import OutboundMessage
from channels.content import Rendering
from dissemination.acks.tokens import AckSigner
from dissemination.controls.redaction import Redactions
from dissemination.controls.sendcheck import notice_withheld
from dissemination.store.rows import ClaimedRow, RowOrigin

ACK_PATH_PREFIX = "/ack/"


class AckLinks:
    """Per-row rendering values: the signed ack token of the row's (alert, stakeholder), the
    link that acknowledges with it, and the SMS reply code. Rows owing no acknowledgment, or
    a service without a signer, get neither."""

    def __init__(self, signer: AckSigner | None = None, public_url: str = "") -> None:
        self.signer = signer
        self.ack_base = public_url.rstrip("/") + ACK_PATH_PREFIX

    def rendering(self, row: ClaimedRow) -> Rendering:
        token_id = row.ack_token_id
        if (
            self.signer is None
            or not token_id
            or row.ack_expires_at is None
            or row.origin is RowOrigin.NOTICE
        ):
            return Rendering(delivery_id=row.id)
        token = self.signer.sign(token_id, row.ack_expires_at)
        return Rendering(
            delivery_id=row.id,
            ack_url=self.ack_base + token,
            ack_code=row.ack_code,
            ack_token=token,
        )


class MessageBuilder:
    """Makes each claimed row of one channel's worker into its `OutboundMessage`. One per
    worker: its redactions are cached per alert, and a worker's rows share their alert's
    stored document."""

    def __init__(self, links: AckLinks | None = None) -> None:
        self.links = links or AckLinks()
        self.redactions = Redactions()

    def build(self, row: ClaimedRow) -> OutboundMessage:
        """The message for one claimed row. A supervisor's notice carries the alert only if
        the supervisor is cleared for its marks now; otherwise its document is only the
        alert's id and marks, and its notice says `cleared: false`, whatever the row says."""
        notice: dict[str, Any] | None = None
        if row.origin is RowOrigin.NOTICE:
            notice = json.loads(row.detail or "{}") | {"cleared": notice_withheld(row) is None}
            if not notice["cleared"]:
                return self._message(row, _marks_only(row.document), True, notice)
        redacted = self.redactions.for_row(row)
        document = row.document if redacted is None else redacted.document
        return self._message(row, document, redacted is not None, notice)

    def _message(
        self,
        row: ClaimedRow,
        document: dict[str, Any],
        reduced: bool,
        notice: dict[str, Any] | None,
    ) -> OutboundMessage:
        """`reduced`: the document is not the whole alert (redacted, or marks only); a notice's
        body is never cached by its `document_key`."""
        return OutboundMessage(
            delivery_id=row.id,
            address=row.address,
            document=document,
            document_key=(row.alert_id, reduced),
            rendering=self.links.rendering(row),
            notice=notice,
            secret=row.secret or None,
        )


def _marks_only(document: dict[str, Any]) -> dict[str, Any]:
    """All an uncleared supervisor's notice may hold of the alert: its id and marks."""
    return {key: document[key] for key in ("id", "handling") if key in document}
