"""Role-based tool access over HTTP: each key sees and calls only its tools; the local session is unfiltered."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.types import ASGIApp

from alma_mcp.ipr.principals import Role
from alma_mcp.keys import KeyStore
from alma_mcp.server.access import TOOL_ROLES, install_access_control, required_role
from alma_mcp.server.app import build_server
from alma_mcp.server.toolkit import ERROR_META_KEY
from alma_mcp.services import Services
from alma_mcp.web.app import create_app
from tests.mcp_helpers import ALL_TOOLS, READ_ONLY_TOOLS, call_error, call_ok
from tests.web.test_auth import BASE, protected_app, serving

pytestmark = pytest.mark.anyio

SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [
        {"name": "db", "type": "database", "provider": "simulation"},
        {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db"]},
    ],
}


@asynccontextmanager
async def connect(app: ASGIApp, key: str | None, mode: str = "auto") -> AsyncIterator[Client]:
    headers = None if key is None else {"authorization": f"Bearer {key}"}
    async with (
        serving(app, headers=headers) as h,
        Client(streamable_http_client(f"{BASE}/mcp", http_client=h), mode=mode) as client,
    ):
        yield client


def key_with(services: Services, name: str, *roles: str) -> str:
    return KeyStore(services.store).create(name, roles, "test")[1]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("viewer",), READ_ONLY_TOOLS),
        (("proposer",), {"ipr_create", "ipr_revise", "ipr_close", "council_review"}),
        (("approver",), {"ipr_review"}),
        (("deployer",), {"ipr_deploy", "ipr_rollback"}),
        (("viewer", "approver"), {*READ_ONLY_TOOLS, "ipr_review"}),
        (("admin",), set(ALL_TOOLS)),
    ],
)
async def test_tools_list_over_http_shows_exactly_the_tools_a_key_may_call(
    services: Services, mode: str, roles: tuple[str, ...], expected: set[str]
) -> None:
    key = key_with(services, "k", *roles)
    async with connect(protected_app(services), key, mode) as client:
        listed = await client.list_tools()
    assert sorted(t.name for t in listed.tools) == sorted(expected)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_calling_a_tool_the_key_lacks_the_role_for_is_refused_with_the_coded_text(
    services: Services, mode: str
) -> None:
    key = key_with(services, "reader", "viewer")
    async with connect(protected_app(services), key, mode) as client:
        result = await client.call_tool("ipr_create", {"title": "sneaky", "blueprint": SHOP})
        unknown = await call_error(client, "no_such_tool", {})
    assert result.is_error
    assert result.content[0].type == "text"
    assert result.content[0].text == (
        "[auth.forbidden] key:reader needs the 'proposer' role to call ipr_create; it has: viewer"
    )
    assert result.meta is not None
    assert result.meta[ERROR_META_KEY]["code"] == "auth.forbidden"
    assert unknown == "[auth.forbidden] key:reader needs the 'admin' role to call no_such_tool; it has: viewer"
    assert services.store.db.execute("SELECT count(*) FROM iprs").fetchone()[0] == 0


async def test_a_proposer_key_cannot_approve_its_own_ipr_over_http(services: Services) -> None:
    alice = key_with(services, "alice", "viewer", "proposer", "approver")
    bob = key_with(services, "bob", "viewer", "approver")
    app = protected_app(services)
    async with (
        serving(app, headers={"authorization": f"Bearer {alice}"}) as alice_http,
        Client(streamable_http_client(f"{BASE}/mcp", http_client=alice_http)) as as_alice,
    ):
        created = await call_ok(as_alice, "ipr_create", {"title": "Add the shop", "blueprint": SHOP})
        ipr_id = created["ipr"]["id"]
        assert created["ipr"]["proposer"] == "key:alice"
        refused = await call_error(as_alice, "ipr_review", {"ipr_id": ipr_id, "action": "approve"})
        assert refused == (
            f"[auth.forbidden] key:alice cannot approve IPR {ipr_id}: it proposed or wrote this revision "
            "(separation of duties: another person must approve)"
        )
        # The same running app, another key: the approval comes from a different principal.
        async with (
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app), base_url=BASE, headers={"x-api-key": bob}
            ) as bob_http,
            Client(streamable_http_client(f"{BASE}/mcp", http_client=bob_http)) as as_bob,
        ):
            approved = await call_ok(as_bob, "ipr_review", {"ipr_id": ipr_id, "action": "approve", "comment": "ok"})
    assert approved["ipr"]["state"] == "approved"
    assert approved["approvals"] == ["key:bob"]


async def test_the_local_session_sees_every_tool_and_the_domain_refuses_its_review(services: Services) -> None:
    server = build_server(services)
    install_access_control(server, services)
    async with Client(server, raise_exceptions=True) as client:
        listed = await client.list_tools()
        created = await call_ok(client, "ipr_create", {"title": "Add the shop", "blueprint": SHOP})
        refused = await call_error(client, "ipr_review", {"ipr_id": created["ipr"]["id"], "action": "approve"})
    assert sorted(t.name for t in listed.tools) == ALL_TOOLS
    assert refused == (
        "[auth.forbidden] mcp:local needs the 'approver' role to approve an IPR; it has: deployer, proposer, viewer"
    )


async def test_http_without_the_auth_middleware_is_the_unfiltered_local_session(services: Services) -> None:
    server = build_server(services)
    install_access_control(server, services)
    async with connect(create_app(services, server), None) as client:
        listed = await client.list_tools()
    assert sorted(t.name for t in listed.tools) == ALL_TOOLS


async def test_every_tool_the_server_offers_has_a_role_in_the_table(services: Services) -> None:
    async with Client(build_server(services)) as client:
        offered = {t.name for t in (await client.list_tools()).tools}
    assert offered == set(TOOL_ROLES)


def test_a_tool_missing_from_the_table_needs_admin() -> None:
    assert required_role("a_tool_nobody_listed") is Role.ADMIN
    assert required_role("ipr_review") is Role.APPROVER
