"""Analysis tools: validate, plan, compare and create blueprints. Thin: parse arguments, call the domain."""

from typing import Annotated, Any

from mcp.server import MCPServer
from pydantic import BaseModel, Field, ValidationError

from alma_mcp.analysis.compare import Comparison, FieldChange, Impact, ResourceChange, compare_sources
from alma_mcp.analysis.create import BlueprintRequest, CreatedBlueprint, create_blueprint
from alma_mcp.analysis.plan import DeploymentPlan, plan_sources
from alma_mcp.analysis.validate import ValidationReport, validate
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import InvalidRequest
from alma_mcp.server.toolkit import READ_ONLY, coded_errors
from alma_mcp.services import Services

BlueprintArg = Annotated[
    str | dict[str, Any],
    Field(description="A blueprint (format v1) as YAML or JSON text, or as an object; see alma://schema/blueprint"),
]


PATCH_BUDGET_FACTOR = 5
"""A patch may hold this many times the list budget in operations before it is left out."""


class ComparisonView(BaseModel):
    """compare_blueprints' answer: changed resources only (no-ops counted), within the output budget."""

    identical: bool
    similarity: float
    summary: dict[str, int]
    resources: list[ResourceChange] = Field(description="Resources that change (create, delete, update, replace).")
    resources_omitted: int = 0
    blueprint_changes: list[FieldChange]
    impact: Impact
    patch: list[dict[str, Any]] | None = Field(
        description="RFC 6902 operations turning the normalised a into the normalised b; null when over budget."
    )
    patch_operations: int
    notes: list[str]


def comparison_view(comparison: Comparison, max_items: int) -> ComparisonView:
    changed = [r for r in comparison.resources if r.action != "no-op"]
    notes = list(comparison.notes)
    ops = len(comparison.patch)
    patch: list[dict[str, Any]] | None = comparison.patch
    if ops > max_items * PATCH_BUDGET_FACTOR:
        patch = None
        notes.append(f"the patch has {ops} operations, over the output budget; it is not included")
    return ComparisonView(
        identical=comparison.identical,
        similarity=comparison.similarity,
        summary=comparison.summary,
        resources=changed[:max_items],
        resources_omitted=max(0, len(changed) - max_items),
        blueprint_changes=comparison.blueprint_changes[:max_items],
        impact=comparison.impact,
        patch=patch,
        patch_operations=ops,
        notes=notes,
    )


def register(server: MCPServer[Any], services: Services) -> None:
    limits = services.limits
    settings = services.settings

    def load(source: str | dict[str, Any]) -> Blueprint:
        return load_blueprint(source, limits)

    @server.tool(title="Validate a blueprint", annotations=READ_ONLY)
    @coded_errors
    def validate_blueprint(
        blueprint: BlueprintArg,
        strict: Annotated[bool, Field(description="Treat warnings as errors")] = False,
    ) -> ValidationReport:
        """Check a blueprint in layers and report every problem, not only the first: parse limits and
        syntax, schema (names, quantities, ports, enums, unknown fields with did-you-mean), references
        (unknown or duplicate names, dependencies, backends, networks), dependency cycles (with the
        cycle path), overlapping subnets, provider fit (a type the provider cannot host), and warnings
        (load balancers without backends, cross-provider dependencies without a shared network,
        unpinned images). Each problem has a stable code and a JSON pointer path."""
        return validate(blueprint, strict=strict, limits=limits)

    @server.tool(title="Generate a deployment plan", annotations=READ_ONLY)
    @coded_errors
    def generate_deployment_plan(
        blueprint: BlueprintArg,
        current: Annotated[
            str | dict[str, Any] | None,
            Field(description="What is deployed now, as a blueprint; omit for a first deployment"),
        ] = None,
        parallelism: Annotated[
            int | None, Field(ge=1, le=1000, description="Steps run at once within a wave (default from settings)")
        ] = None,
    ) -> DeploymentPlan:
        """Plan a deployment: waves from the dependency graph (as few as the longest dependency chain
        allows), each step's action against `current` (create, update, replace, delete, no-op) with
        the reason for replacements, estimated seconds per step and per wave (parallel up to the
        bound), the critical path, destroy and rollback order, and a Terraform-style summary
        ("Plan: N to create, M to update, K to destroy" with + ~ -/+ - lines). Nothing is changed."""
        return plan_sources(
            blueprint,
            current,
            services.durations,
            parallelism or settings.plan_parallelism,
            settings.output_max_items,
            limits,
        )

    @server.tool(name="compare_blueprints", title="Compare two blueprints", annotations=READ_ONLY)
    @coded_errors
    def compare_blueprints_tool(
        a: Annotated[str | dict[str, Any], Field(description="The blueprint before (YAML/JSON text or object)")],
        b: Annotated[str | dict[str, Any], Field(description="The blueprint after (YAML/JSON text or object)")],
    ) -> ComparisonView:
        """Semantic diff of blueprint a -> b: resources matched by name, renames detected by
        similarity, units normalised (4GB equals 4096MB), each resource classified create, delete,
        update or replace (replace when provider, type, image or template changes, or a volume
        shrinks) with per-field changes (add, remove, modify, replace), the capacity impact (resource
        count, cpu, memory, storage), a similarity score, and an RFC 6902 JSON Patch from a to b."""
        comparison = compare_sources(a, b, limits)
        return comparison_view(comparison, settings.output_max_items)

    @server.tool(name="create_blueprint", title="Create a blueprint from requirements", annotations=READ_ONLY)
    @coded_errors
    def create_blueprint_tool(
        text: Annotated[
            str | None, Field(description="What you need, in words, e.g. 'a shop for 10k users, 99.95%, on k8s'")
        ] = None,
        name: Annotated[str | None, Field(description="Blueprint name (DNS-1123 label)")] = None,
        description: Annotated[str | None, Field(description="Blueprint description")] = None,
        workload: Annotated[
            str | None,
            Field(
                description="web, api, microservices, database, cache, data-pipeline, ml-training, observability, "
                "zero-trust, api-gateway, ..."
            ),
        ] = None,
        expected_rps: Annotated[float | None, Field(description="Requests per second")] = None,
        expected_users: Annotated[int | None, Field(description="Concurrent users (when rps is unknown)")] = None,
        availability: Annotated[float | None, Field(description="Availability target in percent, e.g. 99.9")] = None,
        environment: Annotated[str | None, Field(description="production, staging or development")] = None,
        provider: Annotated[str | None, Field(description="simulation, docker, kubernetes or proxmox")] = None,
        budget_monthly: Annotated[float | None, Field(description="Budget in USD per month")] = None,
    ) -> CreatedBlueprint:
        """Design a blueprint from requirements, given as fields and/or free text (fields win over
        the text): picks a template for the workload, moves it to the provider, sizes the app tier
        from traffic and the availability target, hardens it for production, fits it to the budget,
        and explains every choice in `rationale`. Deterministic; the result always passes
        validate_blueprint with no warnings. Nothing is deployed: propose it with ipr_create."""
        fields = {
            "text": text,
            "name": name,
            "description": description,
            "workload": workload,
            "expected_rps": expected_rps,
            "expected_users": expected_users,
            "availability": availability,
            "environment": environment,
            "provider": provider,
            "budget_monthly": budget_monthly,
        }
        try:
            request = BlueprintRequest(**{k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(
                problems, data={"fields": [str(e["loc"][0]) for e in exc.errors() if e["loc"]]}
            ) from None
        return create_blueprint(request, services.catalog, services.create_rules)
