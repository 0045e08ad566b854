"""A schema with its plain `$ref`s replaced by what they point at, for faster validation.

jsonschema follows a `$ref` at every use: a registry lookup, a JSON pointer walk and one
more level of subschema (a validator object per level). A CAP alert meets some thirty of
them, which made up about half of its validation time. A `$ref` that stands alone in its
object (annotations such as `description` aside) means exactly the schema it points at, so
it is replaced by a copy of that schema, itself inlined. What is kept as it was:

  - a `$ref` with validation keywords beside it (the local kinds' envelope beside
    `unevaluatedProperties`): rewritten to an absolute reference, which the registry still
    resolves, so it means the same wherever the copy puts it;
  - a reference back into a schema being inlined (recursion), also made absolute;
  - `$defs` (nothing validates them unless referred to, and references are now absolute).

The schemas here carry `$id` at their top only (checked: a nested `$id` raises), so the base
of a reference is the `$id` of the document it was found in; a whole document inlined into
another loses its `$id` and `$schema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from referencing import Registry

# Keywords whose value is a subschema, a list of them, or a map of names to them.
_SCHEMA_VALUED = frozenset(
    {
        "additionalProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "items",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
        "not",
    }
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
# Keywords that only annotate: a `$ref` beside nothing else but these stands alone.
_ANNOTATIONS = frozenset({"$comment", "description", "title", "examples", "x-pii"})
# Keywords of a whole schema document that a copy of it inside another must not carry.
_DOCUMENT = frozenset({"$id", "$schema"})


def absolute(ref: str, base: str) -> str:
    """`ref` as an absolute URI: fragment-only references belong to `base`."""
    if ref.startswith("#"):
        return base + ref
    if ":" not in ref.split("#", 1)[0]:
        raise ValueError(f"relative reference {ref!r} is not supported by the inliner")
    return ref


def inlined(schema: Mapping[str, Any], registry: Registry[Any]) -> dict[str, Any]:
    """`schema` (a top-level schema with an `$id`) with its plain `$ref`s inlined."""
    base = schema["$id"]
    result: dict[str, Any] = _Inliner(registry).schema(schema, base, (base,), top=True)
    return result


class _Inliner:
    """One inlining pass; `trail` holds the absolute references being inlined."""

    def __init__(self, registry: Registry[Any]) -> None:
        self.resolver = registry.resolver()

    def schema(self, node: Any, base: str, trail: tuple[str, ...], top: bool = False) -> Any:
        if not isinstance(node, Mapping):
            return node  # true, false
        if "$id" in node and node["$id"] != base:
            raise ValueError(f"nested $id {node['$id']!r} is not supported by the inliner")
        result: dict[str, Any] = {}
        for keyword, value in node.items():
            if keyword in _SCHEMA_VALUED:
                result[keyword] = self.schema(value, base, trail)
            elif keyword in _SCHEMA_LISTS:
                result[keyword] = [self.schema(each, base, trail) for each in value]
            elif keyword in _SCHEMA_MAPS:
                result[keyword] = {k: self.schema(v, base, trail) for k, v in value.items()}
            elif keyword == "$ref":
                result[keyword] = absolute(value, base)
            elif keyword in _DOCUMENT and not top:
                continue  # a whole other schema, inlined: its references are absolute now
            else:
                result[keyword] = value
        ref = result.get("$ref")
        if ref is None or top or ref in trail or set(result) - _ANNOTATIONS - {"$ref"}:
            return result
        target = self.resolver.lookup(ref).contents
        return self.schema(target, ref.split("#", 1)[0], (*trail, ref))
