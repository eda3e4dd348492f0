"""The analysis tools through the real protocol, in both eras: text, JSON and object blueprints."""

import json
from typing import Any

import pytest
import yaml
from mcp import Client

from tests.mcp_helpers import call_error, call_ok, read_text

pytestmark = pytest.mark.anyio

SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [
        {"name": "db", "type": "database", "provider": "proxmox", "specs": {"memory": "4GB"}},
        {"name": "web", "type": "compute", "provider": "proxmox", "dependencies": ["db"]},
    ],
}


@pytest.mark.parametrize("form", ["yaml", "json", "object"])
async def test_validate_accepts_text_json_and_objects(client: Client, form: str) -> None:
    source: Any = {"yaml": yaml.safe_dump(SHOP), "json": json.dumps(SHOP), "object": SHOP}[form]
    out = await call_ok(client, "validate_blueprint", {"blueprint": source})
    assert out["valid"] is True
    assert out["summary"] == "valid: 2 resources, 1 dependencies"
    assert out["errors"] == []


async def test_validate_reports_errors_as_results_not_tool_errors(client: Client) -> None:
    out = await call_ok(client, "validate_blueprint", {"blueprint": "neither: yaml: nor json"})
    assert out["valid"] is False
    assert [(e["code"], e["path"]) for e in out["errors"]] == [("blueprint.parse_error", "")]


async def test_validate_every_template_through_the_protocol(client: Client) -> None:
    index = json.loads((await read_text(client, "alma://templates"))[0])
    for row in index["templates"]:
        text, _ = await read_text(client, row["uri"])
        out = await call_ok(client, "validate_blueprint", {"blueprint": text, "strict": True})
        assert out["valid"] is True, (row["name"], out["summary"])


async def test_plan_a_template(client: Client) -> None:
    text, _ = await read_text(client, "alma://templates/simple-web-app")
    out = await call_ok(client, "generate_deployment_plan", {"blueprint": text})
    assert out["summary"].startswith("Plan: 4 to create, 0 to update, 0 to destroy.")
    assert out["parallelism"] == 10
    assert out["counts"]["create"] == 4


async def test_plan_against_current_and_a_cycle_error(client: Client) -> None:
    changed = json.loads(json.dumps(SHOP))
    changed["resources"][0]["specs"]["memory"] = "8GB"
    out = await call_ok(client, "generate_deployment_plan", {"blueprint": changed, "current": SHOP, "parallelism": 2})
    assert out["summary"] == "Plan: 0 to create, 1 to update, 0 to destroy.\n  ~ db (database, proxmox)"
    cyclic = json.loads(json.dumps(SHOP))
    cyclic["resources"][0]["dependencies"] = ["web"]
    text = await call_error(client, "generate_deployment_plan", {"blueprint": cyclic})
    assert text == (
        "[blueprint.cycle] dependency cycle: db -> web -> db (at /resources/0/dependencies); break the cycle to plan"
    )


async def test_plan_of_an_invalid_blueprint_is_a_coded_error(client: Client) -> None:
    text = await call_error(client, "generate_deployment_plan", {"blueprint": {"name": "x", "resources": "none"}})
    assert text.startswith("[blueprint.invalid] ")
    assert "/resources" in text
    text = await call_error(client, "generate_deployment_plan", {"blueprint": "- a\n- b\n"})
    assert text == "[blueprint.parse_error] a blueprint must be a mapping with name and resources, not a list"


async def test_compare_through_the_protocol(client: Client) -> None:
    after = json.loads(json.dumps(SHOP))
    after["resources"][0]["specs"]["memory"] = "4096MB"
    same = await call_ok(client, "compare_blueprints", {"a": SHOP, "b": yaml.safe_dump(after)})
    assert same["identical"] is True
    assert same["similarity"] == 1.0
    assert same["resources"] == []
    after["resources"][0]["specs"]["memory"] = "8GB"
    after["resources"][1]["provider"] = "simulation"
    out = await call_ok(client, "compare_blueprints", {"a": SHOP, "b": after})
    assert out["summary"]["update"] == 1
    assert out["summary"]["replace"] == 1
    assert [(r["name"], r["action"]) for r in out["resources"]] == [("db", "update"), ("web", "replace")]
    assert out["resources"][1]["replace_reasons"] == ["provider changed: proxmox -> simulation"]
    assert out["impact"]["memory_mib_delta"] == 4096
    assert out["patch"] == [
        {"op": "replace", "path": "/resources/0/specs/memory", "value": 8192},
        {"op": "replace", "path": "/resources/1/provider", "value": "simulation"},
    ]
    assert out["patch_operations"] == 2


async def test_compare_bad_input_is_coded(client: Client) -> None:
    text = await call_error(client, "compare_blueprints", {"a": SHOP, "b": "[unclosed"})
    assert text.startswith("[blueprint.parse_error] not valid YAML or JSON: ")


async def test_create_blueprint_through_the_protocol(client: Client) -> None:
    out = await call_ok(
        client, "create_blueprint", {"text": "an online shop for 2k requests per second, 99.95% availability, on k8s"}
    )
    assert out["resolved"]["workload"] == "web"
    assert out["resolved"]["provider"] == "kubernetes"
    assert out["extracted_from_text"] == ["workload", "expected_rps", "availability", "provider"]
    checked = await call_ok(client, "validate_blueprint", {"blueprint": out["blueprint"], "strict": True})
    assert checked["valid"] is True
    decisions = {d["topic"]: d["choice"] for d in out["rationale"]}
    assert decisions["template"] == "ha-web-app"
    assert decisions["provider"] == "kubernetes"
    assert decisions["traffic"] == "2000 rps"


async def test_create_blueprint_bad_input_is_coded(client: Client) -> None:
    text = await call_error(client, "create_blueprint", {"availability": 100, "name": "Bad Name"})
    assert text.startswith("[request.invalid] name: ")
    assert "availability: Input should be less than or equal to 99.999" in text
    unknown = await call_error(client, "create_blueprint", {"workload": "quantum"})
    assert unknown.startswith("[template.invalid_parameter] ")
