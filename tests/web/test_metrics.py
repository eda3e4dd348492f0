"""Metrics: a per-app registry, bounded labels, domain events, tool calls, and ops files that query only what exists."""

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alma_mcp import __version__
from alma_mcp.events import EventBus
from alma_mcp.server.app import build_server
from alma_mcp.server.limits import install_tool_limits
from alma_mcp.services import Services
from alma_mcp.web.app import create_app
from alma_mcp.web.metrics import (
    MAX_LABEL_VALUES,
    Metrics,
    MetricsMiddleware,
    ToolMetricsMiddleware,
    install_tool_metrics,
    metrics_endpoint,
)
from alma_mcp.web.ratelimit import RateLimiter, RateLimitMiddleware
from alma_mcp.web.responses import error_response

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8000"
SECRET_ID = "987654321"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DenyMarked:
    """A stand-in auth middleware: ``X-Deny`` is refused with a 401 before any routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(k == b"x-deny" for k, _ in scope["headers"]):
            await error_response(401, "auth.unauthenticated", "no")(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def get_ipr(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["ipr_id"]})


async def list_iprs(_: Request) -> JSONResponse:
    return JSONResponse([])


async def boom(_: Request) -> JSONResponse:
    raise RuntimeError("boom")


def small_app(metrics: Metrics, limiter: RateLimiter) -> Starlette:
    """Wired as create_app will be: metrics -> auth -> rate limit -> routes."""
    routes = [
        Route("/healthz", list_iprs),
        Route("/metrics", metrics_endpoint(metrics)),
        Mount(
            "/api/v1",
            routes=[
                Route("/iprs", list_iprs, methods=["GET"]),
                Route("/iprs/{ipr_id}", get_ipr, methods=["GET"]),
                Route("/boom", boom),
            ],
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(DenyMarked),
            Middleware(RateLimitMiddleware, limiter=limiter),
        ],
    )


def http(app: ASGIApp) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def limiter(metrics: Metrics) -> RateLimiter:
    limits = {"global": 60, "streaming": 20, "generation": 30, "tools": 40, "crud": 100}
    return RateLimiter(limits, burst=10, clock=Clock(), on_reject=metrics.record_rate_limit_rejection)


# -- HTTP ---------------------------------------------------------------------------------------------


async def test_requests_are_counted_by_route_template_never_by_raw_path(metrics: Metrics) -> None:
    generous = RateLimiter(dict.fromkeys(("global", "streaming", "generation", "tools", "crud"), 6000), burst=1000)
    async with http(small_app(metrics, generous)) as h:
        assert (await h.get(f"/api/v1/iprs/{SECRET_ID}")).status_code == 200
        assert (await h.get("/api/v1/iprs")).status_code == 200
        assert (await h.post("/api/v1/iprs")).status_code == 405
        for n in range(100):
            assert (await h.get(f"/no/such/{n}/path")).status_code == 404
    route = "/api/v1/iprs/{ipr_id}"
    assert value(metrics, "alma_http_requests_total", method="GET", route=route, status="200") == 1
    assert value(metrics, "alma_http_requests_total", method="GET", route="/api/v1/iprs", status="200") == 1
    assert value(metrics, "alma_http_requests_total", method="POST", route="/api/v1/iprs", status="405") == 1
    assert value(metrics, "alma_http_requests_total", method="GET", route="other", status="404") == 100
    assert value(metrics, "alma_http_request_duration_seconds_count", method="GET", route=route) == 1
    scrape = metrics.exposition().decode()
    assert SECRET_ID not in scrape
    assert "/no/such" not in scrape
    routes = set(re.findall(r'route="([^"]*)"', scrape))
    assert routes == {"/api/v1/iprs/{ipr_id}", "/api/v1/iprs", "other"}


async def test_refusals_before_routing_keep_their_route_template(metrics: Metrics, limiter: RateLimiter) -> None:
    async with http(small_app(metrics, limiter)) as h:
        assert (await h.get(f"/api/v1/iprs/{SECRET_ID}", headers={"x-deny": "1"})).status_code == 401
        for _ in range(11):
            last = await h.get("/api/v1/iprs/1")
        assert last.status_code == 429
    route = "/api/v1/iprs/{ipr_id}"
    assert value(metrics, "alma_http_requests_total", method="GET", route=route, status="401") == 1
    assert value(metrics, "alma_http_requests_total", method="GET", route=route, status="429") == 1
    assert value(metrics, "alma_rate_limit_rejections_total", route_class="crud") == 1


async def test_an_exception_is_counted_as_a_500(metrics: Metrics, limiter: RateLimiter) -> None:
    async with http(small_app(metrics, limiter)) as h:
        assert (await h.get("/api/v1/boom")).status_code == 500
    assert value(metrics, "alma_http_requests_total", method="GET", route="/api/v1/boom", status="500") == 1


async def test_the_endpoint_serves_this_apps_registry_only(metrics: Metrics, limiter: RateLimiter) -> None:
    async with http(small_app(metrics, limiter)) as h:
        response = await h.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert f'alma_build_info{{version="{__version__}"}} 1.0' in response.text
    assert "python_gc_objects_collected_total" not in response.text  # not the process-global registry
    assert REGISTRY.get_sample_value("alma_build_info", {"version": __version__}) is None
    other = Metrics(version="9.9.9")
    assert other.registry is not metrics.registry
    assert value(other, "alma_build_info", version=__version__) == 0


async def test_an_open_stream_is_an_active_session_until_it_ends(metrics: Metrics) -> None:
    during: list[float] = []

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        during.append(value(metrics, "alma_mcp_sessions_active"))
        await send({"type": "http.response.body", "body": b"data: hi\n\n", "more_body": False})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = MetricsMiddleware(stream, metrics, routes=[Route("/sse", list_iprs)])
    await middleware({"type": "http", "method": "GET", "path": "/sse", "headers": []}, receive, send)
    listen = [(b"mcp-method", b"subscriptions/listen")]
    await middleware({"type": "http", "method": "POST", "path": "/mcp", "headers": listen}, receive, send)
    assert during == [1.0, 1.0]
    assert value(metrics, "alma_mcp_sessions_active") == 0
    assert len(sent) == 4
    assert value(metrics, "alma_http_requests_total", method="GET", route="/sse", status="200") == 1
    # Streams stay out of the latency histogram.
    assert value(metrics, "alma_http_request_duration_seconds_count", method="GET", route="/sse") == 0


# -- domain events ------------------------------------------------------------------------------------


def publish_every_kind(bus: EventBus) -> None:
    bus.emit(
        "ipr.transition",
        ipr_id=int(SECRET_ID),
        event_id=4,
        action="approve",
        from_state="open",
        to_state="approved",
        actor="key:alice",
    )
    bus.emit(
        "deployment.step",
        step_id=1,
        deployment_id=int(SECRET_ID),
        ipr_id=int(SECRET_ID),
        resource="web-1",
        action="create",
        engine="simulation",
        attempt=1,
        status="succeeded",
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:01Z",
    )
    bus.emit(
        "deployment.finished",
        deployment_id=int(SECRET_ID),
        ipr_id=int(SECRET_ID),
        deployment_kind="deploy",
        state="failed",
        engines=["simulation"],
        seconds=2.5,
    )
    bus.emit("auth.failure", reason="invalid_key", path=f"/api/v1/iprs/{SECRET_ID}", client="192.0.2.1")
    bus.emit("tool.call", tool="list_templates", outcome="ok", principal="key:alice")


def test_domain_events_become_bounded_metrics(metrics: Metrics) -> None:
    bus = EventBus()
    bus.subscribe(metrics.subscriber)
    publish_every_kind(bus)
    assert value(metrics, "alma_ipr_transitions_total", action="approve", to_state="approved") == 1
    assert value(metrics, "alma_engine_operations_total", engine="simulation", action="create", status="succeeded") == 1
    assert value(metrics, "alma_deployments_total", kind="deploy", state="failed") == 1
    assert value(metrics, "alma_deployment_duration_seconds_sum", kind="deploy") == 2.5
    assert value(metrics, "alma_auth_failures_total", reason="invalid_key") == 1
    scrape = metrics.exposition().decode()
    assert SECRET_ID not in scrape
    assert "key:alice" not in scrape
    assert "192.0.2.1" not in scrape
    assert "alma_mcp_tool_calls_total{" not in scrape  # tool.call events are the MCP middleware's to record


def test_a_data_fed_label_is_capped(metrics: Metrics) -> None:
    for n in range(200):
        metrics.record_auth_failure(f"reason_{n}")
    metrics.record_auth_failure("has spaces and {braces}")
    reasons = set(re.findall(r'alma_auth_failures_total\{reason="([^"]*)"\}', metrics.exposition().decode()))
    assert len(reasons) == MAX_LABEL_VALUES + 1
    assert value(metrics, "alma_auth_failures_total", reason="other") == 200 - MAX_LABEL_VALUES + 1


# -- tool calls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tool_calls_are_counted_by_known_tool_and_outcome(services: Services, mode: str) -> None:
    metrics = Metrics()
    server = build_server(services)
    limiter = RateLimiter.from_settings(services.settings, clock=Clock(), on_reject=metrics.record_rate_limit_rejection)
    install_tool_limits(server, services, limiter)
    install_tool_metrics(server, metrics)  # lands outside the limiter whatever the order
    positions = [type(m).__name__ for m in server.middleware]
    assert positions.index("ToolMetricsMiddleware") < positions.index("ToolLimitMiddleware")
    async with Client(server, mode=mode, raise_exceptions=mode != "legacy") as client:
        assert not (await client.call_tool("list_templates", {})).is_error
        assert (await client.call_tool("customize_template", {"template": "nope"})).is_error
        assert (await client.call_tool(f"ipr_{SECRET_ID}", {})).is_error
        for _ in range(8):  # two of the calls above took two of the ten "tools" tokens (customize is generation)
            result = await client.call_tool("validate_blueprint", {"blueprint": "name: x"})
            assert "[rate_limit.exceeded]" not in str(result.content)
        assert (await client.call_tool("validate_blueprint", {"blueprint": "name: x"})).is_error
    assert value(metrics, "alma_mcp_tool_calls_total", tool="list_templates", outcome="ok") == 1
    assert value(metrics, "alma_mcp_tool_calls_total", tool="customize_template", outcome="error") == 1
    assert value(metrics, "alma_mcp_tool_calls_total", tool="unknown", outcome="error") == 1
    assert value(metrics, "alma_mcp_tool_calls_total", tool="validate_blueprint", outcome="rate_limited") == 1
    assert value(metrics, "alma_mcp_tool_call_duration_seconds_count", tool="validate_blueprint") == 8 + 1
    assert value(metrics, "alma_rate_limit_rejections_total", route_class="tools") == 1
    assert SECRET_ID not in metrics.exposition().decode()


def test_given_known_tools_bound_the_tool_label(services: Services) -> None:
    server = build_server(services)
    middleware = install_tool_metrics(server, Metrics(), known_tools=["list_templates"])
    assert isinstance(middleware, ToolMetricsMiddleware)
    assert server.middleware[-1] is middleware


# -- the real app and the ops files -------------------------------------------------------------------


@pytest.fixture
async def real_app(services: Services, metrics: Metrics) -> AsyncIterator[ASGIApp]:
    server = build_server(services)
    install_tool_metrics(server, metrics)
    app = create_app(services, server)
    limiter = RateLimiter.from_settings(services.settings, on_reject=metrics.record_rate_limit_rejection)
    async with app.router.lifespan_context(app):
        yield MetricsMiddleware(RateLimitMiddleware(app, limiter), metrics, routes=app.routes)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_real_app_labels_mcp_traffic(real_app: ASGIApp, metrics: Metrics, mode: str) -> None:
    async with (
        http(real_app) as h,
        Client(streamable_http_client(f"{BASE}/mcp", http_client=h), mode=mode) as client,
    ):
        assert not (await client.call_tool("list_templates", {})).is_error
        assert (await h.get("/healthz")).status_code == 200
    scrape = metrics.exposition().decode()
    assert set(re.findall(r'route="([^"]*)"', scrape)) == {"/mcp", "/healthz"}
    assert value(metrics, "alma_mcp_tool_calls_total", tool="list_templates", outcome="ok") == 1
    assert value(metrics, "alma_mcp_sessions_active") == 0


def ops_queries() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ("expr", "query", "definition") and isinstance(item, str):
                    yield item
                else:
                    yield from walk(item)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text()))
    yield from walk(yaml.safe_load((ROOT / "ops" / "prometheus-alerts.yml").read_text()))


def base_name(name: str) -> str:
    return re.sub(r"_(bucket|count|sum|created)$", "", name)


async def test_every_metric_in_the_ops_files_is_emitted(
    services: Services, metrics: Metrics, limiter: RateLimiter
) -> None:
    async with http(small_app(metrics, limiter)) as h:
        for _ in range(11):
            await h.get("/api/v1/iprs/1")
        await h.get("/api/v1/boom")
    bus = EventBus()
    bus.subscribe(metrics.subscriber)
    publish_every_kind(bus)
    server = build_server(services)
    install_tool_metrics(server, metrics)
    async with Client(server, mode="auto", raise_exceptions=True) as client:
        await client.call_tool("list_templates", {})
    scrape = metrics.exposition().decode()
    emitted = {base_name(m) for m in re.findall(r"^(alma_[a-z_]+)", scrape, flags=re.MULTILINE)}
    queries = list(ops_queries())
    assert len(queries) >= 20
    used = {base_name(m) for q in queries for m in re.findall(r"alma_[a-z_]+", q)}
    assert used - emitted == set()
    families = {
        "alma_http_requests_total",
        "alma_http_request_duration_seconds",
        "alma_mcp_tool_calls_total",
        "alma_mcp_tool_call_duration_seconds",
        "alma_mcp_sessions_active",
        "alma_ipr_transitions_total",
        "alma_deployments_total",
        "alma_deployment_duration_seconds",
        "alma_engine_operations_total",
        "alma_rate_limit_rejections_total",
        "alma_auth_failures_total",
        "alma_build_info",
    }
    assert families <= emitted
    assert families <= used  # the dashboard and alerts cover every family


def test_alert_rules_are_well_formed() -> None:
    rules = yaml.safe_load((ROOT / "ops" / "prometheus-alerts.yml").read_text())["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert {
        "AlmaHighErrorRate",
        "AlmaRateLimitSpike",
        "AlmaAuthFailureSpike",
        "AlmaDeploymentFailures",
        "AlmaSlowToolCalls",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
