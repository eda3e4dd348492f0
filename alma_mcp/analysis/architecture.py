"""suggest_architecture: ranked candidate designs for a set of requirements, each with its own maths.

Anchors: the AWS Well-Architected pillars (operational excellence, security, reliability,
performance efficiency, cost optimisation, sustainability), SRE availability arithmetic and the
composable patterns of ``resources/architecture/patterns.yaml`` (3-tier web, API + workers + queue,
HA PostgreSQL, Redis with Sentinel), each traced to the catalogue templates it generalises.

For every pattern that serves the workload and every allowed platform:

1. size the capacity tiers for the traffic (M/M/c, ``calculate_capacity``) and every tier to its
   floor, then grow the critical tiers until the serial composite reaches the target
   (``availability.size_to_target``); a platform that cannot get there is rejected with its ceiling;
2. choose the recovery mechanism from RPO and RTO (synchronous standby for RPO 0, WAL archiving
   below 15 minutes, automatic failover below 5 minutes or at 99.95% and above);
3. write the blueprint, validate it, audit it (no high or critical finding is accepted), price it
   with the platform's price profile, and check the requested compliance frameworks;
4. score the six pillars (0-100, each with reasons) and rank by the weighted sum (ties: cheaper,
   then name). The first candidate is the suggestion; at most three are returned.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import ValidationError

from alma_mcp.analysis.architecture_build import Design, RecoveryPlan, build_blueprint
from alma_mcp.analysis.architecture_data import PILLARS, ArchitectureData, Pattern, Pillar, Role
from alma_mcp.analysis.architecture_models import (
    ArchitectureSuggestion,
    Candidate,
    Context,
    PillarScore,
    Quorum,
    Rejected,
    Requirements,
    pct,
)
from alma_mcp.analysis.architecture_score import pillars, score_relative, trade_offs
from alma_mcp.analysis.audit import PolicyCatalog, Severity, audit
from alma_mcp.analysis.availability import Tier, report, size_to_target
from alma_mcp.analysis.capacity import calculate_capacity
from alma_mcp.analysis.compliance import check_compliance
from alma_mcp.analysis.cost import estimate_resources
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Provider
from alma_mcp.errors import InvalidRequest

__all__ = [
    "ArchitectureSuggestion",
    "Candidate",
    "PillarScore",
    "Quorum",
    "Rejected",
    "Requirements",
    "parse_requirements",
    "suggest_architecture",
]

AVAILABILITY_MIN: Final = 90.0
AVAILABILITY_MAX: Final = 99.999
USUAL_MIN: Final = 99.9
ARCHITECTURE_PROVIDERS: Final = (Provider.DOCKER, Provider.KUBERNETES, Provider.PROXMOX)
MAX_CANDIDATES: Final = 3
WORKLOAD_ALIASES: Final[Mapping[str, str]] = {
    "website": "web",
    "web-app": "web",
    "webapp": "web",
    "3-tier": "web",
    "three-tier": "web",
    "rest": "api",
    "backend": "api",
    "async": "worker",
    "queue": "worker",
    "batch": "worker",
    "workers": "worker",
    "db": "database",
    "postgres": "database",
    "postgresql": "database",
    "redis": "cache",
}
_BLOCKING: Final = (Severity.CRITICAL, Severity.HIGH)


def parse_requirements(fields: Mapping[str, Any]) -> Requirements:
    """Requirements from tool arguments (``None`` means not given).

    Raises:
        InvalidRequest: a field is malformed or out of range; the message names what is allowed.
    """
    try:
        return Requirements.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'requirements'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(
            problems, data={"fields": sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})}
        ) from None


def suggest_architecture(
    req: Requirements, data: ArchitectureData, policies: PolicyCatalog, prices: PriceCatalog
) -> ArchitectureSuggestion:
    """Ranked candidates for the requirements; the first is the suggestion.

    Raises:
        InvalidRequest: an unknown workload, provider, framework or pillar, an availability target
            outside 90..99.999, or requirements no platform can meet (each with what is allowed).
    """
    ctx = _resolve(req, data, policies)
    candidates: list[Candidate] = []
    rejected: list[Rejected] = []
    for pattern_name, pattern in data.patterns.patterns.items():
        if ctx.workload not in pattern.workloads:
            continue
        for provider in ctx.providers:
            name = _candidate_name(ctx, pattern_name, provider)
            outcome = _candidate(ctx, data, policies, prices, pattern_name, pattern, provider)
            if isinstance(outcome, str):
                rejected.append(Rejected(name=name, reason=outcome))
            else:
                candidates.append(outcome)
    if not candidates:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in rejected)
        raise InvalidRequest(
            f"no design meets {pct(ctx.target)}% on {', '.join(p.value for p in ctx.providers)}: {reasons}; "
            "lower the availability target or allow another provider",
            data={"rejected": [r.model_dump() for r in rejected]},
        )
    score_relative(candidates, ctx)
    candidates.sort(key=lambda c: (-c.score, c.monthly_cost, c.name))
    ranked = [c.model_copy(update={"rank": i}) for i, c in enumerate(candidates, start=1)]
    shown, extra = ranked[:MAX_CANDIDATES], ranked[MAX_CANDIDATES:]
    rejected.extend(Rejected(name=c.name, reason=f"ranked {c.rank} (score {c.score})") for c in extra)
    best = shown[0]
    summary = (
        f"{best.name}: {best.pattern_title} on {best.provider}; {best.availability.percent}% computed "
        f"for a {pct(ctx.target)}% target, ${best.monthly_cost:,.2f} a month, score {best.score}"
    )
    if best.over_budget_by is not None:
        summary += f"; over budget by ${best.over_budget_by:,.2f}"
    return ArchitectureSuggestion(
        summary=summary,
        chosen=best.name,
        blueprint=best.blueprint,
        candidates=shown,
        rejected=rejected,
        trade_offs=trade_offs(shown, ctx),
        resolved={
            "workload_type": ctx.workload,
            "peak_rps": ctx.rps,
            "availability_target": ctx.target,
            "rpo_minutes": req.rpo_minutes,
            "rto_minutes": req.rto_minutes,
            "data_size_gb": req.data_size_gb,
            "budget_monthly": req.budget_monthly,
            "compliance": ctx.frameworks,
            "providers": [p.value for p in ctx.providers],
            "latency_slo_ms": req.latency_slo_ms,
            "team_ops_maturity": req.team_ops_maturity,
        },
        notes=ctx.notes,
        weights=dict(ctx.weights),
    )


# ---------------------------------------------------------------------------------------------
# Resolving the request
# ---------------------------------------------------------------------------------------------


def _resolve(req: Requirements, data: ArchitectureData, policies: PolicyCatalog) -> Context:
    notes: list[str] = []
    workload = WORKLOAD_ALIASES.get(req.workload_type, req.workload_type)
    allowed = data.workloads()
    if workload not in allowed:
        raise InvalidRequest(
            f"unknown workload_type {req.workload_type!r}; allowed: {', '.join(allowed)} "
            f"(aliases: {', '.join(sorted(WORKLOAD_ALIASES))})",
            data={"field": "workload_type", "allowed": allowed},
        )
    target = req.availability_target
    if not (math.isfinite(target) and AVAILABILITY_MIN <= target <= AVAILABILITY_MAX):
        raise InvalidRequest(
            f"availability_target must be a percentage from {pct(AVAILABILITY_MIN)} to {pct(AVAILABILITY_MAX)} "
            f"(99.9 to 99.999 is the usual range), got {target!r}",
            data={"field": "availability_target", "minimum": AVAILABILITY_MIN, "maximum": AVAILABILITY_MAX},
        )
    if target < USUAL_MIN:
        notes.append(
            f"availability target {pct(target)}% accepted, below the usual {pct(USUAL_MIN)}% floor for production: "
            f"about {(1 - target / 100) * 8760:.0f} hours of downtime a year are allowed"
        )
    providers = _providers(req.providers)
    frameworks = sorted({policies.resolve_framework(f) for f in req.compliance})
    traffic = data.platforms.traffic
    if req.peak_rps is not None:
        rps = req.peak_rps
    elif req.users is not None:
        rps = round(req.users * traffic.rps_per_user, 3)
        notes.append(f"peak rps from {req.users} concurrent users x {traffic.rps_per_user} rps each = {rps}")
    else:
        rps = traffic.default_rps[workload]
        notes.append(f"no traffic given: assumed {rps} rps, the default for a {workload} workload")
    return Context(
        req=req,
        workload=workload,
        rps=rps,
        target=target,
        providers=providers,
        frameworks=frameworks,
        weights=_weights(req.priorities, data),
        recovery=_recovery(req, target, data),
        notes=notes,
    )


def _providers(names: Sequence[str] | None) -> list[Provider]:
    allowed = ", ".join(p.value for p in ARCHITECTURE_PROVIDERS)
    if not names:
        return list(ARCHITECTURE_PROVIDERS)
    out: list[Provider] = []
    for raw in names:
        name = raw.strip().lower()
        if name == Provider.SIMULATION.value:
            raise InvalidRequest(
                f"simulation is the test double, not a place to run a design; allowed providers: {allowed}",
                data={"field": "providers", "allowed": [p.value for p in ARCHITECTURE_PROVIDERS]},
            )
        try:
            provider = Provider(name)
        except ValueError:
            raise InvalidRequest(
                f"unknown provider {raw!r}; allowed providers: {allowed}",
                data={"field": "providers", "allowed": [p.value for p in ARCHITECTURE_PROVIDERS]},
            ) from None
        if provider not in out:
            out.append(provider)
    return out


def _weights(priorities: Mapping[str, float] | None, data: ArchitectureData) -> dict[Pillar, float]:
    raw: dict[str, float] = {str(k): v for k, v in data.platforms.default_priorities.items()}
    if priorities:
        unknown = sorted(set(priorities) - set(PILLARS))
        bad = sorted(k for k, v in priorities.items() if not (math.isfinite(v) and v >= 0))
        if unknown or bad:
            raise InvalidRequest(
                f"priorities must map pillars to weights >= 0; unknown: {', '.join(unknown) or 'none'}, "
                f"invalid weights: {', '.join(bad) or 'none'}; pillars: {', '.join(PILLARS)}",
                data={"field": "priorities", "allowed": list(PILLARS)},
            )
        raw = {p: float(priorities.get(p, 0.0)) for p in PILLARS}
    total = sum(raw.values())
    if total <= 0:
        raise InvalidRequest("priorities must give at least one pillar a positive weight", data={"field": "priorities"})
    return {p: round(raw.get(p, 0.0) / total, 6) for p in PILLARS}


def _recovery(req: Requirements, target: float, data: ArchitectureData) -> RecoveryPlan:
    rec = data.platforms.recovery
    reasons: list[str] = []
    rpo, rto = req.rpo_minutes, req.rto_minutes
    replication: Literal["synchronous", "asynchronous"] = "asynchronous"
    if rpo <= rec.synchronous_rpo_minutes:
        replication = "synchronous"
        reasons.append("RPO 0: a synchronous standby acknowledges every commit, so a failover loses nothing")
    else:
        reasons.append(f"RPO {pct(rpo)} min: an asynchronous streaming standby (seconds of lag) covers node loss")
    wal = rpo < 60
    if wal:
        reasons.append(
            f"RPO {pct(rpo)} min < 60: continuous WAL archiving to the backup store bounds loss after corruption "
            f"or deletion to {'seconds' if rpo < rec.continuous_rpo_minutes else 'minutes'}"
        )
    schedule = "0 2 * * *" if rpo >= 1440 or wal else "0 * * * *"
    reasons.append(f"base backups on '{schedule}'" + (" with WAL in between" if wal else ""))
    failover: Literal["automatic", "manual"] = "manual"
    if rto < rec.automatic_rto_minutes or target >= 99.95:
        failover = "automatic"
        why = f"RTO {pct(rto)} min < {pct(rec.automatic_rto_minutes)}" if rto < rec.automatic_rto_minutes else ""
        why = why or f"{pct(target)}% leaves no time for a person to promote a standby"
        reasons.append(f"automatic failover (hot standby, consensus-based promotion): {why}")
    else:
        reasons.append(f"RTO {pct(rto)} min: a person promotes the standby (runbook), no consensus group needed")
    restore = req.data_size_gb / rec.restore_gb_per_minute + rec.restore_warmup_minutes
    if restore > rto:
        reasons.append(
            f"a restore of {pct(req.data_size_gb)} GB takes about {restore:.0f} min, beyond the RTO: the standby "
            "meets the RTO for failures; a restore (after data loss) will not"
        )
    retention = 30 if req.compliance else 14
    return RecoveryPlan(replication, failover, wal, schedule, retention, round(restore, 1), tuple(reasons))


# ---------------------------------------------------------------------------------------------
# One candidate
# ---------------------------------------------------------------------------------------------


def _candidate(
    ctx: Context,
    data: ArchitectureData,
    policies: PolicyCatalog,
    prices: PriceCatalog,
    pattern_name: str,
    pattern: Pattern,
    provider: Provider,
) -> Candidate | str:
    platform = data.platforms.platforms[provider]
    if ctx.target >= 99.95 and platform.failure_domains < 2:
        return (
            f"{platform.title} is one failure domain; {pct(ctx.target)}% (>= 99.95%) needs instances spread over "
            "at least two hosts or zones"
        )
    roles: dict[str, Role] = {}
    for key in pattern.roles:
        role = data.patterns.roles[key]
        if provider in role.not_on or (role.automatic_failover_only and ctx.recovery.failover == "manual"):
            continue
        roles[key] = role
    capacity: dict[str, Any] = {}
    tiers = [_platform_tier(data, provider)]
    for key, role in roles.items():
        critical = role.critical or key in pattern.critical_roles
        needed = 1
        if role.composition == "capacity":
            needed, detail = _needed(ctx, data, role)
            capacity[key] = detail
            if needed > role.max_instances:
                return (
                    f"the {role.title} tier needs {needed} instances for {pct(ctx.rps)} rps, beyond the "
                    f"{role.max_instances} one tier may have: shard the workload or cache in front of it"
                )
        tiers.append(_tier(ctx, data, provider, key, role, critical, needed))
    sized, reached = size_to_target(tiers, ctx.target / 100)
    availability = report(sized, ctx.target)
    if not reached:
        weakest = min((t for t in sized if t.critical), key=lambda t: t.availability())
        what = platform.platform.what if weakest.resource is None else f"the {weakest.role} tier at {weakest.instances}"
        return (
            f"tops out at {availability.percent}%, below the {pct(ctx.target)}% target: the weakest part, {what}, "
            "cannot be made more available"
        )
    instances = {t.role: t.instances for t in sized if t.resource is not None}
    name = _candidate_name(ctx, pattern_name, provider)
    design = Design(
        name=name,
        description=(
            f"{pattern.title}, on {platform.title}; sized by suggest_architecture for {pct(ctx.rps)} rps at "
            f"{pct(ctx.target)}% availability (computed {availability.percent}%)."
        ),
        provider=provider,
        pattern=pattern_name,
        based_on=pattern.based_on[0] if pattern.based_on else "",
        workload=ctx.workload,
        availability_target=ctx.target,
        roles=roles,
        instances=instances,
        autoscale=provider is Provider.KUBERNETES,
        data_size_gb=ctx.req.data_size_gb,
        recovery=ctx.recovery,
        compliance=ctx.frameworks,
    )
    blueprint_data = build_blueprint(design, data.patterns)
    checked = validate(blueprint_data)
    if not checked.valid:
        first = checked.errors[0]
        return f"the design does not validate ([{first.code}] {first.message} at {first.path}); this is a bug"
    blueprint = load_blueprint(blueprint_data)
    audited = audit(blueprint, policies)
    blocking = [f for f in audited.findings if f.severity in _BLOCKING]
    if blocking:
        f = blocking[0]
        return f"security_audit finds {len(blocking)} high or critical issues (first: {f.rule_id} on {f.resource})"
    profile = platform.price_profile if platform.price_profile in prices.profiles else None
    cost = round(estimate_resources(blueprint, prices, profile).monthly_cost, 2)
    gaps: dict[str, list[str]] = {}
    for fw in ctx.frameworks:
        result = check_compliance(blueprint, policies, fw)
        gaps[fw] = [c.control_id for c in result.controls if c.status == "fail"]
    budget = ctx.req.budget_monthly
    over = round(cost - budget, 2) if budget is not None and cost > budget else None
    scores = pillars(ctx, data, provider, sized, availability, audited.score, gaps, cost, roles)
    return Candidate(
        rank=0,
        name=name,
        pattern=pattern_name,
        pattern_title=pattern.title,
        provider=provider.value,
        based_on=list(pattern.based_on),
        score=0.0,
        pillars=scores,
        availability=availability,
        quorums=_quorums(sized, data, provider),
        recovery=list(ctx.recovery.reasons),
        capacity=capacity,
        monthly_cost=cost,
        over_budget_by=over,
        compliance_gaps=gaps,
        audit=audited.counts,
        blueprint=load_blueprint(blueprint_data).to_data(),
    )


def _candidate_name(ctx: Context, pattern_name: str, provider: Provider) -> str:
    return f"{ctx.workload}-{pattern_name}-{provider.value}"[:63].rstrip("-")


def _platform_tier(data: ArchitectureData, provider: Provider) -> Tier:
    part = data.platforms.platforms[provider].platform
    return Tier(
        role=part.name,
        resource=None,
        composition="quorum" if part.quorum else "single",
        instances=part.members,
        member_availability=part.member_availability,
        critical=True,
        max_instances=part.max_members,
    )


def _tier(
    ctx: Context, data: ArchitectureData, provider: Provider, key: str, role: Role, critical: bool, needed: int
) -> Tier:
    platform = data.platforms.platforms[provider]
    failover = data.platforms.failover
    automatic = not role.follows_recovery_plan or ctx.recovery.failover == "automatic"
    seconds = failover.automatic_seconds if automatic else failover.manual_seconds
    return Tier(
        role=key,
        resource=role.name,
        composition=role.composition,
        instances=max(role.min_instances, needed),
        member_availability=platform.instance_availability,
        critical=critical,
        needed=needed,
        max_instances=max(role.max_instances, needed),
        failover_seconds_per_year=failover.primary_outages_per_year * seconds if role.composition == "failover" else 0,
    )


def _needed(ctx: Context, data: ArchitectureData, role: Role) -> tuple[int, dict[str, Any]]:
    traffic = data.platforms.traffic
    key = "worker" if role.traffic == "worker" else (ctx.workload if ctx.workload in ("web", "api") else "api")
    per = traffic.per_instance_rps[key]
    if ctx.rps <= 0:
        return 1, {"per_instance_rps": per, "instances_for_load": 1, "note": "no traffic: one instance"}
    wait = None
    if ctx.req.latency_slo_ms is not None:
        # The SLO covers queueing plus service; only the queueing part is bought with instances.
        wait = max(1e-6, ctx.req.latency_slo_ms / 1000 - 1 / per)
    report_ = calculate_capacity(
        ctx.rps, per_instance_throughput=per, target_utilisation=traffic.target_utilisation, target_wait=wait
    )
    needed = max(1, report_.instances)
    wait_ms = report_.at_recommended.wait_percentile * 1000
    service_ms = 1000 / per
    detail: dict[str, Any] = {
        "per_instance_rps": per,
        "instances_for_load": needed,
        "utilisation_at_load": round(report_.at_recommended.utilisation, 4),
        "wait_p95_ms": round(wait_ms, 3),
        "service_ms": round(service_ms, 3),
    }
    if ctx.req.latency_slo_ms is not None:
        detail["meets_latency_slo"] = wait_ms + service_ms <= ctx.req.latency_slo_ms
        if service_ms > ctx.req.latency_slo_ms:
            detail["note"] = (
                f"one request takes {service_ms:.3g} ms at {pct(per)} rps per instance, more than the "
                f"{pct(ctx.req.latency_slo_ms)} ms SLO: more instances cannot fix that, faster requests can"
            )
    return needed, detail


def _quorums(tiers: Sequence[Tier], data: ArchitectureData, provider: Provider) -> list[Quorum]:
    out = []
    for t in tiers:
        if t.composition != "quorum":
            continue
        majority = t.instances // 2 + 1
        why = (
            data.platforms.platforms[provider].platform.what
            if t.resource is None
            else f"{data.patterns.roles[t.role].title}: decisions need a majority, so the size stays odd"
        )
        out.append(
            Quorum(
                component=t.resource or t.role,
                members=t.instances,
                majority=majority,
                tolerates_failures=t.instances - majority,
                why=why,
            )
        )
    return out
