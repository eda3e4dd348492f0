"""The MCP-level audit middleware: one row per tool call, on every transport and era, with no values."""

import dataclasses
import threading
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import INVALID_REQUEST, CallToolResult, TextContent
from starlette.types import Receive, Scope, Send

from alma_mcp.audit import AuditEntry, AuditLog, arguments_digest
from alma_mcp.errors import Forbidden
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.server.app import build_server
from alma_mcp.server.auditing import outcome_of
from alma_mcp.server.toolkit import error_result
from alma_mcp.services import Services
from alma_mcp.web.app import create_app

pytestmark = pytest.mark.anyio

KEY = Principal(id="key:ci", roles=frozenset({Role.VIEWER, Role.PROPOSER}))


def audited_server(services: Services) -> tuple[MCPServer[Services], AuditLog]:
    # build_server installs the tool audit with the services' own log.
    return build_server(services), services.audit


def tool_rows(audit: AuditLog) -> list[AuditEntry]:
    return [e for e in audit.entries(limit=1000) if e.kind == "tool_call"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_tool_call_is_one_row_with_outcome_and_duration(services: Services, mode: str) -> None:
    server, audit = audited_server(services)
    async with Client(server, mode=mode) as client:
        await client.list_tools()
        await client.call_tool("list_templates", {"category": "database"})
        await client.call_tool("customize_template", {"template": "nope"})
        await client.call_tool("customize_template", {"template": 5})
        await client.call_tool("no_such_tool", {})
        await client.call_tool("ipr_review", {"ipr_id": 1, "action": "approve"})
    rows = tool_rows(audit)
    assert [(e.principal, e.action, e.target, e.outcome) for e in rows] == [
        ("mcp:local", "list_templates", "", "ok"),
        ("mcp:local", "customize_template", "", "template.not_found"),
        ("mcp:local", "customize_template", "", "tool_error"),  # argument validation: no code
        ("mcp:local", "no_such_tool", "", "tool_error"),
        ("mcp:local", "ipr_review", "", "auth.forbidden"),
    ]
    assert all(e.duration_ms is not None and e.duration_ms >= 0 for e in rows)
    assert rows[0].detail == {
        "tool": "list_templates",
        "argument_keys": ["category"],
        "arguments_sha256": arguments_digest({"category": "database"}),
    }
    assert audit.verify().ok


async def test_argument_values_never_reach_the_log(services: Services) -> None:
    server, audit = audited_server(services)
    arguments = {"blueprint": {"name": "secret-shop", "metadata": {"db_password": "hunter2"}}, "strict": True}
    async with Client(server) as client:
        await client.call_tool("validate_blueprint", arguments)
    [row] = tool_rows(audit)
    assert row.detail["argument_keys"] == ["blueprint", "strict"]
    assert row.detail["arguments_sha256"] == arguments_digest(arguments)
    with services.store.lock:
        dump = "\n".join(services.store.db.conn.iterdump())
    assert "hunter2" not in dump
    assert "secret-shop" not in dump


async def test_a_refused_call_is_recorded_as_refused(services: Services) -> None:
    server, audit = audited_server(services)

    def refuse() -> str:
        """Always refused at the protocol level."""
        raise MCPError(code=INVALID_REQUEST, message="no")

    server.add_tool(refuse)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.call_tool("refuse", {})
    [row] = tool_rows(audit)
    assert (row.action, row.outcome, row.detail["error_code"]) == ("refuse", "refused", INVALID_REQUEST)


async def test_a_middleware_further_in_that_refuses_is_recorded(services: Services) -> None:
    server, audit = audited_server(services)

    async def limit(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call":
            raise MCPError(code=INVALID_REQUEST, message="rate limited")
        return await call_next(ctx)

    server.middleware.append(limit)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.call_tool("list_templates", {})
    [row] = tool_rows(audit)
    assert row.outcome == "refused"


async def test_an_exception_in_the_chain_is_recorded(services: Services) -> None:
    server, audit = audited_server(services)

    async def broken(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call":
            raise RuntimeError("bug")
        return await call_next(ctx)

    server.middleware.append(broken)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.call_tool("list_templates", {})
    [row] = tool_rows(audit)
    assert (row.outcome, row.detail["error"]) == ("exception", "RuntimeError")


class SignallingLog(AuditLog):
    """Sets ``appended`` after each row (from whichever thread wrote it)."""

    def __init__(self, services: Services) -> None:
        super().__init__(services.store)
        self.appended = threading.Event()

    def append(self, *args: Any, **kwargs: Any) -> int:
        row = super().append(*args, **kwargs)
        self.appended.set()
        return row


async def test_a_cancelled_call_is_recorded_as_cancelled(services: Services) -> None:
    audit = SignallingLog(services)
    server = build_server(dataclasses.replace(services, audit=audit))

    async def slow() -> str:
        """Takes its time."""
        await anyio.sleep(30)
        return "done"

    server.add_tool(slow)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.call_tool("slow", {}, read_timeout_seconds=0.2)
        assert await anyio.to_thread.run_sync(audit.appended.wait, 5)
    [row] = tool_rows(audit)
    assert row.outcome == "cancelled"


async def test_other_methods_are_not_recorded_and_a_disabled_log_records_nothing(services: Services) -> None:
    audit = AuditLog(services.store, enabled=False)
    server = build_server(dataclasses.replace(services, audit=audit))
    async with Client(server) as client:
        await client.list_tools()
        await client.call_tool("list_templates", {})
    assert audit.entries() == []


async def test_http_calls_are_recorded_under_the_keys_principal(services: Services) -> None:
    server, audit = audited_server(services)
    app = create_app(services, server)

    async def as_key(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = KEY
        await app(scope, receive, send)

    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=as_key)
        async with (
            httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
            Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client,
        ):
            await client.call_tool("ipr_list", {"limit": 5})
    [row] = tool_rows(audit)
    assert (row.principal, row.action, row.outcome) == ("key:ci", "ipr_list", "ok")


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        ({"content": [], "isError": False}, "ok"),
        ({"content": []}, "ok"),
        (None, "ok"),
        ({"resultType": "input_required", "inputRequests": {}}, "input_required"),
        ({"content": [{"type": "text", "text": "[ipr.not_found] no IPR 9"}], "isError": True}, "ipr.not_found"),
        ({"content": [{"type": "text", "text": "Unknown tool: x"}], "isError": True}, "tool_error"),
        ({"content": [], "isError": True}, "tool_error"),
        (error_result(Forbidden("no")), "auth.forbidden"),
        (
            CallToolResult(content=[TextContent(type="text", text="[blueprint.cycle] a -> a")], is_error=True),
            "blueprint.cycle",
        ),
    ],
)
def test_outcome_of_reads_wire_dicts_and_models(result: HandlerResult, outcome: str) -> None:
    assert outcome_of(result) == outcome
