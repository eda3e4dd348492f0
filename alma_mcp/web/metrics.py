"""Prometheus metrics of one side app: a per-app registry, the HTTP middleware, ``/metrics``,
the domain-event subscriber and the MCP-level tool-call middleware.

Every family has the ``alma_`` prefix and bounded labels only: route templates (``other`` for an
unmatched path, never the raw path), known tool names (``unknown`` otherwise), outcomes, engines,
states. Ids and arguments never become labels; a label fed from data (event fields) is further
capped at ``MAX_LABEL_VALUES`` distinct values, beyond which it reads ``other``.

Families::

    alma_http_requests_total{method, route, status}        alma_http_request_duration_seconds{method, route}
    alma_mcp_tool_calls_total{tool, outcome}               alma_mcp_tool_call_duration_seconds{tool}
    alma_mcp_sessions_active                               alma_ipr_transitions_total{action, to_state}
    alma_deployments_total{kind, state}                    alma_deployment_duration_seconds{kind}
    alma_engine_operations_total{engine, action, status}   alma_rate_limit_rejections_total{route_class}
    alma_auth_failures_total{reason}                       alma_build_info{version}

Long-lived streams (``GET /sse``, ``GET /mcp``, 2026 ``subscriptions/listen``) count as requests and
as open sessions, but stay out of the duration histogram, whose percentiles they would swamp.
"""

import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alma_mcp import __version__
from alma_mcp.events import DomainEvent
from alma_mcp.server.limits import RATE_LIMIT_CODE, ToolLimitMiddleware

OTHER = "other"
UNKNOWN_TOOL = "unknown"
MAX_LABEL_VALUES = 64
"""Distinct values a data-fed label may take before new ones are folded into ``other``."""

HTTP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The seed's HTTP duration buckets."""
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DEPLOYMENT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TOOL_OUTCOMES = ("ok", "error", "rate_limited", "input_required", "protocol_error", "cancelled", "exception")

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


class _LabelValues:
    """Caps the distinct values of each data-fed label."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: object) -> str:
        text = str(value) if value is not None else "none"
        if not _SAFE_LABEL.match(text):
            return OTHER
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if text in seen:
                return text
            if len(seen) >= self.limit:
                return OTHER
            seen.add(text)
            return text


class Metrics:
    """The registry and metric objects of one app (never the process-global registry)."""

    def __init__(self, version: str = __version__, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "alma_http_requests_total", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            "alma_http_request_duration_seconds",
            "Time to answer an HTTP request (long-lived streams excluded).",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.tool_calls = Counter("alma_mcp_tool_calls_total", "MCP tool calls.", ["tool", "outcome"], registry=r)
        self.tool_duration = Histogram(
            "alma_mcp_tool_call_duration_seconds", "MCP tool call duration.", ["tool"], buckets=TOOL_BUCKETS, registry=r
        )
        self.sessions_active = Gauge(
            "alma_mcp_sessions_active", "Open MCP streams (GET /sse, GET /mcp, subscriptions/listen).", registry=r
        )
        self.ipr_transitions = Counter(
            "alma_ipr_transitions_total", "IPR state transitions.", ["action", "to_state"], registry=r
        )
        self.deployments = Counter(
            "alma_deployments_total", "Finished deployments and rollbacks.", ["kind", "state"], registry=r
        )
        self.deployment_duration = Histogram(
            "alma_deployment_duration_seconds",
            "Deployment and rollback duration.",
            ["kind"],
            buckets=DEPLOYMENT_BUCKETS,
            registry=r,
        )
        self.engine_operations = Counter(
            "alma_engine_operations_total", "Engine steps recorded.", ["engine", "action", "status"], registry=r
        )
        self.rate_limit_rejections = Counter(
            "alma_rate_limit_rejections_total",
            "Requests and tool calls refused by a rate limit.",
            ["route_class"],
            registry=r,
        )
        self.auth_failures = Counter("alma_auth_failures_total", "Refused authentications.", ["reason"], registry=r)
        self.build_info = Gauge("alma_build_info", "Build of the running server (always 1).", ["version"], registry=r)
        self.build_info.labels(version=version).set(1)
        self._labels = _LabelValues()

    # -- recording ------------------------------------------------------------------------------------

    def observe_http(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """One answered request; ``seconds`` is ``None`` for a long-lived stream."""
        method = method if method in HTTP_METHODS else OTHER
        self.http_requests.labels(method=method, route=route, status=str(status)).inc()
        if seconds is not None:
            self.http_duration.labels(method=method, route=route).observe(seconds)

    def record_tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        """``tool`` must already be a known name or ``unknown``; ``outcome`` one of ``TOOL_OUTCOMES``."""
        self.tool_calls.labels(tool=tool, outcome=outcome).inc()
        self.tool_duration.labels(tool=tool).observe(seconds)

    def record_rate_limit_rejection(self, route_class: str) -> None:
        """The rate limiter's ``on_reject`` callback."""
        self.rate_limit_rejections.labels(route_class=self._labels("route_class", route_class)).inc()

    def record_auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason=self._labels("reason", reason)).inc()

    def subscriber(self, event: DomainEvent) -> None:
        """EventBus subscriber: IPR transitions, deployments, engine steps, auth failures.

        ``tool.call`` events are ignored: the MCP-level middleware records tool calls itself.
        """
        data = event.data
        label = self._labels
        if event.kind == "ipr.transition":
            self.ipr_transitions.labels(
                action=label("action", data.get("action")), to_state=label("to_state", data.get("to_state"))
            ).inc()
        elif event.kind == "deployment.step":
            self.engine_operations.labels(
                engine=label("engine", data.get("engine")),
                action=label("step_action", data.get("action")),
                status=label("status", data.get("status")),
            ).inc()
        elif event.kind == "deployment.finished":
            kind = label("kind", data.get("deployment_kind"))
            self.deployments.labels(kind=kind, state=label("state", data.get("state"))).inc()
            seconds = data.get("seconds")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
                self.deployment_duration.labels(kind=kind).observe(float(seconds))
        elif event.kind == "auth.failure":
            self.record_auth_failure(str(data.get("reason")))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving ``metrics`` (mount it at ``/metrics``)."""

    async def endpoint(_: Request) -> Response:
        return Response(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return endpoint


# -- HTTP ---------------------------------------------------------------------------------------------


def _route_path(route: BaseRoute, scope: Scope) -> str | None:
    if isinstance(route, Mount):
        inner = route.routes
        if not inner:
            return route.path or "/"  # a plain ASGI app (e.g. the SSE /messages endpoint)
        below = route_template(inner, scope)
        return None if below is None else route.path + below
    if isinstance(route, Route | WebSocketRoute):
        return route.path
    return None


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """The template (``/api/v1/iprs/{ipr_id}``) of the route that serves ``scope``, if any."""
    partial: BaseRoute | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return _route_path(route, {**scope, **child})
        if match is Match.PARTIAL and partial is None:
            partial = route  # wrong method: still this route's template (a 405)
    return _route_path(partial, scope) if partial is not None else None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def is_session_stream(scope: Scope) -> bool:
    """A request that opens a long-lived MCP stream."""
    path, method = scope["path"], scope.get("method")
    if method == "GET" and path in ("/sse", "/mcp"):
        return True
    return method == "POST" and path == "/mcp" and _header(scope, b"mcp-method") == b"subscriptions/listen"


class MetricsMiddleware:
    """Pure ASGI, outermost: counts and times every HTTP request by route template and status.

    ``routes`` are the app's routes; by default they are read from ``scope["app"]`` (Starlette puts
    itself there before running its middleware), so requests refused before routing (401, 429)
    still get their route's template.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        entry: Scope = {
            "type": "http",
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "method": scope.get("method", "GET"),
            "headers": scope.get("headers", []),
        }
        app = scope.get("app")
        stream = is_session_stream(scope)
        status = 500
        opened = False

        async def send_and_record(message: Message) -> None:
            nonlocal status, opened
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if stream and status < 400 and not opened:
                    opened = True
                    self.metrics.sessions_active.inc()
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            if opened:
                self.metrics.sessions_active.dec()
            route = self.route_of(scope, entry, app)
            elapsed = None if stream else time.perf_counter() - started
            self.metrics.observe_http(entry["method"], route, status, elapsed)

    def route_of(self, scope: Scope, entry: Scope, app: Any) -> str:
        route = scope.get("route")
        if isinstance(route, Route) and scope.get("root_path", "") == entry["root_path"]:
            return route.path  # routed, and no mount on the way: the template is the route's own
        routes = self.routes if self.routes is not None else getattr(app, "routes", None)
        if routes:
            found = route_template(routes, entry)
            if found is not None:
                return found
        return OTHER


# -- MCP ----------------------------------------------------------------------------------------------


def _outcome(result: HandlerResult) -> str:
    data: Mapping[str, Any]
    if isinstance(result, BaseModel):
        data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    elif isinstance(result, dict):
        data = result
    else:
        return "ok"
    if data.get("resultType") == "input_required":
        return "input_required"
    if not data.get("isError"):
        return "ok"
    content = data.get("content")
    first = content[0] if isinstance(content, list) and content else None
    text = first.get("text") if isinstance(first, dict) else None
    if isinstance(text, str) and text.startswith(f"[{RATE_LIMIT_CODE}]"):
        return "rate_limited"
    return "error"


class ToolMetricsMiddleware:
    """MCP-level middleware: counts and times ``tools/call`` by tool name and outcome."""

    def __init__(self, server: MCPServer[Any], metrics: Metrics, known_tools: Iterable[str] | None = None) -> None:
        self.server = server
        self.metrics = metrics
        self._known: frozenset[str] | None = frozenset(known_tools) if known_tools is not None else None

    async def known_tools(self) -> frozenset[str]:
        """The names allowed as labels; read from the server's tool list on first use unless given."""
        if self._known is None:
            self._known = frozenset(tool.name for tool in await self.server.list_tools())
        return self._known

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        name = (ctx.params or {}).get("name")
        tool = name if isinstance(name, str) and name in await self.known_tools() else UNKNOWN_TOOL
        started = time.perf_counter()
        outcome = "exception"
        try:
            result = await call_next(ctx)
            outcome = _outcome(result)
            return result
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        except (MCPError, ValidationError):
            outcome = "protocol_error"
            raise
        finally:
            self.metrics.record_tool_call(tool, outcome, time.perf_counter() - started)


def install_tool_metrics(
    server: MCPServer[Any], metrics: Metrics, known_tools: Iterable[str] | None = None
) -> ToolMetricsMiddleware:
    """Add tool-call metrics to ``server``'s middleware, outside the rate limiter if one is installed.

    ``known_tools`` defaults to the server's tool list, read on the first call.
    """
    middleware = ToolMetricsMiddleware(server, metrics, known_tools)
    chain = server.middleware
    for index, existing in enumerate(chain):
        if isinstance(existing, ToolLimitMiddleware):
            chain.insert(index, middleware)  # so that refusals are counted as rate_limited
            break
    else:
        chain.append(middleware)
    return middleware
