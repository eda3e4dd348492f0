"""The auth middleware in front of the real side app: keys in headers only, 401s in the one error shape."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alma_mcp import __version__
from alma_mcp.events import DomainEvent
from alma_mcp.keys import KeyStore
from alma_mcp.server.access import install_access_control
from alma_mcp.server.app import build_server
from alma_mcp.services import Services
from alma_mcp.web.app import create_app
from alma_mcp.web.auth import AuthMiddleware

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:8000"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
ACCEPT = {"accept": "application/json, text/event-stream"}
MISSING = (
    "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
    "(create one with alma-mcp keys create)"
)
INVALID = "the API key is unknown, revoked or mistyped; ask an admin for a valid key"


def protected_app(services: Services, *, metrics_public: bool = False) -> ASGIApp:
    """The side app as it will be wired: access control on the MCP server, auth in front of the app."""
    server = build_server(services)
    install_access_control(server, services)
    return AuthMiddleware(
        create_app(services, server), KeyStore(services.store), services.bus, metrics_public=metrics_public
    )


@asynccontextmanager
async def serving(app: ASGIApp, headers: dict[str, str] | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    """Run the inner Starlette app's lifespan (ASGITransport runs none) and give an in-process client."""
    inner = app.app if isinstance(app, AuthMiddleware) else app
    assert isinstance(inner, Starlette)
    async with (
        inner.router.lifespan_context(inner),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE, headers=headers) as h,
    ):
        yield h


def unauthenticated(message: str) -> dict[str, Any]:
    return {"ok": False, "status": 401, "error": {"code": "auth.unauthenticated", "message": message, "data": {}}}


@pytest.fixture
def events(services: Services) -> list[DomainEvent]:
    seen: list[DomainEvent] = []
    services.bus.subscribe(seen.append)
    return seen


@pytest.fixture
def keys(services: Services) -> KeyStore:
    return KeyStore(services.store)


async def test_a_request_without_a_key_gets_401_with_www_authenticate(
    services: Services, events: list[DomainEvent]
) -> None:
    async with serving(protected_app(services)) as h:
        response = await h.post("/mcp", json=INITIALIZE, headers=ACCEPT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == unauthenticated(MISSING)
    assert [(e.kind, e.data) for e in events] == [
        ("auth.failure", {"reason": "missing_key", "path": "/mcp", "client": "127.0.0.1"})
    ]


async def test_a_non_bearer_authorization_header_is_no_key(services: Services) -> None:
    async with serving(protected_app(services)) as h:
        response = await h.get("/sse", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.json() == unauthenticated(MISSING)


@pytest.mark.parametrize("kind", ["malformed", "unknown id", "wrong secret"])
async def test_a_bad_key_gets_401_invalid_token_and_the_event_never_holds_it(
    services: Services, keys: KeyStore, events: list[DomainEvent], kind: str
) -> None:
    info, real = keys.create("ci", ["viewer"], "test")
    bad = {
        "malformed": "not-a-key",
        "unknown id": "alma_0123456789ab_" + real.split("_", 2)[2],
        "wrong secret": f"alma_{info.id}_" + "A" * 43,
    }[kind]
    async with serving(protected_app(services)) as h:
        response = await h.post("/mcp", json=INITIALIZE, headers={**ACCEPT, "authorization": f"Bearer {bad}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json() == unauthenticated(INVALID)
    assert [(e.kind, e.data) for e in events] == [
        ("auth.failure", {"reason": "invalid_key", "path": "/mcp", "client": "127.0.0.1"})
    ]
    assert bad not in repr(events)


async def test_a_revoked_key_gets_401(services: Services, keys: KeyStore) -> None:
    _, raw = keys.create("old", ["viewer"], "test")
    keys.revoke("old")
    async with serving(protected_app(services), headers={"x-api-key": raw}) as h:
        response = await h.post("/mcp", json=INITIALIZE, headers=ACCEPT)
    assert response.status_code == 401
    assert response.json() == unauthenticated(INVALID)


@pytest.mark.parametrize(
    ("path", "parameters"),
    [("/healthz?token=abc", ["token"]), ("/mcp?api_key=x&key=y&page=2", ["api_key", "key"])],
)
async def test_a_key_in_the_query_string_gets_400_even_with_a_valid_header(
    services: Services, keys: KeyStore, events: list[DomainEvent], path: str, parameters: list[str]
) -> None:
    _, raw = keys.create("ci", ["viewer"], "test")
    async with serving(protected_app(services), headers={"x-api-key": raw}) as h:
        response = await h.get(path)
    listed = ", ".join(repr(p) for p in parameters)
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "status": 400,
        "error": {
            "code": "request.invalid",
            "message": f"API keys belong in headers, never in the URL (query parameter {listed}): send it as "
            "'Authorization: Bearer <key>' or 'X-API-Key: <key>'; if a real key was sent this way, revoke it "
            "(alma-mcp keys revoke ID)",
            "data": {"parameters": parameters},
        },
    }
    assert [e.data["reason"] for e in events] == ["key_in_query"]


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_bearer_and_x_api_key_both_authenticate_mcp_calls(
    services: Services, keys: KeyStore, header: str, mode: str
) -> None:
    _, raw = keys.create("reader", ["viewer"], "test")
    value = f"Bearer {raw}" if header == "authorization" else raw
    async with (
        serving(protected_app(services), headers={header: value}) as h,
        Client(streamable_http_client(f"{BASE}/mcp", http_client=h), mode=mode) as c,
    ):
        result = await c.call_tool("list_templates", {"category": "database"})
    assert not result.is_error
    assert result.structured_content is not None
    assert [t["name"] for t in result.structured_content["templates"]] == ["postgres-ha", "redis-cluster"]
    assert keys.get("reader").last_used_at is not None


async def test_healthz_needs_no_key(services: Services, events: list[DomainEvent]) -> None:
    async with serving(protected_app(services)) as h:
        response = await h.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}
    assert events == []


async def echo_identity(request: Request) -> JSONResponse:
    principal = getattr(request.state, "principal", None)
    return JSONResponse(
        {
            "principal": None if principal is None else principal.id,
            "rate_limit_rpm": getattr(request.state, "rate_limit_rpm", None),
        }
    )


def downstream() -> Starlette:
    """A stand-in for the routes: /metrics and /api/v1/x echo what the middleware attached."""
    return Starlette(routes=[Route("/metrics", echo_identity), Route("/api/v1/x", echo_identity)])


async def test_metrics_needs_a_key_with_the_viewer_role(
    services: Services, keys: KeyStore, events: list[DomainEvent]
) -> None:
    _, viewer = keys.create("scraper", ["viewer"], "test", rate_limit_rpm=600)
    _, deployer = keys.create("deploy-bot", ["deployer"], "test")
    app = AuthMiddleware(downstream(), keys, services.bus, metrics_public=False)
    async with serving(app) as h:
        anonymous = await h.get("/metrics")
        refused = await h.get("/metrics", headers={"authorization": f"Bearer {deployer}"})
        allowed = await h.get("/metrics", headers={"authorization": f"Bearer {viewer}"})
        other_route = await h.get("/api/v1/x", headers={"authorization": f"Bearer {deployer}"})
    assert anonymous.status_code == 401
    assert refused.status_code == 403
    assert refused.json() == {
        "ok": False,
        "status": 403,
        "error": {
            "code": "auth.forbidden",
            "message": "key:deploy-bot needs the 'viewer' role to read metrics; it has: deployer",
            "data": {"principal": "key:deploy-bot", "needed": "viewer", "roles": ["deployer"]},
        },
    }
    assert allowed.status_code == 200
    assert allowed.json() == {"principal": "key:scraper", "rate_limit_rpm": 600}
    assert other_route.json() == {"principal": "key:deploy-bot", "rate_limit_rpm": None}
    assert [e.data["reason"] for e in events] == ["missing_key", "forbidden"]


async def test_public_metrics_need_no_key_but_other_routes_still_do(services: Services, keys: KeyStore) -> None:
    app = AuthMiddleware(downstream(), keys, services.bus, metrics_public=True)
    async with serving(app) as h:
        metrics = await h.get("/metrics")
        other_route = await h.get("/api/v1/x")
    assert metrics.status_code == 200
    assert metrics.json() == {"principal": None, "rate_limit_rpm": None}
    assert other_route.status_code == 401


async def test_exempt_paths_are_configurable(services: Services, keys: KeyStore) -> None:
    app = AuthMiddleware(downstream(), keys, services.bus, metrics_public=False, exempt=("/api/v1/x",))
    async with serving(app) as h:
        response = await h.get("/api/v1/x")
    assert response.status_code == 200
    assert response.json() == {"principal": None, "rate_limit_rpm": None}


async def test_lifespan_passes_through_and_websockets_are_closed(services: Services, keys: KeyStore) -> None:
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("not read")

    middleware = AuthMiddleware(app, keys, services.bus, metrics_public=False)
    await middleware({"type": "lifespan"}, receive, send)
    await middleware({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    assert reached == ["lifespan"]
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_a_revoked_key_stops_working_once_the_short_cache_expires(
    services: Services, keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import alma_mcp.web.auth as auth_module

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    _, raw = keys.create("soon-gone", ["viewer"], "test")
    middleware = AuthMiddleware(create_app(services, build_server(services)), keys, services.bus, metrics_public=False)
    assert (await middleware._authenticate(raw)) is not None
    keys.revoke("soon-gone")
    clock[0] += auth_module.CACHE_SECONDS - 0.1
    assert (await middleware._authenticate(raw)) is not None  # still inside the cache window
    clock[0] += 0.2
    assert (await middleware._authenticate(raw)) is None
