"""security_audit: every rule found where planted and silent on its near miss; templates snapshot-tested.

Planted misconfigurations live in ``tests/fixtures/security/cases/*.yaml`` as changes to the
hardened blueprint (``tests/fixtures/security/hardened.yaml``, which has no finding at all); the
format is described in ``tests/fixtures/security/README.md``.

The template snapshots in ``tests/fixtures/security/snapshots/`` are regenerated, after a deliberate
change to rules or templates, with:

    .venv/bin/python -m tests.analysis.test_audit --regenerate-snapshots

and the diff reviewed like code.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from alma_mcp.analysis.audit import (
    FORMULA,
    AuditReport,
    Finding,
    PolicyCatalog,
    Severity,
    audit,
    blocking_findings,
    grade_of,
    score_of,
)
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import ConfigError, InvalidRequest

ROOT = Path(__file__).resolve().parent.parent.parent
POLICIES = ROOT / "resources" / "policies"
TEMPLATES = ROOT / "resources" / "templates"
SECURITY = ROOT / "tests" / "fixtures" / "security"
SNAPSHOTS = SECURITY / "snapshots"
CATALOG = PolicyCatalog.from_directory(POLICIES)
HARDENED: dict[str, Any] = yaml.safe_load((SECURITY / "hardened.yaml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Building cases
# ---------------------------------------------------------------------------------------------


def _merge_specs(specs: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if key == "options" and isinstance(value, Mapping):
            options = specs.setdefault("options", {})
            for option, setting in value.items():
                if setting is None:
                    options.pop(option, None)
                else:
                    options[option] = setting
        elif value is None:
            specs.pop(key, None)
        else:
            specs[key] = value


def build(case: Mapping[str, Any]) -> dict[str, Any]:
    """The hardened blueprint with the case's changes applied (see the fixtures README)."""
    data = copy.deepcopy(HARDENED)
    removed = set(case.get("remove", ()))
    if removed:
        data["resources"] = [r for r in data["resources"] if r["name"] not in removed]
        for res in data["resources"]:
            res["dependencies"] = [d for d in res.get("dependencies", []) if d not in removed]
            specs = res.get("specs", {})
            for key in ("networks", "backends"):
                if key in specs:
                    specs[key] = [n for n in specs[key] if n not in removed]
    by_name = {r["name"]: r for r in data["resources"]}
    for name, changes in case.get("specs", {}).items():
        _merge_specs(by_name[name].setdefault("specs", {}), changes)
    for name, fields in case.get("set", {}).items():
        by_name[name].update(fields)
    data["resources"].extend(copy.deepcopy(case.get("add", [])))
    for key, value in case.get("metadata", {}).items():
        if value is None:
            data["metadata"].pop(key, None)
        else:
            data["metadata"][key] = value
    return data


def _cases(kind: str) -> Iterator[Any]:
    for path in sorted((SECURITY / "cases").glob("*.yaml")):
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
        for rule_id, entry in content.items():
            for case in entry.get(kind, []):
                yield pytest.param(rule_id, case, id=f"{rule_id}-{case['name']}")


POSITIVE = list(_cases("positive"))
NEGATIVE = list(_cases("negative"))


def expected_path(blueprint: Blueprint, expect: Mapping[str, Any]) -> str:
    if "path" in expect:
        return str(expect["path"])
    index = next(i for i, r in enumerate(blueprint.resources) if r.name == expect["resource"])
    return f"/resources/{index}{expect['at']}"


def keys(findings: list[Finding]) -> set[tuple[str, str, str]]:
    return {(f.rule_id, f.resource, f.path) for f in findings}


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------


def test_the_catalogue_has_at_least_sixty_rules_in_every_category() -> None:
    rules = CATALOG.rules
    assert len(rules) >= 60
    assert {r.category for r in rules} == {
        "exposure",
        "secrets",
        "container",
        "data",
        "availability",
        "segmentation",
        "logging",
        "proxmox",
        "kubernetes",
        "graph",
    }
    assert [r.id for r in rules] == sorted(r.id for r in rules)


def test_every_rule_has_remediation_references_and_a_framework_mapping() -> None:
    for rule in CATALOG.rules:
        assert rule.remediation.text
        assert rule.references
        assert any(controls for controls in rule.frameworks.values()), rule.id


def test_every_rule_has_a_positive_and_a_negative_case() -> None:
    ids = {r.id for r in CATALOG.rules}
    positive = {p.values[0] for p in POSITIVE}
    negative = {p.values[0] for p in NEGATIVE}
    assert ids - positive == set()
    assert ids - negative == set()
    assert (positive | negative) - ids == set()


def test_there_are_at_least_sixty_planted_misconfigurations() -> None:
    assert len(POSITIVE) >= 60


def test_get_returns_a_rule_and_refuses_an_unknown_id() -> None:
    assert CATALOG.get("ALMA-SEC-020").title == "Privileged container"
    with pytest.raises(InvalidRequest) as err:
        CATALOG.get("ALMA-SEC-999")
    assert err.value.code == "request.invalid"


def test_the_policies_resource_lists_rules_without_rationale() -> None:
    served = CATALOG.as_resource()
    assert served["count"] == len(CATALOG.rules) == len(served["rules"])
    first = served["rules"][0]
    assert set(first) == {
        "id",
        "title",
        "severity",
        "category",
        "scope",
        "applies_to",
        "frameworks",
        "remediation",
        "references",
    }
    assert "rationale" not in json.dumps(served)
    assert set(served["frameworks"]) == {"cis", "nist-800-53", "pci-dss-4.0", "hipaa", "soc2", "iso27001-2022"}
    json.dumps(served)  # plain data


# ---------------------------------------------------------------------------------------------
# Planted misconfigurations and near misses
# ---------------------------------------------------------------------------------------------


def test_the_hardened_blueprint_has_no_finding_at_all() -> None:
    report = audit(Blueprint.model_validate(HARDENED), CATALOG)
    assert report.findings == []
    assert report.score == 100
    assert report.grade == "A"
    assert report.rules_evaluated >= 80


@pytest.mark.parametrize(("rule_id", "case"), POSITIVE)
def test_each_planted_misconfiguration_is_found_at_its_resource_and_path(rule_id: str, case: dict[str, Any]) -> None:
    blueprint = Blueprint.model_validate(build(case))
    report = audit(blueprint, CATALOG)
    expect = case["expect"]
    path = expected_path(blueprint, expect)
    matching = [f for f in report.findings if (f.rule_id, f.resource, f.path) == (rule_id, expect["resource"], path)]
    assert matching, sorted(keys(report.findings))
    finding = matching[0]
    assert finding.severity is CATALOG.get(rule_id).severity
    if "message_contains" in expect:
        assert expect["message_contains"] in finding.message
    assert finding.remediation
    assert finding.references
    assert finding.frameworks
    if finding.patch:
        patched = jsonpatch.apply_patch(blueprint.to_data(), finding.patch)
        after = audit(Blueprint.model_validate(patched), CATALOG)
        assert (rule_id, expect["resource"], path) not in keys(after.findings), finding.patch


@pytest.mark.parametrize(("rule_id", "case"), NEGATIVE)
def test_each_near_miss_leaves_its_rule_silent(rule_id: str, case: dict[str, Any]) -> None:
    report = audit(Blueprint.model_validate(build(case)), CATALOG)
    assert rule_id not in {f.rule_id for f in report.findings}


def test_every_finding_points_into_its_resource() -> None:
    for param in POSITIVE:
        blueprint = Blueprint.model_validate(build(param.values[1]))
        for finding in audit(blueprint, CATALOG).findings:
            if finding.resource:
                index = next(i for i, r in enumerate(blueprint.resources) if r.name == finding.resource)
                assert finding.path.startswith(f"/resources/{index}/"), finding
            else:
                assert finding.path == "/resources"


# ---------------------------------------------------------------------------------------------
# Graph rule
# ---------------------------------------------------------------------------------------------


def test_a_database_behind_a_public_balancer_and_an_open_app_is_reported_with_the_path() -> None:
    blueprint = Blueprint.model_validate(
        {
            "name": "exposed",
            "resources": [
                {"name": "db", "type": "database", "provider": "proxmox", "specs": {"ports": [5432]}},
                {"name": "api", "type": "compute", "provider": "proxmox", "dependencies": ["db"]},
                {
                    "name": "edge",
                    "type": "load_balancer",
                    "provider": "proxmox",
                    "specs": {"public": True, "tls": True, "ports": [443], "backends": ["api"]},
                    "dependencies": ["api"],
                },
            ],
        }
    )
    report = audit(blueprint, CATALOG)
    path_findings = [f for f in report.findings if f.rule_id == "ALMA-SEC-090"]
    assert [(f.resource, f.path) for f in path_findings] == [("db", "/resources/0/specs/firewall")]
    assert "edge -> api -> db" in path_findings[0].message


# ---------------------------------------------------------------------------------------------
# Report: ordering, score, threshold, frameworks, suppressions
# ---------------------------------------------------------------------------------------------


def _messy() -> Blueprint:
    return Blueprint.model_validate(
        build(
            {
                "specs": {
                    "app": {"privileged": True, "user": "0", "read_only_root_filesystem": False},
                    "db": {"encryption_at_rest": False},
                    "worker": {"cpu": None},
                }
            }
        )
    )


def test_findings_are_sorted_by_severity_then_resource_order_then_rule() -> None:
    report = audit(_messy(), CATALOG)
    assert [(f.severity.value, f.resource, f.rule_id) for f in report.findings] == [
        ("critical", "app", "ALMA-SEC-020"),
        ("high", "db", "ALMA-SEC-042"),
        ("high", "app", "ALMA-SEC-021"),
        ("low", "app", "ALMA-SEC-032"),
        ("low", "worker", "ALMA-SEC-034"),
    ]


def test_score_follows_the_documented_formula() -> None:
    report = audit(_messy(), CATALOG)
    assert report.counts == {"critical": 1, "high": 2, "medium": 0, "low": 2, "info": 0}
    assert report.score == 100 - 25 - 2 * 10 - 2 * 1 == 53
    assert report.grade == "D"
    assert report.formula == FORMULA
    assert report.summary.startswith("score 53/100 (grade D): 1 critical, 2 high, 0 medium, 2 low, 0 info")
    assert score_of({"critical": 5}) == 0
    assert [grade_of(s) for s in (100, 90, 89, 75, 74, 60, 59, 40, 39, 0)] == list("AABBCCDDFF")


def test_threshold_shortens_the_list_but_not_the_counts_or_the_score() -> None:
    full = audit(_messy(), CATALOG)
    high = audit(_messy(), CATALOG, severity_threshold="HIGH")
    assert [f.severity for f in high.findings] == [Severity.CRITICAL, Severity.HIGH, Severity.HIGH]
    assert (high.counts, high.score, high.threshold) == (full.counts, full.score, "high")
    assert high.below_threshold == 2
    assert "2 findings below 'high' not listed" in high.summary


def test_an_unknown_threshold_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(InvalidRequest) as err:
        audit(_messy(), CATALOG, severity_threshold="severe")
    assert "critical, high, medium, low, info" in err.value.message


def test_frameworks_limit_the_rules_and_the_mappings_shown() -> None:
    report = audit(_messy(), CATALOG, frameworks=["PCI"])
    assert {f.rule_id for f in report.findings} == {"ALMA-SEC-020", "ALMA-SEC-021", "ALMA-SEC-042"}
    assert all(set(f.frameworks) == {"pci-dss-4.0"} for f in report.findings)
    assert report.rules_evaluated < audit(_messy(), CATALOG).rules_evaluated


def test_an_unknown_framework_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as err:
        audit(_messy(), CATALOG, frameworks=["fedramp"])
    assert "cis, nist-800-53, pci-dss-4.0, hipaa, soc2, iso27001-2022" in err.value.message


def _with_suppressions(entries: list[Any]) -> Blueprint:
    data = _messy().to_data()
    data["metadata"]["alma"] = {"suppress": entries}
    return Blueprint.model_validate(data)


def test_suppressed_findings_are_reported_with_their_reason_and_leave_the_score() -> None:
    reason = "legacy agent needs it until 2026-Q4"
    report = audit(_with_suppressions([{"rule": "ALMA-SEC-020", "resource": "app", "reason": reason}]), CATALOG)
    assert "ALMA-SEC-020" not in {f.rule_id for f in report.findings}
    assert [(s.finding.rule_id, s.finding.resource, s.reason) for s in report.suppressed] == [
        ("ALMA-SEC-020", "app", reason)
    ]
    assert report.counts["critical"] == 0
    assert report.score == 100 - 2 * 10 - 2 * 1
    assert "1 suppressed" in report.summary
    assert blocking_findings(report) == []


def test_a_wildcard_suppression_covers_every_resource_and_unused_ones_are_reported() -> None:
    report = audit(
        _with_suppressions(
            [
                {"rule": "ALMA-SEC-032", "reason": "images need a writable /var"},
                {"rule": "ALMA-SEC-009", "resource": "db", "reason": "stale"},
            ]
        ),
        CATALOG,
    )
    assert [s.finding.rule_id for s in report.suppressed] == ["ALMA-SEC-032"]
    assert report.unused_suppressions == [{"rule": "ALMA-SEC-009", "resource": "db", "reason": "stale"}]
    assert "1 suppressions matched nothing" in report.summary


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"rule": "ALMA-SEC-020", "resource": "app"}, "reason"),
        ({"rule": "ALMA-SEC-020", "resource": "app", "reason": ""}, "reason"),
        ({"rule": "ALMA-SEC-999", "resource": "app", "reason": "x"}, "ALMA-SEC-999"),
        ({"rule": "ALMA-SEC-020", "resource": "ghost", "reason": "x"}, "ghost"),
        ("ALMA-SEC-020", "/metadata/alma/suppress/0"),
    ],
)
def test_a_malformed_suppression_is_refused_not_ignored(entry: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        audit(_with_suppressions([entry]), CATALOG)
    assert fragment in err.value.message


def test_blocking_findings_are_the_unsuppressed_critical_ones() -> None:
    report = audit(_messy(), CATALOG)
    assert [(f.rule_id, f.resource) for f in blocking_findings(report)] == [("ALMA-SEC-020", "app")]


def test_the_audit_is_deterministic() -> None:
    first = audit(_messy(), CATALOG).model_dump_json()
    assert audit(_messy(), CATALOG).model_dump_json() == first


# ---------------------------------------------------------------------------------------------
# Catalogue loading errors name the file
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    for path in POLICIES.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("file", "old", "new", "fragment"),
    [
        ("container.yaml", "severity: critical", "severity: dire", "container.yaml"),
        ("container.yaml", "field: specs.privileged", "field: specs.privilegd", "specs has no 'privilegd'"),
        ("container.yaml", "check: capabilities", "check: no_such_check", "unknown check function 'no_such_check'"),
        ("exposure.yaml", "id: ALMA-SEC-002", "id: ALMA-SEC-001", "redefines ALMA-SEC-001"),
        ("exposure.yaml", "nist-800-53: [SC-7, AC-4]", "nist-800-53: [SC-7, XX-99]", "XX-99"),
        ("exposure.yaml", "{exposed: true}", "{exposed: true, field: x}", "exposure.yaml"),
        ("exposure.yaml", "    pointer: /specs/tls\n", "", "pointer"),
        ("secrets.yaml", "min_entropy: 4.0", "min_entropy: lots", "params for 'high_entropy_env'"),
        ("frameworks.yaml", "{id: CA-8, title: Penetration Testing, manual: true}", "{id: CA-8, title: P}", "CA-8"),
        ("frameworks.yaml", "  - id: hipaa\n", "  - id: hippa\n", "frameworks.yaml"),
    ],
)
def test_an_invalid_catalogue_stops_loading_naming_the_file(
    policy_dir: Path, file: str, old: str, new: str, fragment: str
) -> None:
    _edit(policy_dir / file, old, new)
    with pytest.raises(ConfigError) as err:
        PolicyCatalog.from_directory(policy_dir)
    assert fragment in err.value.message
    assert err.value.code == "config.invalid"


def test_a_missing_frameworks_file_stops_loading(policy_dir: Path) -> None:
    (policy_dir / "frameworks.yaml").unlink()
    with pytest.raises(ConfigError, match=r"frameworks\.yaml"):
        PolicyCatalog.from_directory(policy_dir)


# ---------------------------------------------------------------------------------------------
# Template snapshots
# ---------------------------------------------------------------------------------------------

TEMPLATE_FILES = sorted(TEMPLATES.glob("*.yaml"))


def template_report(path: Path) -> AuditReport:
    return audit(load_blueprint(path.read_text(encoding="utf-8")), CATALOG)


def snapshot_text(report: AuditReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("template", TEMPLATE_FILES, ids=lambda p: p.stem)
def test_each_template_audit_matches_its_snapshot(template: Path) -> None:
    snapshot = SNAPSHOTS / f"{template.stem}.json"
    assert snapshot.is_file(), (
        "missing snapshot: run .venv/bin/python -m tests.analysis.test_audit --regenerate-snapshots"
    )
    assert snapshot_text(template_report(template)) == snapshot.read_text(encoding="utf-8")


def test_no_template_has_a_critical_or_high_finding_outside_the_graph_rules() -> None:
    for template in TEMPLATE_FILES:
        report = template_report(template)
        assert report.counts["critical"] == 0, template.stem
        assert {f.rule_id for f in report.findings if f.severity is Severity.HIGH} <= {"ALMA-SEC-090"}


def regenerate_snapshots() -> None:
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    for template in TEMPLATE_FILES:
        (SNAPSHOTS / f"{template.stem}.json").write_text(snapshot_text(template_report(template)), encoding="utf-8")
        print(f"wrote {SNAPSHOTS / (template.stem + '.json')}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate-snapshots"]:
        sys.exit("usage: python -m tests.analysis.test_audit --regenerate-snapshots")
    regenerate_snapshots()
