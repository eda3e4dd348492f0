"""The advisor tools through the protocol: real answers, coded bad input, the live status of a deployment."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client

from alma_mcp.analysis.troubleshoot import MAX_LOG_BYTES
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.server.app import build_server
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from tests.mcp_helpers import call_error, call_ok, read_text

pytestmark = pytest.mark.anyio

ADVISORS = ("migrate_infrastructure", "suggest_architecture", "troubleshoot_issue")
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER}))


@pytest.fixture
def settings() -> Settings:
    return Settings(db_path=":memory:", sim_time_scale=0)  # deploys in these tests need not take time


@pytest.fixture
async def client(services: Services) -> AsyncIterator[Client]:
    async with Client(build_server(services), raise_exceptions=True) as c:
        yield c


async def test_the_three_tools_are_listed_read_only(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ADVISORS:
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is True
        assert tools[name].output_schema is not None
    observes = tools["troubleshoot_issue"].annotations
    assert observes is not None
    assert observes.open_world_hint is True


async def test_suggest_architecture_returns_a_clean_blueprint(client: Client) -> None:
    out = await call_ok(
        client, "suggest_architecture", {"workload_type": "web", "peak_rps": 400, "availability_target": 99.95}
    )
    chosen = out["candidates"][0]
    assert out["chosen"] == chosen["name"]
    assert chosen["availability"]["composite"] >= 0.9995
    assert chosen["audit"]["critical"] == chosen["audit"]["high"] == 0
    validated = await call_ok(client, "validate_blueprint", {"blueprint": out["blueprint"], "strict": True})
    assert validated["valid"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"availability_target": 99.9999}, "from 90 to 99.999"),
        ({"peak_rps": -1}, "peak_rps"),
        ({"providers": ["aws"]}, "allowed providers: docker, kubernetes, proxmox"),
        ({"workload_type": "mainframe"}, "allowed: api, cache, database, web, worker"),
    ],
)
async def test_suggest_architecture_bad_input_is_coded(client: Client, args: dict[str, Any], expected: str) -> None:
    error = await call_error(client, "suggest_architecture", args)
    assert error.startswith("[request.invalid] ")
    assert expected in error


async def test_a_low_availability_target_is_accepted_with_a_note(client: Client) -> None:
    out = await call_ok(client, "suggest_architecture", {"workload_type": "api", "availability_target": 99.0})
    assert any("accepted" in note for note in out["notes"])


async def test_migrate_a_template_and_a_compose_file(client: Client) -> None:
    text, _ = await read_text(client, "alma://templates/simple-web-app")
    out = await call_ok(client, "migrate_infrastructure", {"source": text, "target_provider": "kubernetes"})
    assert out["target_check"]["valid"]
    assert {d["disposition"] for d in out["decisions"]} == {"replatform"}
    assert out["waves"][0]["pilot"] is True
    compose = "services:\n  web:\n    image: nginx:1.27.2\n    ports: ['8080:80']\n  db:\n    image: postgres:16.4\n"
    out = await call_ok(client, "migrate_infrastructure", {"source": compose, "target_provider": "kubernetes"})
    assert out["source_format"] == "compose"
    assert [d["disposition"] for d in out["decisions"]] == ["rehost", "replatform"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"source": "- web\n- db\n", "target_provider": "kubernetes"}, "[request.invalid] source must be a blueprint"),
        ({"source": "services: 3\n", "target_provider": "docker"}, "[request.invalid] a Docker Compose file needs"),
        ({"source": {"name": "x", "resources": []}, "target_provider": "ec2"}, "allowed: simulation, docker"),
        ({"source": {"name": "x", "resources": []}, "target_provider": "docker", "strategy": "yolo"}, "auto, rehost"),
    ],
)
async def test_migrate_bad_input_is_coded(client: Client, args: dict[str, Any], expected: str) -> None:
    error = await call_error(client, "migrate_infrastructure", args)
    assert expected in error


async def test_troubleshoot_from_errors_and_a_blueprint(client: Client) -> None:
    blueprint = {
        "name": "shop",
        "resources": [
            {"name": "db", "type": "database", "provider": "docker",
             "specs": {"kind": "postgresql", "image": "postgres:16.4", "ports": [5432]}},
            {"name": "api", "type": "container", "provider": "docker", "dependencies": ["db"],
             "specs": {"image": "shop/api:1.4.2", "env": {"DATABASE_HOST": "postgres"}}},
        ],
    }  # fmt: skip
    out = await call_ok(
        client,
        "troubleshoot_issue",
        {"errors": ["could not translate host name \"postgres\" to address: Name or service not known"],
         "blueprint": blueprint},
    )  # fmt: skip
    top = out["diagnoses"][0]
    assert top["id"] == "network.dns"
    assert top["blueprint_findings"][0]["path"] == "/resources/1/specs/env/DATABASE_HOST"
    assert out["input_notice"].startswith("Excerpts quote")


async def test_troubleshoot_truncates_huge_logs_instead_of_failing(client: Client) -> None:
    logs = "noise line\n" * (MAX_LOG_BYTES // 5) + "FATAL:  sorry, too many clients already\n"
    out = await call_ok(client, "troubleshoot_issue", {"logs": logs})
    assert out["diagnoses"][0]["id"] == "db.too-many-connections"
    assert out["input"]["truncated"]


async def test_troubleshoot_needs_something_to_look_at(client: Client) -> None:
    error = await call_error(client, "troubleshoot_issue", {})
    assert error.startswith("[request.invalid] give at least one of symptom, errors, logs or deployment_id")
    missing = await call_error(client, "troubleshoot_issue", {"deployment_id": 999})
    assert missing.startswith("[deploy.not_found] ")


async def test_troubleshoot_a_failed_deployment_reads_its_live_status(client: Client, services: Services) -> None:
    blueprint = {
        "name": "shop",
        "resources": [
            {"name": "db", "type": "database", "provider": "simulation"},
            {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db"],
             "metadata": {"simulation": {"fail": "create"}}},
            {"name": "lb", "type": "load_balancer", "provider": "simulation", "dependencies": ["web"],
             "specs": {"backends": ["web"]}},
        ],
    }  # fmt: skip
    created = await call_ok(client, "ipr_create", {"title": "shop", "blueprint": blueprint})
    ipr_id = created["ipr"]["id"]
    services.iprs.review(ALICE, ipr_id, "approve", "ok")
    outcome = await call_ok(client, "ipr_deploy", {"ipr_id": ipr_id})
    assert outcome["state"] == "failed"
    out = await call_ok(client, "troubleshoot_issue", {"deployment_id": outcome["deployment_id"]})
    live = out["live"]
    assert live["scope"] == "shop"
    statuses = {s["resource"]: s["status"] for s in live["steps"]}
    assert statuses["web"] == "failed"
    assert statuses["db"] == "succeeded"
    assert [o["name"] for o in live["observed"]] == ["db"]
    assert live["missing"] == []
    assert out["root_resource"] == "web"  # the blueprint recorded with the deployment gives the graph
    assert out["diagnoses"][0]["evidence"][0]["source"] == "deployment step web (failed)"
