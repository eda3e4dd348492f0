"""generate_deployment_plan: minimal waves, every edge respected, actions against the current state."""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alma_mcp.analysis.durations import DurationTable, load_durations
from alma_mcp.analysis.plan import DeploymentPlan, makespan, plan_deployment
from alma_mcp.blueprint.loader import load_blueprint, load_with_nodes
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import BlueprintCycle, BlueprintError

ROOT = Path(__file__).resolve().parent.parent.parent
DURATIONS = load_durations(ROOT / "resources" / "plan" / "durations.yaml")


def bp(*resources: dict[str, Any], name: str = "p") -> Blueprint:
    full = [{"type": "compute", "provider": "simulation", **r} for r in resources]
    return load_blueprint({"name": name, "resources": full})


def test_a_first_deployment_creates_everything_in_dependency_waves() -> None:
    target = bp(
        {"name": "net", "type": "network"},
        {"name": "db", "type": "database", "dependencies": ["net"]},
        {"name": "cache", "type": "cache", "dependencies": ["net"]},
        {"name": "web", "dependencies": ["db", "cache"]},
        {"name": "lb", "type": "load_balancer", "dependencies": ["web"], "specs": {"backends": ["web"]}},
    )
    plan = plan_deployment(target, None, DURATIONS, parallelism=10)
    assert [(w.number, w.resources) for w in plan.waves] == [
        (1, ["net"]),
        (2, ["db", "cache"]),
        (3, ["web"]),
        (4, ["lb"]),
    ]
    assert plan.counts == {"create": 5, "update": 0, "replace": 0, "delete": 0, "no-op": 0}
    assert plan.summary.splitlines() == [
        "Plan: 5 to create, 0 to update, 0 to destroy.",
        "  + net (network, simulation)",
        "  + db (database, simulation)",
        "  + cache (cache, simulation)",
        "  + web (compute, simulation)",
        "  + lb (load_balancer, simulation)",
    ]
    # network 10 s, then db 120 s || cache 30 s, then compute 120 s, then load balancer 30 s.
    assert [w.estimated_seconds for w in plan.waves] == [10.0, 120.0, 120.0, 30.0]
    assert plan.estimated_total_seconds == 280.0
    assert plan.critical_path == ["net", "db", "web", "lb"]
    assert plan.critical_path_seconds == 280.0
    assert plan.destroy_order == [["lb"], ["web"], ["db", "cache"], ["net"]]
    assert [(r.resource, r.action) for r in plan.rollback_order] == [
        ("lb", "delete"),
        ("web", "delete"),
        ("cache", "delete"),
        ("db", "delete"),
        ("net", "delete"),
    ]


def test_parallelism_bounds_each_wave() -> None:
    target = bp(*({"name": f"w{i}"} for i in range(25)))
    assert plan_deployment(target, None, DURATIONS, parallelism=10).waves[0].estimated_seconds == 360.0
    assert plan_deployment(target, None, DURATIONS, parallelism=25).waves[0].estimated_seconds == 120.0
    assert plan_deployment(target, None, DURATIONS, parallelism=1).waves[0].estimated_seconds == 3000.0


def test_makespan_is_longest_first_list_scheduling() -> None:
    assert makespan([], 3) == 0.0
    # LPT places 5, 4, then each 3 on the lighter worker: 5+3 | 4+3+3 = 10, while the optimum is 9.
    assert makespan([5, 4, 3, 3, 3], 2) == 10.0
    assert makespan([10, 1, 1, 1], 4) == 10.0


def test_provider_factor_scales_durations() -> None:
    target = load_blueprint(
        {
            "name": "x",
            "resources": [
                {"name": "vm", "type": "compute", "provider": "proxmox"},
                {"name": "c", "type": "container", "provider": "docker", "specs": {"image": "nginx:1.27"}},
            ],
        }
    )
    steps = {s.resource: s.estimated_seconds for s in plan_deployment(target, None, DURATIONS).steps}
    assert steps == {"vm": 180.0, "c": 7.5}


def test_actions_against_the_current_state() -> None:
    current = bp(
        {"name": "db", "type": "database", "specs": {"memory": "4GB"}},
        {"name": "old-worker", "dependencies": ["db"], "specs": {"cpu": 4, "memory": "16GB", "role": "worker"}},
        {"name": "cron", "dependencies": ["old-worker"]},
        {"name": "web", "dependencies": ["db"], "specs": {"cpu": 2}},
        {"name": "vm", "provider": "proxmox", "specs": {"template": "ubuntu-22.04"}},
    )
    target = bp(
        {"name": "db", "type": "database", "specs": {"memory": "8GB"}},
        {"name": "web", "dependencies": ["db"], "specs": {"cpu": 2}},
        {"name": "vm", "provider": "proxmox", "specs": {"template": "debian-12"}},
        {"name": "api", "dependencies": ["db"], "specs": {"cpu": 1, "memory": "1GB", "ports": [8080]}},
    )
    plan = plan_deployment(target, current, DURATIONS)
    actions = {s.resource: (s.action, s.wave) for s in plan.steps}
    assert actions == {
        "db": ("update", 1),
        "vm": ("replace", 1),
        "web": ("no-op", 2),
        "api": ("create", 2),
        "cron": ("delete", 3),
        "old-worker": ("delete", 4),
    }
    assert plan.counts == {"create": 1, "update": 1, "replace": 1, "delete": 2, "no-op": 1}
    assert plan.summary.splitlines() == [
        "Plan: 2 to create, 1 to update, 3 to destroy.",
        "  ~ db (database, simulation)",
        "  -/+ vm (compute, proxmox) (template changed: ubuntu-22.04 -> debian-12)",
        "  + api (compute, simulation)",
        "  - cron (compute, simulation)",
        "  - old-worker (compute, simulation)",
    ]
    assert [(r.resource, r.action) for r in plan.rollback_order] == [
        ("old-worker", "create"),
        ("cron", "create"),
        ("api", "delete"),
        ("vm", "replace"),
        ("db", "update"),
    ]


def test_deploying_what_is_deployed_is_no_changes() -> None:
    target = bp({"name": "db", "type": "database"}, {"name": "web", "dependencies": ["db"]})
    plan = plan_deployment(target, target, DURATIONS)
    assert plan.summary == "No changes. The infrastructure matches the blueprint."
    assert plan.estimated_total_seconds == 0.0
    assert plan.rollback_order == []


def test_a_cycle_is_refused_with_the_cycle() -> None:
    target = bp({"name": "a", "dependencies": ["b"]}, {"name": "b", "dependencies": ["a"]})
    with pytest.raises(BlueprintCycle) as info:
        plan_deployment(target, None, DURATIONS)
    assert str(info.value) == (
        "[blueprint.cycle] dependency cycle: a -> b -> a (at /resources/0/dependencies); break the cycle to plan"
    )


def test_an_unknown_dependency_is_refused() -> None:
    with pytest.raises(BlueprintError) as info:
        plan_deployment(bp({"name": "a", "dependencies": ["ghost"]}), None, DURATIONS)
    assert info.value.code == "blueprint.invalid"
    assert (
        info.value.message == "resource 'a' depends on unknown 'ghost' at /resources/0/dependencies/0; fix it to plan"
    )


def test_a_budgeted_plan_keeps_counts_of_what_it_cut() -> None:
    target = bp(*({"name": f"r{i}"} for i in range(30)))
    plan = plan_deployment(target, None, DURATIONS)
    small = plan_deployment(target, None, DURATIONS, max_items=10)
    assert len(small.steps) == 10
    assert small.steps_omitted == 20
    assert small.summary.splitlines()[-1] == "  ... and 20 more"
    assert small.counts == plan.counts
    roomy = plan_deployment(target, None, DURATIONS, max_items=100)
    assert roomy == plan
    assert roomy.model_fields_set == plan.model_fields_set


def trim(plan: DeploymentPlan, max_items: int) -> DeploymentPlan:
    """The plain definition of a plan within an output budget (the full plan, then its long lists cut):
    what ``plan_deployment(max_items=...)`` must build directly."""
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


def test_the_duration_table_must_cover_every_type(tmp_path: Path) -> None:
    from alma_mcp.errors import ConfigError

    bad = tmp_path / "durations.yaml"
    bad.write_text("create: {compute: 1}\nupdate: {}\ndelete: {}\n")
    with pytest.raises(ConfigError) as info:
        load_durations(bad)
    assert "'create' lacks durations for: cache, container, database" in info.value.message


@st.composite
def dags(draw: st.DrawFn) -> Blueprint:
    n = draw(st.integers(min_value=1, max_value=40))
    resources = []
    for i in range(n):
        deps = draw(st.lists(st.integers(min_value=0, max_value=i - 1), max_size=4, unique=True)) if i else []
        resources.append({"name": f"r{i}", "dependencies": [f"r{d}" for d in deps]})
    order = draw(st.permutations(range(n)))
    return bp(*(resources[i] for i in order))


def longest_chain(blueprint: Blueprint) -> int:
    deps = {r.name: r.dependencies for r in blueprint.resources}
    memo: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in memo:
            memo[name] = 1 + max((depth(d) for d in deps[name]), default=0)
        return memo[name]

    return max(depth(n) for n in deps)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(dags(), st.integers(min_value=1, max_value=12))
def test_waves_respect_every_edge_are_minimal_and_deterministic(blueprint: Blueprint, parallelism: int) -> None:
    plan = plan_deployment(blueprint, None, DURATIONS, parallelism)
    wave = {s.resource: s.wave for s in plan.steps}
    assert sorted(wave) == sorted(r.name for r in blueprint.resources)
    for res in blueprint.resources:
        for dep in res.dependencies:
            assert wave[dep] < wave[res.name]
    assert len(plan.waves) == longest_chain(blueprint)
    assert plan.model_dump() == plan_deployment(blueprint, None, DURATIONS, parallelism).model_dump()
    assert [r for w in reversed(plan.waves) for r in w.resources] == [r for w in plan.destroy_order for r in w]
    per_wave_total = sum(w.estimated_seconds for w in plan.waves)
    assert plan.estimated_total_seconds == pytest.approx(per_wave_total, abs=0.1)
    assert plan.critical_path_seconds <= plan.estimated_total_seconds + 1e-6


def test_duration_table_seconds_for_replace_and_no_op() -> None:
    table: DurationTable = DURATIONS
    from alma_mcp.blueprint.model import Provider, ResourceType

    assert table.seconds("replace", ResourceType.COMPUTE, Provider.SIMULATION) == 150.0
    assert table.seconds("no-op", ResourceType.COMPUTE, Provider.PROXMOX) == 0.0


@settings(derandomize=True, max_examples=200, deadline=None)
@given(dags(), st.none() | dags(), st.integers(min_value=1, max_value=45))
def test_a_plan_built_within_a_budget_is_the_full_plan_trimmed(
    target: Blueprint, current: Blueprint | None, budget: int
) -> None:
    trimmed = trim(plan_deployment(target, current, DURATIONS), budget)
    direct = plan_deployment(target, current, DURATIONS, max_items=budget)
    assert direct.model_dump() == trimmed.model_dump()
    assert direct.model_fields_set == trimmed.model_fields_set
    # As the tool runs it: the nodes read while loading stand for the ones the plan would read.
    loaded, nodes = load_with_nodes(target.to_data())
    assert plan_deployment(loaded, current, DURATIONS, max_items=budget, nodes=nodes) == direct
