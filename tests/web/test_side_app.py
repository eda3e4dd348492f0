"""The side app as `alma-mcp serve --transport http` builds it: metrics -> auth -> rate limit -> routes."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from alma_mcp.keys import KeyStore
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings
from alma_mcp.web.app import SideApp, create_side_app
from tests.mcp_helpers import ALL_TOOLS, READ_ONLY_TOOLS

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"
VIEWER_TOOLS = sorted(READ_ONLY_TOOLS)


@asynccontextmanager
async def serving(side: SideApp, key: str | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with (
        side.app.router.lifespan_context(side.app),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=side.app), base_url=BASE, headers=headers) as h,
    ):
        yield h


def mcp_client(h: httpx2.AsyncClient, mode: str = "auto") -> Client:
    return Client(streamable_http_client(f"{BASE}/mcp", http_client=h), mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_keys_decide_the_tools_a_caller_sees(services: Services, mode: str) -> None:
    keys = KeyStore(services.store)
    _, viewer = keys.create("reader", ["viewer"], "test")
    _, admin = keys.create("root", ["admin"], "test")
    side = create_side_app(services, authenticate=True)
    async with serving(side, viewer) as h, mcp_client(h, mode) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == VIEWER_TOOLS
        refused = await client.call_tool("ipr_create", {"title": "x", "template": "simple-web-app"})
        assert refused.is_error
        assert refused.content[0].text == (  # type: ignore[union-attr]
            "[auth.forbidden] key:reader needs the 'proposer' role to call ipr_create; it has: viewer"
        )
    async with serving(create_side_app(services, authenticate=True), admin) as h, mcp_client(h, mode) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ALL_TOOLS


async def test_no_key_is_401_and_health_stays_open(services: Services) -> None:
    KeyStore(services.store).create("reader", ["viewer"], "test")
    side = create_side_app(services, authenticate=True)
    async with serving(side) as h:
        assert (await h.get("/healthz")).status_code == 200
        denied = await h.get("/metrics")
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "auth.unauthenticated"


async def test_a_proposer_key_cannot_approve_its_own_ipr_over_http(services: Services) -> None:
    keys = KeyStore(services.store)
    _, both = keys.create("eager", ["viewer", "proposer", "approver"], "test")
    side = create_side_app(services, authenticate=True)
    async with serving(side, both) as h, mcp_client(h) as client:
        created = await client.call_tool("ipr_create", {"title": "mine", "template": "simple-web-app"})
        assert created.structured_content is not None
        ipr_id = created.structured_content["ipr"]["id"]
        assert created.structured_content["ipr"]["proposer"] == "key:eager"
        result = await client.call_tool("ipr_review", {"ipr_id": ipr_id, "action": "approve"})
    assert result.is_error
    assert result.content[0].text.startswith(  # type: ignore[union-attr]
        f"[auth.forbidden] key:eager cannot approve IPR {ipr_id}: it proposed or wrote this revision"
    )


async def test_metrics_count_what_happened(services: Services) -> None:
    _, viewer = KeyStore(services.store).create("reader", ["viewer"], "test")
    side = create_side_app(services, authenticate=True)
    async with serving(side, viewer) as h:
        async with mcp_client(h) as client:
            await client.call_tool("list_templates", {})
            await client.call_tool("customize_template", {"template": "nope"})
        scrape = (await h.get("/metrics")).text
    assert 'alma_mcp_tool_calls_total{outcome="ok",tool="list_templates"} 1.0' in scrape
    assert 'alma_mcp_tool_calls_total{outcome="error",tool="customize_template"} 1.0' in scrape
    assert 'alma_http_requests_total{method="POST",route="/mcp",status="200"}' in scrape
    assert "alma_build_info" in scrape
    assert viewer not in scrape


async def test_http_rate_limit_gives_429_with_retry_after() -> None:
    settings = Settings(db_path=":memory:", rate_limit_burst=2, rate_limit_global_rpm=60)
    with open_services(settings, "test") as services:
        side = create_side_app(services)
        async with serving(side) as h:
            statuses = [(await h.get("/unknown-route")).status_code for _ in range(3)]
            last: Any = await h.get("/unknown-route")
    assert statuses[:2] == [404, 404]
    assert statuses[2] == 429
    assert last.status_code == 429
    assert last.headers["retry-after"].isdigit()
    assert last.json()["error"]["code"] == "rate_limit.exceeded"
    assert last.headers["x-ratelimit-limit"] == "60"


async def test_readyz_reports_component_status_without_a_key(services: Services) -> None:
    KeyStore(services.store).create("reader", ["viewer"], "test")
    async with serving(create_side_app(services, authenticate=True)) as h:
        response = await h.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "database": "healthy", "engines": {"simulation": "healthy"}}


async def test_cors_is_off_unless_origins_are_configured() -> None:
    for origins, expected in (([], None), (["https://app.example.com"], "https://app.example.com")):
        settings = Settings(db_path=":memory:", cors_origins=origins)
        with open_services(settings, "test") as services:
            async with serving(create_side_app(services)) as h:
                response = await h.options(
                    "/api/v1/templates",
                    headers={"origin": "https://app.example.com", "access-control-request-method": "GET"},
                )
        assert response.headers.get("access-control-allow-origin") == expected
