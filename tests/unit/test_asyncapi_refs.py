"""The AsyncAPI document is self-contained: every ``$ref`` resolves inside it (the official
parser's check runs in ``make test`` as ``node contracts/node/check.mjs``)."""

from __future__ import annotations

from typing import Any

from contracts.events import EVENT_TYPES
from contracts.generate import asyncapi


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_ref_resolves_and_no_schema_keeps_local_defs() -> None:
    doc = asyncapi()
    found = refs(doc)
    assert found and not [r for r in found if "$defs" in r]
    for ref in found:
        resolve(doc, ref)
    schemas = doc["components"]["schemas"]
    assert not [name for name, s in schemas.items() if "$defs" in s]
    assert len(doc["components"]["messages"]) == len(EVENT_TYPES)
