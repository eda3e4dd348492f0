"""generate_deployment_plan: waves from the dependency graph, actions against the current state.

After Terraform's graph walk: a resource's wave is one more than the deepest wave of what it depends
on, so the number of waves equals the longest dependency chain (no plan can have fewer), and every
edge points to an earlier wave. Steps within a wave run concurrently up to a bound; a wave's
duration is its list-scheduling makespan (longest step first onto the least-loaded worker). Resources
only in the current state are deleted last, dependents first. Destroy and rollback run in reverse.
"""

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel

from alma_mcp.analysis.compare import ResourceChange, diff_resources
from alma_mcp.analysis.durations import DurationTable
from alma_mcp.blueprint.graph import DependencyGraph, Node, check_graph, nodes_from_blueprint
from alma_mcp.blueprint.loader import DEFAULT_LIMITS, Limits, load_blueprint, load_with_nodes
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
    return _plannable(blueprint)[0]


@without_gc
def plan_sources(
    target: str | Mapping[str, Any],
    current: str | Mapping[str, Any] | None,
    durations: DurationTable,
    parallelism: int = 10,
    max_items: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> DeploymentPlan:
    """generate_deployment_plan's work: load the blueprints (YAML/JSON text or data) and plan.

    One bulk section from the first load to the plan: a collection between loading and planning
    would walk every model of a large blueprint just after it was built.

    Raises:
        The errors of ``load_blueprint`` and ``plan_deployment``.
    """
    blueprint, nodes = load_with_nodes(target, limits)
    now = load_blueprint(current, limits) if current is not None else None
    return plan_deployment(blueprint, now, durations, parallelism, max_items, nodes=nodes)


def _plannable(blueprint: Blueprint, nodes: list[Node] | None = None) -> tuple[list[Node], DependencyGraph, list[int]]:
    # Cycles first: a cycle makes the plan impossible whatever else is wrong.
    if nodes is None:
        nodes = nodes_from_blueprint(blueprint)
    check = check_graph(nodes)
    if check.levels is None:
        cycles = check.cycles
        raise BlueprintCycle(f"{cycles[0].message} (at {cycles[0].path}); break the cycle to plan", issues=cycles)
    problems = check.references
    if problems:
        raise BlueprintError(f"{problems[0].message} at {problems[0].path}; fix it to plan", issues=problems)
    return nodes, check.graph, check.levels


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
    max_items: int | None = None,
    *,
    nodes: list[Node] | None = None,
) -> DeploymentPlan:
    """The plan; with ``max_items``, within that output budget: when there are more steps, only the first
    ``max_items`` steps, waves, rollback entries, destroy waves, critical-path names and summary lines
    (then "... and N more") are built, ``steps_omitted`` and ``waves_omitted`` count the rest, and
    counts and totals still cover everything. At 10,000 resources most of the plan is never built.

    ``nodes``, when the caller has them (``load_with_nodes``), are the target's graph nodes.

    Raises:
        BlueprintCycle, BlueprintError: from ``ensure_plannable``.
    """
    nodes, graph, levels = _plannable(target, nodes)
    if current is not None:
        ensure_plannable(current)
    columns = _Columns.of_target(nodes, graph, levels)
    deepest = max(levels, default=0)
    if current is not None:
        columns.apply_changes(current, target, deepest)
    names, actions = columns.names, columns.actions
    seconds = _Seconds(durations)
    step_seconds = [seconds(a, t, p) for a, t, p in zip(actions, columns.types, columns.providers, strict=True)]

    # Steps go by wave, declaration order within a wave: bucketing gives that order in linear time.
    buckets: list[list[int]] = [[] for _ in range(max(columns.waves, default=0) + 1)]
    for position, wave in enumerate(columns.waves):
        buckets[wave].append(position)
    order = [position for members in buckets for position in members]

    waves = [
        Wave.model_construct(
            number=number,
            steps=len(members),
            changes=sum(1 for p in members if actions[p] != "no-op"),
            estimated_seconds=round(makespan([step_seconds[p] for p in members], parallelism), 1),
            resources=[names[p] for p in members],
        )
        for number, members in enumerate(buckets)
        if members
    ]
    path, path_seconds = _critical_path(order, graph, step_seconds)
    counts = dict.fromkeys(("create", "update", "replace", "delete", "no-op"), 0)
    for action in actions:
        counts[action] += 1
    needs, targets = graph.needs, len(nodes)
    # Cut only when the steps outgrow the budget (waves never outnumber steps).
    cut = max_items if max_items is not None and len(order) > max_items else None
    plan = DeploymentPlan(
        summary=_summary(order, columns, counts, cut),
        counts=counts,
        parallelism=parallelism,
        waves=waves[:cut],
        steps=[
            PlanStep(
                resource=names[p],
                type=columns.types[p],
                provider=columns.providers[p],
                action=actions[p],
                wave=columns.waves[p],
                depends_on=[names[j] for j in needs[p]] if p < targets else [],
                estimated_seconds=step_seconds[p],
                reason=columns.reasons[p],
            )
            for p in order[:cut]
        ],
        critical_path=path[:cut],
        critical_path_seconds=round(path_seconds, 1),
        estimated_total_seconds=round(sum(w.estimated_seconds for w in waves), 1),
        destroy_order=[w.resources for w in reversed(waves) if w.number <= deepest][:cut],
        rollback_order=[
            RollbackStep(resource=names[p], action=INVERSE[actions[p]])
            for p in itertools.islice((p for p in reversed(order) if actions[p] != "no-op"), cut)
        ],
    )
    if cut is not None:
        # Only a cut plan counts what it left out (set then, so a dump of the fields set shows them).
        plan.steps_omitted = len(order) - cut
        plan.waves_omitted = len(waves) - len(plan.waves)
    return plan


@dataclass(slots=True)
class _Columns:
    """The steps' fields, one list per field, indexed by graph position; deletions come after the target.

    The waves, the critical path, the counts and the summary read these lists instead of walking the
    models or the steps again.
    """

    names: list[str]
    types: list[str]
    providers: list[str]
    actions: list[StepAction]
    reasons: list[str]
    waves: list[int]

    @classmethod
    def of_target(cls, nodes: Sequence[Node], graph: DependencyGraph, levels: list[int]) -> "_Columns":
        # Every name of a plannable target is distinct, so graph position i is nodes[i].
        return cls(
            names=list(graph.names),
            types=[node.type or "" for node in nodes],
            providers=[node.provider or "" for node in nodes],
            actions=["create"] * len(nodes),
            reasons=[""] * len(nodes),
            waves=list(levels),
        )

    def apply_changes(self, current: Blueprint, target: Blueprint, deepest: int) -> None:
        """Actions against what is deployed; what only ``current`` has is deleted after ``deepest``."""
        changes: dict[str, ResourceChange] = {}
        deleted: list[Resource] = []
        for change in diff_resources(current, target):
            if change.action == "delete":
                res = current.resource(change.name)
                if res is not None:
                    deleted.append(res)
            else:
                changes[change.name] = change
        for i, name in enumerate(self.names):
            found = changes.get(name)
            if found is not None:
                self.actions[i] = found.action
                reason = "; ".join(found.replace_reasons) if found.action == "replace" else ""
                self.reasons[i] = reason or (f"renamed from {found.renamed_from}" if found.renamed_from else "")
        if not deleted:
            return
        # Deleted resources go dependents-first: reverse the edges among them.
        deleted_names = {r.name for r in deleted}
        reverse: dict[str, list[str]] = {r.name: [] for r in deleted}
        for res in deleted:
            for dep in res.dependencies:
                if dep in deleted_names:
                    reverse[dep].append(res.name)
        del_levels = dependency_levels([r.name for r in deleted], reverse)
        for res in deleted:
            self.names.append(res.name)
            self.types.append(res.type.value)
            self.providers.append(res.provider.value)
            self.actions.append("delete")
            self.reasons.append("")
            self.waves.append(deepest + del_levels[res.name])


class _Seconds:
    """``DurationTable.seconds`` rounded as steps show it, remembered per (action, type, provider)."""

    def __init__(self, durations: DurationTable) -> None:
        self._durations = durations
        self._known: dict[tuple[str, str, str], float] = {}

    def __call__(self, action: str, rtype: str, provider: str) -> float:
        key = (action, rtype, provider)
        found = self._known.get(key)
        if found is None:
            found = round(self._durations.seconds(action, ResourceType(rtype), Provider(provider)), 1)
            self._known[key] = found
        return found


def _critical_path(order: Sequence[int], graph: DependencyGraph, seconds: Sequence[float]) -> tuple[list[str], float]:
    # Positions come in wave order, so every dependency's distance is known before its users'.
    needs = graph.needs
    dist = [0.0] * len(needs)
    via = [-1] * len(needs)
    end, end_dist = -1, 0.0
    for i in order:
        if i >= len(needs):
            continue  # a deletion: not on any path to the target
        best, best_dep = 0.0, -1
        for dep in needs[i]:
            if dist[dep] > best or best_dep < 0:
                best, best_dep = dist[dep], dep
        dist[i] = seconds[i] + best
        via[i] = best_dep
        if end < 0 or dist[i] > end_dist:  # the first of the farthest, as max() picks it
            end, end_dist = i, dist[i]
    if end < 0:
        return [], 0.0
    path = [end]
    while (prev := via[path[-1]]) >= 0:
        path.append(prev)
    return [graph.names[i] for i in reversed(path)], end_dist


def _summary(order: Sequence[int], columns: _Columns, counts: dict[str, int], cut: int | None = None) -> str:
    """The Terraform-style summary; with ``cut``, its first ``cut`` change lines and a count of the rest."""
    creates = counts["create"] + counts["replace"]
    destroys = counts["delete"] + counts["replace"]
    changes = creates + counts["update"] + counts["delete"]  # one line per resource that changes
    if changes == 0:
        return "No changes. The infrastructure matches the blueprint."
    lines = [f"Plan: {creates} to create, {counts['update']} to update, {destroys} to destroy."]
    changed = (p for p in order if columns.actions[p] != "no-op")
    for p in itertools.islice(changed, cut):
        reason = columns.reasons[p]
        note = f" ({reason})" if reason else ""
        lines.append(
            f"  {SYMBOLS[columns.actions[p]]} {columns.names[p]} ({columns.types[p]}, {columns.providers[p]}){note}"
        )
    if cut is not None and changes > cut:
        lines.append(f"  ... and {changes - cut} more")
    return "\n".join(lines)
