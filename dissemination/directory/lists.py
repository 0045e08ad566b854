"""Distribution lists in the database: named lists of stakeholders and of other lists, every
change audited in its own transaction (entity `distribution_list`, the list's record with its
direct members before and after, which is also how other instances' matchers learn of it).

Refused, as RejectedInput with a stable reason: a member that does not exist
(`unknown_member`), a second list of the same name, letter case aside (`duplicate_list_name`),
a member list that would close a cycle (`list_cycle`, naming its path), and deleting a list
that another list or a subscription rule still names (`list_in_use`, naming them: deleting
it from a rule would widen that rule's audience, so the administrator decides). A deleted
stakeholder leaves every list it was in (audited as that list's update).

Changes to the graph of lists lock every list row first (PostgreSQL; SQLite has one writer),
so two concurrent additions cannot close a cycle between them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import ErrorDetail, RejectedInput
from dissemination.store.audit import Actor, write_audit
from dissemination.store.database import Database
from dissemination.store.tables import distribution_list_members as members_table
from dissemination.store.tables import distribution_lists as lists_table
from dissemination.store.tables import stakeholders, subscriptions
from subscriptions.codec import distribution_list_model
from subscriptions.lists import cycle_through, resolve
from subscriptions.model import MemberKind

LIST_ENTITY = "distribution_list"


@dataclass(frozen=True, slots=True)
class Member:
    """A direct member of a list."""

    kind: MemberKind
    id: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "id": self.id}


class NotAMember(LookupError):
    """The member to remove is not a direct member of the list."""


@dataclass(frozen=True, slots=True)
class ListPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def name_key(name: str) -> str:
    return name.casefold()


def _record(row: Mapping[Any, Any], members: Iterable[Member]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "members": [m.as_json() for m in sorted(members, key=lambda m: (m.kind, m.id))],
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["updated_at"].isoformat(),
    }


async def _members_of(conn: AsyncConnection, list_ids: Sequence[str]) -> dict[str, list[Member]]:
    found: dict[str, list[Member]] = {list_id: [] for list_id in list_ids}
    if not list_ids:
        return found
    rows = await conn.execute(select(members_table).where(members_table.c.list_id.in_(list_ids)))
    for row in rows.mappings():
        found[row["list_id"]].append(Member(MemberKind(row["member_kind"]), row["member_id"]))
    return found


async def _read(conn: AsyncConnection, list_id: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(select(lists_table).where(lists_table.c.id == list_id)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return _record(row, (await _members_of(conn, [list_id]))[list_id])


async def _lock_graph(conn: AsyncConnection) -> dict[str, set[str]]:
    """Lock every list row; returns each list's member lists."""
    await conn.execute(select(lists_table.c.id).with_for_update())
    rows = await conn.execute(
        select(members_table.c.list_id, members_table.c.member_id).where(
            members_table.c.member_kind == MemberKind.LIST.value
        )
    )
    children: dict[str, set[str]] = {}
    for parent, child in rows:
        children.setdefault(parent, set()).add(child)
    return children


async def _check_members(
    conn: AsyncConnection, list_id: str, members: Sequence[tuple[str, Member]]
) -> None:
    """Every member (with its JSON path) exists, and no member list closes a cycle through
    `list_id`."""
    children = await _lock_graph(conn)
    for path, member in members:
        table = stakeholders if member.kind is MemberKind.STAKEHOLDER else lists_table
        if await conn.scalar(select(table.c.id).where(table.c.id == member.id)) is None:
            raise RejectedInput(
                "unknown_member", [ErrorDetail(f"{path}.id", f"no {member.kind} {member.id!r}")]
            )
        if member.kind is MemberKind.LIST:
            cycle = cycle_through(children, list_id, member.id)
            if cycle is not None:
                message = "the lists would form a cycle: " + " > ".join(cycle)
                raise RejectedInput("list_cycle", [ErrorDetail(f"{path}.id", message)])
            children.setdefault(list_id, set()).add(member.id)


async def _audit(
    conn: AsyncConnection,
    action: str,
    list_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> None:
    await write_audit(
        conn,
        at=now,
        actor=actor,
        action=action,
        entity=LIST_ENTITY,
        entity_id=list_id,
        before=before,
        after=after,
        reason=reason,
    )


def _duplicate(name: str) -> RejectedInput:
    return RejectedInput(
        "duplicate_list_name", [ErrorDetail("$.name", f"a list named {name!r} exists already")]
    )


async def _touch(conn: AsyncConnection, list_id: str, now: datetime) -> None:
    await conn.execute(
        update(lists_table).where(lists_table.c.id == list_id).values(updated_at=now)
    )


async def drop_member_everywhere(
    conn: AsyncConnection, kind: MemberKind, member_id: str, actor: Actor, now: datetime
) -> list[str]:
    """Take a deleted stakeholder out of every list it was in, each list's change audited;
    returns those lists' ids."""
    list_ids = sorted(
        await conn.scalars(
            select(members_table.c.list_id).where(
                members_table.c.member_kind == kind.value, members_table.c.member_id == member_id
            )
        )
    )
    for list_id in list_ids:
        before = await _read(conn, list_id)
        await conn.execute(
            delete(members_table).where(
                members_table.c.list_id == list_id,
                members_table.c.member_kind == kind.value,
                members_table.c.member_id == member_id,
            )
        )
        await _touch(conn, list_id, now)
        after = await _read(conn, list_id)
        await _audit(conn, "remove_member", list_id, before, after, actor, now, f"{kind} deleted")
    return list_ids


def _rule_names(rule: Any, list_id: str) -> bool:
    return isinstance(rule, dict) and list_id in (rule.get("lists") or ())


async def list_users(conn: AsyncConnection, list_id: str) -> list[ErrorDetail]:
    """Who names the list: the lists that contain it and the subscriptions whose rule names
    it, one detail each."""
    users = [
        ErrorDetail(f"list {parent}", "contains this list")
        for parent in sorted(
            await conn.scalars(
                select(members_table.c.list_id).where(
                    members_table.c.member_kind == MemberKind.LIST.value,
                    members_table.c.member_id == list_id,
                )
            )
        )
    ]
    # the text search only narrows; the rule itself decides
    rows = await conn.execute(
        select(subscriptions.c.id, subscriptions.c.rule)
        .where(cast(subscriptions.c.rule, Text).like(f"%{list_id}%"))
        .order_by(subscriptions.c.id)
    )
    users += [
        ErrorDetail(f"subscription {sub_id}", "its rule names this list")
        for sub_id, rule in rows
        if _rule_names(rule, list_id)
    ]
    return users


async def unknown_lists(conn: AsyncConnection, list_ids: Iterable[str]) -> list[str]:
    """The ids among `list_ids` that name no list, in the order given."""
    wanted = list(dict.fromkeys(list_ids))
    found = set(await conn.scalars(select(lists_table.c.id).where(lists_table.c.id.in_(wanted))))
    return [i for i in wanted if i not in found]


class DistributionLists:
    """Create, rename, read, list, change the members of, and delete distribution lists."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(
        self, name: str, members: Sequence[Member], actor: Actor, now: datetime
    ) -> dict[str, Any]:
        list_id = str(uuid.uuid4())
        try:
            async with self.database.transaction() as conn:
                await self._check_name(conn, name, None)
                paths = [f"$.members[{i}]" for i in range(len(members))]
                await _check_members(conn, list_id, list(zip(paths, members, strict=True)))
                values = {
                    "id": list_id,
                    "name": name,
                    "name_key": name_key(name),
                    "created_at": now,
                    "updated_at": now,
                }
                await conn.execute(lists_table.insert().values(**values))
                for member in members:
                    await self._insert_member(conn, list_id, member, now)
                record = _record(values, members)
                await _audit(conn, "create", list_id, None, record, actor, now)
                return record
        except IntegrityError:  # a list of that name created meanwhile
            raise _duplicate(name) from None

    async def rename(
        self, list_id: str, name: str, actor: Actor, now: datetime
    ) -> dict[str, Any] | None:
        try:
            async with self.database.transaction() as conn:
                before = await _read(conn, list_id)
                if before is None:
                    return None
                await self._check_name(conn, name, list_id)
                await conn.execute(
                    update(lists_table)
                    .where(lists_table.c.id == list_id)
                    .values(name=name, name_key=name_key(name), updated_at=now)
                )
                after = before | {"name": name, "updatedAt": now.isoformat()}
                await _audit(conn, "update", list_id, before, after, actor, now)
                return after
        except IntegrityError:
            raise _duplicate(name) from None

    async def add_member(
        self, list_id: str, member: Member, actor: Actor, now: datetime
    ) -> tuple[dict[str, Any], bool] | None:
        """Add a direct member; returns the list's record and whether it changed (adding a
        member twice changes nothing), or None if there is no such list."""
        async with self.database.transaction() as conn:
            before = await _read(conn, list_id)
            if before is None:
                return None
            if member.as_json() in before["members"]:
                return before, False
            await _check_members(conn, list_id, [("$", member)])
            await self._insert_member(conn, list_id, member, now)
            await _touch(conn, list_id, now)
            after = await _read(conn, list_id)
            await _audit(conn, "add_member", list_id, before, after, actor, now)
            assert after is not None
            return after, True

    async def remove_member(
        self, list_id: str, member: Member, actor: Actor, now: datetime
    ) -> dict[str, Any] | None:
        """Remove a direct member; None if there is no such list, NotAMember if it is not
        one of its members."""
        async with self.database.transaction() as conn:
            before = await _read(conn, list_id)
            if before is None:
                return None
            if member.as_json() not in before["members"]:
                raise NotAMember(f"{member.kind} {member.id!r} is not a member of the list")
            await conn.execute(
                delete(members_table).where(
                    members_table.c.list_id == list_id,
                    members_table.c.member_kind == member.kind.value,
                    members_table.c.member_id == member.id,
                )
            )
            await _touch(conn, list_id, now)
            after = await _read(conn, list_id)
            await _audit(conn, "remove_member", list_id, before, after, actor, now)
            return after

    async def delete(self, list_id: str, actor: Actor, now: datetime) -> bool:
        """Delete the list (its own memberships go with it); False if there is none,
        RejectedInput `list_in_use` while another list or a subscription names it."""
        async with self.database.transaction() as conn:
            await _lock_graph(conn)
            before = await _read(conn, list_id)
            if before is None:
                return False
            users = await list_users(conn, list_id)
            if users:
                raise RejectedInput("list_in_use", users)
            await conn.execute(delete(members_table).where(members_table.c.list_id == list_id))
            await conn.execute(delete(lists_table).where(lists_table.c.id == list_id))
            await _audit(conn, "delete", list_id, before, None, actor, now)
            return True

    async def get(self, list_id: str) -> dict[str, Any] | None:
        async with self.database.reading() as conn:
            return await _read(conn, list_id)

    async def page(self, after: str | None, limit: int) -> ListPage:
        """A page of lists ordered by id; `after` is the cursor from the previous page."""
        query = select(lists_table)
        if after:
            query = query.where(lists_table.c.id > after)
        async with self.database.reading() as conn:
            rows = list(
                (await conn.execute(query.order_by(lists_table.c.id).limit(limit + 1))).mappings()
            )
            kept = rows[:limit]
            members = await _members_of(conn, [row["id"] for row in kept])
        items = [_record(row, members[row["id"]]) for row in kept]
        return ListPage(items, items[-1]["id"] if len(rows) > limit else None)

    async def all(self) -> list[dict[str, Any]]:
        async with self.database.reading() as conn:
            rows = list(
                (await conn.execute(select(lists_table).order_by(lists_table.c.id))).mappings()
            )
            members = await _members_of(conn, [row["id"] for row in rows])
        return [_record(row, members[row["id"]]) for row in rows]

    async def resolved(self, list_id: str) -> list[str]:
        """The stakeholders the list reaches through its nested lists, sorted."""
        graph = {record["id"]: distribution_list_model(record) for record in await self.all()}
        return sorted(resolve(graph).get(list_id, frozenset()))

    async def unknown(self, list_ids: Iterable[str]) -> list[str]:
        async with self.database.reading() as conn:
            return await unknown_lists(conn, list_ids)

    async def _check_name(self, conn: AsyncConnection, name: str, list_id: str | None) -> None:
        holder = await conn.scalar(
            select(lists_table.c.id).where(lists_table.c.name_key == name_key(name))
        )
        if holder is not None and holder != list_id:
            raise _duplicate(name)

    async def _insert_member(
        self, conn: AsyncConnection, list_id: str, member: Member, now: datetime
    ) -> None:
        await conn.execute(
            members_table.insert().values(
                list_id=list_id, member_kind=member.kind.value, member_id=member.id, added_at=now
            )
        )
