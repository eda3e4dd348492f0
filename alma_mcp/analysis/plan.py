"""generate_deployment_plan: waves from the dependency graph, actions against the current state.

After Terraform's graph walk: a resource's wave is one more than the deepest wave of what it depends
on, so the number of waves equals the longest dependency chain (no plan can have fewer), and every
edge points to an earlier wave. Steps within a wave run concurrently up to a bound; a wave's
duration is its list-scheduling makespan (longest step first onto the least-loaded worker). Resources
only in the current state are deleted last, dependents first. Destroy and rollback run in reverse.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Final, Literal

from pydantic import BaseModel

from alma_mcp.analysis.compare import ResourceChange, diff_resources
from alma_mcp.analysis.durations import DurationTable
from alma_mcp.blueprint.graph import Node, adjacency, cycle_issues, nodes_from_blueprint, reference_issues
from alma_mcp.blueprint.model import Blueprint, Provider, Resource, ResourceType
from alma_mcp.errors import BlueprintCycle, BlueprintError
from alma_mcp.gcpause import without_gc

StepAction = Literal["create", "update", "replace", "delete", "no-op"]
SYMBOLS: Final[dict[str, str]] = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
INVERSE: Final[dict[str, str]] = {"create": "delete", "delete": "create", "update": "update", "replace": "replace"}


class PlanStep(BaseModel):
    resource: str
    type: str
    provider: str
    action: StepAction
    wave: int
    depends_on: list[str]
    estimated_seconds: float
    reason: str = ""


class Wave(BaseModel):
    number: int
    steps: int
    changes: int
    estimated_seconds: float
    resources: list[str]


class RollbackStep(BaseModel):
    resource: str
    action: str


class DeploymentPlan(BaseModel):
    """The outcome of generate_deployment_plan."""

    summary: str
    counts: dict[str, int]
    parallelism: int
    waves: list[Wave]
    steps: list[PlanStep]
    critical_path: list[str]
    critical_path_seconds: float
    estimated_total_seconds: float
    destroy_order: list[list[str]]
    rollback_order: list[RollbackStep]
    steps_omitted: int = 0
    waves_omitted: int = 0


def ensure_plannable(blueprint: Blueprint) -> list[Node]:
    """The blueprint's graph nodes, if the graph can be walked.

    Raises:
        BlueprintCycle: the dependencies form a cycle (every cycle listed in the issues).
        BlueprintError: unknown or duplicate references.
    """
    nodes = nodes_from_blueprint(blueprint)
    cycles = cycle_issues(nodes)
    if cycles:
        raise BlueprintCycle(f"{cycles[0].message} (at {cycles[0].path}); break the cycle to plan", issues=cycles)
    problems = reference_issues(nodes)
    if problems:
        raise BlueprintError(f"{problems[0].message} at {problems[0].path}; fix it to plan", issues=problems)
    return nodes


def dependency_levels(order: Sequence[str], edges: dict[str, list[str]]) -> dict[str, int]:
    """Wave number per node: 1 + the deepest wave among its edges' targets (Kahn layering, O(V+E))."""
    indegree = dict.fromkeys(order, 0)
    users: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for dep in edges[name]:
            indegree[name] += 1
            users[dep].append(name)
    level = dict.fromkeys(order, 1)
    ready = [name for name in order if indegree[name] == 0]
    while ready:
        name = ready.pop()
        for user in users[name]:
            level[user] = max(level[user], level[name] + 1)
            indegree[user] -= 1
            if indegree[user] == 0:
                ready.append(user)
    return level


def makespan(durations: Sequence[float], workers: int) -> float:
    """Longest-processing-time-first list scheduling onto ``workers`` parallel slots."""
    if not durations:
        return 0.0
    loads = [0.0] * min(workers, len(durations))
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


@without_gc
def plan_deployment(
    target: Blueprint,
    current: Blueprint | None,
    durations: DurationTable,
    parallelism: int = 10,
) -> DeploymentPlan:
    """The full plan (callers trim it to their output budget with ``trim``).

    Raises:
        BlueprintCycle, BlueprintError: from ``ensure_plannable``.
    """
    nodes = ensure_plannable(target)
    if current is not None:
        ensure_plannable(current)
    changes: dict[str, ResourceChange] = {}
    deleted: list[Resource] = []
    if current is not None:
        for change in diff_resources(current, target):
            if change.action == "delete":
                res = current.resource(change.name)
                if res is not None:
                    deleted.append(res)
            else:
                changes[change.name] = change

    names = [r.name for r in target.resources]
    edges = adjacency(nodes)
    levels = dependency_levels(names, edges)
    steps: list[PlanStep] = []
    for res in target.resources:
        found = changes.get(res.name)
        action: StepAction = "create" if found is None else found.action
        reason = "; ".join(found.replace_reasons) if found is not None and found.action == "replace" else ""
        if found is not None and found.renamed_from and not reason:
            reason = f"renamed from {found.renamed_from}"
        steps.append(_step(res, action, levels[res.name], edges[res.name], reason, durations))
    deepest = max(levels.values(), default=0)

    if deleted:
        # Deleted resources go dependents-first: reverse the edges among them.
        deleted_names = {r.name for r in deleted}
        reverse: dict[str, list[str]] = {r.name: [] for r in deleted}
        for res in deleted:
            for dep in res.dependencies:
                if dep in deleted_names:
                    reverse[dep].append(res.name)
        del_levels = dependency_levels([r.name for r in deleted], reverse)
        steps.extend(_step(r, "delete", deepest + del_levels[r.name], [], "", durations) for r in deleted)

    steps.sort(key=lambda s: s.wave)  # stable: declaration order within a wave
    waves = _waves(steps, parallelism)
    path, path_seconds = _critical_path(steps, edges)
    counts = {a: sum(1 for s in steps if s.action == a) for a in ("create", "update", "replace", "delete", "no-op")}
    return DeploymentPlan(
        summary=_summary(steps, counts),
        counts=counts,
        parallelism=parallelism,
        waves=waves,
        steps=steps,
        critical_path=path,
        critical_path_seconds=round(path_seconds, 1),
        estimated_total_seconds=round(sum(w.estimated_seconds for w in waves), 1),
        destroy_order=[w.resources for w in reversed(waves) if w.number <= deepest],
        rollback_order=[
            RollbackStep(resource=s.resource, action=INVERSE[s.action]) for s in reversed(steps) if s.action != "no-op"
        ],
    )


def _step(
    res: Resource, action: StepAction, wave: int, depends_on: list[str], reason: str, durations: DurationTable
) -> PlanStep:
    # Built from an already validated blueprint: skip re-validation (it dominates large plans).
    return PlanStep.model_construct(
        resource=res.name,
        type=res.type.value,
        provider=res.provider.value,
        action=action,
        wave=wave,
        depends_on=depends_on,
        estimated_seconds=round(durations.seconds(action, ResourceType(res.type), Provider(res.provider)), 1),
        reason=reason,
    )


def _waves(steps: Sequence[PlanStep], parallelism: int) -> list[Wave]:
    grouped: dict[int, list[PlanStep]] = {}
    for step in steps:
        grouped.setdefault(step.wave, []).append(step)
    return [
        Wave.model_construct(
            number=number,
            steps=len(members),
            changes=sum(1 for s in members if s.action != "no-op"),
            estimated_seconds=round(makespan([s.estimated_seconds for s in members], parallelism), 1),
            resources=[s.resource for s in members],
        )
        for number, members in sorted(grouped.items())
    ]


def _critical_path(steps: Sequence[PlanStep], edges: dict[str, list[str]]) -> tuple[list[str], float]:
    # Steps are in wave order, so every dependency's distance is known before its users'.
    seconds = {s.resource: s.estimated_seconds for s in steps if s.action != "delete"}
    dist: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for step in steps:
        if step.action == "delete":
            continue
        best, best_dep = 0.0, None
        for dep in edges.get(step.resource, []):
            if dist[dep] > best or best_dep is None:
                best, best_dep = dist[dep], dep
        dist[step.resource] = seconds[step.resource] + best
        via[step.resource] = best_dep
    if not dist:
        return [], 0.0
    end = max(dist, key=lambda n: dist[n])
    path = [end]
    while (prev := via[path[-1]]) is not None:
        path.append(prev)
    path.reverse()
    return path, dist[end]


def _summary(steps: Sequence[PlanStep], counts: dict[str, int]) -> str:
    creates = counts["create"] + counts["replace"]
    destroys = counts["delete"] + counts["replace"]
    if creates + counts["update"] + destroys == 0:
        return "No changes. The infrastructure matches the blueprint."
    lines = [f"Plan: {creates} to create, {counts['update']} to update, {destroys} to destroy."]
    for step in steps:
        if step.action == "no-op":
            continue
        note = f" ({step.reason})" if step.reason else ""
        lines.append(f"  {SYMBOLS[step.action]} {step.resource} ({step.type}, {step.provider}){note}")
    return "\n".join(lines)


def trim(plan: DeploymentPlan, max_items: int) -> DeploymentPlan:
    """The plan within an output budget: long step, wave and summary lists cut, with counts of the rest."""
    if len(plan.steps) <= max_items and len(plan.waves) <= max_items:
        return plan
    lines = plan.summary.splitlines()
    summary = "\n".join(lines[: max_items + 1])
    if len(lines) > max_items + 1:
        summary += f"\n  ... and {len(lines) - max_items - 1} more"
    return plan.model_copy(
        update={
            "summary": summary,
            "steps": plan.steps[:max_items],
            "steps_omitted": max(0, len(plan.steps) - max_items),
            "waves": plan.waves[:max_items],
            "waves_omitted": max(0, len(plan.waves) - max_items),
            "destroy_order": plan.destroy_order[:max_items],
            "rollback_order": plan.rollback_order[:max_items],
            "critical_path": plan.critical_path[:max_items],
        }
    )
