"""The dissemination record (28 CFR 23.20): every release and every withholding, appended in
the same transaction as the ledger change it records, hash-chained so that a deleted, altered
or reordered entry is detected by `verify`.

Each entry's hash is HMAC-SHA256, under a key kept outside the database (`recordkey`), over
the previous entry's hash and the canonical JSON of its own fields (sequence number
included), so an entry written or rewritten by someone without the key fails `verify` even
with no anchor. Entries written before the record was keyed carry plain SHA-256 and no key
id; they are accepted only as the chain's first `unkeyed_entries`.

The chain's head (last sequence number and hash) is moved by every append under a row lock,
so appends from any number of workers form one chain, and a deleted tail is detected too.
The database also refuses UPDATE and DELETE on the entries.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Select, bindparam, func, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dissemination.controls.recordkey import RecordKey
from dissemination.errors import RecordBroken
from dissemination.store.bulkinsert import insert_as_arrays, insert_many
from dissemination.store.database import Database
from dissemination.store.tables import dissemination_chain, dissemination_records

GENESIS = "0" * 64


RELEASED = "released"
WITHHELD = "withheld"
HASHED_FIELDS = (
    "seq",
    "at",
    "alert_id",
    "delivery_id",
    "stakeholder_id",
    "organization",
    "channel",
    "address",
    "outcome",
    "rule",
    "justification",
    "content_sha256",
)
VERIFY_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Entry:
    """One release or withholding, before it is chained."""

    alert_id: str
    delivery_id: str | None
    stakeholder_id: str
    organization: str | None
    channel: str
    address: str
    outcome: str
    rule: tuple[str, ...]
    justification: str
    content_sha256: str | None


def record_time(moment: datetime) -> str:
    """How entries write time: UTC with microseconds, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""The entry's fields as hashed: keys sorted, no spaces, characters as they are. One encoder
for every entry: `json.dumps` with these options builds a new one on each call."""


def entry_hash(prev_hash: str, fields: Mapping[str, Any], key: RecordKey | None = None) -> str:
    """The entry's link: HMAC-SHA256 under `key` (plain SHA-256 for an unkeyed entry)."""
    canonical = _CANONICAL.encode({name: fields[name] for name in HASHED_FIELDS})
    message = (prev_hash + canonical).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.digest(key.secret, message, "sha256").hex()


_ADVANCE_HEAD = (
    update(dissemination_chain)
    .where(dissemination_chain.c.id == 1)
    .values(seq=dissemination_chain.c.seq + bindparam("entries", type_=BigInteger))
    .returning(dissemination_chain.c.seq, dissemination_chain.c.last_hash)
)
"""Reserve sequence numbers for `entries` new entries; the head before them. Built once: an
append runs with every settle, and building a statement costs about as much CPU as running it."""
_SET_HEAD = "UPDATE dissemination_chain SET last_hash = :head_hash WHERE id = 1"
"""The head's new hash: on PostgreSQL it follows the entries' insert in one statement (a round
trip fewer with every settle), elsewhere it runs after it."""


async def append_records(
    conn: AsyncConnection, entries: Iterable[Entry], now: datetime, key: RecordKey | None
) -> None:
    """Chain `entries` onto the record inside the caller's transaction, under `key`."""
    pending = list(entries)
    if not pending:
        return
    head = (await conn.execute(_ADVANCE_HEAD, {"entries": len(pending)})).first()
    if head is None:  # fail closed: nothing is disseminated without its record
        raise RecordBroken("the dissemination record's chain head is missing")
    seq, prev_hash = int(head.seq) - len(pending), str(head.last_hash)
    at = record_time(now)
    key_id = key.id if key is not None else None
    values = []
    for entry in pending:
        seq += 1
        fields: dict[str, Any] = {
            "seq": seq,
            "at": at,
            "alert_id": entry.alert_id,
            "delivery_id": entry.delivery_id,
            "stakeholder_id": entry.stakeholder_id,
            "organization": entry.organization,
            "channel": entry.channel,
            "address": entry.address,
            "outcome": entry.outcome,
            "rule": list(dict.fromkeys(entry.rule)),
            "justification": entry.justification,
            "content_sha256": entry.content_sha256,
        }
        digest = entry_hash(prev_hash, fields, key)
        values.append(fields | {"prev_hash": prev_hash, "hash": digest, "key_id": key_id})
        prev_hash = digest
    if conn.dialect.name == "postgresql":
        await insert_as_arrays(
            conn,
            dissemination_records,
            values,
            followed_by=_SET_HEAD,
            parameters={"head_hash": prev_hash},
        )
        return
    await insert_many(conn, dissemination_records, values)
    await conn.execute(text(_SET_HEAD), {"head_hash": prev_hash})


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify` found: how many entries it checked, and the first break, if any."""

    checked: int
    problem: str | None = None
    last: tuple[int, str] = (0, GENESIS)
    """The last entry found good (sequence number and hash): the chain's head when intact."""
    failed_at: int | None = None
    """The sequence number of the first entry found wrong or missing."""

    @property
    def intact(self) -> bool:
        return self.problem is None


async def verify(
    database: Database,
    anchor: tuple[int, str] | None = None,
    key: RecordKey | None = None,
    unkeyed_entries: int = 0,
) -> Verification:
    """Walk the whole chain: consecutive sequence numbers, each entry's link to the one before,
    each entry's own MAC under `key` (plain hash for the first `unkeyed_entries`, written
    before the record was keyed), and the head (as read first) matching the last entry up to
    it. An `anchor` (a sequence number and hash noted outside the database earlier, see
    `head`) must still be in the chain: that catches a tail cut off together with a
    rewritten head."""
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    async with database.reading() as conn:
        # The head first, and the walk up to it: entries a live service appends meanwhile are
        # left to the next verification instead of looking like a head that fell behind.
        head = (await conn.execute(select(dissemination_chain))).mappings().one()
        keyed_before = False
        async for row in _entries(conn, upto=int(head["seq"])):
            problem = _link_problem(
                row, expected_seq, prev_hash, key, unkeyed_entries, keyed_before
            )
            keyed_before = keyed_before or row["key_id"] is not None
            anchored = anchor is not None and row["seq"] == anchor[0]
            if problem is None and anchored and anchor is not None and row["hash"] != anchor[1]:
                problem = f"entry {row['seq']} differs from the anchor"
            if problem:
                return Verification(checked, problem, (expected_seq - 1, prev_hash), expected_seq)
            prev_hash, expected_seq, checked = row["hash"], expected_seq + 1, checked + 1
    last = (checked, prev_hash)
    if anchor is not None and checked < anchor[0]:
        return Verification(
            checked,
            f"the chain ends at entry {checked}, before the anchored entry {anchor[0]}",
            last,
            checked + 1,
        )
    if head["seq"] != checked or head["last_hash"] != prev_hash:
        return Verification(
            checked,
            f"the chain ends at entry {checked} but its head says {head['seq']}",
            last,
            checked + 1,
        )
    return Verification(checked, None, last)


def _link_problem(
    row: Mapping[str, Any],
    expected_seq: int,
    prev_hash: str,
    key: RecordKey | None,
    unkeyed_entries: int,
    keyed_before: bool,
) -> str | None:
    """What is wrong with one entry where it stands in the chain, if anything. An unkeyed
    entry is accepted only among the first `unkeyed_entries` and before any keyed one
    (`keyed_before`): the record was keyed once, from then on, so an unkeyed entry after a
    keyed one is one written without the key, whatever `unkeyed_entries` says."""
    seq = row["seq"]
    if seq != expected_seq:
        return f"entry {expected_seq} is missing (found {seq} next)"
    if row["prev_hash"] != prev_hash:
        return f"entry {seq} does not follow the one before"
    if row["key_id"] is None:
        if seq > unkeyed_entries and key is not None:
            return f"entry {seq} is not keyed (only the first {unkeyed_entries} may be)"
        if keyed_before:
            return f"entry {seq} is not keyed, after keyed entries"
        used = None
    elif key is None:
        return f"entry {seq} is keyed: verifying needs the record key"
    elif row["key_id"] != key.id:
        return f"entry {seq} was keyed with another key ({row['key_id']})"
    else:
        used = key
    if entry_hash(prev_hash, row, used) != row["hash"]:
        return f"entry {seq} was altered"
    return None


async def head(database: Database) -> tuple[int, str]:
    """The chain's last sequence number and hash: note them outside the database (a ticket,
    a log shipped elsewhere) to anchor later verifications."""
    async with database.reading() as conn:
        row = (await conn.execute(select(dissemination_chain))).mappings().one()
    return int(row["seq"]), str(row["last_hash"])


async def verify_after(
    database: Database,
    anchor: tuple[int, str],
    key: RecordKey | None = None,
    unkeyed_entries: int = 0,
) -> Verification:
    """Verify only what was appended after `anchor` (from `head`, noted outside the database;
    `(0, GENESIS)` verifies the whole chain), so the cost does not grow with the record: the
    anchored entry must still be there with its own MAC and the anchored hash, and each later
    entry must link to the one before, up to the head as read first (entries appended while
    this runs are left to the next verification, as the head moved with them)."""
    seq, digest = anchor
    anchored: dict[str, Any] | None = None
    async with database.reading() as conn:
        head_row = (await conn.execute(select(dissemination_chain))).mappings().one()
        if seq > 0:
            anchored = await _entry(conn, seq)
            # whether entries before the anchor were keyed is the anchored one's to say
            problem = (
                _link_problem(anchored, seq, anchored["prev_hash"], key, unkeyed_entries, False)
                if anchored is not None
                else f"the anchored entry {seq} is missing"
            )
            if problem is None and anchored is not None and anchored["hash"] != digest:
                problem = f"entry {seq} differs from the anchor"
            if problem:
                return Verification(0, problem, failed_at=seq)
        elif digest != GENESIS:
            return Verification(0, "an anchor at entry 0 must be the genesis hash", failed_at=0)
        last, checked = (seq, digest), 0
        keyed_before = anchored is not None and anchored["key_id"] is not None
        async for row in _entries(conn, after=seq, upto=int(head_row["seq"])):
            problem = _link_problem(row, last[0] + 1, last[1], key, unkeyed_entries, keyed_before)
            if problem:
                return Verification(checked, problem, last, last[0] + 1)
            keyed_before = keyed_before or row["key_id"] is not None
            last, checked = (int(row["seq"]), str(row["hash"])), checked + 1
    if last != (head_row["seq"], head_row["last_hash"]):
        return Verification(
            checked,
            f"the chain ends at entry {last[0]} but its head says {head_row['seq']}",
            last,
            last[0] + 1,
        )
    return Verification(checked, None, last)


async def _entry(conn: AsyncConnection, seq: int) -> dict[str, Any] | None:
    row = (
        (
            await conn.execute(
                select(dissemination_records).where(dissemination_records.c.seq == seq)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


async def _entries(
    conn: AsyncConnection, after: int = 0, upto: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Entries after sequence number `after` (and up to `upto`), in chain order, in chunks."""
    bounded = dissemination_records.c.seq <= upto if upto is not None else true()
    while True:
        rows = [
            dict(row)
            for row in (
                await conn.execute(
                    select(dissemination_records)
                    .where(dissemination_records.c.seq > after, bounded)
                    .order_by(dissemination_records.c.seq)
                    .limit(VERIFY_CHUNK)
                )
            ).mappings()
        ]
        for row in rows:
            yield row
        if len(rows) < VERIFY_CHUNK:
            return
        after = rows[-1]["seq"]


EXPORT_FIELDS = (*HASHED_FIELDS, "prev_hash", "hash")


async def export(
    database: Database,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    alert_id: str | None = None,
) -> list[dict[str, Any]]:
    """Entries in chain order, within [since, until) and of one alert if given."""
    query = _in_range(
        select(dissemination_records).order_by(dissemination_records.c.seq), since, until, alert_id
    )
    async with database.reading() as conn:
        return [
            {name: row[name] for name in EXPORT_FIELDS}
            for row in (await conn.execute(query)).mappings()
        ]


async def count(
    database: Database,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    alert_id: str | None = None,
) -> int:
    """How many entries `export` would return for the same range."""
    query = _in_range(
        select(func.count()).select_from(dissemination_records), since, until, alert_id
    )
    async with database.reading() as conn:
        return int(await conn.scalar(query) or 0)


def _in_range(
    query: Select[Any], since: datetime | None, until: datetime | None, alert_id: str | None
) -> Select[Any]:
    if since is not None:
        query = query.where(dissemination_records.c.at >= record_time(since))
    if until is not None:
        query = query.where(dissemination_records.c.at < record_time(until))
    if alert_id is not None:
        query = query.where(dissemination_records.c.alert_id == alert_id)
    return query


def as_csv(entries: Iterable[Mapping[str, Any]]) -> str:
    """Entries as CSV; cells a spreadsheet would run as formulas are prefixed with '."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_FIELDS)
    for entry in entries:
        writer.writerow([_cell(entry[name]) for name in EXPORT_FIELDS])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = ";".join(value) if isinstance(value, list) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
