"""MCP-level middleware that records every tool call in the audit log, on every transport and era.

It sees ``tools/call`` before the SDK validates anything (stdio, in-memory, Streamable HTTP, SSE),
times the rest of the chain and appends one row: the caller's principal, the tool, the argument keys
and the digest of the redacted arguments (never a value), the outcome and the duration.

What ``call_next`` gives back (mcp 2.3.0, probed): the *wire* form of the result, a ``dict`` already
serialised with aliases (``isError``, ``structuredContent``, ``_meta``; ``resultType`` and the
``serverInfo`` stamp on 2026-07-28 connections), not a ``CallToolResult``. Unknown tools and
arguments that fail validation come back as ``isError`` results, not exceptions. It raises
``MCPError`` when the request is refused at the protocol level (by a tool, or by a middleware
further in, such as a rate limit), and it raises ``CancelledError`` when the client cancels.
A middleware further in may also short-circuit with a pydantic model; both shapes are read here.
"""

import functools
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from pydantic import BaseModel

from alma_mcp.audit import MAX_NAME_LENGTH, TOOL_CALL, AuditLog, tool_call_detail
from alma_mcp.server.identity import principal_from_request
from alma_mcp.server.toolkit import ERROR_META_KEY
from alma_mcp.services import Services

logger = logging.getLogger(__name__)

CODE_PREFIX: Final = re.compile(r"^\[([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)\]")
"""The stable code a coded tool error starts with: ``[template.not_found] ...``."""

OK: Final = "ok"
TOOL_ERROR: Final = "tool_error"
INPUT_REQUIRED: Final = "input_required"
REFUSED: Final = "refused"
EXCEPTION: Final = "exception"
CANCELLED: Final = "cancelled"


def outcome_of(result: HandlerResult) -> str:
    """``ok``, the error's code (``template.not_found``), ``tool_error`` or ``input_required``."""
    wire: Any = result.model_dump(by_alias=True, mode="json") if isinstance(result, BaseModel) else result
    if not isinstance(wire, Mapping):
        return OK
    if wire.get("resultType") == INPUT_REQUIRED:
        return INPUT_REQUIRED
    if not wire.get("isError"):
        return OK
    meta = wire.get("_meta")
    coded = meta.get(ERROR_META_KEY) if isinstance(meta, Mapping) else None
    if isinstance(coded, Mapping) and isinstance(coded.get("code"), str):
        return str(coded["code"])[:MAX_NAME_LENGTH]
    content = wire.get("content")
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        match = CODE_PREFIX.match(str(content[0].get("text", "")))
        if match:
            return match.group(1)[:MAX_NAME_LENGTH]
    return TOOL_ERROR


def record_tool_call(
    audit: AuditLog,
    principal: str,
    tool: str,
    arguments: Any,
    outcome: str,
    duration_ms: float,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Append one ``tool_call`` row; a failure to write is logged, never raised into the call."""
    detail = {**tool_call_detail(tool, arguments), **(extra or {})}
    try:
        audit.append(TOOL_CALL, principal, tool[:MAX_NAME_LENGTH], "", outcome, duration_ms, detail)
    except Exception:  # the call already happened: losing its row must not turn it into a failure
        logger.exception("could not record the call of tool %r in the audit log", tool[:MAX_NAME_LENGTH])


def tool_audit_middleware(services: Services, audit: AuditLog) -> ServerMiddleware[Any]:
    """The middleware itself; ``install_tool_audit`` adds it to a server."""

    async def audit_tool_calls(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or not audit.enabled:
            return await call_next(ctx)
        params = ctx.params or {}
        name = params.get("name")
        tool = name if isinstance(name, str) else ""
        arguments = params.get("arguments")
        principal = principal_from_request(ctx.request, services).id
        started = time.perf_counter()
        outcome = EXCEPTION
        extra: dict[str, Any] = {}
        try:
            result = await call_next(ctx)
            outcome = outcome_of(result)
            return result
        except MCPError as exc:
            outcome, extra = REFUSED, {"error_code": exc.error.code}
            raise
        except anyio.get_cancelled_exc_class():
            outcome = CANCELLED
            raise
        except Exception as exc:
            extra = {"error": type(exc).__name__}
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            record = functools.partial(record_tool_call, audit, principal, tool, arguments, outcome, elapsed_ms, extra)
            # Shielded: a cancelled call is recorded too; off the loop: the write may wait on the lock.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(record)

    return audit_tool_calls


def install_tool_audit(server: MCPServer[Any], services: Services, audit: AuditLog) -> None:
    """Record every ``tools/call`` on ``server`` in ``audit``.

    Install it before other application middleware (rate limits, access checks) so that calls they
    refuse are recorded too: ``refused`` when they raise ``MCPError``, the error's code (for example
    ``auth.forbidden``) when they answer with a coded error result.
    """
    server.middleware.append(tool_audit_middleware(services, audit))
