"""Safe, bounded loading of blueprint documents from YAML or JSON text, or from plain data.

Each limit has its own error code so a caller knows which one it hit: size (checked before any
parsing), nesting depth (checked on the event stream, before anything is composed),
expanded node count (YAML aliases counted at their expanded size, which stops "billion laughs"),
and resource count. Duplicate mapping keys are parse errors: PyYAML would silently keep the last.
"""

import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from yaml.nodes import MappingNode

from alma_mcp.blueprint.graph import Node, node_of, nodes_from_blueprint
from alma_mcp.blueprint.model import Blueprint, Resource
from alma_mcp.errors import (
    BlueprintAliasBomb,
    BlueprintError,
    BlueprintParseError,
    BlueprintTooDeep,
    BlueprintTooLarge,
    BlueprintTooManyResources,
    Issue,
)
from alma_mcp.gcpause import without_gc


@dataclass(frozen=True)
class Limits:
    """The bounds a document must stay within (from settings)."""

    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 32
    max_nodes: int = 1_000_000
    max_resources: int = 10_000


DEFAULT_LIMITS = Limits()


# libyaml parses and composes in C when it is installed (it is in PyYAML's wheels); the pure-Python
# classes are the fallback. Construction, where duplicate keys are caught, is Python in both.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NoDuplicateKeysLoader(_BaseLoader):  # type: ignore[valid-type, misc]
    """Safe loader that refuses duplicate mapping keys instead of keeping the last one."""

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


def load_data_file(text: str) -> Any:
    """Parse one of our own YAML data files (trusted, small): libyaml's safe loader, no limits.

    Raises:
        yaml.YAMLError: the text is not YAML.
    """
    return yaml.load(text, Loader=_BaseLoader)  # noqa: S506 - a SafeLoader (C or Python)


def _check_events(text: str, limits: Limits) -> None:
    """Depth and expanded size from the event stream, before anything is composed.

    Each open collection keeps a running count of the nodes it holds; an alias adds the full size
    of its anchored node, so nested aliases ("billion laughs") are counted at their expanded size
    without expanding anything. An alias to a still-open anchor is a recursive document.
    """
    open_sizes: list[int] = []
    open_anchors: list[str | None] = []
    sizes: dict[str, int] = {}
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_sizes) >= limits.max_depth:
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                raise BlueprintTooDeep(
                    f"document nests deeper than {limits.max_depth} levels (line {line}); "
                    "flatten it or raise ALMA_MAX_DEPTH",
                    data={"limit": limits.max_depth, "line": line},
                )
            open_sizes.append(1)
            open_anchors.append(event.anchor)
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            size = open_sizes.pop()
            anchor = open_anchors.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                raise BlueprintAliasBomb(
                    "a YAML alias refers to its own enclosing anchor (a recursive document); "
                    "write the data out instead",
                    data={"limit": limits.max_nodes},
                )
            size = sizes.get(event.anchor or "", 1)  # an undefined alias fails in the composer
        else:
            continue
        if open_sizes:
            open_sizes[-1] += size
            total = open_sizes[-1]
        else:
            total = size
        if total > limits.max_nodes:
            raise BlueprintAliasBomb(
                f"document expands to more than {limits.max_nodes} nodes once YAML aliases "
                "are followed; remove the aliases or split the document",
                data={"limit": limits.max_nodes},
            )


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
    try:
        _check_events(text, limits)
        return yaml.load(text, Loader=_NoDuplicateKeysLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BlueprintParseError(
            f"not valid YAML or JSON: {_yaml_message(exc)}", data={"reason": _yaml_message(exc)}
        ) from None


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
    "too_long": "blueprint.too_long",
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


@functools.cache
def _resources_adapter() -> TypeAdapter[list[Resource]]:
    # Built on first use, not at import: a stdio start never validates a blueprint.
    return TypeAdapter(list[Resource])


# Resources validated per chunk of this many: each chunk's models (about 3 KB a resource) are still in
# the CPU cache when their graph nodes are read, where one bulk validation of 10,000 would have
# pushed the first ones out to memory before a second pass could read them.
CHUNK: Final = 64


def validated_with_nodes(data: Mapping[str, Any]) -> tuple[Blueprint, list[Node]] | None:
    """The blueprint and its graph nodes, when the data is schema-valid; None otherwise.

    The same models ``Blueprint.model_validate`` builds (the blueprint takes the validated resources
    as they are); on any schema problem the caller validates in bulk again for the complete issues.
    """
    resources = data.get("resources")
    if not isinstance(resources, list):
        return None
    validated: list[Resource] = []
    nodes: list[Node] = []
    adapter = _resources_adapter()
    try:
        for start in range(0, len(resources), CHUNK):
            part = adapter.validate_python(resources[start : start + CHUNK])
            nodes.extend(node_of(start + offset, res) for offset, res in enumerate(part))
            validated.extend(part)
        blueprint = Blueprint.model_validate({**data, "resources": validated})
    except ValidationError:
        return None
    return blueprint, nodes


@without_gc
def load_blueprint(source: str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Blueprint:
    """A ``Blueprint`` from YAML/JSON text or plain data, with every schema problem reported.

    Raises:
        BlueprintParseError, BlueprintTooLarge, BlueprintTooDeep, BlueprintAliasBomb,
        BlueprintTooManyResources, BlueprintError (schema problems, each an ``Issue``).
    """
    return _load(source, limits, with_nodes=False)[0]


@without_gc
def load_with_nodes(source: str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> tuple[Blueprint, list[Node]]:
    """``load_blueprint`` and the blueprint's graph nodes, read while each chunk of resources is hot.

    Raises:
        The errors of ``load_blueprint``.
    """
    blueprint, nodes = _load(source, limits, with_nodes=True)
    return blueprint, nodes if nodes is not None else nodes_from_blueprint(blueprint)


def _load(source: str | Mapping[str, Any], limits: Limits, *, with_nodes: bool) -> tuple[Blueprint, list[Node] | None]:
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
    if with_nodes:
        found = validated_with_nodes(data)
        if found is not None:
            return found
    try:
        return Blueprint.model_validate(data), None
    except ValidationError as exc:
        issues = issues_from_validation(exc, Blueprint, data)
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise BlueprintError(f"{first.message} at {first.path or '/'}{more}", issues=issues) from None
