"""Name-based ids are exactly the text `uuid.uuid5` gives: stored alert and delivery ids were
made with it, and a re-planned alert must find its rows under the same ids."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from core.alert import ALERT_ID_NAMESPACE, alert_id_for
from core.ids import uuid5_text
from dissemination.store.rows import DELIVERY_ID_NAMESPACE, delivery_id


@given(st.uuids(), st.text())
def test_the_text_is_uuid5s(namespace: uuid.UUID, name: str) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


def test_alert_and_delivery_ids_are_the_ones_stored_before() -> None:
    assert alert_id_for("a@b", "X-1", "2026-11-24T10:00:00-05:00") == str(
        uuid.uuid5(ALERT_ID_NAMESPACE, "a@b,X-1,2026-11-24T10:00:00-05:00")
    )
    assert delivery_id("a", "s", "sms", "+1555\u00e9") == str(
        uuid.uuid5(DELIVERY_ID_NAMESPACE, "a|s|sms|+1555\u00e9")
    )
