"""The server through the real protocol: the SDK's in-memory client, in both protocol eras."""

import json
from typing import Any

import pytest
import yaml
from mcp import Client, MCPError
from mcp.types import (
    INVALID_PARAMS,
    PromptReference,
    ResourceTemplateReference,
)

from alma_mcp import __version__
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.services import Services
from tests.mcp_helpers import ALL_TOOLS, DESTRUCTIVE_TOOLS, READ_ONLY_TOOLS, call_error, call_ok, read_text, text_of

pytestmark = pytest.mark.anyio

TEMPLATES = [
    "api-gateway",
    "data-pipeline",
    "ha-web-app",
    "microservices-k8s",
    "ml-training",
    "observability-stack",
    "postgres-ha",
    "redis-cluster",
    "simple-web-app",
    "zero-trust-network",
]
AVAILABLE = ", ".join(TEMPLATES)


async def test_server_identifies_itself(client: Client) -> None:
    assert client.server_info is not None
    assert client.server_info.name == "alma-mcp"
    assert client.server_info.version == __version__
    assert client.instructions is not None
    assert "list_templates" in client.instructions


async def test_both_eras_negotiate_their_protocol(client: Client) -> None:
    assert client.protocol_version in {"2026-07-28", "2025-11-25"}


async def test_tools_are_described_and_annotated_honestly(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == ALL_TOOLS
    for name, tool in tools.items():
        assert tool.description
        assert len(tool.description) > 40
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (name in READ_ONLY_TOOLS), name
        assert bool(tool.annotations.destructive_hint) is (name in DESTRUCTIVE_TOOLS), name
        assert tool.output_schema is not None


async def test_list_templates_lists_all_ten(client: Client) -> None:
    out = await call_ok(client, "list_templates", {})
    assert out["count"] == 10
    assert [t["name"] for t in out["templates"]] == TEMPLATES
    first = out["templates"][0]
    assert set(first) == {
        "name",
        "description",
        "category",
        "complexity",
        "resource_count",
        "estimated_cost",
        "aliases",
        "uri",
    }
    assert first["uri"] == "alma://templates/api-gateway"
    k8s = next(t for t in out["templates"] if t["name"] == "microservices-k8s")
    assert k8s["aliases"] == ["kubernetes-cluster", "microservices"]


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        ({"category": "database"}, ["postgres-ha", "redis-cluster"]),
        ({"category": "WEB"}, ["ha-web-app", "simple-web-app"]),
        ({"complexity": "simple"}, ["redis-cluster", "simple-web-app"]),
        ({"query": "redis"}, ["api-gateway", "ha-web-app", "redis-cluster"]),
        ({"query": "SENTINEL"}, ["redis-cluster"]),
        ({"category": "web", "complexity": "medium"}, ["ha-web-app"]),
        ({"category": "quantum"}, []),
    ],
)
async def test_list_templates_filters(client: Client, filters: dict[str, str], names: list[str]) -> None:
    out = await call_ok(client, "list_templates", filters)
    assert [t["name"] for t in out["templates"]] == names
    assert out["count"] == len(names)


async def test_read_every_template_resource(client: Client, services: Services) -> None:
    index, mime = await read_text(client, "alma://templates")
    assert mime == "application/json"
    rows = json.loads(index)["templates"]
    assert [r["name"] for r in rows] == TEMPLATES
    for row in rows:
        text, mime = await read_text(client, row["uri"])
        assert mime == "application/yaml"
        assert load_blueprint(text) == services.catalog.get(row["name"])
        assert row["resource_count"] == len(services.catalog.get(row["name"]).resources)


@pytest.mark.parametrize("alias", ["kubernetes-cluster", "microservices"])
async def test_aliases_resolve_to_microservices_k8s(client: Client, alias: str) -> None:
    text, _ = await read_text(client, f"alma://templates/{alias}")
    assert yaml.safe_load(text)["name"] == "microservices-k8s"
    out = await call_ok(client, "customize_template", {"template": alias})
    assert out["base_template"] == "microservices-k8s"


async def test_schema_resource_is_the_generated_json_schema(client: Client) -> None:
    text, mime = await read_text(client, "alma://schema/blueprint")
    assert mime == "application/schema+json"
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "alma://schema/blueprint"
    assert set(schema["required"]) == {"name"}
    assert schema["additionalProperties"] is False
    assert "Specs" in schema["$defs"]


async def test_resources_and_templates_are_listed_with_descriptions(client: Client) -> None:
    resources = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert sorted(resources) == ["alma://policies", "alma://pricing", "alma://schema/blueprint", "alma://templates"]
    templates = (await client.list_resource_templates()).resource_templates
    assert sorted(t.uri_template for t in templates) == [
        "alma://deployments/{deployment_id}",
        "alma://iprs/{ipr_id}",
        "alma://templates/{name}",
    ]
    assert all(r.description for r in resources.values())
    assert all(t.description for t in templates)


async def test_unknown_template_resource_is_a_protocol_not_found(client: Client) -> None:
    with pytest.raises(MCPError) as info:
        await client.read_resource("alma://templates/nope")
    assert info.value.error.code == INVALID_PARAMS
    assert info.value.error.message == f"[template.not_found] no template 'nope'; available: {AVAILABLE}"


@pytest.mark.parametrize(
    "uri",
    [
        "alma://templates/..",
        "alma://templates/%2E%2E",
        "alma://templates/..%2Fsecrets",
        "alma://templates/%2Fetc%2Fpasswd",
        "alma://templates/simple-web-app%00",
        "alma://templates/a/b",
        "alma://templates/../schema/blueprint",
    ],
)
async def test_path_tricks_in_resource_uris_are_refused(client: Client, uri: str) -> None:
    with pytest.raises(MCPError) as info:
        await client.read_resource(uri)
    assert info.value.error.code == INVALID_PARAMS


async def test_customize_scales_cpu_and_memory_and_never_mutates_the_catalogue(client: Client) -> None:
    before, _ = await read_text(client, "alma://templates/simple-web-app")
    out = await call_ok(client, "customize_template", {"template": "simple-web-app", "scale_factor": 2})
    original = yaml.safe_load(before)
    scaled = out["blueprint"]
    for orig, new in zip(original["resources"], scaled["resources"], strict=True):
        if "cpu" in orig["specs"]:
            assert new["specs"]["cpu"] == orig["specs"]["cpu"] * 2
        if "memory" in orig["specs"]:
            assert new["specs"]["memory"] == orig["specs"]["memory"] * 2
        assert new["specs"].get("storage") == orig["specs"].get("storage")
    assert scaled["metadata"]["customized"] is True
    assert scaled["metadata"]["base_template"] == "simple-web-app"
    after, _ = await read_text(client, "alma://templates/simple-web-app")
    assert after == before
    again = await call_ok(client, "customize_template", {"template": "simple-web-app"})
    assert again["changes"] == []


async def test_customize_parameters(client: Client) -> None:
    out = await call_ok(
        client,
        "customize_template",
        {
            "template": "ha-web-app",
            "name": "shop-prod",
            "description": "The shop",
            "parameters": {
                "instance_count": 4,
                "cpu_per_instance": "1500m",
                "memory_per_instance": "6GB",
                "environment": "prod",
            },
        },
    )
    bp = out["blueprint"]
    assert bp["name"] == "shop-prod"
    assert bp["description"] == "The shop"
    assert bp["metadata"]["environment"] == "production"
    scalable = [r for r in bp["resources"] if r["type"] in {"compute", "container", "service"}]
    assert scalable
    for res in scalable:
        assert res["specs"]["replicas"] == 4
        assert res["specs"]["cpu"] == 1.5
        assert res["specs"]["memory"] == 6144
        auto = res["specs"].get("autoscaling")
        if auto:
            assert auto["min"] <= 4 <= auto["max"]
    assert out["changes"][:2] == ["name: ha-web-app -> shop-prod", "description replaced"]
    assert "environment -> production" in out["changes"]
    load_blueprint(bp)


async def test_unknown_template_tool_error_names_the_available_ones(client: Client) -> None:
    text = await call_error(client, "customize_template", {"template": "nope"})
    assert text == f"[template.not_found] no template 'nope'; available: {AVAILABLE}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"scale_factor": 0},
            "[template.invalid_parameter] scale_factor=0.0 is out of range; allowed: a number in (0, 100]",
        ),
        (
            {"scale_factor": -1.5},
            "[template.invalid_parameter] scale_factor=-1.5 is out of range; allowed: a number in (0, 100]",
        ),
        (
            {"scale_factor": 100.5},
            "[template.invalid_parameter] scale_factor=100.5 is out of range; allowed: a number in (0, 100]",
        ),
        (
            {"parameters": {"instance_count": -2}},
            "[template.invalid_parameter] instance_count=-2 is out of range; allowed: integer 1..1000: "
            "replicas of each compute, container and service resource",
        ),
        (
            {"parameters": {"instance_count": "3"}},
            "[template.invalid_parameter] instance_count='3' is out of range; allowed: integer 1..1000: "
            "replicas of each compute, container and service resource",
        ),
        (
            {"parameters": {"colour": "blue"}},
            "[template.invalid_parameter] unknown parameter 'colour'; allowed: instance_count, "
            "cpu_per_instance, memory_per_instance, environment",
        ),
        (
            {"parameters": {"cpu_per_instance": "lots"}},
            "[template.invalid_parameter] cpu_per_instance='lots' is out of range; allowed: cores > 0 and "
            "<= 1024 (or millicores such as '500m') for those resources",
        ),
        (
            {"parameters": {"memory_per_instance": "1Mi"}},
            "[template.invalid_parameter] memory_per_instance='1Mi' is out of range; allowed: size from 64Mi "
            "to 16Ti (e.g. '8GB') for those resources",
        ),
        (
            {"parameters": {"environment": "moon"}},
            "[template.invalid_parameter] environment='moon' is out of range; allowed: production, staging "
            "or development (prod, stage, dev accepted)",
        ),
    ],
)
async def test_bad_customization_is_a_coded_error(client: Client, args: dict[str, Any], expected: str) -> None:
    assert await call_error(client, "customize_template", {"template": "simple-web-app", **args}) == expected


async def test_an_invalid_new_name_is_a_blueprint_error(client: Client) -> None:
    text = await call_error(client, "customize_template", {"template": "simple-web-app", "name": "Not Valid!"})
    assert text.startswith("[blueprint.invalid] customized template is invalid: invalid name 'Not Valid!'")


async def test_wrongly_typed_arguments_are_refused_by_the_schema(client: Client) -> None:
    result = await client.call_tool("customize_template", {"template": "simple-web-app", "scale_factor": "big"})
    assert result.is_error
    assert "scale_factor" in text_of(result)


async def test_coded_errors_carry_the_code_in_meta(client: Client) -> None:
    result = await client.call_tool("customize_template", {"template": "nope"})
    assert result.meta is not None
    assert result.meta["alma/error"]["code"] == "template.not_found"
    assert result.meta["alma/error"]["data"]["available"] == TEMPLATES


async def test_completions_offer_template_names_and_aliases(client: Client) -> None:
    ref = ResourceTemplateReference(type="ref/resource", uri="alma://templates/{name}")
    result = await client.complete(ref, {"name": "name", "value": "re"})
    assert result.completion.values == ["redis-cluster"]
    everything = await client.complete(ref, {"name": "name", "value": ""})
    assert everything.completion.values == sorted([*TEMPLATES, "kubernetes-cluster", "microservices"])
    assert everything.completion.total == 12
    prompt_ref = PromptReference(type="ref/prompt", name="council_review")
    by_prompt = await client.complete(prompt_ref, {"name": "template", "value": "mi"})
    assert by_prompt.completion.values == ["microservices", "microservices-k8s"]
    other = await client.complete(ref, {"name": "other", "value": ""})
    assert other.completion.values == []
