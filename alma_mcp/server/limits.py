"""Rate limits on MCP tool calls, on every transport (stdio and in-memory included).

The HTTP side app limits requests per route class; this MCP-level middleware applies the same
accounting to ``tools/call`` wherever it arrives, with the class the HTTP layer cannot see
without parsing bodies: ``generation`` for the generation tools, ``tools`` for the others.

A refused call is a tool error the model can act on (``[rate_limit.exceeded] ... retry in S s``),
not a protocol error: the model sees it and can wait. A request the HTTP layer already charged
to the same class (``scope["state"]["rate_limit_class"]``) is not charged twice.

The limiter is any object with ``enabled`` and ``check(client, route_class, rpm=...)``; the side
app's ``alma_mcp.web.ratelimit.RateLimiter`` is the one in use (this layer may not import it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, Implementation, TextContent
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.methods import serialize_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from alma_mcp.server.identity import principal_from_request
from alma_mcp.services import Services

logger = logging.getLogger(__name__)

RATE_LIMIT_CODE = "rate_limit.exceeded"

GENERATION_TOOLS: frozenset[str] = frozenset({"create_blueprint", "customize_template"})
"""Tools limited as ``generation`` (the seed's generation endpoints); every other tool is ``tools``."""

ToolRouteClass = Literal["generation", "tools"]


class LimitDecision(Protocol):
    """**Protocol:** the outcome of one ``check``."""

    @property
    def allowed(self) -> bool: ...

    @property
    def message(self) -> str: ...


class ToolLimiter(Protocol):
    """**Protocol:** a token-bucket limiter keyed by client and route class."""

    @property
    def enabled(self) -> bool: ...

    def check(self, client: str, route_class: str, *, rpm: int | None = None) -> LimitDecision: ...


def tool_route_class(tool: str) -> ToolRouteClass:
    """The rate-limit class of a tool call."""
    return "generation" if tool in GENERATION_TOOLS else "tools"


def _state(request: Any, name: str) -> Any:
    # Starlette's Request.state reads scope["state"]; stdio and in-memory sessions have no request.
    state = getattr(request, "state", None) if request is not None else None
    return getattr(state, name, None) if state is not None else None


class ToolLimitMiddleware:
    """MCP-level middleware: charges each ``tools/call`` to its principal's bucket."""

    def __init__(self, server: MCPServer[Any], services: Services, limiter: ToolLimiter) -> None:
        self.services = services
        self.limiter = limiter
        self._server_info = Implementation(
            name=server.name,
            version=server.version,
            title=server.title,
            description=server.description,
            website_url=server.website_url,
            icons=server.icons,
        )

    def client_of(self, request: Any) -> str:
        """The same identity the HTTP layer used, else the principal (the local one over stdio)."""
        client = _state(request, "rate_limit_client")
        if isinstance(client, str):
            return client
        return principal_from_request(request, self.services).id

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None or not self.limiter.enabled:
            return await call_next(ctx)
        name = (ctx.params or {}).get("name")
        if not isinstance(name, str):
            return await call_next(ctx)  # malformed params: the SDK's validation answers
        route_class = tool_route_class(name)
        if _state(ctx.request, "rate_limit_class") == route_class:
            return await call_next(ctx)  # the HTTP layer charged this request to this class already
        rpm = _state(ctx.request, "rate_limit_rpm")
        decision = self.limiter.check(
            self.client_of(ctx.request),
            route_class,
            rpm=rpm if isinstance(rpm, int) and not isinstance(rpm, bool) and rpm > 0 else None,
        )
        if decision.allowed:
            return await call_next(ctx)
        return self.refusal(ctx.protocol_version, f"[{RATE_LIMIT_CODE}] {decision.message}")

    def refusal(self, version: str, text: str) -> dict[str, Any]:
        """A tool-error result in the connection's wire shape.

        A middleware that answers without ``call_next`` owns the whole envelope: the SDK does not
        sieve it for the era nor add the 2026 ``resultType`` and ``serverInfo`` stamp, so this does.
        """
        result = CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
        dumped: Mapping[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            wire = serialize_server_result("tools/call", version, dumped)
        except (KeyError, ValueError):  # a version this SDK does not know: send the plain dump
            logger.warning("no tools/call result shape for protocol version %r", version)
            wire = dict(dumped)
        if version in MODERN_PROTOCOL_VERSIONS:
            wire.setdefault("resultType", "complete")
            wire["_meta"] = {
                SERVER_INFO_META_KEY: self._server_info.model_dump(by_alias=True, mode="json", exclude_none=True)
            }
        return wire


def install_tool_limits(server: MCPServer[Any], services: Services, limiter: ToolLimiter) -> ToolLimitMiddleware | None:
    """Add the tool-call limiter to ``server``'s middleware (nothing when rate limiting is off).

    Returns the middleware installed, or ``None`` when ``ALMA_RATE_LIMIT_ENABLED`` is false or the
    limiter is disabled.
    """
    if not services.settings.rate_limit_enabled or not limiter.enabled:
        return None
    middleware = ToolLimitMiddleware(server, services, limiter)
    server.middleware.append(middleware)
    return middleware
