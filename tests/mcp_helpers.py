"""Small helpers for tests that talk to the server through the SDK client."""

from typing import Any

from mcp import Client
from mcp.types import CallToolResult, TextContent, TextResourceContents


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call_ok(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def call_error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error
    return text_of(result)


async def read_text(client: Client, uri: str) -> tuple[str, str | None]:
    result = await client.read_resource(uri)
    assert len(result.contents) == 1
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    return content.text, content.mime_type


READ_ONLY_TOOLS = {
    "list_templates",
    "customize_template",
    "validate_blueprint",
    "generate_deployment_plan",
    "compare_blueprints",
    "create_blueprint",
    "estimate_resources",
    "optimize_costs",
    "calculate_capacity",
    "forecast_metrics",
    "security_audit",
    "check_compliance",
    "suggest_architecture",
    "migrate_infrastructure",
    "troubleshoot_issue",
    "ipr_get",
    "ipr_list",
    "deployment_status",
}
WRITE_TOOLS = {"ipr_create", "ipr_revise", "ipr_review", "council_review"}
DESTRUCTIVE_TOOLS = {"ipr_deploy", "ipr_rollback", "ipr_close"}
ALL_TOOLS = sorted(READ_ONLY_TOOLS | WRITE_TOOLS | DESTRUCTIVE_TOOLS)
