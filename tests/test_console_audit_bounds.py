"""The console's audit page takes `after` as the API does: an audit entry id, at most 2^31 - 1
(the id is a 32-bit integer on PostgreSQL). Anything else is a 400 page saying so, never a
server error from the store nor, silently, the first page."""

from __future__ import annotations

from dissemination.api.directory import MAX_AUDIT_ID
from tests.consolerig import get_page, signed_in
from tests.logcapture import LogLines
from tests.staffrig import Staff, staff_fixture  # noqa: F401


async def test_after_out_of_range_or_not_an_id_is_a_400_page(
    staff: Staff, logged: LogLines
) -> None:
    admin = await signed_in(staff, "ada", ["administrator"])
    for after in (str(MAX_AUDIT_ID + 1), "99999999999", "9" * 18, "-1", "abc", ""):
        page = await get_page(staff, f"/console/audit?after={after}", admin)
        assert page.status == 400, (after, page.body[:200])
        assert "after must be an audit entry id" in page.body
        api = await staff.call("GET", f"/api/v1/audit?after={after}", session=admin)
        assert api.status == 400, after
    for after in (str(MAX_AUDIT_ID), "0", "1"):
        page = await get_page(staff, f"/console/audit?after={after}", admin)
        assert page.status == 200, (after, page.body[:200])
    assert logged.named("unhandled_error") == []
