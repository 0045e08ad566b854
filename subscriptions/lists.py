"""Distribution lists as a graph: the stakeholders a list resolves to through its nested lists,
the lists each stakeholder belongs to, and the cycle an added member would close. Pure: no I/O.

Lists never hold cycles (adding a member that would close one is refused), but resolution
does not rely on it: a list already being resolved contributes nothing a second time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from subscriptions.model import DistributionList


def resolve(lists: Mapping[str, DistributionList]) -> dict[str, frozenset[str]]:
    """Each list's resolved stakeholders: its own and those of every list it reaches. A member
    list that does not exist contributes nothing."""
    resolved: dict[str, frozenset[str]] = {}

    def visit(list_id: str, open_: set[str]) -> frozenset[str]:
        done = resolved.get(list_id)
        if done is not None:
            return done
        found = lists.get(list_id)
        if found is None or list_id in open_:
            return frozenset()
        open_.add(list_id)
        members = set(found.stakeholder_ids)
        for child in sorted(found.list_ids):
            members |= visit(child, open_)
        open_.discard(list_id)
        resolved[list_id] = frozenset(members)
        return resolved[list_id]

    for list_id in lists:
        visit(list_id, set())
    return resolved


def memberships(lists: Mapping[str, DistributionList]) -> dict[str, frozenset[str]]:
    """Stakeholder id -> the lists it resolves into (directly or through nesting)."""
    found: dict[str, set[str]] = {}
    for list_id, stakeholder_ids in resolve(lists).items():
        for stakeholder_id in stakeholder_ids:
            found.setdefault(stakeholder_id, set()).add(list_id)
    return {k: frozenset(v) for k, v in found.items()}


def cycle_through(
    children: Mapping[str, Iterable[str]], parent: str, child: str
) -> list[str] | None:
    """The cycle that making `child` a member of `parent` would close, as the path of list ids
    from `parent` back to itself (`[parent, child, ..., parent]`), or None. `children` maps a
    list to its member lists."""
    if child == parent:
        return [parent, parent]
    stack: list[tuple[str, list[str]]] = [(child, [parent, child])]
    seen = {child}
    while stack:
        node, path = stack.pop()
        for nxt in sorted(children.get(node, ()), reverse=True):
            if nxt == parent:
                return [*path, parent]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None
