"""JSON schemas written into jobpulse's route declarations, whole, with nothing left to resolve.

A `$ref` to `#/components/schemas/...` would dangle in the OpenAPI document of an app that includes the
router, since only the models FastAPI itself meets are put there; the stream's event models and the
hand-parsed request bodies are therefore spelled out inline.
"""

from typing import Any

from pydantic import BaseModel

_DEFS = "#/$defs/"


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with every `$defs` reference replaced by what it names (no cycles here)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_DEFS):
                return resolve(defs[ref.removeprefix(_DEFS)])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
