"""Security tools through the protocol."""

import json

import pytest
from mcp import Client

from tests.mcp_helpers import call_error, call_ok, read_text

pytestmark = pytest.mark.anyio

RISKY = {
    "name": "risky",
    "resources": [
        {
            "name": "app",
            "type": "container",
            "provider": "docker",
            "specs": {"image": "nginx:latest", "privileged": True, "public": True, "ports": [80]},
        },
    ],
}


async def test_audit_finds_planted_problems_with_paths(client: Client) -> None:
    out = await call_ok(client, "security_audit", {"blueprint": RISKY})
    assert out["counts"]["critical"] >= 1
    assert out["score"] < 50
    paths = {(f["resource"], f["path"]) for f in out["findings"]}
    assert ("app", "/resources/0/specs/privileged") in paths
    high_only = await call_ok(client, "security_audit", {"blueprint": RISKY, "severity_threshold": "high"})
    assert {f["severity"] for f in high_only["findings"]} <= {"critical", "high"}


async def test_compliance_and_its_disclaimer(client: Client) -> None:
    text, _ = await read_text(client, "alma://templates/postgres-ha")
    out = await call_ok(client, "check_compliance", {"blueprint": text, "framework": "nist-800-53"})
    assert out["framework"] == "nist-800-53"
    assert {c["status"] for c in out["controls"]} <= {"pass", "fail", "not_applicable", "manual"}
    assert "not a certification" in out["disclaimer"]
    bad = await call_error(client, "check_compliance", {"blueprint": text, "framework": "gdpr-9000"})
    assert bad.startswith("[request.invalid] ")


async def test_policies_resource_lists_the_rules(client: Client) -> None:
    text, _ = await read_text(client, "alma://policies")
    data = json.loads(text)
    assert data["count"] >= 60
