"""Tool-call rate limits at the MCP level: in memory (as over stdio) in both eras, and behind the HTTP limiter."""

from collections.abc import AsyncIterator

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.types import ASGIApp, Receive, Scope, Send

from alma_mcp.server.app import build_server
from alma_mcp.server.limits import GENERATION_TOOLS, install_tool_limits, tool_route_class
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings
from alma_mcp.web.app import create_app
from alma_mcp.web.ratelimit import RateLimiter, RateLimitMiddleware
from tests.mcp_helpers import text_of

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"
MODES = ["auto", "legacy"]


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limited_client(services: Services, limiter: RateLimiter, mode: str) -> Client:
    server = build_server(services)
    assert install_tool_limits(server, services, limiter) is not None
    return Client(server, mode=mode, raise_exceptions=mode != "legacy")


def test_generation_tools_have_their_own_class() -> None:
    assert {"create_blueprint", "customize_template"} == GENERATION_TOOLS
    assert tool_route_class("create_blueprint") == "generation"
    assert tool_route_class("validate_blueprint") == "tools"


@pytest.mark.parametrize("mode", MODES)
async def test_the_eleventh_tool_call_is_a_rate_limit_tool_error(services: Services, mode: str) -> None:
    clock = Clock()
    limiter = RateLimiter.from_settings(services.settings, clock=clock)
    async with limited_client(services, limiter, mode) as client:
        for _ in range(10):
            assert not (await client.call_tool("list_templates", {})).is_error
        refused = await client.call_tool("list_templates", {})
        assert refused.is_error
        assert text_of(refused) == (
            "[rate_limit.exceeded] rate limit exceeded: 40 requests per minute for tools routes; retry in 2 s"
        )
        assert refused.structured_content is None
        clock.advance(1.5)  # exactly one token at 40 rpm
        assert not (await client.call_tool("list_templates", {})).is_error
        assert (await client.call_tool("list_templates", {})).is_error
        # Listing is not a tool call: never limited.
        assert len((await client.list_tools()).tools) > 10
    stats = limiter.stats()
    assert stats["top_clients"] == [{"client": "mcp:local", "requests": 13, "blocked": 2}]
    assert stats["classes"]["tools"]["rejected"] == 2


@pytest.mark.parametrize("mode", MODES)
async def test_generation_tools_are_limited_at_thirty_per_minute(services: Services, mode: str) -> None:
    clock = Clock()
    rejected: list[str] = []
    limiter = RateLimiter.from_settings(services.settings, clock=clock, on_reject=rejected.append)
    async with limited_client(services, limiter, mode) as client:
        for n in range(10):
            tool = "create_blueprint" if n % 2 else "customize_template"
            result = await client.call_tool(tool, {"template": "nope"} if tool == "customize_template" else {})
            assert not text_of(result).startswith("[rate_limit.exceeded]")
        refused = await client.call_tool("create_blueprint", {"description": "a web app with a database"})
        assert text_of(refused) == (
            "[rate_limit.exceeded] rate limit exceeded: 30 requests per minute for generation routes; retry in 2 s"
        )
        assert not (await client.call_tool("list_templates", {})).is_error  # the tools bucket is untouched
    assert rejected == ["generation"]


async def test_disabled_rate_limits_install_nothing() -> None:
    with open_services(Settings(db_path=":memory:", rate_limit_enabled=False), "test") as services:
        server = build_server(services)
        before = list(server.middleware)
        limiter = RateLimiter.from_settings(services.settings, clock=Clock())
        assert install_tool_limits(server, services, limiter) is None
        assert server.middleware == before
        async with Client(server, mode="auto", raise_exceptions=True) as client:
            for _ in range(15):
                assert not (await client.call_tool("list_templates", {})).is_error


def test_a_refusal_has_the_wire_shape_of_each_era(services: Services) -> None:
    server = build_server(services)
    middleware = install_tool_limits(server, services, RateLimiter.from_settings(services.settings))
    assert middleware is not None
    modern = middleware.refusal("2026-07-28", "[rate_limit.exceeded] x")
    assert modern["resultType"] == "complete"
    assert modern["isError"] is True
    assert modern["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "alma-mcp"
    legacy = middleware.refusal("2025-11-25", "[rate_limit.exceeded] x")
    assert legacy == {"content": [{"type": "text", "text": "[rate_limit.exceeded] x"}], "isError": True}


# -- behind the HTTP limiter ---------------------------------------------------------------------------


class CountPosts:
    """Counts POST /mcp requests reaching the rate limiter."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.posts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/mcp":
            self.posts += 1
        await self.app(scope, receive, send)


@pytest.fixture
async def http_stack(services: Services) -> AsyncIterator[tuple[CountPosts, RateLimiter]]:
    limiter = RateLimiter({"global": 600, "streaming": 600, "generation": 600, "tools": 600, "crud": 600}, burst=1000)
    server = build_server(services)
    install_tool_limits(server, services, limiter)
    app = create_app(services, server)
    async with app.router.lifespan_context(app):
        yield CountPosts(RateLimitMiddleware(app, limiter)), limiter


@pytest.mark.parametrize("mode", MODES)
async def test_over_http_a_request_is_charged_once_and_generation_on_top(
    http_stack: tuple[CountPosts, RateLimiter], mode: str
) -> None:
    counted, limiter = http_stack
    transport = httpx2.ASGITransport(app=counted)
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE) as h,
        Client(streamable_http_client(f"{BASE}/mcp", http_client=h), mode=mode) as client,
    ):
        for _ in range(3):
            assert not (await client.call_tool("list_templates", {})).is_error
        for _ in range(2):
            await client.call_tool("create_blueprint", {"description": "a web app with a database"})
    classes = limiter.stats()["classes"]
    if mode == "legacy":
        # No body parsing at the HTTP layer: every POST is "tools"; the MCP layer adds only "generation".
        assert classes["tools"]["total"] == counted.posts
        assert classes["generation"]["total"] == 2
    else:
        # 2026 requests name their method and tool in headers: each call is charged once, to its class.
        assert classes["tools"]["total"] == 3
        assert classes["generation"]["total"] == 2
        assert classes["global"]["total"] == counted.posts - 5
    assert {c["client"] for c in limiter.stats()["top_clients"]} == {"127.0.0.1"}
