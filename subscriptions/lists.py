"""Distribution lists as a graph: the stakeholders a list resolves to through its nested lists,
the lists each stakeholder belongs to, and the cycle an added member would close. Pure: no I/O.

Lists never hold cycles (adding a member that would close one is refused), but resolution
does not rely on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from subscriptions.model import DistributionList


def resolve(lists: Mapping[str, DistributionList]) -> dict[str, frozenset[str]]:
    """Each list's resolved stakeholders: its own and those of every list it reaches. A member
    list that does not exist contributes nothing. One walk per list (lists are few), so a
    cycle, should one exist, cannot leave a list half resolved."""
    resolved: dict[str, frozenset[str]] = {}
    for root in lists:
        members: set[str] = set()
        seen = {root}
        stack = [root]
        while stack:
            found = lists.get(stack.pop())
            if found is None:
                continue
            members |= found.stakeholder_ids
            fresh = found.list_ids - seen
            seen |= fresh
            stack.extend(fresh)
        resolved[root] = frozenset(members)
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
