"""check_compliance: per-control statuses from the mapped rules, golden for three fixtures.

Golden statuses live in ``tests/fixtures/security/compliance/golden/<fixture>.json`` (framework ->
control -> status) for a compliant (the hardened blueprint), a partly compliant and a failing
blueprint. After a deliberate change to rules or mappings, regenerate them with:

    .venv/bin/python -m tests.analysis.test_compliance --regenerate-golden

and review the diff like code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from alma_mcp.analysis.audit import PolicyCatalog
from alma_mcp.analysis.compliance import ComplianceReport, check_compliance
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import InvalidRequest

ROOT = Path(__file__).resolve().parent.parent.parent
SECURITY = ROOT / "tests" / "fixtures" / "security"
COMPLIANCE = SECURITY / "compliance"
GOLDEN = COMPLIANCE / "golden"
CATALOG = PolicyCatalog.from_directory(ROOT / "resources" / "policies")
FRAMEWORKS = ("cis", "nist-800-53", "pci-dss-4.0", "hipaa", "soc2", "iso27001-2022")
FIXTURES = {
    "compliant": SECURITY / "hardened.yaml",
    "partial": COMPLIANCE / "partial.yaml",
    "failing": COMPLIANCE / "failing.yaml",
}


def blueprint(name: str) -> Blueprint:
    return load_blueprint(FIXTURES[name].read_text(encoding="utf-8"))


def statuses(report: ComplianceReport) -> dict[str, str]:
    return {c.control_id: c.status for c in report.controls}


def golden_of(name: str) -> dict[str, dict[str, str]]:
    bp = blueprint(name)
    return {fw: statuses(check_compliance(bp, CATALOG, fw)) for fw in FRAMEWORKS}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_statuses_match_the_golden_file(name: str) -> None:
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert golden_of(name) == expected


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_control_of_the_framework_is_reported_once_with_counts(framework: str) -> None:
    report = check_compliance(blueprint("partial"), CATALOG, framework)
    controls = CATALOG.frameworks[framework].controls
    assert [c.control_id for c in report.controls] == [c.id for c in controls]
    assert set(report.counts) == {"pass", "fail", "not_applicable", "manual"}
    assert sum(report.counts.values()) == len(controls)
    automated = sum(1 for c in controls if not c.manual)
    assert report.coverage == round(automated / len(controls), 4)
    assert 0 < report.coverage < 1
    assert report.framework == framework


def test_the_disclaimer_says_indicative_not_a_certification() -> None:
    report = check_compliance(blueprint("compliant"), CATALOG, "soc2")
    assert "indicative mapping, not a certification" in report.disclaimer.lower()
    assert report.summary.endswith("indicative only")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_hardened_blueprint_fails_no_control_and_only_manual_controls_need_a_person(framework: str) -> None:
    report = check_compliance(blueprint("compliant"), CATALOG, framework)
    manual = {c.id for c in CATALOG.frameworks[framework].controls if c.manual}
    assert report.counts["fail"] == 0
    assert {c.control_id for c in report.controls if c.status == "manual"} == manual
    for control in report.controls:
        if control.status == "manual":
            assert control.rules == []
            assert control.evidence == []


def test_a_failing_control_lists_the_rules_and_resources_that_fail_it() -> None:
    report = check_compliance(blueprint("failing"), CATALOG, "pci-dss-4.0")
    control = next(c for c in report.controls if c.control_id == "8.6.2")
    assert control.status == "fail"
    assert {(e["rule_id"], e["resource"], e["severity"]) for e in control.evidence} >= {
        ("ALMA-SEC-011", "db", "critical"),
        ("ALMA-SEC-011", "app", "critical"),
        ("ALMA-SEC-014", "app", "critical"),
        ("ALMA-SEC-015", "db", "critical"),
    }
    assert "most severe failure: critical" in report.summary


def test_a_passing_control_names_the_rules_that_checked_it() -> None:
    report = check_compliance(blueprint("compliant"), CATALOG, "hipaa")
    control = next(c for c in report.controls if c.control_id == "164.312(a)(2)(iv)")
    assert control.status == "pass"
    assert control.evidence == [
        {"rule_id": "ALMA-SEC-042", "status": "pass", "resources": 5}
    ]  # db, cache, queue, objects, pve-db


def test_controls_of_an_absent_platform_are_not_applicable() -> None:
    report = check_compliance(blueprint("partial"), CATALOG, "cis")
    by_id = {c.control_id: c for c in report.controls}
    assert by_id["docker-5.5"].status == "not_applicable"
    assert by_id["k8s-5.2.2"].status == "not_applicable"
    assert by_id["controls-11.2"].status == "pass"


def test_a_suppressed_failure_makes_the_control_manual_with_the_reason() -> None:
    data: dict[str, Any] = blueprint("partial").to_data()
    reason = "network team filters this VLAN upstream"
    data["metadata"]["alma"] = {"suppress": [{"rule": "ALMA-SEC-060", "reason": reason}]}
    report = check_compliance(Blueprint.model_validate(data), CATALOG, "iso27001-2022")
    control = next(c for c in report.controls if c.control_id == "A.8.20")
    assert control.status == "manual"
    assert {e["suppressed"] for e in control.evidence} == {reason}


def test_aliases_resolve_to_the_framework() -> None:
    assert check_compliance(blueprint("partial"), CATALOG, "PCI").framework == "pci-dss-4.0"
    assert check_compliance(blueprint("partial"), CATALOG, "iso27001").framework == "iso27001-2022"


def test_an_unknown_framework_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidRequest) as err:
        check_compliance(blueprint("partial"), CATALOG, "fedramp")
    assert err.value.code == "request.invalid"
    for known in FRAMEWORKS:
        assert known in err.value.message
    assert err.value.data["known"] == list(FRAMEWORKS)


def test_every_rule_maps_to_a_control_and_every_automated_control_to_a_rule() -> None:
    mapped = {rule for controls in CATALOG.control_rules.values() for rules in controls.values() for rule in rules}
    assert mapped == {r.id for r in CATALOG.rules}
    for fw_id, fw in CATALOG.frameworks.items():
        for control in fw.controls:
            assert bool(CATALOG.control_rules[fw_id][control.id]) != control.manual, (fw_id, control.id)


def test_licensed_frameworks_carry_short_titles_only() -> None:
    for fw_id in ("cis", "pci-dss-4.0", "soc2", "iso27001-2022"):
        for control in CATALOG.frameworks[fw_id].controls:
            assert len(control.title) <= 80, control


def regenerate_golden() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in sorted(FIXTURES):
        path = GOLDEN / f"{name}.json"
        path.write_text(json.dumps(golden_of(name), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate-golden"]:
        sys.exit("usage: python -m tests.analysis.test_compliance --regenerate-golden")
    regenerate_golden()
