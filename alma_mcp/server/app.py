"""The server factory: one ``MCPServer`` per call, wired to already-opened services."""

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from mcp.server import MCPServer

from alma_mcp import __version__
from alma_mcp.server import advisors, analysis, completions, costs, council, ipr, resources, security, templates
from alma_mcp.server.access import install_access_control
from alma_mcp.server.auditing import install_tool_audit
from alma_mcp.server.limits import ToolLimiter, install_tool_limits
from alma_mcp.services import Services

INSTRUCTIONS = """\
alma-mcp designs, checks and deploys infrastructure described as blueprints (YAML/JSON, format v1).
Start from a template (list_templates, then read alma://templates/{name} or derive a new blueprint
with customize_template) or describe what you need to create_blueprint. Check a blueprint with
validate_blueprint, see what a change does with compare_blueprints, and how it would roll out with
generate_deployment_plan. Blueprints go in as YAML/JSON text or objects; the format's JSON Schema is
at alma://schema/blueprint.
Tool errors start with a stable code in brackets, e.g. [template.not_found], followed by what is
allowed; correct the call and retry.
Changes go through IPRs (infrastructure pull requests): ipr_create proposes a blueprint, its checks
run, a person approves it outside this session (alma-mcp ipr approve ID), then ipr_deploy deploys it
wave by wave and ipr_rollback undoes it. You cannot approve your own IPR.
"""


def build_server(services: Services, *, limiter: ToolLimiter | None = None) -> MCPServer[Services]:
    """A fully wired server; the caller owns ``services`` and keeps them open while it runs.

    With a ``limiter``, tool calls are rate-limited per principal on this server's every transport.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer[Services]) -> AsyncIterator[Services]:
        yield services

    with _sdk_log_handler_skipped():
        server: MCPServer[Services] = MCPServer(
            "alma-mcp",
            title="alma-mcp: infrastructure as conversation",
            version=__version__,
            instructions=INSTRUCTIONS,
            lifespan=lifespan,
            warn_on_duplicate_tools=True,
            warn_on_duplicate_resources=True,
            warn_on_duplicate_prompts=True,
        )
    wired: Any = server
    templates.register(wired, services)
    analysis.register(wired, services)
    costs.register(wired, services)
    security.register(wired, services)
    advisors.register(wired, services)
    council.register(wired, services)
    ipr.register(wired, services)
    resources.register(wired, services)
    completions.register(wired, services)
    install_tool_audit(wired, services, services.audit)  # outermost: refused calls are recorded too
    install_access_control(wired, services)
    if limiter is not None:
        install_tool_limits(wired, services, limiter)
    return server


@contextmanager
def _sdk_log_handler_skipped() -> Iterator[None]:
    # MCPServer() imports rich (~11 ms of every start) to build a handler for logging.basicConfig(),
    # which drops it whenever logging is already configured, as the CLI does first. With rich hidden
    # the SDK takes its own plain StreamHandler fallback instead; rich imports normally afterwards.
    if "rich" in sys.modules:
        yield
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        del sys.modules["rich"]
