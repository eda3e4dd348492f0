"""Checks run on every IPR revision; their results are stored with the revision.

``CHECKS`` is a list on purpose: the security audit and the cost delta append themselves when they
land. A check returns a ``CheckResult``; ``blocking`` results stop approval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alma_mcp.analysis.audit import PolicyCatalog, audit, blocking_findings
from alma_mcp.analysis.cost import monthly_cost
from alma_mcp.analysis.durations import DurationTable
from alma_mcp.analysis.plan import plan_deployment
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import Limits, load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import AlmaError, BlueprintError
from alma_mcp.ipr.store import CheckResult


@dataclass(frozen=True)
class CheckContext:
    limits: Limits
    durations: DurationTable
    parallelism: int
    current: Mapping[str, Any] | None
    """What is deployed now under the same blueprint name (by any IPR), if anything."""
    prices: PriceCatalog | None = None
    budget_monthly: float | None = None
    policies: PolicyCatalog | None = None


Check = Callable[[Mapping[str, Any], CheckContext], CheckResult]


def validation_check(data: Mapping[str, Any], ctx: CheckContext) -> CheckResult:
    report = validate(data, limits=ctx.limits)
    status = "fail" if not report.valid else "warn" if report.warnings else "pass"
    return CheckResult(
        name="validation",
        status=status,
        blocking=not report.valid,
        summary=report.summary,
        details={
            "errors": [e.model_dump() for e in report.errors],
            "warnings": [w.model_dump() for w in report.warnings],
        },
    )


def plan_check(data: Mapping[str, Any], ctx: CheckContext) -> CheckResult:
    try:
        target = load_blueprint(data, ctx.limits)
        current: Blueprint | None = load_blueprint(ctx.current, ctx.limits) if ctx.current is not None else None
        plan = plan_deployment(target, current, ctx.durations, ctx.parallelism)
    except BlueprintError as err:
        return CheckResult(name="plan", status="fail", blocking=True, summary=str(err))
    return CheckResult(
        name="plan",
        status="pass",
        blocking=False,
        summary=plan.summary.splitlines()[0],
        details={
            "counts": plan.counts,
            "waves": len(plan.waves),
            "estimated_total_seconds": plan.estimated_total_seconds,
            "against": "deployed revision" if ctx.current is not None else "nothing deployed",
            "changes": plan.summary.splitlines()[1:51],
        },
    )


def cost_check(data: Mapping[str, Any], ctx: CheckContext) -> CheckResult:
    """The monthly cost delta against what is deployed, and the budget gate (``ALMA_BUDGET_MONTHLY``)."""
    if ctx.prices is None:
        return CheckResult(name="cost", status="pass", blocking=False, summary="no price catalogue configured")
    try:
        after = monthly_cost(load_blueprint(data, ctx.limits), ctx.prices)
        before = monthly_cost(load_blueprint(ctx.current, ctx.limits), ctx.prices) if ctx.current else 0.0
    except BlueprintError as err:
        return CheckResult(name="cost", status="fail", blocking=True, summary=str(err))
    currency = ctx.prices.get().currency
    delta = round(after - before, 2)
    summary = f"{delta:+,.2f} {currency}/month (from {before:,.2f} to {after:,.2f})"
    details = {
        "before": before,
        "after": after,
        "delta": delta,
        "currency": currency,
        "profile": ctx.prices.default_profile,
        "budget_monthly": ctx.budget_monthly,
    }
    if ctx.budget_monthly is not None and after > ctx.budget_monthly:
        return CheckResult(
            name="cost",
            status="fail",
            blocking=True,
            overridable=True,
            summary=f"{summary}; over the budget of {ctx.budget_monthly:,.2f} {currency}/month",
            details=details,
        )
    return CheckResult(name="cost", status="pass", blocking=False, summary=summary, details=details)


def security_check(data: Mapping[str, Any], ctx: CheckContext) -> CheckResult:
    """The security audit; critical findings block approval unless an admin overrides with a reason."""
    if ctx.policies is None:
        return CheckResult(name="security", status="pass", blocking=False, summary="no rule catalogue configured")
    try:
        report = audit(load_blueprint(data, ctx.limits), ctx.policies)
    except AlmaError as err:  # a schema error (validation blocks) or a malformed suppression
        return CheckResult(name="security", status="fail", blocking=True, summary=str(err))
    critical = blocking_findings(report)
    details = {
        "score": report.score,
        "grade": report.grade,
        "counts": report.counts,
        "suppressed": len(report.suppressed),
        "findings": [
            {"rule_id": f.rule_id, "severity": f.severity.value, "resource": f.resource, "message": f.message}
            for f in report.findings[:50]
        ],
    }
    if critical:
        return CheckResult(
            name="security",
            status="fail",
            blocking=True,
            overridable=True,
            summary=f"{report.summary}; {len(critical)} critical finding{'s' * (len(critical) != 1)} "
            f"(first: {critical[0].rule_id} on {critical[0].resource or 'the blueprint'})",
            details=details,
        )
    status = "warn" if report.counts.get("high", 0) or report.counts.get("medium", 0) else "pass"
    return CheckResult(name="security", status=status, blocking=False, summary=report.summary, details=details)


CHECKS: list[Check] = [validation_check, plan_check, security_check, cost_check]


def run_checks(data: Mapping[str, Any], ctx: CheckContext) -> list[CheckResult]:
    return [check(data, ctx) for check in CHECKS]
