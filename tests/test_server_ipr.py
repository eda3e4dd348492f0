"""IPR tools and resources through the real protocol; the model-proposes, person-approves flow end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import INVALID_PARAMS

from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import Services
from tests.mcp_helpers import call_error, call_ok, read_text

pytestmark = pytest.mark.anyio

SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [
        {"name": "db", "type": "database", "provider": "simulation"},
        {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db"]},
    ],
}
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER}))


async def test_the_model_proposes_cannot_approve_and_deploys_what_a_person_approved(
    client: Client, services: Services
) -> None:
    created = await call_ok(client, "ipr_create", {"title": "Add the shop", "blueprint": SHOP})
    ipr_id = created["ipr"]["id"]
    assert created["ipr"]["state"] == "open"
    assert created["ipr"]["proposer"] == "mcp:local"
    assert [c["name"] for c in created["revision"]["checks"]] == ["validation", "plan", "security", "cost"]
    refused = await call_error(client, "ipr_review", {"ipr_id": ipr_id, "action": "approve"})
    assert refused == (
        "[auth.forbidden] mcp:local needs the 'approver' role to approve an IPR; it has: deployer, proposer, viewer"
    )
    early = await call_error(client, "ipr_deploy", {"ipr_id": ipr_id})
    assert early.startswith("[ipr.invalid_transition] cannot deploy an IPR that is 'open'")
    services.iprs.review(ALICE, ipr_id, "approve", "ship it")  # the person, outside the session

    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = await client.call_tool("ipr_deploy", {"ipr_id": ipr_id}, progress_callback=on_progress)
    assert not result.is_error
    outcome = result.structured_content
    assert outcome is not None
    assert outcome["state"] == "succeeded"
    assert outcome["ipr_state"] == "deployed"
    assert [p[:2] for p in seen] == [(1, 2), (2, 2)]
    status = await call_ok(client, "deployment_status", {"ipr_id": ipr_id})
    assert status["state"] == "succeeded"
    assert [s["resource"] for s in status["steps"]] == ["db", "web"]
    text, mime = await read_text(client, f"alma://iprs/{ipr_id}")
    assert mime == "application/json"
    assert json.loads(text)["ipr"]["state"] == "deployed"
    dep_text, _ = await read_text(client, f"alma://deployments/{outcome['deployment_id']}")
    assert json.loads(dep_text)["kind"] == "deploy"
    back = await call_ok(client, "ipr_rollback", {"ipr_id": ipr_id})
    assert back["ipr_state"] == "rolled_back"
    closed = await call_ok(client, "ipr_close", {"ipr_id": ipr_id, "comment": "done"})
    assert closed["ipr"]["state"] == "closed"
    listed = await call_ok(client, "ipr_list", {"state": "closed"})
    assert [r["id"] for r in listed["iprs"]] == [ipr_id]


async def test_ipr_tool_errors_are_coded(client: Client) -> None:
    assert await call_error(client, "ipr_get", {"ipr_id": 42}) == "[ipr.not_found] no IPR 42; list them with ipr_list"
    assert await call_error(client, "deployment_status", {}) == (
        "[request.invalid] give exactly one of deployment_id or ipr_id"
    )
    parse = await call_error(client, "ipr_create", {"title": "x", "blueprint": "[oops"})
    assert parse.startswith("[blueprint.parse_error] not valid YAML or JSON: ")
    assert parse.endswith("at line 2, column 1")
    assert await call_error(client, "ipr_list", {"cursor": "abc"}) == (
        "[request.invalid] cursor 'abc' is not one this server issued; pass next_cursor back as is"
    )


@pytest.mark.parametrize("uri", ["alma://iprs/7", "alma://iprs/x", "alma://deployments/0", "alma://iprs/..%2F1"])
async def test_unknown_ipr_and_deployment_resources_are_not_found(client: Client, uri: str) -> None:
    with pytest.raises(MCPError) as info:
        await client.read_resource(uri)
    assert info.value.error.code == INVALID_PARAMS


async def test_from_a_template_and_revise(client: Client) -> None:
    created = await call_ok(
        client,
        "ipr_create",
        {"title": "cache", "template": "redis-cluster", "customization": {"name": "cache", "scale_factor": 0.5}},
    )
    ipr_id = created["ipr"]["id"]
    revised = await call_ok(client, "ipr_revise", {"ipr_id": ipr_id, "blueprint": SHOP})
    assert revised["ipr"]["revision"] == 2
    assert revised["ipr"]["blueprint_name"] == "shop"
    dry = await call_error(client, "ipr_deploy", {"ipr_id": ipr_id, "dry_run": True})
    assert dry.startswith("[ipr.invalid_transition] ")


@pytest.mark.slow
async def test_model_over_stdio_proposes_person_approves_with_the_cli_model_deploys_and_rolls_back(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
    env.update({"ALMA_DB_PATH": str(tmp_path / "alma.db"), "ALMA_SIM_TIME_SCALE": "0"})
    params = StdioServerParameters(command=sys.executable, args=["-m", "alma_mcp", "serve"], env=env)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alma_mcp", "ipr", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async with Client(params, mode="legacy") as model:
        created = await call_ok(model, "ipr_create", {"title": "Add the shop", "blueprint": SHOP})
        ipr_id = str(created["ipr"]["id"])
        shown = cli("show", ipr_id)
        assert shown.returncode == 0, shown.stderr
        assert "[ok  ] validation: valid: 2 resources, 1 dependencies" in shown.stdout
        assert "Plan: 2 to create, 0 to update, 0 to destroy." in shown.stdout
        approved = cli("--as", "alice", "approve", ipr_id, "-m", "looks good")
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.strip() == f"IPR #{ipr_id} is now approved (1/1 approvals)"
        deployed = await call_ok(model, "ipr_deploy", {"ipr_id": int(ipr_id)})
        assert deployed["ipr_state"] == "deployed"
        rolled = await call_ok(model, "ipr_rollback", {"ipr_id": int(ipr_id)})
        assert rolled["ipr_state"] == "rolled_back"
    history = cli("show", ipr_id).stdout
    actions = [line.split()[2] for line in history.split("History:")[1].strip().splitlines()]
    assert actions == ["open", "approve", "deploy", "succeed", "rollback", "succeed"]
    assert "user:alice" in history
    self_approval = cli("--as", "bob", "approve", ipr_id)
    assert self_approval.returncode == 1
    assert "[ipr.invalid_transition]" in self_approval.stderr


async def test_listeners_are_notified_when_an_ipr_changes(services: Services) -> None:
    from alma_mcp.server.app import build_server

    async with Client(build_server(services), mode="auto") as client:
        created = await call_ok(client, "ipr_create", {"title": "watch me", "blueprint": SHOP})
        uri = f"alma://iprs/{created['ipr']['id']}"
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            await call_ok(client, "ipr_close", {"ipr_id": created["ipr"]["id"]})
            with anyio.fail_after(5):
                event = await subscription.__anext__()
        assert getattr(event, "uri", None) == uri
