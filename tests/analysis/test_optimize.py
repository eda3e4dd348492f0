"""optimize_costs: planted waste found, VPA sizing, risk levels, and savings that add up exactly."""

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alma_mcp.analysis.cost import monthly_cost
from alma_mcp.analysis.optimize import CostOptimization, ResourceUsage, UsageStats, optimize_costs
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import InvalidRequest

PRICING = Path(__file__).resolve().parents[2] / "resources" / "pricing"
CATALOG = PriceCatalog.from_directory(PRICING)
GCP = "gcp-e2-us-central1"


def blueprint(*resources: dict[str, Any], environment: str | None = "production") -> Blueprint:
    metadata = {"environment": environment} if environment else {}
    return Blueprint.model_validate({"name": "shop", "metadata": metadata, "resources": list(resources)})


def money(value: float) -> Decimal:
    return Decimal(str(value))


def assert_adds_up(result: CostOptimization) -> None:
    total = sum((money(r.monthly_savings) for r in result.recommendations), Decimal(0))
    assert total == money(result.monthly_savings)
    assert total == money(result.monthly_cost_before) - money(result.monthly_cost_after)
    for rec in result.recommendations:
        assert money(rec.monthly_savings) == money(rec.monthly_cost_before) - money(rec.monthly_cost_after)
        assert rec.monthly_savings > 0


def by_kind(result: CostOptimization) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r.resource, r.kind): r.model_dump() for r in result.recommendations}


API = {
    "name": "api",
    "type": "container",
    "provider": "kubernetes",
    "specs": {"cpu": 4, "memory": "8Gi", "replicas": 4},
}
IDLE_VM = {"name": "old-vm", "type": "compute", "provider": "proxmox", "specs": {"cpu": 4, "memory": "8Gi"}}
ORPHAN = {
    "name": "scratch",
    "type": "storage",
    "provider": "proxmox",
    "specs": {"storage": "200Gi", "storage_type": "SSD"},
}
LB = {"name": "lb", "type": "load_balancer", "provider": "kubernetes", "specs": {"public": True, "backends": ["api"]}}


def test_planted_waste_is_found_and_savings_add_up() -> None:
    usage = {
        "api": {"cpu": {"p90": 0.5, "p95": 0.6, "max": 0.9}, "memory": {"p90": 1500, "max": 1800}, "days": 14},
        "old-vm": {"cpu": {"p90": 0.02, "p95": 0.04}, "days": 30},
    }
    bp = blueprint(API, IDLE_VM, ORPHAN, {**LB, "dependencies": ["api"]})
    result = optimize_costs(bp, CATALOG, usage, profile=GCP)
    found = by_kind(result)
    assert found[("old-vm", "idle")]["monthly_cost_after"] == 0
    assert found[("old-vm", "idle")]["risk"] == "low"
    assert found[("scratch", "orphan")]["risk"] == "medium"
    # Memory is the fuller dimension: 1500 / 8192 MiB at P90; 4 x 0.183 / 0.7 = 1.05 -> 2 (production minimum).
    assert found[("api", "consolidation")]["proposed"] == {"instances": 2}
    assert ("api", "rightsize") in found
    assert ("lb", "orphan") not in found  # it has a backend
    assert_adds_up(result)
    optimized = Blueprint.model_validate(result.optimized_blueprint)
    assert monthly_cost(optimized, CATALOG, GCP) == result.monthly_cost_after
    assert {r.name for r in optimized.resources} == {"api", "lb"}


def test_vpa_target_is_p90_plus_15_percent_not_below_p95_or_floors() -> None:
    app = {"name": "app", "type": "container", "provider": "docker", "specs": {"cpu": 4, "memory": 8192}}
    usage = {"app": {"cpu": {"p90": 1.0, "p95": 1.1}, "memory": {"p90": 2000, "max": 2100}, "days": 10}}
    rec = optimize_costs(blueprint(app), CATALOG, usage).recommendations[0]
    assert rec.kind == "rightsize"
    assert rec.proposed == {"cpu": 1.15, "memory_mib": 64 * math.ceil(2300 / 64)}
    assert rec.risk == "medium"
    # P95 above P90 x 1.15 wins for cpu; the memory peak wins over P90 x 1.15.
    usage = {"app": {"cpu": {"p90": 1.0, "p95": 1.5}, "memory": {"p90": 2000, "max": 3000}, "days": 10}}
    rec = optimize_costs(blueprint(app), CATALOG, usage).recommendations[0]
    assert rec.proposed == {"cpu": 1.5, "memory_mib": 3008}
    # Floors: 25 millicores (rounded to 50m steps) and 250 MiB (rounded to 64 MiB).
    usage = {"app": {"cpu": {"p90": 0.001, "p95": 0.3}, "memory": {"p90": 10, "max": 20}, "days": 10}}
    rec = optimize_costs(blueprint(app), CATALOG, usage).recommendations[0]
    assert rec.proposed == {"cpu": 0.3, "memory_mib": 256}


def test_series_usage_matches_a_reference_vpa_computation() -> None:
    rng = np.random.default_rng(5)
    cpu = rng.gamma(4.0, 0.1, size=2_000)
    memory = rng.normal(3000, 200, size=2_000)
    app = {"name": "app", "type": "container", "provider": "kubernetes", "specs": {"cpu": 8, "memory": 16384}}
    usage = {"app": ResourceUsage(cpu=cpu.tolist(), memory=memory.tolist(), days=8)}
    rec = optimize_costs(blueprint(app), CATALOG, usage).recommendations[0]
    p90, p95 = np.percentile(cpu, [90, 95])
    reference_cpu = max(0.025, p90 * 1.15, p95)
    assert reference_cpu <= rec.proposed["cpu"] < reference_cpu + 0.05  # rounded up to a 50m step
    assert rec.proposed["memory_mib"] >= memory.max()
    assert rec.proposed["memory_mib"] == pytest.approx(max(np.percentile(memory, 90) * 1.15, memory.max()), rel=0.05)


def test_proxmox_guests_get_whole_cores() -> None:
    vm = {"name": "vm", "type": "compute", "provider": "proxmox", "specs": {"cpu": 8, "memory": 4096}}
    usage = {"vm": {"cpu": {"p90": 1.2, "p95": 1.3}, "days": 30}}
    rec = optimize_costs(blueprint(vm), CATALOG, usage).recommendations[0]
    assert rec.proposed == {"cpu": 2.0}


def test_no_rightsizing_when_usage_is_above_the_target_and_a_warning_when_tight() -> None:
    app = {"name": "app", "type": "container", "provider": "docker", "specs": {"cpu": 1, "memory": 1024}}
    usage = {"app": {"cpu": {"p90": 0.95}, "memory": {"p90": 800}, "days": 30}}
    result = optimize_costs(blueprint(app), CATALOG, usage)
    assert result.recommendations == []
    assert any("app: cpu P90 is 95%" in w for w in result.warnings)


def test_over_replication_outside_production_scales_load_onto_the_remaining_instance() -> None:
    app = {"name": "app", "type": "container", "provider": "docker", "specs": {"cpu": 2, "memory": 2048, "replicas": 3}}
    plain = optimize_costs(blueprint(app, environment="development"), CATALOG)
    assert [(r.kind, r.proposed, r.risk) for r in plain.recommendations] == [
        ("over_replication", {"instances": 1}, "low")
    ]
    # With usage, the single instance carries three instances' load: 3 x 0.2 = 0.6 cores at P90.
    usage = {"app": {"cpu": {"p90": 0.2, "p95": 0.2}, "days": 30}}
    recs = optimize_costs(blueprint(app, environment="staging"), CATALOG, usage).recommendations
    assert [r.kind for r in recs] == ["over_replication", "rightsize"]
    assert recs[0].risk == "medium"
    assert recs[1].proposed == {"cpu": 0.7}
    assert money(recs[1].monthly_cost_before) == money(recs[0].monthly_cost_after)


def test_production_and_unknown_environments_keep_their_replicas() -> None:
    app = {"name": "app", "type": "container", "provider": "docker", "specs": {"cpu": 2, "memory": 2048, "replicas": 3}}
    assert optimize_costs(blueprint(app), CATALOG).recommendations == []
    assert optimize_costs(blueprint(app, environment=None), CATALOG).recommendations == []


def test_storage_class_and_shrink_recommendations() -> None:
    backup = {"name": "nightly-backup", "type": "storage", "provider": "proxmox", "specs": {"storage": "1Ti"}}
    web = {
        "name": "web",
        "type": "compute",
        "provider": "proxmox",
        "specs": {"cpu": 2, "memory": 2048, "storage": "100Gi", "storage_type": "NVMe"},
        "dependencies": ["nightly-backup"],
    }
    db = {
        "name": "db",
        "type": "database",
        "provider": "proxmox",
        "specs": {"cpu": 2, "memory": 2048, "storage": "100Gi", "storage_type": "NVMe"},
    }
    usage = {"web": {"storage_used": 7000, "days": 30}}
    result = optimize_costs(blueprint(backup, web, db), CATALOG, usage, profile="proxmox-onprem")
    found = by_kind(result)
    assert found[("nightly-backup", "storage_class")]["proposed"] == {"storage_type": "HDD"}
    assert found[("web", "storage_shrink")]["proposed"] == {"storage_mib": 10 * 1024}  # 7000 / 0.7 -> 10 GiB
    assert found[("web", "storage_class")]["proposed"] == {"storage_type": "SSD"}
    assert ("db", "storage_class") not in found  # production data store keeps NVMe
    assert_adds_up(result)


def test_equal_storage_prices_give_no_storage_class_recommendation() -> None:
    backup = {"name": "backup", "type": "storage", "provider": "proxmox", "specs": {"storage": "1Ti"}}
    user = {"name": "user", "type": "compute", "provider": "proxmox", "specs": {"cpu": 1}, "dependencies": ["backup"]}
    assert optimize_costs(blueprint(backup, user), CATALOG).recommendations == []  # OpenCost: one storage rate


def test_recommendations_are_ranked_by_resource_savings() -> None:
    small = {"name": "small", "type": "compute", "provider": "proxmox", "specs": {"cpu": 1, "memory": 512}}
    big = {"name": "big", "type": "compute", "provider": "proxmox", "specs": {"cpu": 16, "memory": 512}}
    usage = {n: {"cpu": {"p90": 0.0, "p95": 0.0}, "days": 30} for n in ("small", "big")}
    result = optimize_costs(blueprint(small, big), CATALOG, usage)
    assert [r.resource for r in result.recommendations] == ["big", "small"]
    assert result.hosts_before == 1
    assert result.hosts_after == 0


@pytest.mark.parametrize(
    ("usage", "fragment"),
    [
        ({"ghost": {"days": 1}}, "not a resource"),
        ({"app": {"cpu": [0.1, float("nan")]}}, "finite"),
        ({"app": {"cpu": [0.1, float("inf")]}}, "finite"),
        ({"app": {"cpu": [0.1, -1.0]}}, "non-negative"),
        ({"app": {"cpu": []}}, "non-empty"),
        ({"app": {"cpu": {"p95": 1.0}}}, "invalid"),
        ({"app": {"cpu": {"p90": 2.0, "p95": 1.0}}}, "must not decrease"),
        ({"app": {"memory": {"p90": float("nan")}}}, "invalid"),
        ({"app": {"days": 0}}, "invalid"),
        ({"app": {"cpus": [1.0]}}, "invalid"),
    ],
)
def test_bad_usage_is_invalid_request(usage: dict[str, Any], fragment: str) -> None:
    app = {"name": "app", "type": "container", "provider": "docker", "specs": {"cpu": 1}}
    with pytest.raises(InvalidRequest) as info:
        optimize_costs(blueprint(app), CATALOG, usage)
    assert info.value.code == "request.invalid"
    assert fragment in info.value.message


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.2, float("nan")])
def test_target_utilisation_outside_zero_one_is_invalid_request(target: float) -> None:
    with pytest.raises(InvalidRequest, match="target_utilisation") as info:
        optimize_costs(blueprint(API), CATALOG, target_utilisation=target)
    assert info.value.code == "request.invalid"


def test_unknown_profile_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="opencost"):
        optimize_costs(blueprint(API), CATALOG, profile="nope")


_TYPES = ["compute", "container", "service", "database", "cache", "storage", "load_balancer"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Blueprint, dict[str, Any], str]:
    n = draw(st.integers(1, 8))
    resources: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    for i in range(n):
        specs: dict[str, Any] = {
            "cpu": draw(st.sampled_from([0.25, 0.5, 1, 2, 4, 8])),
            "memory": draw(st.sampled_from([256, 512, 2048, 8192])),
            "replicas": draw(st.integers(1, 6)),
        }
        if draw(st.booleans()):
            specs["storage"] = draw(st.sampled_from([1024, 20480, 102400]))
            specs["storage_type"] = draw(st.sampled_from(["HDD", "SSD", "NVMe"]))
        deps = [f"r{j}" for j in range(i) if draw(st.booleans())] if i and draw(st.booleans()) else []
        name = f"r{i}"
        resources.append(
            {
                "name": name,
                "type": draw(st.sampled_from(_TYPES)),
                "provider": "docker",
                "specs": specs,
                "dependencies": deps,
            }
        )
        if draw(st.booleans()):
            cpu = draw(st.floats(0, 8, allow_nan=False))
            memory = draw(st.floats(0, 9000, allow_nan=False))
            usage[name] = {
                "cpu": {"p90": cpu, "p95": cpu * 1.1},
                "memory": UsageStats(p90=memory, max=memory * 1.2),
                "storage_used": draw(st.floats(0, 200000, allow_nan=False)),
                "days": draw(st.sampled_from([1, 7, 30])),
            }
    env = draw(st.sampled_from(["production", "staging", "development"]))
    return blueprint(*resources, environment=env), usage, draw(st.sampled_from(sorted(CATALOG.profiles)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([0.5, 0.7, 0.9]))
def test_savings_always_add_up_to_before_minus_after(scenario: tuple[Blueprint, dict[str, Any], str], u: float) -> None:
    bp, usage, profile = scenario
    result = optimize_costs(bp, CATALOG, usage, target_utilisation=u, profile=profile)
    assert_adds_up(result)
    assert money(result.monthly_cost_before) == money(monthly_cost(bp, CATALOG, profile))
    optimized = Blueprint.model_validate(result.optimized_blueprint)
    assert money(monthly_cost(optimized, CATALOG, profile)) == money(result.monthly_cost_after)
    for rec in result.recommendations:
        if rec.kind == "rightsize" and "memory_mib" in rec.proposed:
            peak = usage[rec.resource]["memory"].max
            assert rec.proposed["memory_mib"] >= peak  # memory never below the observed peak
