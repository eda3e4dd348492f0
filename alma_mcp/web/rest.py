"""``/api/v1``: the REST API for scripts, and its OpenAPI 3.1 document.

Every route runs as the request's principal (the one the auth middleware authenticated, else the
local principal) with that principal's roles: IPR and template routes call the domain services,
which check roles themselves; ``POST /tools/{name}`` first checks the tool role table of
``alma_mcp.server.access``, then runs the tool in-process through the MCP server with the Starlette
request in its context, so the tool sees the same principal as it would over MCP (and checks its
domain rules again).

One table of :class:`Operation` builds both the routes and the OpenAPI document, so the two cannot
drift apart. Every error, unknown routes and methods included, is the one JSON error shape of
``alma_mcp.web.responses``: invalid JSON is 400 ``request.invalid``; JSON of the wrong shape or
types is 422 ``request.unprocessable`` with the pydantic errors summarised (never the rejected
values); an ``AlmaError`` keeps its code; anything unexpected is a 500 with only an error id.
"""

import functools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, cast

import anyio
import mcp.types as mcp_types
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.session import ServerSession
from mcp.server.subscriptions import SubscriptionBus
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from alma_mcp import __version__
from alma_mcp.audit import AuditLog
from alma_mcp.catalog.templates import TemplateInfo
from alma_mcp.errors import AlmaError, IPRNotFound
from alma_mcp.ipr.deploy import DEFAULT_ENGINE, DeployOutcome
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.ipr.service import IPRPage, IPRView
from alma_mcp.ipr.states import IPRState
from alma_mcp.server.access import allows, required_role
from alma_mcp.server.auditing import CODE_PREFIX, EXCEPTION, OK, TOOL_ERROR, record_tool_call
from alma_mcp.server.identity import principal_from_request
from alma_mcp.server.ipr import trim_view
from alma_mcp.server.templates import CustomizedTemplate, TemplateList
from alma_mcp.server.toolkit import ERROR_META_KEY
from alma_mcp.services import Services
from alma_mcp.web.events import events_endpoint
from alma_mcp.web.responses import error_response, from_alma_error, internal_error, status_for

API_PREFIX: Final = "/api/v1"
UNPROCESSABLE: Final = "request.unprocessable"
MAX_ERRORS_IN_MESSAGE: Final = 5
PROBE_TIMEOUT_SECONDS: Final = 5.0
DEPLOYMENT_STATES: Final = ("running", "succeeded", "failed", "interrupted")
MAX_ID: Final = 2**62

T = TypeVar("T")


# -- request and response models ---------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolArguments(RootModel[dict[str, Any]]):
    """The tool's arguments as a JSON object; ``GET /tools`` gives each tool's input schema."""


class CustomizeBody(_Body):
    name: str | None = Field(default=None, max_length=253, description="Name of the new blueprint (DNS-1123 label)")
    description: str | None = Field(default=None, max_length=2000, description="Description of the new blueprint")
    scale_factor: float | None = Field(default=None, description="Multiply every cpu and memory size, in (0, 100]")
    parameters: dict[str, Any] | None = Field(
        default=None, description="instance_count, cpu_per_instance, memory_per_instance, environment"
    )


class IPRCreateBody(_Body):
    title: str = Field(min_length=1, max_length=200, description="What the change does")
    description: str = Field(default="", max_length=10_000, description="Why, and what to look at")
    blueprint: str | dict[str, Any] | None = Field(default=None, description="The blueprint (YAML/JSON text or object)")
    template: str | None = Field(default=None, max_length=200, description="Or: a template name to start from")
    customization: dict[str, Any] | None = Field(
        default=None, description="With template: name, description, scale_factor, parameters"
    )


class ReviewBody(_Body):
    action: Literal["approve", "request_changes", "reject"]
    comment: str | None = Field(default=None, max_length=10_000)


class DeployBody(_Body):
    dry_run: bool = Field(default=False, description="Only show what would change")


class RollbackBody(_Body):
    """No fields; an empty body is fine."""


class CloseBody(_Body):
    comment: str | None = Field(default=None, max_length=10_000)


class TemplateQuery(_Body):
    category: str | None = Field(default=None, max_length=100, description="web, database, microservices, ...")
    complexity: str | None = Field(default=None, max_length=100, description="simple, medium or advanced")
    query: str | None = Field(default=None, max_length=200, description="Text to find in name or description")


class IPRListQuery(_Body):
    state: str | None = Field(default=None, max_length=100, description="Only IPRs in this state")
    limit: int = Field(default=20, ge=1, le=200, description="Page size")
    cursor: str | None = Field(default=None, max_length=100, description="next_cursor of the previous page")


class ToolInfo(BaseModel):
    name: str
    title: str | None
    description: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any]
    role: str = Field(description="The role a caller needs to run the tool (admin implies every role)")


class ToolList(BaseModel):
    tools: list[ToolInfo]


class ToolResult(RootModel[dict[str, Any]]):
    """The tool's structured result (its output schema is in ``GET /tools``)."""


class TemplateDetail(BaseModel):
    template: TemplateInfo
    blueprint: dict[str, Any]


class MetricsSummary(BaseModel):
    uptime_seconds: float
    version: str
    iprs: dict[str, int] = Field(description="IPRs by state")
    deployments: dict[str, int] = Field(description="Deploys and rollbacks by state")


class RateLimitStats(RootModel[dict[str, Any]]):
    """``{"enabled": false}`` without rate limiting; else ``enabled`` and the limiter's statistics."""


class ComponentHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    response_ms: float | None = None
    detail: str = ""
    count: int | None = None


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    database: ComponentHealth
    engines: dict[str, ComponentHealth]
    templates: ComponentHealth


class ErrorDetail(BaseModel):
    code: str
    message: str
    data: dict[str, Any]


class ErrorBody(BaseModel):
    """The one error shape of every non-2xx answer."""

    ok: Literal[False]
    status: int
    error: ErrorDetail


# -- the operation table --------------------------------------------------------------------------


class Unprocessable(Exception):
    """A body or query of the wrong shape: 422 ``request.unprocessable``."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class BadJSON(Exception):
    """A body that is not JSON: 400 ``request.invalid``."""


@dataclass(frozen=True)
class Call:
    """One request, parsed: what a handler gets."""

    request: Request
    principal: Principal
    path: Mapping[str, str]
    body: Any = None
    query: Any = None


Result = Response | BaseModel | Mapping[str, Any]
Handler = Callable[[Call], Awaitable[Result]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    path_params: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    tag: str = ""
    description: str = ""


def _summarise(exc: ValidationError, where: str) -> Unprocessable:
    errors = [
        {"loc": [where, *e["loc"]], "type": e["type"], "msg": e["msg"]}  # never e["input"]: it may be a secret
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:MAX_ERRORS_IN_MESSAGE]]
    if len(errors) > MAX_ERRORS_IN_MESSAGE:
        parts.append(f"and {len(errors) - MAX_ERRORS_IN_MESSAGE} more")
    return Unprocessable("; ".join(parts), errors)


def _reject_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"number {text[:40]} is out of range")
    return value


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite)
    except BadJSON:
        raise
    except json.JSONDecodeError as exc:
        raise BadJSON(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise BadJSON(type(exc).__name__) from None


async def _parse_body(request: Request, model: type[BaseModel]) -> Any:
    data = await _json_body(request)
    if not isinstance(data, dict):
        raise Unprocessable(
            f"the body must be a JSON object, not {type(data).__name__}",
            [{"loc": ["body"], "type": "object_type", "msg": "Input should be an object"}],
        )
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise _summarise(exc, "body") from None
    return parsed.root if isinstance(parsed, RootModel) else parsed


def _parse_query(request: Request, model: type[BaseModel]) -> Any:
    params = request.query_params
    data = {name: params[name] for name in model.model_fields if name in params}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _summarise(exc, "query") from None


def _render(result: Result, status: int) -> Response:
    if isinstance(result, Response):
        return result
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
    return JSONResponse(payload, status_code=status)


def _endpoint(op: Operation, services: Services) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            principal = principal_from_request(request, services)
            query = _parse_query(request, op.query) if op.query is not None else None
            body = await _parse_body(request, op.body) if op.body is not None else None
            result = await op.handler(Call(request, principal, request.path_params, body, query))
            return _render(result, op.status)
        except AlmaError as err:
            return from_alma_error(err)
        except BadJSON as exc:
            return error_response(400, "request.invalid", f"the body is not valid JSON: {exc}")
        except Unprocessable as exc:
            return error_response(422, UNPROCESSABLE, exc.message, {"errors": exc.errors})
        except Exception as exc:  # the top of the request: one shape, an error id, the trace in the log
            return internal_error(exc)

    return endpoint


class _Route(Route):
    """A route whose 405 is the one error shape and lists every method its path allows."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, method: str, allow: Sequence[str], name: str
    ) -> None:
        super().__init__(path, endpoint, methods=[method], name=name)
        self.allow = ", ".join(sorted({*allow, *(["HEAD"] if "GET" in allow else [])}))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            response = error_response(
                405,
                "http.method_not_allowed",
                f"{scope['method']} is not allowed on {scope.get('path', self.path)}; allowed: {self.allow}",
                {"allowed": self.allow.split(", ")},
                headers={"Allow": self.allow},
            )
            await response(scope, receive, send)
            return
        await super().handle(scope, receive, send)


class _Mount(Mount):
    """A mount whose path also matches paths holding a newline (``%0A``): they belong to the API too."""

    def __init__(self, path: str, app: Router, name: str) -> None:
        super().__init__(path, app=app, name=name)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    path = str(scope.get("path", ""))[:200]
    response = error_response(404, "http.not_found", f"no route {path}; GET {API_PREFIX}/openapi.json lists them")
    await response(scope, receive, send)


# -- helpers ----------------------------------------------------------------------------------------


async def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The store may wait on another process's write lock: never block the event loop on it.
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _ipr_id(call: Call) -> int:
    raw = call.path["ipr_id"]
    if not raw.isdecimal() or not raw.isascii() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        raise IPRNotFound(f"no IPR {raw[:40]!r}: IPR ids are positive integers", data={"ipr_id": raw[:40]})
    return int(raw)


def _subscriptions(server: MCPServer[Any]) -> SubscriptionBus:
    # MCPServer keeps its subscriptions/listen bus private; REST changes must reach those listeners too.
    return server._subscriptions  # no public accessor in mcp 2.3


class _NoProgress:
    """The session stand-in for a tool run over REST: progress has nobody to go to."""

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None


def _tool_context(
    server: MCPServer[Any], services: Services, request: Request, name: str, arguments: Any
) -> Context[Services, Request]:
    """A tool ``Context`` carrying the Starlette request, so tools find the authenticated principal."""
    request_context: ServerRequestContext[Services, Request] = ServerRequestContext(
        session=cast(ServerSession, _NoProgress()),
        lifespan_context=services,
        protocol_version=mcp_types.LATEST_PROTOCOL_VERSION,
        method="tools/call",
        params={"name": name, "arguments": arguments},
        request=request,
    )
    return Context(request_context=request_context, mcp_server=server, subscriptions=_subscriptions(server))


def _tool_error(result: mcp_types.CallToolResult) -> Response:
    text = " ".join(c.text for c in result.content if isinstance(c, mcp_types.TextContent))
    meta = result.meta or {}
    coded = meta.get(ERROR_META_KEY)
    match = CODE_PREFIX.match(text)
    if isinstance(coded, Mapping) and isinstance(coded.get("code"), str):
        code = str(coded["code"])
        data = coded.get("data") if isinstance(coded.get("data"), Mapping) else {}
        message = text[match.end() :].strip() if match else text
        return error_response(status_for(code), code, message, data)
    return error_response(400, "tool.error", text or "the tool reported an error")


# -- the routes -------------------------------------------------------------------------------------


def _operations(
    services: Services,
    server: MCPServer[Any],
    rate_stats: Callable[[], Mapping[str, Any]] | None,
    audit: AuditLog | None,
) -> list[Operation]:
    iprs = services.iprs
    orchestrator = services.orchestrator
    catalog = services.catalog
    budget = services.settings.output_max_items
    built = time.monotonic()
    operations: list[Operation] = []
    ipr_param = {"ipr_id": {"type": "integer", "minimum": 1, "description": "The IPR's id"}}
    tool_param = {"name": {"type": "string", "description": "A tool name (see GET /tools)"}}
    template_param = {"name": {"type": "string", "description": "A template name or alias"}}

    def route(method: str, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            operations.append(Operation(method, path, handler.__name__, summary, handler, **options))
            return handler

        return register

    async def changed(ipr_id: int, deployment_id: int | None = None) -> None:
        context = Context(mcp_server=server, subscriptions=_subscriptions(server))
        await context.notify_resource_updated(f"alma://iprs/{ipr_id}")
        if deployment_id is not None:
            await context.notify_resource_updated(f"alma://deployments/{deployment_id}")

    # -- tools

    @route("GET", "/tools", "Tools with descriptions, input and output schemas", response=ToolList, tag="tools")
    async def list_tools(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "list tools")
        return ToolList(
            tools=[
                ToolInfo(
                    name=t.name,
                    title=t.title,
                    description=t.description,
                    input_schema=t.input_schema,
                    output_schema=t.output_schema,
                    annotations=t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else {},
                    role=required_role(t.name).value,
                )
                for t in await server.list_tools()
            ]
        )

    @route(
        "POST",
        "/tools/{name}",
        "Run a tool by name with a JSON object of arguments; answers its structured result",
        body=ToolArguments,
        response=ToolResult,
        path_params=tool_param,
        tag="tools",
    )
    async def call_tool(call: Call) -> Result:
        name = call.path["name"]
        names = sorted(t.name for t in await server.list_tools())
        if name not in names:
            return error_response(
                404, "tool.not_found", f"no tool {name[:100]!r}; available: {', '.join(names)}", {"available": names}
            )
        if not allows(call.principal, name):
            needed = required_role(name).value
            held = ", ".join(sorted(r.value for r in call.principal.roles)) or "none"
            return error_response(
                403,
                "auth.forbidden",
                f"{call.principal.id} needs the '{needed}' role to call {name}; it has: {held}",
                {"principal": call.principal.id, "tool": name, "needed": needed},
            )
        started = time.perf_counter()
        outcome = EXCEPTION
        try:
            response = await _run_tool(server, services, call, name)
            outcome = _rest_outcome(response)
            return response
        finally:
            if audit is not None:
                elapsed = (time.perf_counter() - started) * 1000
                record = functools.partial(
                    record_tool_call, audit, call.principal.id, name, call.body, outcome, elapsed, {"via": "rest"}
                )
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(record)

    # -- templates

    @route(
        "GET",
        "/templates",
        "Blueprint templates, optionally filtered",
        query=TemplateQuery,
        response=TemplateList,
        tag="templates",
    )
    async def list_templates(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "list templates")
        q = cast(TemplateQuery, call.query)
        rows = catalog.search(category=q.category, complexity=q.complexity, query=q.query)
        return TemplateList(count=len(rows), templates=rows)

    @route(
        "GET",
        "/templates/{name}",
        "A template and its blueprint",
        response=TemplateDetail,
        path_params=template_param,
        tag="templates",
    )
    async def get_template(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "read templates")
        name = call.path["name"]
        return TemplateDetail(template=catalog.info(name), blueprint=catalog.get(name).to_data())

    @route(
        "POST",
        "/templates/{name}/customize",
        "Derive a new blueprint from a template (which stays as it is)",
        body=CustomizeBody,
        response=CustomizedTemplate,
        path_params=template_param,
        tag="templates",
    )
    async def customize_template(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "customize templates")
        name, body = call.path["name"], cast(CustomizeBody, call.body)
        blueprint, changes = await _off_loop(
            catalog.customize,
            name,
            name=body.name,
            description=body.description,
            scale_factor=body.scale_factor,
            parameters=body.parameters,
            limits=services.limits,
        )
        return CustomizedTemplate(base_template=catalog.resolve(name), changes=changes, blueprint=blueprint.to_data())

    # -- IPRs

    @route(
        "GET", "/iprs", "IPRs, newest first; page with next_cursor", query=IPRListQuery, response=IPRPage, tag="iprs"
    )
    async def list_iprs(call: Call) -> Result:
        q = cast(IPRListQuery, call.query)
        return await _off_loop(iprs.list_iprs, call.principal, q.state, q.limit, q.cursor)

    @route(
        "POST",
        "/iprs",
        "Open an IPR from a blueprint or a template",
        body=IPRCreateBody,
        response=IPRView,
        status=201,
        tag="iprs",
    )
    async def create_ipr(call: Call) -> Result:
        body = cast(IPRCreateBody, call.body)
        view = await _off_loop(
            iprs.create,
            call.principal,
            title=body.title,
            description=body.description,
            blueprint=body.blueprint,
            template=body.template,
            customization=body.customization,
        )
        await changed(view.ipr.id)
        return JSONResponse(
            trim_view(view, budget).model_dump(mode="json"),
            status_code=201,
            headers={"Location": f"{API_PREFIX}/iprs/{view.ipr.id}"},
        )

    @route(
        "GET",
        "/iprs/{ipr_id}",
        "An IPR: revision and checks, approvals, comments, events, deployments",
        response=IPRView,
        path_params=ipr_param,
        tag="iprs",
    )
    async def get_ipr(call: Call) -> Result:
        return trim_view(await _off_loop(iprs.get, call.principal, _ipr_id(call)), budget)

    @route(
        "POST",
        "/iprs/{ipr_id}/review",
        "Approve, request changes on, or reject an IPR",
        body=ReviewBody,
        response=IPRView,
        path_params=ipr_param,
        tag="iprs",
    )
    async def review_ipr(call: Call) -> Result:
        body, ipr_id = cast(ReviewBody, call.body), _ipr_id(call)
        view = await _off_loop(iprs.review, call.principal, ipr_id, body.action, body.comment)
        await changed(ipr_id)
        return trim_view(view, budget)

    @route(
        "POST",
        "/iprs/{ipr_id}/deploy",
        "Deploy an approved IPR, or only plan it (dry_run)",
        body=DeployBody,
        response=DeployOutcome,
        path_params=ipr_param,
        tag="iprs",
    )
    async def deploy_ipr(call: Call) -> Result:
        body, ipr_id = cast(DeployBody, call.body), _ipr_id(call)
        outcome = await orchestrator.deploy(call.principal, ipr_id, dry_run=body.dry_run)
        if not body.dry_run:
            await changed(ipr_id, outcome.deployment_id)
        return outcome

    @route(
        "POST",
        "/iprs/{ipr_id}/rollback",
        "Roll a deployed or failed IPR back",
        body=RollbackBody,
        response=DeployOutcome,
        path_params=ipr_param,
        tag="iprs",
    )
    async def rollback_ipr(call: Call) -> Result:
        ipr_id = _ipr_id(call)
        outcome = await orchestrator.rollback(call.principal, ipr_id)
        await changed(ipr_id, outcome.deployment_id)
        return outcome

    @route(
        "POST",
        "/iprs/{ipr_id}/close",
        "Close an IPR that will not be deployed",
        body=CloseBody,
        response=IPRView,
        path_params=ipr_param,
        tag="iprs",
    )
    async def close_ipr(call: Call) -> Result:
        body, ipr_id = cast(CloseBody, call.body), _ipr_id(call)
        view = await _off_loop(iprs.close, call.principal, ipr_id, body.comment)
        await changed(ipr_id)
        return trim_view(view, budget)

    # -- monitoring

    @route(
        "GET",
        "/monitoring/metrics/summary",
        "Uptime, version, IPRs and deployments by state",
        response=MetricsSummary,
        tag="monitoring",
    )
    async def metrics_summary(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "read monitoring data")
        iprs_by_state, deployments_by_state, started_at = await _off_loop(_counts, services)
        uptime = time.monotonic() - built
        if started_at is not None:
            uptime = (datetime.now(UTC) - datetime.fromisoformat(started_at)).total_seconds()
        return MetricsSummary(
            uptime_seconds=round(max(0.0, uptime), 3),
            version=__version__,
            iprs=iprs_by_state,
            deployments=deployments_by_state,
        )

    @route(
        "GET",
        "/monitoring/rate-limit/stats",
        "The rate limiter's statistics",
        response=RateLimitStats,
        tag="monitoring",
    )
    async def rate_limit_stats(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "read monitoring data")
        return {"enabled": False} if rate_stats is None else {"enabled": True, **rate_stats()}

    @route(
        "GET",
        "/monitoring/health/detailed",
        "Database, engines and templates; 503 (error shape, the report in data) when unhealthy",
        response=HealthReport,
        tag="monitoring",
    )
    async def health_detailed(call: Call) -> Result:
        call.principal.require(Role.VIEWER, "read monitoring data")
        report = await _health(services)
        if report.status == "unhealthy":
            broken = [name for name, c in _components(report) if c.status == "unhealthy"]
            return error_response(
                503, "health.unhealthy", f"unhealthy: {', '.join(broken)}", report.model_dump(mode="json")
            )
        return report

    return operations


async def _run_tool(server: MCPServer[Any], services: Services, call: Call, name: str) -> Response:
    context = _tool_context(server, services, call.request, name, call.body)
    try:
        result = await server.call_tool(name, call.body, context)
    except UnexpectedToolError as exc:
        return internal_error(exc.__cause__ or exc)
    except ToolError as exc:
        if isinstance(exc.__cause__, ValidationError):
            problem = _summarise(exc.__cause__, "body")
            return error_response(422, UNPROCESSABLE, problem.message, {"errors": problem.errors})
        return error_response(400, "tool.error", str(exc))
    except MCPError as exc:
        return error_response(400, "tool.refused", exc.message, {"jsonrpc_code": exc.code})
    if isinstance(result, mcp_types.InputRequiredResult):
        return error_response(
            400, "tool.input_required", f"{name} asks for input, which only an MCP client can give; use one"
        )
    if result.is_error:
        return _tool_error(result)
    payload = result.structured_content
    if payload is None:
        payload = {"content": [c.model_dump(mode="json", by_alias=True) for c in result.content]}
    return JSONResponse(payload)


def _rest_outcome(response: Response) -> str:
    if response.status_code < 400:
        return OK
    try:
        code = json.loads(bytes(response.body))["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return TOOL_ERROR
    return str(code) if response.status_code < 500 else EXCEPTION


def _counts(services: Services) -> tuple[dict[str, int], dict[str, int], str | None]:
    store = services.store
    with store.lock:
        ipr_rows = store.db.execute("SELECT state, COUNT(*) FROM iprs GROUP BY state").fetchall()
        dep_rows = store.db.execute("SELECT state, COUNT(*) FROM deployments GROUP BY state").fetchall()
        run_id = services.orchestrator.run_id
        run = store.db.execute("SELECT started_at FROM server_runs WHERE id = ?", [run_id]).fetchone()
    iprs = {s.value: 0 for s in IPRState} | {str(state): int(n) for state, n in ipr_rows}
    deployments = dict.fromkeys(DEPLOYMENT_STATES, 0) | {str(state): int(n) for state, n in dep_rows}
    return iprs, deployments, (str(run[0]) if run is not None else None)


def _components(report: HealthReport) -> list[tuple[str, ComponentHealth]]:
    return [
        ("database", report.database),
        *((f"engine {name}", c) for name, c in report.engines.items()),
        ("templates", report.templates),
    ]


def _probe_database(services: Services) -> None:
    with services.store.lock:
        services.store.db.execute("SELECT 1").fetchone()


async def _timed(probe: Callable[[], Awaitable[ComponentHealth]]) -> ComponentHealth:
    started = time.perf_counter()
    try:
        with anyio.fail_after(PROBE_TIMEOUT_SECONDS):
            result = await probe()
    except TimeoutError:
        result = ComponentHealth(status="unhealthy", detail=f"no answer within {PROBE_TIMEOUT_SECONDS:g} s")
    except Exception as exc:  # a probe reports any failure as unhealthy, with its words
        result = ComponentHealth(status="unhealthy", detail=f"{type(exc).__name__}: {exc}"[:256])
    return result.model_copy(update={"response_ms": round((time.perf_counter() - started) * 1000, 3)})


async def health_report(services: Services) -> HealthReport:
    """Database, engines in use and templates: healthy, degraded (one part down) or unhealthy."""
    return await _health(services)


async def _health(services: Services) -> HealthReport:
    async def database() -> ComponentHealth:
        await anyio.to_thread.run_sync(_probe_database, services, abandon_on_cancel=True)
        return ComponentHealth(status="healthy")

    def engine_probe(name: str) -> Callable[[], Awaitable[ComponentHealth]]:
        async def probe() -> ComponentHealth:
            health = await services.orchestrator.engines.get(name).health()
            return ComponentHealth(status="healthy" if health.ok else "unhealthy", detail=health.detail[:256])

        return probe

    names = sorted({DEFAULT_ENGINE, *services.settings.engines.values()})
    engines = {name: await _timed(engine_probe(name)) for name in names}
    count = len(services.catalog.names())
    templates = ComponentHealth(
        status="healthy" if count else "unhealthy", count=count, detail="" if count else "no templates loaded"
    )
    report = HealthReport(
        status="healthy",
        version=__version__,
        database=await _timed(database),
        engines=engines,
        templates=templates,
    )
    unhealthy = [name for name, c in _components(report) if c.status == "unhealthy"]
    if report.database.status == "unhealthy" or len(unhealthy) >= 2:
        return report.model_copy(update={"status": "unhealthy"})
    if unhealthy:
        return report.model_copy(update={"status": "degraded"})
    return report


# -- OpenAPI ----------------------------------------------------------------------------------------

EVENTS_OPERATION: Final[dict[str, Any]] = {
    "operationId": "events",
    "summary": "IPR transitions and deployment steps as Server-Sent Events (resumable)",
    "tags": ["events"],
    "parameters": [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": r"^\d+\.\d+$"},
            "description": "Resume after this event id (the last 'id:' received); 0.0 replays everything",
        },
        {
            "name": "last_event_id",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "pattern": r"^\d+\.\d+$"},
            "description": "The same, for clients that cannot set headers",
        },
    ],
    "responses": {
        "200": {
            "description": "event: ipr.transition | deployment.step; id: <ipr event id>.<step id>; data: JSON",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "default": {
            "description": "Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        },
    },
}


def openapi_document(operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` plus ``/events`` and ``/openapi.json``."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in operations:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}")
    error = {
        "description": "Error (the one error shape)",
        "content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": schema} for name, schema in op.path_params.items()
        ]
        if op.query is not None:
            properties = op.query.model_json_schema()["properties"]
            parameters.extend(
                {"name": name, "in": "query", "required": False, "schema": properties[name]}
                for name in op.query.model_fields
            )
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        success: dict[str, Any] = {"description": op.summary}
        if op.response is not None:
            success["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
        entry["responses"] = {str(op.status): success, "default": error}
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = entry
    paths[API_PREFIX + "/events"] = {"get": EVENTS_OPERATION}
    paths[API_PREFIX + "/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": error,
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "alma-mcp REST API",
            "version": __version__,
            "description": "Scripts' view of alma-mcp: tools, templates, IPRs, monitoring and events. Every "
            "error is {ok: false, status, error: {code, message, data}}.",
        },
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }


def rest_routes(
    services: Services,
    server: MCPServer[Any],
    *,
    rate_stats: Callable[[], Mapping[str, Any]] | None = None,
    audit: AuditLog | None = None,
) -> list[BaseRoute]:
    """``/api/v1``, mounted as one ``Mount`` whose unknown paths and methods answer in the error shape.

    ``rate_stats`` gives the rate limiter's statistics (``RateLimiter.stats``); ``audit`` records the
    tool calls made through ``POST /tools/{name}`` (MCP-level middleware does not see them).
    """
    operations = _operations(services, server, rate_stats, audit)
    document = openapi_document(operations)

    async def openapi(_: Request) -> Response:
        return JSONResponse(document)

    methods_by_path: dict[str, list[str]] = {}
    for op in operations:
        methods_by_path.setdefault(op.path, []).append(op.method)
    routes: list[BaseRoute] = [
        _Route(op.path, _endpoint(op, services), method=op.method, allow=methods_by_path[op.path], name=op.operation_id)
        for op in operations
    ]
    routes.append(_Route("/events", events_endpoint(services), method="GET", allow=["GET"], name="events"))
    routes.append(_Route("/openapi.json", openapi, method="GET", allow=["GET"], name="openapi"))
    return [_Mount(API_PREFIX, Router(routes=routes, redirect_slashes=False, default=_not_found), name="api")]
