"""Safe, bounded loading of blueprint documents from YAML or JSON text, or from plain data.

Each limit has its own error code so a caller knows which one it hit: size (checked before any
parsing), nesting depth (checked while composing, before Python's recursion limit can be reached),
expanded node count (YAML aliases counted at their expanded size, which stops "billion laughs"),
and resource count. Duplicate mapping keys are parse errors: PyYAML would silently keep the last.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import (
    BlueprintAliasBomb,
    BlueprintError,
    BlueprintParseError,
    BlueprintTooDeep,
    BlueprintTooLarge,
    BlueprintTooManyResources,
    Issue,
)


@dataclass(frozen=True)
class Limits:
    """The bounds a document must stay within (from settings)."""

    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 32
    max_nodes: int = 1_000_000
    max_resources: int = 10_000


DEFAULT_LIMITS = Limits()


class _LimitExceeded(Exception):
    def __init__(self, error: BlueprintError) -> None:
        super().__init__(str(error))
        self.error = error


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that tracks depth and expanded size while composing, and rejects duplicate keys."""

    limits: Limits = DEFAULT_LIMITS

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        if self._depth > self.limits.max_depth:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _LimitExceeded(
                BlueprintTooDeep(
                    f"document nests deeper than {self.limits.max_depth} levels "
                    f"(line {mark.line + 1}); flatten it or raise ALMA_MAX_DEPTH",
                    data={"limit": self.limits.max_depth, "line": mark.line + 1},
                )
            )
        is_alias = self.check_event(yaml.AliasEvent)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is not None:
            self._account(node, is_alias)
        return node

    def _account(self, node: Node, is_alias: bool) -> None:
        key = id(node)
        if is_alias:
            if key not in self._sizes:
                raise _LimitExceeded(
                    BlueprintAliasBomb(
                        "a YAML alias refers to its own enclosing anchor (a recursive document); "
                        "write the data out instead",
                        data={"limit": self.limits.max_nodes},
                    )
                )
            return
        if isinstance(node, ScalarNode):
            size = 1
        elif isinstance(node, SequenceNode):
            size = 1 + sum(self._sizes.get(id(child), 1) for child in node.value)
        elif isinstance(node, MappingNode):
            size = 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        else:  # pragma: no cover - PyYAML has no other node kinds
            size = 1
        if size > self.limits.max_nodes:
            raise _LimitExceeded(
                BlueprintAliasBomb(
                    f"document expands to more than {self.limits.max_nodes} nodes once YAML aliases "
                    "are followed; remove the aliases or split the document",
                    data={"limit": self.limits.max_nodes},
                )
            )
        self._sizes[key] = size

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable keys fail in the base class with their own message
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {line}); each key may appear once", None
                )
            seen.add(key)
        return cast("dict[Any, Any]", super().construct_mapping(node, deep=deep))


def _bounded_loader(limits: Limits) -> type[_BoundedLoader]:
    return type("BoundedLoader", (_BoundedLoader,), {"limits": limits})


def _json_depth_and_size(value: Any, limits: Limits) -> None:
    # Iterative on purpose: a recursive walk would be the very stack overflow the limit prevents.
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > limits.max_depth:
            raise BlueprintTooDeep(
                f"document nests deeper than {limits.max_depth} levels; flatten it or raise ALMA_MAX_DEPTH",
                data={"limit": limits.max_depth},
            )
        if nodes > limits.max_nodes:
            raise BlueprintAliasBomb(
                f"document has more than {limits.max_nodes} nodes; split it",
                data={"limit": limits.max_nodes},
            )
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_document(text: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse YAML or JSON text within the limits; returns plain data.

    Raises:
        BlueprintTooLarge, BlueprintTooDeep, BlueprintAliasBomb, BlueprintParseError.
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limits.max_bytes:
        raise BlueprintTooLarge(
            f"document is {size} bytes; the limit is {limits.max_bytes} (ALMA_MAX_DOCUMENT_BYTES)",
            data={"size": size, "limit": limits.max_bytes},
        )
    if "\x00" in text:
        raise BlueprintParseError("document contains a NUL character; send UTF-8 YAML or JSON text")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except RecursionError as exc:
            raise BlueprintTooDeep(
                f"document nests deeper than {limits.max_depth} levels; flatten it or raise ALMA_MAX_DEPTH",
                data={"limit": limits.max_depth},
            ) from exc
        except json.JSONDecodeError:
            pass  # flow-style YAML also starts with a brace; let the YAML parser judge it
        else:
            _json_depth_and_size(data, limits)
            return data
    loader = _bounded_loader(limits)(text)
    try:
        return loader.get_single_data()
    except _LimitExceeded as exc:
        raise exc.error from None
    except RecursionError as exc:  # pragma: no cover - max_depth is capped well below the recursion limit
        raise BlueprintTooDeep("document nests too deeply", data={"limit": limits.max_depth}) from exc
    except yaml.YAMLError as exc:
        raise BlueprintParseError(
            f"not valid YAML or JSON: {_yaml_message(exc)}", data={"reason": _yaml_message(exc)}
        ) from None
    finally:
        loader.dispose()


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def pointer(loc: Iterable[str | int]) -> str:
    """A JSON pointer (RFC 6901) for a location such as ``('resources', 2, 'name')``."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts) if parts else ""


_GENERIC_CODES = {
    "extra_forbidden": "blueprint.unknown_field",
    "missing": "blueprint.missing_field",
    "literal_error": "blueprint.invalid_value",
    "enum": "blueprint.invalid_value",
}


def issues_from_validation(exc: ValidationError, model: type[BaseModel], root: Any) -> list[Issue]:
    """Every pydantic error as an ``Issue`` with a stable code and a JSON pointer."""
    issues = []
    for err in exc.errors():
        # Pydantic puts the validator name into loc for tagged or function validators; drop non-data parts.
        loc = [p for p in err["loc"] if isinstance(p, int) or not str(p).startswith("function-")]
        err_type = err["type"]
        code = err_type if err_type.startswith("blueprint.") else _GENERIC_CODES.get(err_type)
        if code is None:
            code = "blueprint.invalid_type" if err_type.endswith("_type") else "blueprint.invalid_value"
        message = err["msg"]
        if err_type == "extra_forbidden":
            message = _unknown_field_message(model, root, loc)
        elif err_type == "missing":
            message = f"missing required field '{loc[-1]}'"
        issues.append(Issue(code=code, path=pointer(loc), message=message))
    return issues


def _unknown_field_message(model: type[BaseModel], root: Any, loc: list[str | int]) -> str:
    field = str(loc[-1])
    allowed = _allowed_fields_at(model, loc[:-1])
    hint = ""
    if allowed:
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(sorted(allowed))}"
    return f"unknown field '{field}'{hint}"


def _allowed_fields_at(model: type[BaseModel], loc: list[str | int]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        inner = _inner_model(arg)
        if inner is not None:
            return inner
    return None


def load_blueprint(source: str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Blueprint:
    """A ``Blueprint`` from YAML/JSON text or plain data, with every schema problem reported.

    Raises:
        BlueprintParseError, BlueprintTooLarge, BlueprintTooDeep, BlueprintAliasBomb,
        BlueprintTooManyResources, BlueprintError (schema problems, each an ``Issue``).
    """
    data = parse_document(source, limits) if isinstance(source, str) else source
    if isinstance(source, Mapping):
        _json_depth_and_size(source, limits)
    if not isinstance(data, Mapping):
        kind = "empty document" if data is None else f"a {type(data).__name__}"
        raise BlueprintParseError(
            f"a blueprint must be a mapping with name and resources, not {kind}",
            issues=[Issue(code="blueprint.parse_error", path="", message=f"expected a mapping, got {kind}")],
        )
    resources = data.get("resources")
    if isinstance(resources, list) and len(resources) > limits.max_resources:
        raise BlueprintTooManyResources(
            f"blueprint declares {len(resources)} resources; the limit is {limits.max_resources} (ALMA_MAX_RESOURCES)",
            data={"count": len(resources), "limit": limits.max_resources},
        )
    try:
        return Blueprint.model_validate(data)
    except ValidationError as exc:
        issues = issues_from_validation(exc, Blueprint, data)
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise BlueprintError(f"{first.message} at {first.path or '/'}{more}", issues=issues) from None
