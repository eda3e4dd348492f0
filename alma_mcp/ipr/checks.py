"""Checks run on every IPR revision; their results are stored with the revision.

``CHECKS`` is a list on purpose: the security audit and the cost delta append themselves when they
land. A check returns a ``CheckResult``; ``blocking`` results stop approval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alma_mcp.analysis.durations import DurationTable
from alma_mcp.analysis.plan import plan_deployment
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import Limits, load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import BlueprintError
from alma_mcp.ipr.store import CheckResult


@dataclass(frozen=True)
class CheckContext:
    limits: Limits
    durations: DurationTable
    parallelism: int
    current: Mapping[str, Any] | None
    """What is deployed now under the same blueprint name (by any IPR), if anything."""


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


CHECKS: list[Check] = [validation_check, plan_check]


def run_checks(data: Mapping[str, Any], ctx: CheckContext) -> list[CheckResult]:
    return [check(data, ctx) for check in CHECKS]
