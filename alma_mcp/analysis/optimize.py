"""optimize_costs: recommendations that lower the monthly cost, each priced before and after.

Steps run per resource in a fixed order, each on the result of the previous one, so one
resource's savings telescope and every saving adds up exactly to before minus after (cents):

1. **idle / orphan**: CPU P95 at most 5% of the allocation with nothing depending on the resource
   and no public exposure; a load balancer without backends; storage nothing uses. Remove.
2. **over-replication** outside production (development, staging): one instance.
3. **consolidation**: stateless resources whose instances together need fewer of them at the
   target utilisation (P90 load); production keeps two.
4. **right-sizing**, the VPA recommender's rule: P90 x 1.15, never below P95 for CPU nor the peak
   for memory, floors 25 millicores and 250 MiB; only when P90 uses less than the target share
   of the allocation. Proxmox guests get whole cores; others 50 millicore steps; memory 64 MiB steps.
5. **storage shrink**: disks under 30% used shrink to used / target utilisation (whole GiB).
6. **storage class**: backup and archive volumes to HDD; NVMe to SSD unless a production data store.

Risk: low for removing idle or orphan things and for non-production replica cuts; medium for
changes backed by at least 7 days of usage; high with less (or unknown) history, or on stateful
resources. Usage is per instance: CPU in cores, memory and storage in MiB, as a series of samples
or as percentiles (``p90`` required; ``p95``, ``p99``, ``max`` optional).
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alma_mcp.analysis.binpack import pack
from alma_mcp.analysis.cost import DEFAULT_HOST, Sizing, capacity_of, cost_cents
from alma_mcp.analysis.pricing import PriceCatalog, StorageClass, UnitPrices
from alma_mcp.blueprint.model import Blueprint, Environment, Provider, Resource, ResourceType
from alma_mcp.errors import InvalidRequest
from alma_mcp.gcpause import without_gc
from alma_mcp.lazy import LazyModule

if TYPE_CHECKING:
    import numpy as np
else:
    np = LazyModule("numpy")  # imported on first use, not at server start-up

CPU_MARGIN: Final = 0.15
CPU_FLOOR: Final = 0.025
MEMORY_FLOOR_MIB: Final = 250
IDLE_CPU_FRACTION: Final = 0.05
SHRINK_BELOW: Final = 0.3
CONFIDENT_DAYS: Final = 7.0
STATEFUL: Final = frozenset({ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE, ResourceType.STORAGE})
DATA_STORES: Final = frozenset({ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE})
COLD_WORDS: Final = ("backup", "archive", "snapshot", "log")

Risk = Literal["low", "medium", "high"]
RecommendationKind = Literal[
    "idle", "orphan", "over_replication", "consolidation", "rightsize", "storage_shrink", "storage_class"
]


class UsageStats(BaseModel):
    """Percentiles of one metric, per instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    p90: float = Field(ge=0, allow_inf_nan=False)
    p95: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    p99: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max: float | None = Field(default=None, ge=0, allow_inf_nan=False)


Series = list[float]


class ResourceUsage(BaseModel):
    """Observed usage of one resource, per instance: cpu cores, memory MiB, storage used MiB."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: Series | UsageStats | None = None
    memory: Series | UsageStats | None = None
    storage_used: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="MiB, peak.")
    days: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="History length.")


UsageInput = ResourceUsage | Mapping[str, Any]


class Recommendation(BaseModel):
    """One change to one resource, priced on the resource as the previous steps left it."""

    kind: RecommendationKind
    resource: str
    current: dict[str, Any]
    proposed: dict[str, Any]
    monthly_cost_before: float
    monthly_cost_after: float
    monthly_savings: float
    risk: Risk
    rationale: str


class CostOptimization(BaseModel):
    """optimize_costs' result; ``monthly_savings`` = sum of the recommendations' = before - after."""

    blueprint: str
    profile: str
    currency: str
    target_utilisation: float
    monthly_cost_before: float
    monthly_cost_after: float
    monthly_savings: float
    savings_percent: float
    recommendations: list[Recommendation]
    hosts_before: int
    hosts_after: int
    warnings: list[str]
    optimized_blueprint: dict[str, Any]
    unit_prices: UnitPrices


@dataclass(frozen=True, slots=True)
class _Profile:
    p90: float
    p95: float
    peak: float


@dataclass(frozen=True, slots=True)
class _Usage:
    cpu: _Profile | None
    memory: _Profile | None
    storage_used: float | None
    days: float | None


@dataclass(frozen=True, slots=True)
class _Change:
    kind: RecommendationKind
    after: Sizing
    current: dict[str, Any]
    proposed: dict[str, Any]
    risk: Risk
    rationale: str
    load_factor: float = 1.0  # how much more load each remaining instance carries


@dataclass(slots=True)
class _Context:
    res: Resource
    usage: _Usage | None
    env: Environment | None
    referenced: bool
    target: float
    warnings: list[str]
    load_factor: float = 1.0  # per-instance load multiplier after consolidation


@without_gc
def optimize_costs(
    blueprint: Blueprint,
    catalog: PriceCatalog,
    usage: Mapping[str, UsageInput] | None = None,
    target_utilisation: float = 0.7,
    profile: str | None = None,
) -> CostOptimization:
    """Right-sizing, consolidation, idle and over-replicated resources, storage changes, with savings.

    Raises:
        InvalidRequest: unknown profile, a target utilisation outside (0, 1), usage for an unknown
            resource, or usage values that are negative, NaN, infinite or malformed.
    """
    prices = catalog.get(profile)
    if not 0 < target_utilisation < 1:  # NaN fails too
        raise InvalidRequest(
            f"target_utilisation must be above 0 and below 1 (e.g. 0.7), got {target_utilisation!r}",
            data={"target_utilisation": target_utilisation},
        )
    observed = _parse_usage(blueprint, usage or {})
    referenced = _referenced(blueprint)
    warnings: list[str] = []
    groups: list[tuple[int, int, list[Recommendation]]] = []
    before_total = after_total = 0
    finals: dict[str, Sizing] = {}
    for position, res in enumerate(blueprint.resources):
        env = blueprint.metadata.environment
        ctx = _Context(res, observed.get(res.name), env, res.name in referenced, target_utilisation, warnings)
        sizing = Sizing.of(res)
        start = cost = cost_cents(sizing, prices)
        recs: list[Recommendation] = []
        for step in _STEPS:
            if sizing.instances == 0:
                break
            change = step(ctx, sizing, prices)
            if change is None:
                continue
            new_cost = cost_cents(change.after, prices)
            if new_cost >= cost:
                continue
            recs.append(_recommendation(res.name, change, cost, new_cost))
            sizing, cost = change.after, new_cost
            ctx.load_factor *= change.load_factor
        before_total += start
        after_total += cost
        finals[res.name] = sizing
        if recs:
            groups.append((start - cost, position, recs))
    groups.sort(key=lambda g: (-g[0], g[1]))
    optimized = _apply(blueprint, finals)
    return CostOptimization(
        blueprint=blueprint.name,
        profile=prices.profile,
        currency=prices.currency,
        target_utilisation=target_utilisation,
        monthly_cost_before=before_total / 100,
        monthly_cost_after=after_total / 100,
        monthly_savings=(before_total - after_total) / 100,
        savings_percent=round(100 * (before_total - after_total) / before_total, 2) if before_total else 0.0,
        recommendations=[rec for _, _, recs in groups for rec in recs],
        hosts_before=_hosts(blueprint, {r.name: Sizing.of(r) for r in blueprint.resources}, prices),
        hosts_after=_hosts(blueprint, finals, prices),
        warnings=warnings,
        optimized_blueprint=optimized.to_data(),
        unit_prices=prices,
    )


def _recommendation(name: str, change: _Change, before: int, after: int) -> Recommendation:
    return Recommendation(
        kind=change.kind,
        resource=name,
        current=change.current,
        proposed=change.proposed,
        monthly_cost_before=before / 100,
        monthly_cost_after=after / 100,
        monthly_savings=(before - after) / 100,
        risk=change.risk,
        rationale=change.rationale,
    )


# --- the steps -------------------------------------------------------------------------------


def _remove(ctx: _Context, s: Sizing, _: UnitPrices) -> _Change | None:
    res, u = ctx.res, ctx.usage
    if ctx.referenced or res.specs.public:
        return None
    gone = replace(s, instances=0, max_instances=0)
    stateful = res.type in STATEFUL
    if u is not None and u.cpu is not None and s.cpu > 0 and u.cpu.p95 <= IDLE_CPU_FRACTION * s.cpu:
        share = 100 * u.cpu.p95 / s.cpu
        why = (
            f"CPU P95 is {u.cpu.p95:g} cores, {share:.1f}% of the {s.cpu:g} allocated; nothing depends on it "
            "and it is not public" + ("; back up its data first" if stateful else "")
        )
        return _Change("idle", gone, {"instances": s.instances}, {"instances": 0}, "medium" if stateful else "low", why)
    if res.type is ResourceType.LOAD_BALANCER and not res.specs.backends:
        why = "load balancer without backends, and nothing depends on it"
        return _Change("orphan", gone, {"instances": s.instances}, {"instances": 0}, "low", why)
    if res.type is ResourceType.STORAGE:
        why = "storage that no resource depends on, mounts or joins; back it up before removing"
        return _Change("orphan", gone, {"instances": s.instances}, {"instances": 0}, "medium", why)
    return None


def _over_replication(ctx: _Context, s: Sizing, _: UnitPrices) -> _Change | None:
    if ctx.env not in (Environment.DEVELOPMENT, Environment.STAGING) or s.instances <= 1:
        return None
    risk: Risk = "low" if ctx.env is Environment.DEVELOPMENT and ctx.res.type not in STATEFUL else "medium"
    why = f"{s.instances} instances in {ctx.env.value}; one is enough outside production"
    after = replace(s, instances=1, max_instances=max(1, s.max_instances))
    return _Change("over_replication", after, {"instances": s.instances}, {"instances": 1}, risk, why, s.instances)


def _consolidate(ctx: _Context, s: Sizing, _: UnitPrices) -> _Change | None:
    u = ctx.usage
    if u is None or ctx.res.type in STATEFUL or s.instances <= 1:
        return None
    shares = [p.p90 / size for p, size in ((u.cpu, s.cpu), (u.memory, s.memory_mib)) if p is not None and size > 0]
    if not shares:
        return None
    floor = 1 if ctx.env in (Environment.DEVELOPMENT, Environment.STAGING) else 2
    needed = max(floor, math.ceil(s.instances * max(shares) / ctx.target - 1e-9))
    if needed >= s.instances:
        return None
    why = (
        f"at P90 the {s.instances} instances use {100 * max(shares):.0f}% of their size; {needed} carry the "
        f"same load at {100 * ctx.target:.0f}% utilisation"
    )
    after = replace(s, instances=needed, max_instances=max(needed, s.max_instances))
    current, proposed = {"instances": s.instances}, {"instances": needed}
    return _Change("consolidation", after, current, proposed, _data_risk(ctx), why, s.instances / needed)


def _rightsize(ctx: _Context, s: Sizing, _: UnitPrices) -> _Change | None:
    u, f = ctx.usage, ctx.load_factor
    if u is None:
        return None
    current: dict[str, Any] = {}
    proposed: dict[str, Any] = {}
    reasons: list[str] = []
    cpu, memory = s.cpu, s.memory_mib
    if u.cpu is not None and s.cpu > 0:
        p90, p95 = u.cpu.p90 * f, u.cpu.p95 * f
        want = _round_cpu(max(CPU_FLOOR, p90 * (1 + CPU_MARGIN), p95), ctx.res.provider)
        _warn_if_tight(ctx, "cpu", p90, s.cpu)
        if p90 / s.cpu < ctx.target and want < s.cpu:
            cpu = want
            current["cpu"], proposed["cpu"] = s.cpu, want
            reasons.append(f"CPU P90 {p90:.3g} / P95 {p95:.3g} cores -> {want:g}")
    if u.memory is not None and s.memory_mib > 0:
        p90, peak = u.memory.p90 * f, u.memory.peak * f
        want_mib = 64 * math.ceil(max(MEMORY_FLOOR_MIB, p90 * (1 + CPU_MARGIN), peak) / 64)
        _warn_if_tight(ctx, "memory", p90, s.memory_mib)
        if p90 / s.memory_mib < ctx.target and want_mib < s.memory_mib:
            memory = want_mib
            current["memory_mib"], proposed["memory_mib"] = s.memory_mib, want_mib
            reasons.append(f"memory P90 {p90:.0f} / peak {peak:.0f} MiB -> {want_mib}")
    if not proposed:
        return None
    why = "VPA rule (P90 x 1.15, not below P95 cpu / peak memory): " + "; ".join(reasons)
    return _Change("rightsize", replace(s, cpu=cpu, memory_mib=memory), current, proposed, _data_risk(ctx), why)


def _shrink_storage(ctx: _Context, s: Sizing, _: UnitPrices) -> _Change | None:
    u = ctx.usage
    if u is None or u.storage_used is None or s.storage_mib <= 0 or u.storage_used >= SHRINK_BELOW * s.storage_mib:
        return None
    want = 1024 * max(1, math.ceil(u.storage_used / ctx.target / 1024))
    if want >= s.storage_mib:
        return None
    why = (
        f"{u.storage_used:.0f} of {s.storage_mib} MiB used ({100 * u.storage_used / s.storage_mib:.0f}%); "
        "shrinking means copying the data to a smaller disk"
    )
    risk: Risk = "high" if ctx.res.type in STATEFUL else "medium"
    after = replace(s, storage_mib=want)
    return _Change("storage_shrink", after, {"storage_mib": s.storage_mib}, {"storage_mib": want}, risk, why)


def _storage_class(ctx: _Context, s: Sizing, prices: UnitPrices) -> _Change | None:
    if s.storage_mib <= 0:
        return None
    res = ctx.res
    now: StorageClass = s.storage_type or prices.default_storage_type
    label = f"{res.name} {res.specs.kind or ''}".lower()
    production = ctx.env in (Environment.PRODUCTION, None)
    to: StorageClass | None = None
    risk: Risk = "low"
    why = ""
    if res.type is ResourceType.STORAGE and now != "HDD" and any(w in label for w in COLD_WORDS):
        to, why = "HDD", "backup and archive data is read rarely and sequentially"
    elif now == "NVMe" and not (production and res.type in DATA_STORES):
        risk = "medium" if production or res.type in STATEFUL else "low"
        why = "NVMe is for latency-critical data stores; SSD serves this resource"
        to = "SSD"
    if to is None or prices.storage_gib_month[to] >= prices.storage_gib_month[now]:
        return None
    after = replace(s, storage_type=to)
    return _Change("storage_class", after, {"storage_type": now}, {"storage_type": to}, risk, why)


_Step = Callable[[_Context, Sizing, UnitPrices], _Change | None]
_STEPS: Final[tuple[_Step, ...]] = (
    _remove,
    _over_replication,
    _consolidate,
    _rightsize,
    _shrink_storage,
    _storage_class,
)


# --- helpers ---------------------------------------------------------------------------------


def _data_risk(ctx: _Context) -> Risk:
    days = ctx.usage.days if ctx.usage is not None else None
    if ctx.res.type in STATEFUL or days is None or days < CONFIDENT_DAYS:
        return "high"
    return "medium"


def _warn_if_tight(ctx: _Context, metric: str, p90: float, allocated: float) -> None:
    if p90 * (1 + CPU_MARGIN) > allocated:
        ctx.warnings.append(
            f"{ctx.res.name}: {metric} P90 is {100 * p90 / allocated:.0f}% of the allocation; "
            "it may need more, not less"
        )


def _round_cpu(cores: float, provider: Provider) -> float:
    if provider is Provider.PROXMOX:
        return float(max(1, math.ceil(cores - 1e-9)))
    return round(0.05 * math.ceil(cores / 0.05 - 1e-9), 2)


def _referenced(blueprint: Blueprint) -> set[str]:
    """Names something points at: dependencies, load-balancer backends, networks, volume names."""
    names: set[str] = set()
    for res in blueprint.resources:
        names.update(res.dependencies, res.specs.backends, res.specs.networks)
        names.update(v.name for v in res.specs.volumes)
    return names


def _hosts(blueprint: Blueprint, sizing: Mapping[str, Sizing], prices: UnitPrices) -> int:
    shape = (prices.host.vcpus, prices.host.ram_gib) if prices.host is not None else DEFAULT_HOST
    capacity = capacity_of(shape, 0.1)
    demand: dict[tuple[int, int], int] = {}
    for s in sizing.values():
        key = (round(s.cpu * 1000), s.memory_mib)
        if key[0] <= capacity[0] and key[1] <= capacity[1]:
            demand[key] = demand.get(key, 0) + s.instances
    return pack(demand, capacity).count


def _apply(blueprint: Blueprint, finals: Mapping[str, Sizing]) -> Blueprint:
    kept: list[Resource] = []
    for res in blueprint.resources:
        s, orig = finals[res.name], Sizing.of(res)
        if s.instances == 0:
            continue
        if s == orig:
            kept.append(res)
            continue
        update: dict[str, Any] = {}
        if s.cpu != orig.cpu:
            update["cpu"] = s.cpu
        if s.memory_mib != orig.memory_mib:
            update["memory"] = s.memory_mib
        if s.storage_mib != orig.storage_mib:
            update["storage"] = s.storage_mib
        if s.storage_type != orig.storage_type:
            update["storage_type"] = s.storage_type
        if s.instances != orig.instances:
            scaling = res.specs.autoscaling
            if res.specs.replicas is not None:
                update["replicas"] = s.instances
            if scaling is not None and scaling.min > s.instances:
                update["autoscaling"] = scaling.model_copy(update={"min": s.instances})
        kept.append(res.model_copy(update={"specs": res.specs.model_copy(update=update)}))
    return blueprint.model_copy(update={"resources": kept})


def _parse_usage(blueprint: Blueprint, usage: Mapping[str, UsageInput]) -> dict[str, _Usage]:
    known = {r.name for r in blueprint.resources}
    parsed: dict[str, _Usage] = {}
    for name, raw in usage.items():
        if name not in known:
            raise InvalidRequest(
                f"usage given for {name!r}, which is not a resource of blueprint {blueprint.name!r}",
                data={"resource": name, "allowed": sorted(known)},
            )
        try:
            item = raw if isinstance(raw, ResourceUsage) else ResourceUsage.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidRequest(
                f"usage of {name!r} is invalid at {where or 'top level'}: {first['msg']}; give cpu (cores) and "
                "memory (MiB) per instance as a list of finite, non-negative samples or as percentiles "
                "{p90, p95?, p99?, max?}, storage_used (MiB) and days (history length)",
                data={"resource": name, "field": where},
            ) from None
        parsed[name] = _Usage(
            _profile(name, "cpu", item.cpu), _profile(name, "memory", item.memory), item.storage_used, item.days
        )
    return parsed


def _profile(name: str, metric: str, value: Series | UsageStats | None) -> _Profile | None:
    if value is None:
        return None
    if isinstance(value, UsageStats):
        p95 = value.p95 if value.p95 is not None else value.p90
        peak = next(v for v in (value.max, value.p99, value.p95, value.p90) if v is not None)
        if not value.p90 <= p95 <= peak:
            raise InvalidRequest(f"usage of {name!r}: {metric} percentiles must not decrease (p90 <= p95 <= max)")
        return _Profile(value.p90, p95, peak)
    samples = np.asarray(value, dtype=np.float64)
    if samples.size == 0 or not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise InvalidRequest(
            f"usage of {name!r}: {metric} samples must be a non-empty list of finite, non-negative numbers",
            data={"resource": name, "field": metric},
        )
    p90, p95 = np.percentile(samples, [90, 95]).tolist()
    return _Profile(float(p90), float(p95), float(samples.max()))
