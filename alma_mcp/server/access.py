"""Role-based access to tools for HTTP callers: ``tools/list`` shows only what a key may call, and a
``tools/call`` of anything else is refused before the tool runs.

An MCP-level middleware (``server.middleware``), so it sees every request of both protocol eras.
What it found out about the SDK (mcp 2.3):

- ``ctx.request`` is the Starlette ``Request`` of the HTTP POST carrying the message (both eras);
  ``AuthMiddleware`` put the key's principal in its ``state``, read with ``principal_from_request``.
  Stdio and in-memory sessions have no request (``None``).
- ``call_next`` returns the wire form, already serialized: for ``tools/list`` a ``dict`` whose
  ``"tools"`` is a list of tool dicts (camelCase keys). The filter also accepts a
  ``ListToolsResult`` in case a later SDK hands back the model.
- Returning a ``CallToolResult`` without calling ``call_next`` short-circuits the call; the client
  receives it as a normal tool result (``is_error``), in both eras.

Only HTTP callers with an authenticated principal are filtered. The local session (stdio,
in-memory, or HTTP without the auth middleware) keeps seeing every tool, ``ipr_review`` included:
that tool's description tells the model that a person approves with the CLI, and the domain still
refuses the call itself (``mcp:local needs the 'approver' role to approve an IPR``). The domain
checks roles again in any case: this table is what a key is shown and what it may start.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.types import ListToolsResult

from alma_mcp.errors import Forbidden
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.server.identity import principal_from_request, transport_of
from alma_mcp.server.toolkit import error_result
from alma_mcp.services import Services

TOOL_ROLES: Final[Mapping[str, Role]] = MappingProxyType(
    {
        # Read-only: analysis, templates and reads of IPRs and deployments.
        "list_templates": Role.VIEWER,
        "customize_template": Role.VIEWER,
        "validate_blueprint": Role.VIEWER,
        "generate_deployment_plan": Role.VIEWER,
        "compare_blueprints": Role.VIEWER,
        "create_blueprint": Role.VIEWER,
        "ipr_get": Role.VIEWER,
        "ipr_list": Role.VIEWER,
        "deployment_status": Role.VIEWER,
        "estimate_resources": Role.VIEWER,
        "optimize_costs": Role.VIEWER,
        "calculate_capacity": Role.VIEWER,
        "forecast_metrics": Role.VIEWER,
        "security_audit": Role.VIEWER,
        "check_compliance": Role.VIEWER,
        "suggest_architecture": Role.VIEWER,
        "migrate_infrastructure": Role.VIEWER,
        "troubleshoot_issue": Role.VIEWER,
        # Proposing changes.
        "ipr_create": Role.PROPOSER,
        "ipr_revise": Role.PROPOSER,
        "ipr_close": Role.PROPOSER,
        "council_review": Role.PROPOSER,  # writes advisory comments; never approves
        # Reviewing (separation of duties is the domain's: never one's own IPR).
        "ipr_review": Role.APPROVER,
        # Changing infrastructure.
        "ipr_deploy": Role.DEPLOYER,
        "ipr_rollback": Role.DEPLOYER,
    }
)
"""The role a tool needs; a tool missing here needs ``admin`` (a new tool is hidden until listed)."""


def required_role(tool: str) -> Role:
    return TOOL_ROLES.get(tool, Role.ADMIN)


def allows(principal: Principal, tool: str) -> bool:
    return principal.has(required_role(tool))


def _http_principal(request: Any, services: Services) -> Principal | None:
    """The key's principal of an authenticated HTTP call; ``None`` for the local session."""
    if transport_of(request) != "http":
        return None
    principal = principal_from_request(request, services)
    return None if principal == services.local_principal else principal


def _visible(result: HandlerResult, principal: Principal) -> HandlerResult:
    if isinstance(result, ListToolsResult):
        return result.model_copy(update={"tools": [t for t in result.tools if allows(principal, t.name)]})
    if isinstance(result, dict) and isinstance(result.get("tools"), list):
        tools = [t for t in result["tools"] if isinstance(t, dict) and allows(principal, str(t.get("name")))]
        return {**result, "tools": tools}
    return result


def install_access_control(server: MCPServer[Any], services: Services) -> None:
    """Append the access-control middleware to ``server.middleware`` (it runs after those before it)."""

    async def access_control(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in ("tools/list", "tools/call"):
            return await call_next(ctx)
        principal = _http_principal(ctx.request, services)
        if principal is None:
            return await call_next(ctx)
        if ctx.method == "tools/list":
            return _visible(await call_next(ctx), principal)
        name = (ctx.params or {}).get("name")
        if not isinstance(name, str):
            return await call_next(ctx)  # malformed: the SDK's validation answers it
        try:
            principal.require(required_role(name), f"call {name}")
        except Forbidden as denied:
            return error_result(denied)
        return await call_next(ctx)

    server.middleware.append(access_control)
