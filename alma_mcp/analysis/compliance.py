"""check_compliance: a framework's controls, each decided by the security rules mapped to it.

The mapping lives in the rule catalogue (every rule lists the control ids it bears on, per
framework) and the control list in ``resources/policies/frameworks.yaml``. The blueprint is audited
once with every rule; then, per control of the framework:

- ``fail``: at least one mapped rule has an unsuppressed finding (evidence: rule, resource,
  severity, path of each);
- ``manual``: no automated rule maps to the control (it is marked manual in the catalogue), or its
  only findings are suppressed, so a person has to accept the documented exceptions;
- ``not_applicable``: no mapped rule applied to any resource of this blueprint (a Docker benchmark
  control on a Proxmox-only blueprint);
- ``pass``: mapped rules applied and none fired (evidence: each rule with how many resources it
  checked).

``coverage`` is the share of the framework's controls with at least one automated rule. The result
is indicative, never a certification; every report says so in ``disclaimer``.
"""

from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from alma_mcp.analysis.audit import PolicyCatalog, Severity, evaluate
from alma_mcp.blueprint.model import Blueprint

STATUSES: Final = ("pass", "fail", "not_applicable", "manual")


class ControlResult(BaseModel):
    """One control's status and the evidence behind it."""

    control_id: str
    title: str
    status: Literal["pass", "fail", "not_applicable", "manual"]
    evidence: list[dict[str, Any]] = Field(
        description="Failures as {rule_id, resource, severity, path}; for a pass, {rule_id, status, resources}; "
        "suppressed failures as {rule_id, resource, severity, suppressed: reason}."
    )
    rules: list[str] = Field(description="The automated rules mapped to this control.")


class ComplianceReport(BaseModel):
    """The outcome of check_compliance for one framework."""

    framework: str
    framework_title: str
    summary: str
    controls: list[ControlResult]
    counts: dict[str, int] = Field(description="Controls per status, every status listed.")
    coverage: float = Field(description="Share of controls with at least one automated rule (0..1).")
    disclaimer: str


def check_compliance(blueprint: Blueprint, catalog: PolicyCatalog, framework: str) -> ComplianceReport:
    """Each control of ``framework`` (an id or alias) decided from one audit of the blueprint.

    Raises:
        InvalidRequest: unknown framework (the message lists the known ones), or a malformed
            suppression in the blueprint.
    """
    fw_id = catalog.resolve_framework(framework)
    fw = catalog.frameworks[fw_id]
    result = evaluate(blueprint, catalog)
    failures: dict[str, list[dict[str, Any]]] = {}
    for _, finding in sorted(result.findings, key=lambda item: item[0]):
        failures.setdefault(finding.rule_id, []).append(
            {
                "rule_id": finding.rule_id,
                "resource": finding.resource,
                "severity": finding.severity.value,
                "path": finding.path,
            }
        )
    accepted: dict[str, list[dict[str, Any]]] = {}
    for _, item in sorted(result.suppressed, key=lambda pair: pair[0]):
        accepted.setdefault(item.finding.rule_id, []).append(
            {
                "rule_id": item.finding.rule_id,
                "resource": item.finding.resource,
                "severity": item.finding.severity.value,
                "suppressed": item.reason,
            }
        )
    controls = []
    for control in fw.controls:
        rules = catalog.control_rules[fw_id][control.id]
        failed = [e for rule in rules for e in failures.get(rule, [])]
        waived = [e for rule in rules for e in accepted.get(rule, [])]
        applied = [rule for rule in rules if result.applicable.get(rule)]
        status: Literal["pass", "fail", "not_applicable", "manual"]
        if failed:
            status, evidence = "fail", failed + waived
        elif not rules or waived:
            status, evidence = "manual", waived
        elif not applied:
            status, evidence = "not_applicable", []
        else:
            status = "pass"
            evidence = [{"rule_id": rule, "status": "pass", "resources": result.applicable[rule]} for rule in applied]
        controls.append(
            ControlResult(control_id=control.id, title=control.title, status=status, evidence=evidence, rules=rules)
        )
    counts = {status: sum(c.status == status for c in controls) for status in STATUSES}
    automated = sum(bool(c.rules) for c in controls)
    coverage = round(automated / len(controls), 4)
    worst = _worst(controls)
    summary = (
        f"{fw.title}: {counts['fail']} failing, {counts['pass']} passing, {counts['manual']} manual, "
        f"{counts['not_applicable']} not applicable of {len(controls)} controls; automated coverage "
        f"{coverage:.0%}" + (f"; most severe failure: {worst}" if worst else "") + "; indicative only"
    )
    return ComplianceReport(
        framework=fw_id,
        framework_title=fw.title,
        summary=summary,
        controls=controls,
        counts=counts,
        coverage=coverage,
        disclaimer=catalog.disclaimer,
    )


def _worst(controls: list[ControlResult]) -> str:
    order = [s.value for s in Severity]
    found = [
        (order.index(e["severity"]), c.control_id)
        for c in controls
        if c.status == "fail"
        for e in c.evidence
        if "suppressed" not in e
    ]
    if not found:
        return ""
    rank, control = min(found)
    return f"{order[rank]} ({control})"
