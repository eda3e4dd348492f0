"""IPR tools and resources: propose, review, deploy, roll back, close; every change recorded.

The caller's principal comes from the transport: the HTTP side app puts an authenticated one in the
request state; stdio and in-memory sessions are the local principal (``ALMA_STDIO_ROLES``, never an
approver by default), so a model can propose and deploy but a person approves, with the CLI.
"""

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.types import ToolAnnotations
from pydantic import Field

from alma_mcp.errors import AlmaError, InvalidRequest
from alma_mcp.ipr.deploy import DeploymentRecord, DeployOutcome
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.ipr.service import IPRPage, IPRView
from alma_mcp.server.identity import principal_from_request
from alma_mcp.server.toolkit import coded_errors
from alma_mcp.services import Services

T = TypeVar("T")

READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)

IprId = Annotated[int, Field(ge=1, description="The IPR's id (see ipr_list)")]


def principal_of(ctx: Context[Any, Any], services: Services) -> Principal:
    """The authenticated principal the HTTP app attached, else the local (stdio) principal."""
    return principal_from_request(ctx.request_context.request, services)


async def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The store may wait on another process's write lock: never block the event loop on it.
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def trim_view(view: IPRView, max_items: int) -> IPRView:
    """Keep the newest events and comments within the output budget."""
    return view.model_copy(update={"events": view.events[-max_items:], "comments": view.comments[-max_items:]})


def register(server: MCPServer[Any], services: Services) -> None:
    iprs = services.iprs
    orchestrator = services.orchestrator
    budget = services.settings.output_max_items

    async def changed(ctx: Context[Any, Any], ipr_id: int, deployment_id: int | None = None) -> None:
        await ctx.notify_resource_updated(f"alma://iprs/{ipr_id}")
        if deployment_id is not None:
            await ctx.notify_resource_updated(f"alma://deployments/{deployment_id}")

    @server.tool(title="Open an infrastructure pull request", annotations=WRITE)
    @coded_errors
    async def ipr_create(
        title: Annotated[str, Field(min_length=1, max_length=200, description="What the change does")],
        ctx: Context[Any, Any],
        description: Annotated[str, Field(max_length=10_000, description="Why, and what to look at")] = "",
        blueprint: Annotated[
            str | dict[str, Any] | None, Field(description="The proposed blueprint (YAML/JSON text or object)")
        ] = None,
        template: Annotated[str | None, Field(description="Or: a template name to start from")] = None,
        customization: Annotated[
            dict[str, Any] | None,
            Field(description="With template: name, description, scale_factor, parameters (see customize_template)"),
        ] = None,
    ) -> IPRView:
        """Propose a change as an IPR (infrastructure pull request): the blueprint (or a customized
        template) is stored as an immutable revision and checked (validation, deployment plan against
        what is deployed). A person then reviews it; an IPR is never approved by its proposer. Returns
        the IPR with its checks, state and allowed actions. Nothing is deployed."""
        principal = principal_of(ctx, services)
        view = await _off_loop(
            iprs.create,
            principal,
            title=title,
            description=description,
            blueprint=blueprint,
            template=template,
            customization=customization,
        )
        await changed(ctx, view.ipr.id)
        return trim_view(view, budget)

    @server.tool(title="Revise an IPR", annotations=WRITE)
    @coded_errors
    async def ipr_revise(
        ipr_id: IprId,
        blueprint: Annotated[str | dict[str, Any], Field(description="The new blueprint (YAML/JSON text or object)")],
        ctx: Context[Any, Any],
    ) -> IPRView:
        """Replace an open or changes-requested IPR's blueprint with a new immutable revision; the checks
        run again and earlier approvals lapse."""
        view = await _off_loop(iprs.revise, principal_of(ctx, services), ipr_id, blueprint)
        await changed(ctx, ipr_id)
        return trim_view(view, budget)

    @server.tool(title="Show an IPR", annotations=READ)
    @coded_errors
    async def ipr_get(ipr_id: IprId, ctx: Context[Any, Any]) -> IPRView:
        """An IPR with its current revision (blueprint and check results), approvals, allowed actions,
        review comments, event history and deployments."""
        return trim_view(await _off_loop(iprs.get, principal_of(ctx, services), ipr_id), budget)

    @server.tool(title="List IPRs", annotations=READ)
    @coded_errors
    async def ipr_list(
        ctx: Context[Any, Any],
        state: Annotated[
            str | None, Field(description="Only IPRs in this state, e.g. open, approved, deployed")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Page size")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page")] = None,
    ) -> IPRPage:
        """IPRs, newest first, optionally by state; page with next_cursor."""
        return await _off_loop(iprs.list_iprs, principal_of(ctx, services), state, limit, cursor)

    @server.tool(title="Review an IPR", annotations=WRITE)
    @coded_errors
    async def ipr_review(
        ipr_id: IprId,
        action: Annotated[Literal["approve", "request_changes", "reject"], Field(description="The verdict")],
        ctx: Context[Any, Any],
        comment: Annotated[str | None, Field(max_length=10_000, description="Why")] = None,
        override: Annotated[
            str | None,
            Field(
                max_length=2000,
                description="Admins only: approve past an overridable blocking check (budget, "
                "critical findings); the reason is recorded",
            ),
        ] = None,
    ) -> IPRView:
        """Approve, request changes on, or reject an IPR. Needs the approver role, which the model's
        own session does not have by default: a person approves with `alma-mcp ipr approve ID`. The
        proposer can never approve their own IPR, and an IPR whose checks fail cannot be approved."""
        view = await _off_loop(iprs.review, principal_of(ctx, services), ipr_id, action, comment, override)
        await changed(ctx, ipr_id)
        return trim_view(view, budget)

    @server.tool(title="Deploy an approved IPR", annotations=DESTRUCTIVE)
    @coded_errors
    async def ipr_deploy(
        ipr_id: IprId,
        ctx: Context[Any, Any],
        dry_run: Annotated[bool, Field(description="Only show what would change")] = False,
    ) -> DeployOutcome:
        """Deploy an approved IPR through its engines, wave by wave along the dependency graph, with
        progress notifications; every step is recorded. With dry_run, returns the engine plan and
        touches nothing. Deploying a deployed IPR again is a no-op unless something drifted; a failed
        deploy can be deployed again (it continues) or rolled back."""

        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        outcome = await orchestrator.deploy(principal_of(ctx, services), ipr_id, dry_run=dry_run, progress=progress)
        if not dry_run:
            await changed(ctx, ipr_id, outcome.deployment_id)
        return outcome

    @server.tool(title="Roll back an IPR", annotations=DESTRUCTIVE)
    @coded_errors
    async def ipr_rollback(ipr_id: IprId, ctx: Context[Any, Any]) -> DeployOutcome:
        """Roll a deployed or failed IPR back to what was deployed before it (or remove everything it
        created when nothing was), dependents first; recorded like a deploy."""

        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        outcome = await orchestrator.rollback(principal_of(ctx, services), ipr_id, progress=progress)
        await changed(ctx, ipr_id, outcome.deployment_id)
        return outcome

    @server.tool(title="Close an IPR", annotations=DESTRUCTIVE)
    @coded_errors
    async def ipr_close(
        ipr_id: IprId,
        ctx: Context[Any, Any],
        comment: Annotated[str | None, Field(max_length=10_000, description="Why")] = None,
    ) -> IPRView:
        """Close an IPR that will not be deployed (open, changes requested, approved or rolled back).
        Final: a closed IPR cannot be reopened."""
        view = await _off_loop(iprs.close, principal_of(ctx, services), ipr_id, comment)
        await changed(ctx, ipr_id)
        return trim_view(view, budget)

    @server.tool(title="Deployment status", annotations=READ)
    @coded_errors
    async def deployment_status(
        ctx: Context[Any, Any],
        deployment_id: Annotated[int | None, Field(ge=1, description="A deployment id")] = None,
        ipr_id: Annotated[int | None, Field(ge=1, description="Or: an IPR id (its latest deployment)")] = None,
    ) -> DeploymentRecord:
        """A deployment (or an IPR's latest one): its state, plan, and every step attempt with engine,
        wave, outcome and message."""
        principal_of(ctx, services).require(Role.VIEWER, "read deployments")
        if (deployment_id is None) == (ipr_id is None):
            raise InvalidRequest("give exactly one of deployment_id or ipr_id")
        if deployment_id is not None:
            return await _off_loop(orchestrator.deployment, deployment_id)
        assert ipr_id is not None
        return await _off_loop(orchestrator.latest_deployment, ipr_id)

    @server.resource(
        "alma://iprs/{ipr_id}",
        name="ipr",
        title="Infrastructure pull request",
        description="An IPR as JSON: state, current revision with checks, approvals, comments, events, "
        "deployments. Updated notifications are sent when it changes.",
        mime_type="application/json",
    )
    def ipr_resource(ipr_id: str) -> str:
        try:
            view = iprs.view(_as_id(ipr_id, "IPR"))
        except AlmaError as err:
            raise ResourceNotFoundError(str(err)) from None
        return trim_view(view, budget).model_dump_json(indent=2)

    @server.resource(
        "alma://deployments/{deployment_id}",
        name="deployment",
        title="Deployment",
        description="A deploy or rollback as JSON: state, plan and every step attempt. Updated "
        "notifications are sent when it changes.",
        mime_type="application/json",
    )
    def deployment_resource(deployment_id: str) -> str:
        try:
            record = orchestrator.deployment(_as_id(deployment_id, "deployment"))
        except AlmaError as err:
            raise ResourceNotFoundError(str(err)) from None
        return json.dumps(record.model_dump(mode="json"), indent=2)


def _as_id(raw: str, what: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 2**62:
        raise InvalidRequest(f"{what} id {raw!r} is not a positive integer")
    return int(raw)
