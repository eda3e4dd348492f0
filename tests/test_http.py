"""The HTTP side app in-process (no port): Streamable HTTP in both eras, health, Host checks."""

from collections.abc import AsyncIterator

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette

from alma_mcp import __version__
from alma_mcp.server.app import build_server
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.web.app import create_app, transport_security

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"


@pytest.fixture
async def app(services: Services) -> AsyncIterator[Starlette]:
    application = create_app(services, build_server(services))
    async with application.router.lifespan_context(application):
        yield application


def http(app: Starlette, base: str = BASE) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_streamable_http_serves_both_eras(app: Starlette, mode: str) -> None:
    async with http(app) as h, Client(streamable_http_client(f"{BASE}/mcp", http_client=h), mode=mode) as c:
        assert c.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
        result = await c.call_tool("list_templates", {"category": "database"})
        assert result.structured_content is not None
        assert [t["name"] for t in result.structured_content["templates"]] == ["postgres-ha", "redis-cluster"]
        error = await c.call_tool("customize_template", {"template": "nope"})
        assert error.is_error
        resource = await c.read_resource("alma://templates/redis-cluster")
        assert "redis-sentinel" in resource.contents[0].text  # type: ignore[union-attr]


async def test_healthz_answers_without_mcp(app: Starlette) -> None:
    async with http(app) as h:
        response = await h.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


async def test_a_foreign_host_header_is_refused(app: Starlette) -> None:
    async with http(app, "http://evil.example.com:8000") as h:
        response = await h.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 421


async def test_a_foreign_origin_is_refused(app: Starlette) -> None:
    async with http(app) as h:
        response = await h.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"accept": "application/json, text/event-stream", "origin": "http://evil.example.com"},
        )
    assert response.status_code == 403


def test_configured_hosts_and_origins_are_added_to_loopback() -> None:
    settings = Settings(
        db_path=":memory:", allowed_hosts=["mcp.example.com"], allowed_origins=["https://app.example.com"]
    )
    security = transport_security(settings)
    assert security.enable_dns_rebinding_protection is True
    assert security.allowed_hosts == [
        "127.0.0.1:*",
        "localhost:*",
        "[::1]:*",
        "mcp.example.com",
        "mcp.example.com:*",
    ]
    assert "https://app.example.com" in security.allowed_origins
    assert "http://127.0.0.1:*" in security.allowed_origins
