"""suggest_architecture: every candidate meets its target by its own maths, validates, and is clean."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from alma_mcp.analysis.architecture import (
    ArchitectureSuggestion,
    Candidate,
    parse_requirements,
    suggest_architecture,
)
from alma_mcp.analysis.architecture_data import PILLARS, ArchitectureData, load_architecture_data
from alma_mcp.analysis.audit import PolicyCatalog, audit
from alma_mcp.analysis.availability import (
    SECONDS_PER_YEAR,
    Tier,
    TierAvailability,
    k_of_n,
    parallel,
    serial,
    size_to_target,
)
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.errors import ConfigError, InvalidRequest

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = load_architecture_data(ROOT / "resources" / "architecture")
POLICIES = PolicyCatalog.from_directory(ROOT / "resources" / "policies")
PRICES = PriceCatalog.from_path(ROOT / "resources" / "pricing")

# Requirement profiles: 99% to 99.999%, small and large traffic, with and without compliance, every
# workload, one or several platforms (docs/tool-algorithms.md section 13 asks for at least 12).
PROFILES: dict[str, dict[str, Any]] = {
    "web-small-99": {"workload_type": "web", "peak_rps": 20, "availability_target": 99.0, "team_ops_maturity": "low"},
    "web-large-99.9": {"workload_type": "web", "peak_rps": 5000, "availability_target": 99.9},
    "web-99.95-pci": {
        "workload_type": "web",
        "users": 20000,
        "availability_target": 99.95,
        "compliance": ["pci-dss-4.0"],
    },
    "web-99.99-k8s": {
        "workload_type": "web",
        "peak_rps": 800,
        "availability_target": 99.99,
        "providers": ["kubernetes"],
    },
    "web-99.999": {
        "workload_type": "web",
        "peak_rps": 2000,
        "availability_target": 99.999,
        "rpo_minutes": 0,
        "rto_minutes": 1,
    },
    "api-99.9-budget": {"workload_type": "api", "peak_rps": 300, "availability_target": 99.9, "budget_monthly": 150},
    "api-99.99-hipaa": {
        "workload_type": "api",
        "peak_rps": 1500,
        "availability_target": 99.99,
        "compliance": ["hipaa", "soc2"],
    },
    "worker-99.5": {
        "workload_type": "worker",
        "peak_rps": 200,
        "availability_target": 99.5,
        "providers": ["docker", "proxmox"],
    },
    "worker-99.99": {"workload_type": "worker", "peak_rps": 3000, "availability_target": 99.99, "latency_slo_ms": 50},
    "database-99.95": {
        "workload_type": "database",
        "data_size_gb": 800,
        "availability_target": 99.95,
        "rpo_minutes": 5,
    },
    "database-99.999-iso": {
        "workload_type": "postgres",
        "availability_target": 99.999,
        "compliance": ["iso27001-2022"],
    },
    "cache-99.9": {"workload_type": "redis", "data_size_gb": 12, "availability_target": 99.9},
    "cache-99.99-proxmox": {"workload_type": "cache", "availability_target": 99.99, "providers": ["proxmox"]},
    "web-low-target-docker": {
        "workload_type": "web",
        "peak_rps": 10,
        "availability_target": 95,
        "providers": ["docker"],
    },
}


def suggest(**fields: Any) -> ArchitectureSuggestion:
    return suggest_architecture(parse_requirements(fields), DATA, POLICIES, PRICES)


@pytest.fixture(scope="module")
def results() -> dict[str, ArchitectureSuggestion]:
    return {name: suggest(**fields) for name, fields in PROFILES.items()}


# ---------------------------------------------------------------------------------------------
# The availability maths, recomputed independently of the module under test
# ---------------------------------------------------------------------------------------------


def own_k_of_n(n: int, k: int, a: float) -> float:
    return sum(math.comb(n, j) * a**j * (1 - a) ** (n - j) for j in range(k, n + 1))


def own_tier(t: TierAvailability) -> float:
    k = {"quorum": t.instances // 2 + 1, "capacity": t.up_needed}.get(t.composition, 1)
    assert t.up_needed == k
    value = own_k_of_n(t.instances, k, t.member_availability)
    if t.composition == "failover" and t.instances > 1:
        value *= 1 - t.failover_seconds_per_year / (365 * 24 * 3600)
    return value


def check_candidate(candidate: Candidate, target: float) -> None:
    report = candidate.availability
    product = 1.0
    for tier in report.tiers:
        mine = own_tier(tier)
        assert math.isclose(mine, tier.availability, rel_tol=0, abs_tol=1e-12), tier
        if tier.critical:
            product *= mine
        if tier.composition == "quorum":
            assert tier.instances % 2 == 1, tier
            assert tier.instances >= 3, tier
    assert math.isclose(product, report.composite, rel_tol=0, abs_tol=1e-12)
    assert product >= target / 100, f"{candidate.name}: {product} < {target}%"
    assert report.meets_target
    assert math.isclose(report.downtime_hours_per_year, (1 - product) * 8760, abs_tol=0.001)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_candidate_meets_its_target_by_its_own_maths(
    results: dict[str, ArchitectureSuggestion], profile: str
) -> None:
    result = results[profile]
    target = PROFILES[profile]["availability_target"]
    assert 1 <= len(result.candidates) <= 3
    for candidate in result.candidates:
        check_candidate(candidate, target)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_candidate_validates_and_has_no_high_or_critical_finding(
    results: dict[str, ArchitectureSuggestion], profile: str
) -> None:
    result = results[profile]
    assert result.blueprint == result.candidates[0].blueprint
    for candidate in result.candidates:
        report = validate(candidate.blueprint)
        assert report.valid, report.summary
        assert not report.warnings, report.warnings
        findings = audit(load_blueprint(candidate.blueprint), POLICIES).findings
        blocking = [f.rule_id for f in findings if f.severity in ("critical", "high")]
        assert blocking == [], (candidate.name, blocking)
        assert candidate.audit["critical"] == candidate.audit["high"] == 0


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_ranking_scores_and_budget_flags_are_consistent(
    results: dict[str, ArchitectureSuggestion], profile: str
) -> None:
    result = results[profile]
    budget = PROFILES[profile].get("budget_monthly")
    assert [c.rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))
    keys = [(-c.score, c.monthly_cost, c.name) for c in result.candidates]
    assert keys == sorted(keys)
    assert result.chosen == result.candidates[0].name
    for c in result.candidates:
        assert set(c.pillars) == set(PILLARS)
        assert all(p.reasons for p in c.pillars.values())
        weighted = sum(result.weights[p] * c.pillars[p].score for p in PILLARS)
        assert math.isclose(c.score, round(weighted, 2))
        if budget is None or c.monthly_cost <= budget:
            assert c.over_budget_by is None
        else:
            assert c.over_budget_by == round(c.monthly_cost - budget, 2)
    assert result.trade_offs


def test_same_requirements_give_the_same_answer() -> None:
    fields = PROFILES["api-99.99-hipaa"]
    assert suggest(**fields).model_dump() == suggest(**fields).model_dump()


def test_patterns_name_templates_that_exist() -> None:
    catalog = TemplateCatalog.from_directory(ROOT / "resources" / "templates")
    for pattern in DATA.patterns.patterns.values():
        for template in pattern.based_on:
            catalog.get(template)


def test_quorums_are_shown_where_they_matter() -> None:
    result = suggest(workload_type="cache", availability_target=99.99, providers=["proxmox"])
    quorums = {q.component: q for q in result.candidates[0].quorums}
    assert quorums["cache-sentinel"].members >= 3
    assert quorums["cache-sentinel"].tolerates_failures == quorums["cache-sentinel"].members // 2
    assert "proxmox-cluster" in quorums


def test_recovery_objectives_choose_the_mechanism() -> None:
    strict = suggest(workload_type="database", rpo_minutes=0, rto_minutes=2, providers=["proxmox"])
    db = next(r for r in strict.blueprint["resources"] if r["name"] == "db")
    assert db["specs"]["options"]["replication"] == "synchronous"
    assert db["specs"]["options"]["failover"] == "automatic"
    assert db["specs"]["options"]["wal_archiving"] is True
    assert any(r["name"] == "db-consensus" for r in strict.blueprint["resources"])
    relaxed = suggest(workload_type="database", rpo_minutes=1440, rto_minutes=240, availability_target=99.9,
                      providers=["proxmox"])  # fmt: skip
    db = next(r for r in relaxed.blueprint["resources"] if r["name"] == "db")
    assert db["specs"]["options"]["failover"] == "manual"
    assert not any(r["name"] == "db-consensus" for r in relaxed.blueprint["resources"])
    on_k8s = suggest(workload_type="database", rto_minutes=1, providers=["kubernetes"])
    assert not any(r["name"] == "db-consensus" for r in on_k8s.blueprint["resources"])  # Kubernetes API is the DCS


def test_a_single_docker_host_is_refused_where_it_cannot_reach_the_target() -> None:
    result = suggest(workload_type="web", availability_target=99.99)
    reasons = {r.name: r.reason for r in result.rejected}
    assert "one failure domain" in reasons["web-three-tier-docker"]
    ceiling = suggest(workload_type="web", availability_target=99.9)
    assert "the single Docker host" in {r.name: r.reason for r in ceiling.rejected}["web-two-tier-docker"]
    with pytest.raises(InvalidRequest, match=r"no design meets 99\.99% on docker"):
        suggest(workload_type="web", availability_target=99.99, providers=["docker"])


def test_a_low_target_is_accepted_with_a_note() -> None:
    result = suggest(workload_type="web", availability_target=95)
    assert any("95% accepted" in note for note in result.notes)
    assert result.resolved["availability_target"] == 95


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"availability_target": 100}, "from 90 to 99.999"),
        ({"availability_target": 89.9}, "from 90 to 99.999"),
        ({"availability_target": float("nan")}, "from 90 to 99.999"),
        ({"peak_rps": -5}, "peak_rps"),
        ({"users": -1}, "users"),
        ({"providers": ["aws"]}, "allowed providers: docker, kubernetes, proxmox"),
        ({"providers": ["simulation"]}, "test double"),
        ({"workload_type": "blockchain"}, "allowed: api, cache, database, web, worker"),
        ({"compliance": ["gdpr"]}, "unknown framework"),
        ({"priorities": {"speed": 1}}, "pillars: operational_excellence"),
        ({"priorities": {"security": 0}}, "positive weight"),
        ({"team_ops_maturity": "expert"}, "team_ops_maturity"),
        ({"budget_monthly": 0}, "budget_monthly"),
    ],
)
def test_bad_requirements_are_coded_errors_naming_what_is_allowed(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        suggest(**fields)
    assert err.value.code == "request.invalid"
    assert message in str(err.value)


def test_priorities_change_the_ranking() -> None:
    cheap = suggest(workload_type="web", peak_rps=500, availability_target=99.9, priorities={"cost_optimization": 1})
    ops = suggest(workload_type="web", peak_rps=500, availability_target=99.9, team_ops_maturity="high",
                  priorities={"operational_excellence": 1, "performance_efficiency": 1})  # fmt: skip
    assert cheap.weights["cost_optimization"] == 1
    assert cheap.candidates[0].monthly_cost == min(c.monthly_cost for c in cheap.candidates)
    assert ops.candidates[0].provider == "kubernetes"


def test_capacity_tiers_are_sized_for_the_traffic() -> None:
    result = suggest(workload_type="web", peak_rps=5000, availability_target=99.9, providers=["kubernetes"])
    app = next(t for t in result.candidates[0].availability.tiers if t.role == "app")
    needed = result.candidates[0].capacity["app"]["instances_for_load"]
    assert needed >= math.ceil(5000 / 250 / 0.7)
    assert app.up_needed == needed
    assert app.instances > needed


# ---------------------------------------------------------------------------------------------
# Availability primitives
# ---------------------------------------------------------------------------------------------


def test_composition_formulas() -> None:
    assert math.isclose(serial([0.99, 0.99]), 0.9801)
    assert math.isclose(parallel([0.99, 0.99]), 0.9999)
    assert math.isclose(k_of_n(3, 2, 0.99), 3 * 0.99**2 * 0.01 + 0.99**3)
    assert k_of_n(3, 4, 0.99) == 0.0
    assert k_of_n(3, 0, 0.5) == 1.0
    assert 1 - k_of_n(5, 3, 0.995) == pytest.approx(10 * 0.005**3 * 0.995**2 + 5 * 0.005**4 * 0.995 + 0.005**5)


def test_sizing_grows_the_weakest_tier_until_the_target() -> None:
    tiers = [
        Tier("platform", None, "quorum", 3, 0.995, True, max_instances=7),
        Tier("app", "app", "capacity", 2, 0.995, True, needed=2, max_instances=20),
        Tier("db", "db", "failover", 2, 0.995, True, max_instances=5, failover_seconds_per_year=40),
    ]
    sized, reached = size_to_target(tiers, 0.99999)
    assert reached
    assert serial([t.availability() for t in sized]) >= 0.99999
    assert sized[0].instances % 2 == 1
    capped, ok = size_to_target([Tier("host", None, "single", 1, 0.995, True)], 0.999)
    assert not ok
    assert capped[0].instances == 1
    db = Tier("db", "db", "failover", 2, 0.995, True, failover_seconds_per_year=SECONDS_PER_YEAR / 1000)
    assert math.isclose(db.availability(), (1 - 0.005**2) * 0.999)


def test_invalid_architecture_data_stops_start_up(tmp_path: Path) -> None:
    folder = tmp_path / "architecture"
    shutil.copytree(ROOT / "resources" / "architecture", folder)
    text = (folder / "patterns.yaml").read_text()
    (folder / "patterns.yaml").write_text(text.replace("roles: [cache, cache-sentinel]\n", "roles: [cache, nope]\n", 1))
    with pytest.raises(ConfigError, match=r"patterns\.yaml"):
        load_architecture_data(folder)
    (folder / "patterns.yaml").write_text(text)
    (folder / "migration.yaml").unlink()
    with pytest.raises(ConfigError, match=r"migration\.yaml"):
        load_architecture_data(folder)


def test_data_is_loaded_as_a_whole() -> None:
    assert isinstance(DATA, ArchitectureData)
    assert DATA.workloads() == ["api", "cache", "database", "web", "worker"]
