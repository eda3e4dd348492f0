"""Safe, bounded loading: every limit and every malformed input has its own exact code."""

import json
from typing import Any

import pytest

from alma_mcp.blueprint.loader import Limits, load_blueprint, parse_document, pointer
from alma_mcp.errors import (
    AlmaError,
    BlueprintAliasBomb,
    BlueprintError,
    BlueprintParseError,
    BlueprintTooDeep,
    BlueprintTooLarge,
    BlueprintTooManyResources,
)

MINIMAL = """
name: shop
resources:
  - name: web
    type: compute
    provider: proxmox
    specs: {cpu: 2, memory: 4GB, storage: 50GB}
"""


def test_yaml_and_json_and_objects_load_to_the_same_blueprint() -> None:
    from_yaml = load_blueprint(MINIMAL)
    data: dict[str, Any] = {
        "name": "shop",
        "resources": [
            {
                "name": "web",
                "type": "compute",
                "provider": "proxmox",
                "specs": {"cpu": 2, "memory": "4096MB", "storage": "50Gi"},
            }
        ],
    }
    assert load_blueprint(json.dumps(data)) == from_yaml
    assert load_blueprint(data) == from_yaml
    assert from_yaml.resources[0].specs.memory == 4096
    assert from_yaml.resources[0].specs.storage == 51200


def test_document_over_the_size_limit_is_refused_before_parsing() -> None:
    with pytest.raises(BlueprintTooLarge) as info:
        parse_document("a: " + "x" * 2000, Limits(max_bytes=1024))
    assert info.value.code == "blueprint.too_large"
    assert info.value.data == {"size": 2003, "limit": 1024, "issues": []}


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_yaml_nested_past_the_depth_limit_is_refused(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * 50 + "1" + closer * 50
    with pytest.raises(BlueprintTooDeep) as info:
        parse_document(text, Limits(max_depth=32))
    assert info.value.code == "blueprint.too_deep"
    assert info.value.data["limit"] == 32


def test_very_deep_json_is_refused_without_a_recursion_error() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(BlueprintTooDeep):
        parse_document(text)


def test_moderately_deep_json_is_refused_by_the_depth_limit() -> None:
    text = "[" * 40 + "]" * 40
    with pytest.raises(BlueprintTooDeep):
        parse_document(text, Limits(max_depth=32))


def test_billion_laughs_is_refused_as_an_alias_bomb() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{','.join([prev] * 9)}]")
    with pytest.raises(BlueprintAliasBomb) as info:
        parse_document("\n".join(lines))
    assert info.value.code == "blueprint.alias_bomb"


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(BlueprintAliasBomb):
        parse_document("a: &x [1, *x]")


def test_a_few_harmless_aliases_are_fine() -> None:
    data = parse_document("base: &b {cpu: 2}\nother: *b\n")
    assert data == {"base": {"cpu": 2}, "other": {"cpu": 2}}


def test_duplicate_keys_are_parse_errors_not_silently_overwritten() -> None:
    with pytest.raises(BlueprintParseError) as info:
        parse_document("name: a\nname: b\n")
    assert "duplicate key 'name' (line 2)" in info.value.message


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("just words, not a mapping", "a str"),
        ("- a\n- b\n", "a list"),
        ("", "empty document"),
        ("42", "a int"),
    ],
)
def test_a_document_that_is_not_a_mapping_is_a_parse_error(text: str, kind: str) -> None:
    with pytest.raises(BlueprintParseError) as info:
        load_blueprint(text)
    assert info.value.issues[0].code == "blueprint.parse_error"
    assert kind in info.value.message


@pytest.mark.parametrize("text", ["name: [unclosed", "a: b: c", '{"name": "a",,}', "[1, 2", "key: 'unterminated"])
def test_malformed_text_is_a_parse_error_with_a_location(text: str) -> None:
    with pytest.raises(BlueprintParseError) as info:
        load_blueprint(text)
    assert info.value.code == "blueprint.parse_error"
    assert "line" in info.value.message


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(BlueprintParseError):
        load_blueprint("name: a\x00b")


def test_more_resources_than_the_limit_are_refused() -> None:
    resources = [{"name": f"r{i}", "type": "compute", "provider": "simulation"} for i in range(6)]
    with pytest.raises(BlueprintTooManyResources) as info:
        load_blueprint({"name": "big", "resources": resources}, Limits(max_resources=5))
    assert info.value.data == {"count": 6, "limit": 5, "issues": []}


def test_every_schema_problem_is_reported_with_its_code_and_pointer() -> None:
    data = {
        "name": "Bad_Name",
        "resources": [
            {"name": "web", "type": "computer", "provider": "proxmox", "specs": {"memroy": "4GB"}},
            {"name": "db", "type": "database", "provider": "aws", "specs": {"cpu": "lots", "ports": [70000]}},
            {"type": "cache", "provider": "docker"},
        ],
        "extra": 1,
    }
    with pytest.raises(BlueprintError) as info:
        load_blueprint(data)
    found = {(i.code, i.path) for i in info.value.issues}
    assert found == {
        ("blueprint.invalid_name", "/name"),
        ("blueprint.unknown_field", "/extra"),
        ("blueprint.invalid_value", "/resources/0/type"),
        ("blueprint.unknown_field", "/resources/0/specs/memroy"),
        ("blueprint.invalid_value", "/resources/1/provider"),
        ("blueprint.invalid_quantity", "/resources/1/specs/cpu"),
        ("blueprint.invalid_value", "/resources/1/specs/ports/0"),
        ("blueprint.missing_field", "/resources/2/name"),
    }
    messages = {i.path: i.message for i in info.value.issues}
    assert messages["/resources/0/specs/memroy"] == "unknown field 'memroy'; did you mean 'memory'?"
    assert messages["/resources/2/name"] == "missing required field 'name'"
    assert info.value.code == "blueprint.invalid"
    assert str(info.value).startswith("[blueprint.invalid] ")
    assert "(and 7 more)" in info.value.message


def test_a_list_where_an_object_belongs_names_the_path() -> None:
    with pytest.raises(BlueprintError) as info:
        load_blueprint(
            {
                "name": "x",
                "resources": [{"name": "a", "type": "compute", "provider": "docker", "specs": ["cpu", 2]}],
            }
        )
    assert [(i.code, i.path) for i in info.value.issues] == [("blueprint.invalid_type", "/resources/0/specs")]


def test_unicode_look_alike_names_are_invalid() -> None:
    # Cyrillic 'е' looks like Latin 'e'.
    with pytest.raises(BlueprintError) as info:
        load_blueprint({"name": "wеb", "resources": []})
    assert [(i.code, i.path) for i in info.value.issues] == [("blueprint.invalid_name", "/name")]


def test_spec_aliases_read_the_original_format() -> None:
    bp = load_blueprint(
        {
            "name": "x",
            "resources": [
                {
                    "name": "lb",
                    "type": "load_balancer",
                    "provider": "proxmox",
                    "specs": {"type": "http", "size": "1GB"},
                }
            ],
        }
    )
    assert bp.resources[0].specs.kind == "http"
    assert bp.resources[0].specs.storage == 1024


def test_an_alias_and_its_canonical_key_together_are_refused() -> None:
    with pytest.raises(BlueprintError) as info:
        load_blueprint(
            {
                "name": "x",
                "resources": [
                    {
                        "name": "lb",
                        "type": "load_balancer",
                        "provider": "proxmox",
                        "specs": {"type": "http", "kind": "tcp"},
                    }
                ],
            }
        )
    assert [(i.code, i.path) for i in info.value.issues] == [("blueprint.duplicate_field", "/resources/0/specs")]


def test_json_pointer_escapes_tilde_and_slash() -> None:
    assert pointer(["metadata", "a/b", "c~d", 0]) == "/metadata/a~1b/c~0d/0"
    assert pointer([]) == ""


def _chunk_cases() -> list[Any]:
    from pathlib import Path

    root = Path(__file__).resolve().parent
    cases: list[Any] = []
    for folder in ("fixtures/valid", "fixtures/invalid", "../resources/templates"):
        for path in sorted((root / folder).glob("*.yaml")):
            try:
                cases.append(parse_document(path.read_text(encoding="utf-8")))
            except AlmaError:
                continue
    # More resources than one chunk, and a schema error in the second chunk only.
    many: list[dict[str, Any]] = [
        {"name": f"r{i}", "type": "compute", "provider": "simulation", "dependencies": [f"r{i - 1}"] if i else []}
        for i in range(150)
    ]
    cases.append({"name": "many", "resources": many})
    broken = [dict(r) for r in many]
    broken[100] = {**broken[100], "specs": {"cpu": -1}}
    cases.append({"name": "many", "resources": broken})
    cases.append({"name": "no-resources"})
    return cases


@pytest.mark.parametrize("data", _chunk_cases())
def test_chunked_validation_builds_what_bulk_validation_builds(data: Any) -> None:
    from pydantic import ValidationError

    from alma_mcp.blueprint.graph import nodes_from_blueprint
    from alma_mcp.blueprint.loader import validated_with_nodes
    from alma_mcp.blueprint.model import Blueprint

    found = validated_with_nodes(data) if isinstance(data, dict) else None
    try:
        bulk = Blueprint.model_validate(data)
    except ValidationError:
        assert found is None
        return
    if not isinstance(data.get("resources"), list):
        assert found is None  # no resources to chunk: the caller validates in bulk
        return
    assert found is not None
    blueprint, nodes = found
    assert blueprint.model_dump() == bulk.model_dump()
    assert blueprint.to_data() == bulk.to_data()
    assert [r.model_fields_set for r in blueprint.resources] == [r.model_fields_set for r in bulk.resources]
    assert nodes == nodes_from_blueprint(bulk)
