"""Scoring suggest_architecture's candidates on the six Well-Architected pillars, and the trade-offs in words.

Each pillar scores 0-100 with the reasons behind the number: operational excellence from the
platform against the team's operations maturity; security from the security_audit score less 5 per
failing compliance control; reliability from the margin of computed over target availability (log
scale) and failure domains; performance efficiency from M/M/c sizing, autoscaling and a cache; cost
optimisation against the budget (or the cheapest candidate); sustainability from the share of
instances the load needs. The rank is the weighted sum with the caller's (or the default) weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from alma_mcp.analysis.architecture_data import PILLARS, ArchitectureData, Role
from alma_mcp.analysis.architecture_models import Candidate, Context, PillarScore, pct
from alma_mcp.analysis.availability import AvailabilityReport, Tier
from alma_mcp.blueprint.model import Provider


def pillars(
    ctx: Context,
    data: ArchitectureData,
    provider: Provider,
    tiers: Sequence[Tier],
    availability: AvailabilityReport,
    audit_score: int,
    gaps: Mapping[str, list[str]],
    cost: float,
    roles: Mapping[str, Role],
) -> dict[str, PillarScore]:
    platform = data.platforms.platforms[provider]
    maturity = ctx.req.team_ops_maturity
    ops = platform.ops_score[maturity]
    ops_reasons = [f"{platform.title} for a team of {maturity} operations maturity: {ops}/100"]
    ops_reasons.append("health checks on every service, the whole design as one reviewed blueprint (IaC)")

    fw_fail = sum(len(v) for v in gaps.values())
    security = max(0, audit_score - 5 * fw_fail)
    sec_reasons = [f"security_audit score {audit_score}/100 with no high or critical finding"]
    sec_reasons.append("TLS at the edge and to the data stores, encryption at rest, default-deny networks")
    for fw, failing in gaps.items():
        sec_reasons.append(f"{fw}: {len(failing)} controls fail ({', '.join(failing[:5]) or 'none'})")

    allowed = 1 - ctx.target / 100
    actual = max(1e-12, 1 - availability.composite)
    margin = min(1.0, max(0.0, math.log10(allowed / actual)))
    reliability = round(60 + 25 * margin + (15 if platform.failure_domains >= 2 else 0))
    rel_reasons = [
        f"computed {availability.percent}% >= {pct(ctx.target)}% target ({availability.downtime_hours_per_year} h "
        f"down a year of {availability.allowed_downtime_hours_per_year} h allowed)",
        f"{platform.failure_domains} failure domain{'s' * (platform.failure_domains != 1)}",
        f"failover {ctx.recovery.failover}, replication {ctx.recovery.replication}",
    ]

    capacity_tiers = [t for t in tiers if t.composition == "capacity"]
    perf = 70
    perf_reasons = ["capacity tiers sized with M/M/c at <= 70% utilisation plus the availability spares"]
    if provider is Provider.KUBERNETES and capacity_tiers:
        perf += 20
        perf_reasons.append("horizontal autoscaling absorbs peaks above the forecast")
    if "cache" in roles:
        perf += 10
        perf_reasons.append("a cache takes repeated reads off the database")
    performance = min(100, perf)

    needed = sum(t.needed for t in capacity_tiers)
    running = sum(t.instances for t in capacity_tiers)
    spare = (running - needed) / running if running else 0.0
    sustain = round(100 - 50 * spare)
    sus_reasons = [f"{running} capacity instances for a load needing {needed} ({spare:.0%} spare for availability)"]

    return {
        "operational_excellence": PillarScore(score=ops, reasons=ops_reasons),
        "security": PillarScore(score=security, reasons=sec_reasons),
        "reliability": PillarScore(score=min(100, reliability), reasons=rel_reasons),
        "performance_efficiency": PillarScore(score=performance, reasons=perf_reasons),
        "cost_optimization": PillarScore(score=0, reasons=[f"${cost:,.2f} a month"]),
        "sustainability": PillarScore(score=max(0, min(100, sustain)), reasons=sus_reasons),
    }


def score_relative(candidates: list[Candidate], ctx: Context) -> None:
    """Cost is scored against the budget (or the cheapest candidate); then the weighted sum."""
    cheapest = min(c.monthly_cost for c in candidates)
    budget = ctx.req.budget_monthly
    for c in candidates:
        cost_pillar = c.pillars["cost_optimization"]
        if budget is not None:
            if c.monthly_cost <= budget:
                value = round(100 - 50 * c.monthly_cost / budget)
                cost_pillar.reasons.append(f"within the ${budget:,.2f} budget ({c.monthly_cost / budget:.0%} of it)")
            else:
                value = round(40 * budget / c.monthly_cost)
                cost_pillar.reasons.append(f"over the ${budget:,.2f} budget by ${c.over_budget_by:,.2f}")
        else:
            value = round(100 * cheapest / c.monthly_cost) if c.monthly_cost > 0 else 100
            cost_pillar.reasons.append(f"{c.monthly_cost / cheapest:.2f}x the cheapest candidate" if cheapest else "")
        cost_pillar.score = max(0, min(100, value))
        c.score = round(sum(ctx.weights[p] * c.pillars[p].score for p in PILLARS), 2)


def trade_offs(candidates: Sequence[Candidate], ctx: Context) -> list[str]:
    best = candidates[0]
    out = [
        f"{best.name} ranks first with {best.score}: "
        + ", ".join(f"{p.replace('_', ' ')} {best.pillars[p].score}" for p in PILLARS)
    ]
    for other in candidates[1:]:
        diff = other.monthly_cost - best.monthly_cost
        money = f"${abs(diff):,.2f} a month {'more' if diff > 0 else 'less'}"
        better = [p.replace("_", " ") for p in PILLARS if other.pillars[p].score > best.pillars[p].score]
        worse = [p.replace("_", " ") for p in PILLARS if other.pillars[p].score < best.pillars[p].score]
        out.append(
            f"{other.name} costs {money} and computes {other.availability.percent}% against "
            f"{best.availability.percent}%; better on {', '.join(better) or 'nothing'}, worse on "
            f"{', '.join(worse) or 'nothing'}"
        )
    if ctx.req.team_ops_maturity == "low" and any(c.provider == "kubernetes" for c in candidates):
        out.append("self-run Kubernetes asks a lot of a team with low operations maturity; prefer a managed cluster")
    if any(c.over_budget_by is not None for c in candidates):
        out.append("a candidate over budget keeps its size: availability targets are not traded for cost silently")
    if best.recovery:
        out.append(f"recovery: {best.recovery[0]}")
    return out
