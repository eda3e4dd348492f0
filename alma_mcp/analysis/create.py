"""create_blueprint: a valid blueprint from a request or a description, with the reason for every choice.

The pipeline is fixed and every number in it comes from ``resources/create/rules.yaml``: read the
free text (a structured field wins over it), fill defaults, pick the base template by workload, move
every resource to the requested provider, apply the environment's policy, size the traffic tiers,
price the result and squeeze it into the budget. Nothing is random and every loop runs in blueprint
order, so one request always gives byte-identical output. The result must pass validate() with no
warnings before it is returned: a failure there is a bug in the rules, never the caller's fault.
"""

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alma_mcp.analysis.create_rules import (
    AVAILABILITY_MAX,
    AVAILABILITY_MIN,
    RPS_MAX,
    USERS_MAX,
    CreateRules,
    TextFindings,
    Workload,
    load_create_rules,
)
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Environment, Name, Provider, ResourceType, normalise_environment
from alma_mcp.blueprint.quantities import format_cpu, format_mib
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.errors import TemplateInvalidParameter

__all__ = [
    "BlueprintRequest",
    "CreateRules",
    "CreateRulesBug",
    "CreatedBlueprint",
    "Decision",
    "create_blueprint",
    "load_create_rules",
]

# Request fields the text may fill, in request order (the order of extracted_from_text).
TEXT_FIELDS: Final = (
    "workload",
    "expected_rps",
    "expected_users",
    "availability",
    "environment",
    "provider",
    "budget_monthly",
)
TRAFFIC_FIELDS: Final = ("expected_rps", "expected_users")
Res = dict[str, Any]


class BlueprintRequest(BaseModel):
    """What to build: structured fields, free text, or both (a structured field wins over the text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name | None = Field(default=None, description="Blueprint name (DNS-1123 label); default <workload>-<env>.")
    description: str | None = Field(default=None, max_length=2000)
    workload: str | None = Field(default=None, max_length=40, description="A workload kind from the rules file.")
    expected_rps: float | None = Field(default=None, ge=0, le=RPS_MAX, allow_inf_nan=False)
    expected_users: int | None = Field(default=None, ge=0, le=USERS_MAX, description="Concurrent users.")
    availability: float | None = Field(
        default=None, ge=AVAILABILITY_MIN, le=AVAILABILITY_MAX, allow_inf_nan=False, description="Target, percent."
    )
    environment: Environment | None = None
    provider: Provider | None = None
    budget_monthly: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="USD per month.")
    text: str | None = Field(default=None, max_length=4000, description="Free-text description of the system.")

    @field_validator("environment", mode="before")
    @classmethod
    def _environment_alias(cls, value: object) -> object:
        return normalise_environment(value) if isinstance(value, str) else value

    @field_validator("workload", "provider", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class Decision(BaseModel):
    """One choice create_blueprint made, and why."""

    topic: str
    choice: str
    reason: str


class CreatedBlueprint(BaseModel):
    """The outcome of create_blueprint."""

    blueprint: dict[str, Any]
    rationale: list[Decision]
    resolved: BlueprintRequest
    extracted_from_text: list[str]
    estimated_monthly_cost: float
    warnings: list[str]


class CreateRulesBug(AssertionError):
    """The rules produced a blueprint that validate() rejects or warns about: a bug to fix, not bad input."""


@dataclass
class _Build:
    resources: list[Res]
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def decide(self, topic: str, choice: str, reason: str) -> None:
        self.decisions.append(Decision(topic=topic, choice=choice, reason=reason))


@dataclass(frozen=True)
class _Plan:
    """The resolved request, typed for the build steps."""

    request: BlueprintRequest
    extracted: list[str]
    kind: str
    workload: Workload
    environment: Environment
    availability: float
    provider: Provider
    rps: float
    template: str


@dataclass
class _Tier:
    """Resources that scale together (web-1, web-2, web-3 form tier 'web'), sized as one count."""

    name: str
    members: list[Res]
    per_instance_rps: float
    needed: int
    minimum: int
    instances: int = 0
    autoscaling_max: dict[str, int] = field(default_factory=dict)

    @property
    def floor(self) -> int:
        # Every template resource keeps at least one instance; removing one would break backends.
        return max(self.minimum, len(self.members))

    def shares(self, total: int) -> list[int]:
        base, extra = divmod(total, len(self.members))
        return [base + (i < extra) for i in range(len(self.members))]

    def apply(self) -> None:
        for res, replicas, least in zip(
            self.members, self.shares(self.instances), self.shares(self.minimum), strict=True
        ):
            specs = res.setdefault("specs", {})
            specs["replicas"] = replicas
            if "autoscaling" in specs:
                auto = specs["autoscaling"]
                auto["min"] = min(max(1, least), replicas)
                auto["max"] = max(self.autoscaling_max[res["name"]], replicas)


def create_blueprint(request: BlueprintRequest, catalog: TemplateCatalog, rules: CreateRules) -> CreatedBlueprint:
    """Build a blueprint from the request and the rules, with a rationale for every choice.

    Raises:
        TemplateInvalidParameter: the workload is not one the rules know.
    """
    findings = rules.text.extract(request.text) if request.text else TextFindings()
    build = _Build(resources=[])
    plan = _resolve(request, findings, catalog, rules, build)
    resolved = plan.request
    blueprint, _ = catalog.customize(plan.template, name=resolved.name, description=resolved.description)
    data = blueprint.to_data()  # a fresh copy: the catalogue is never touched
    build.resources = data.setdefault("resources", [])
    _adapt_to_provider(build, plan.provider, plan.workload, rules)
    _apply_environment(build, plan.environment, rules)
    tiers = _size_tiers(build, plan, rules)
    cost = _fit_budget(build, tiers, resolved.budget_monthly, rules)
    meta = data.setdefault("metadata", {})
    meta.update(environment=plan.environment.value, availability=f"{_num(plan.availability)}%", workload=plan.kind)
    return CreatedBlueprint(
        blueprint=_checked(data),
        rationale=build.decisions,
        resolved=resolved,
        extracted_from_text=plan.extracted,
        estimated_monthly_cost=cost,
        warnings=build.warnings,
    )


def _resolve(
    request: BlueprintRequest, findings: TextFindings, catalog: TemplateCatalog, rules: CreateRules, build: _Build
) -> _Plan:
    given = request.model_dump()
    # rps and users are one quantity, traffic: a structured value for either beats both from the text.
    traffic_given = given["expected_rps"] is not None or given["expected_users"] is not None
    extracted: list[str] = [
        f
        for f in TEXT_FIELDS
        if given[f] is None and f in findings.values and not (traffic_given and f in TRAFFIC_FIELDS)
    ]
    merged: dict[str, Any] = {**given, **{f: findings.values[f] for f in extracted}}
    build.warnings.extend(findings.ignored)
    if request.text and not findings.values:
        build.warnings.append("nothing in the text matched the rules' keywords or number patterns; defaults used")

    def source(name: str, default: str) -> str:
        if given[name] is not None:
            return "given in the request"
        if name in extracted:
            return f"read from the text ({findings.evidence[name]!r})"
        return default

    kind = merged["workload"] or rules.default_workload
    if kind not in rules.workloads:
        raise TemplateInvalidParameter(
            f"unknown workload {kind!r}; allowed: {', '.join(rules.workloads)}",
            data={"parameter": "workload", "allowed": list(rules.workloads)},
        )
    workload = rules.workloads[kind]
    build.decide("workload", kind, source("workload", "default: the request names none"))
    env = Environment(merged["environment"] or rules.default_environment)
    policy = rules.environments[env]
    summary = f"cpu and memory x{_num(policy.size_factor)}" if policy.size_factor < 1 else "template sizes"
    summary += ", no backups" if policy.drop_backups else ""
    summary += ", backups, encryption and TLS on public endpoints enforced" if policy.harden else ""
    build.decide("environment", env.value, f"{source('environment', 'default: the request names none')}; {summary}")
    availability = float(merged["availability"] or rules.availability.defaults[env])
    least = rules.availability.minimum_for(availability)
    build.decide(
        "availability",
        f"{_num(availability)}%",
        f"{source('availability', f'default for {env.value}')}; "
        f"each traffic tier needs at least {least} instance{'s' * (least != 1)}",
    )
    template = workload.template_for(availability)
    reason = f"workload {kind} maps to {workload.template}"
    if workload.high_availability is not None:
        ha = workload.high_availability
        reached = availability >= ha.at_least
        reason += f"; {_num(availability)}% is {'at or above' if reached else 'below'} {_num(ha.at_least)}%, "
        reason += f"the threshold of {ha.template}" if reached else "so the simpler template"
    build.decide("template", template, reason)
    base = catalog.get(template)
    counts = Counter(r.provider for r in base.resources)
    template_provider = counts.most_common(1)[0][0] if counts else Provider.SIMULATION
    provider = Provider(merged["provider"] or template_provider)
    build.decide("provider", provider.value, source("provider", f"the template's provider ({template_provider.value})"))
    rps, rps_reason = _traffic(merged, workload, rules, source("expected_rps", ""), source("expected_users", ""))
    build.decide("traffic", f"{_num(rps)} rps", rps_reason)
    name = merged["name"] or f"{kind}-{env.value}"
    build.decide("name", name, source("name", "derived: <workload>-<environment>"))
    description = merged["description"] or (
        f"{kind} system for {env.value} on {provider.value}, {_num(availability)}% availability target, "
        f"{_num(rps)} requests per second; built by create_blueprint from template {template}."
    )
    resolved = BlueprintRequest.model_validate(
        {**merged, "name": name, "description": description, "workload": kind, "environment": env,
         "availability": availability, "provider": provider, "expected_rps": rps}
    )  # fmt: skip
    return _Plan(resolved, extracted, kind, workload, env, availability, provider, rps, template)


def _traffic(
    merged: dict[str, Any], workload: Workload, rules: CreateRules, rps_source: str, users_source: str
) -> tuple[float, str]:
    if merged["expected_rps"] is not None:
        return float(merged["expected_rps"]), rps_source
    if merged["expected_users"] is not None:
        rate = rules.app_tier.rps_per_user
        rps = min(RPS_MAX, round(merged["expected_users"] * rate, 2))
        return rps, f"{merged['expected_users']} concurrent users ({users_source}) x {_num(rate)} rps per user"
    return workload.default_rps, "default for the workload: the request gives neither rps nor users"


def _adapt_to_provider(build: _Build, provider: Provider, workload: Workload, rules: CreateRules) -> None:
    target = rules.providers[provider]
    moved = Counter(r["provider"] for r in build.resources if r["provider"] != provider.value)
    if moved:
        origin = ", ".join(f"{n} from {p}" for p, n in sorted(moved.items()))
        build.decide(
            "adapt",
            f"{sum(moved.values())} resources moved to {provider.value}",
            f"{origin}: one provider for the whole blueprint, so no dependency crosses providers",
        )
    for res in build.resources:
        specs: dict[str, Any] = res.setdefault("specs", {})
        res["provider"] = provider.value
        changes: list[str] = []
        reasons: list[str] = []
        old = ResourceType(res["type"])
        new = target.type_changes.get(old, old)
        if new is not old:
            res["type"] = new.value
            changes.append(f"{old.value} -> {new.value}")
            reasons.append(f"{provider.value} cannot host a {old.value}")
        dropped = [key for key in target.drop_specs if key in specs]
        for key in dropped:
            del specs[key]
        if dropped:
            changes.append(f"dropped {', '.join(dropped)}")
            reasons.append(f"{', '.join(dropped)} mean{'s' * (len(dropped) == 1)} nothing on {provider.value}")
        if provider in rules.images.providers and new in rules.images.required_for and not specs.get("image"):
            image, why = _image_for(specs, workload, rules)
            specs["image"] = image
            changes.append(f"image {image}")
            reasons.append(f"{provider.value} runs images; {why}")
        guest = target.guest
        if guest is not None and new in guest.types:
            added = _make_guest(specs, guest.os, guest.template, guest.cpu, guest.memory)
            if added:
                changes.append(f"set {', '.join(added)}")
                reasons.append("a Proxmox VM needs an OS, a template to clone and a size")
        if changes:
            build.decide(f"adapt:{res['name']}", "; ".join(changes), "; ".join(reasons))


def _image_for(specs: dict[str, Any], workload: Workload, rules: CreateRules) -> tuple[str, str]:
    images = rules.images
    kind, role = specs.get("kind"), specs.get("role")
    if specs.get("gpu") or specs.get("gpu_count"):
        return images.gpu, "GPU image for a GPU resource"
    if kind in images.by_kind:
        return images.by_kind[kind], f"image for kind {kind}"
    if role in images.by_role:
        return images.by_role[role], f"image for role {role}"
    return workload.app_image, "the workload's application image (a pinned placeholder: replace with your own)"


def _make_guest(specs: dict[str, Any], os_label: str, template: str, cpu: float, memory: int) -> list[str]:
    added = []
    if not specs.get("os"):
        specs["os"] = os_label
        added.append(f"os {os_label}")
    if not specs.get("template") and not specs.get("ostemplate"):
        specs["template"] = template
        added.append(f"template {template}")
    if not specs.get("cpu"):
        specs["cpu"] = cpu
        added.append(f"cpu {format_cpu(cpu)}")
    if not specs.get("memory"):
        specs["memory"] = memory
        added.append(f"memory {format_mib(memory)}")
    return added


def _shrink(res: Res, factor: float, cpu_floor: float, memory_floor: int) -> str | None:
    """Scale cpu and memory by ``factor``, not below the floors and never up; the change as text, if any."""
    specs = res.get("specs", {})
    parts = []
    if specs.get("cpu"):
        cpu = float(specs["cpu"])
        new_cpu = max(min(cpu, cpu_floor), round(cpu * factor, 3))
        if new_cpu != cpu:
            specs["cpu"] = new_cpu
            parts.append(f"cpu {format_cpu(cpu)} -> {format_cpu(new_cpu)}")
    if specs.get("memory"):
        memory = int(specs["memory"])
        new_memory = max(min(memory, memory_floor), round(memory * factor))
        if new_memory != memory:
            specs["memory"] = new_memory
            parts.append(f"memory {format_mib(memory)} -> {format_mib(new_memory)}")
    return ", ".join(parts) or None


def _apply_environment(build: _Build, env: Environment, rules: CreateRules) -> None:
    policy, floors = rules.environments[env], rules.floors
    if policy.size_factor < 1:
        for res in build.resources:
            change = _shrink(res, policy.size_factor, floors.cpu, floors.memory)
            if change:
                build.decide(
                    f"sizing:{res['name']}",
                    change,
                    f"{env.value}: cpu and memory x{_num(policy.size_factor)}, not below "
                    f"{format_cpu(floors.cpu)} cores and {format_mib(floors.memory)}",
                )
    if policy.drop_backups:
        dropped = [r["name"] for r in build.resources if r["specs"].pop("backup", None) is not None]
        if dropped:
            build.decide("backups", f"dropped on {', '.join(dropped)}", f"{env.value}: data here is disposable")
    if policy.harden:
        _harden(build, env, rules)


def _harden(build: _Build, env: Environment, rules: CreateRules) -> None:
    hard = rules.hardening
    backed, encrypted, tls = [], [], []
    for res in build.resources:
        specs, rtype = res["specs"], ResourceType(res["type"])
        backup = specs.get("backup")
        if rtype in hard.backup_types and (backup is None or backup.get("enabled") is False):
            # A disabled policy keeps its schedule and retention; 'enabled' defaults to true once dropped.
            specs["backup"] = {
                "schedule": (backup or {}).get("schedule") or hard.backup_schedule,
                "retention_days": (backup or {}).get("retention_days") or hard.backup_retention_days,
            }
            backed.append(res["name"])
        if rtype in hard.encryption_types:
            missing = [k for k in ("encryption_at_rest", "encryption_in_transit") if specs.get(k) is not True]
            specs.update(dict.fromkeys(missing, True))
            if missing:
                encrypted.append(res["name"])
        if hard.tls_on_public and specs.get("public") is True and specs.get("tls") is not True:
            specs["tls"] = True
            tls.append(res["name"])
    for topic, names, reason in (
        ("backups", backed, f"{env.value}: a data store without backups loses data for good"),
        ("encryption", encrypted, f"{env.value}: data stores encrypted at rest and in transit"),
        ("tls", tls, f"{env.value}: public endpoints serve TLS only"),
    ):
        if names:
            build.decide(topic, f"turned on for {', '.join(names)}", reason)
    if not (backed or encrypted or tls):
        build.decide("hardening", "kept", f"{env.value}: the template already has backups, encryption and TLS")


def _traffic_sized(res: Res, rules: CreateRules) -> bool:
    app, specs = rules.app_tier, res["specs"]
    if ResourceType(res["type"]) not in app.types:
        return False
    if specs.get("role") in app.fixed_roles or specs.get("kind") in app.fixed_kinds:
        return False
    return not (app.fixed_with_gpu and (specs.get("gpu") or specs.get("gpu_count")))


def tier_name(resource_name: str) -> str:
    """The tier a resource belongs to: its name without a trailing ``-<number>`` (web-2 -> web)."""
    return re.sub(r"-\d+$", "", resource_name)


def _size_tiers(build: _Build, plan: _Plan, rules: CreateRules) -> list[_Tier]:
    app = rules.app_tier
    groups: dict[str, list[Res]] = {}
    fixed = []
    for res in build.resources:
        if _traffic_sized(res, rules):
            groups.setdefault(tier_name(res["name"]), []).append(res)
        elif ResourceType(res["type"]) in app.types:
            fixed.append(res["name"])
    minimum = rules.availability.minimum_for(plan.availability)
    tiers = []
    for name, members in groups.items():
        kind = members[0]["specs"].get("kind")
        per = app.per_instance_rps_by_kind.get(kind or "", plan.workload.per_instance_rps)
        # Rounding first keeps float noise (650.0000001) from adding an instance.
        needed = math.ceil(round(plan.rps * (1 + app.headroom) / per, 6))
        tier = _Tier(name, members, per, needed, minimum)
        tier.autoscaling_max = {
            r["name"]: r["specs"]["autoscaling"]["max"] for r in members if "autoscaling" in r["specs"]
        }
        planned = max(minimum, needed)
        reason = (
            f"max(availability minimum {minimum}, ceil({_num(plan.rps)} rps x {_num(1 + app.headroom)} / "
            f"{_num(per)} rps per instance) = {needed}) = {planned}"
        )
        if planned > app.max_instances:
            build.warnings.append(
                f"tier {name} needs {planned} instances for {_num(plan.rps)} rps; capped at {app.max_instances}: "
                "shard, cache or raise per-instance capacity"
            )
            reason += f", capped at {app.max_instances}"
            planned = app.max_instances
        tier.instances = max(planned, len(members))
        if len(members) > 1:
            reason += f"; spread over the template's {len(members)} resources"
            reason += ", at least one each" if planned < len(members) else ""
        tier.apply()
        build.decide(f"replicas:{name}", _replicas_choice(tier), reason)
        tiers.append(tier)
    if fixed:
        build.decide(
            "replicas:fixed",
            f"template counts kept for {', '.join(fixed)}",
            "their count is set by data, quorum or a GPU job, not by traffic",
        )
    if not tiers:
        build.decide("replicas", "template counts", "the template has no traffic-sized tier")
    return tiers


def _replicas_choice(tier: _Tier) -> str:
    if len(tier.members) == 1:
        return str(tier.instances)
    counts = ", ".join(f"{r['name']}: {r['specs']['replicas']}" for r in tier.members)
    return f"{tier.instances} ({counts})"


def _cost(build: _Build, rules: CreateRules) -> float:
    return round(sum(rules.prices.monthly_cost(r["specs"]) for r in build.resources), 2)


def _fit_budget(build: _Build, tiers: Sequence[_Tier], budget: float | None, rules: CreateRules) -> float:
    cost = _cost(build, rules)
    if budget is None:
        build.decide("budget", "none given", "sized for traffic and availability only")
    elif cost <= budget:
        build.decide("budget", "met", f"${cost:,.2f} <= ${budget:,.2f} a month")
    else:
        cost = _squeeze(build, tiers, budget, cost, rules)
    _cost_decision(build, cost, rules)
    return cost


def _squeeze(build: _Build, tiers: Sequence[_Tier], budget: float, cost: float, rules: CreateRules) -> float:
    start_cost = cost
    before = {t.name: t.instances for t in tiers}
    while cost > budget:
        # The tier furthest above its floor gives up one instance; ties go to the first in the blueprint.
        candidates = [t for t in tiers if t.instances > t.floor]
        if not candidates:
            break
        tier = max(candidates, key=lambda t: t.instances - t.floor)
        tier.instances -= 1
        tier.apply()
        cost = _cost(build, rules)
    for tier in tiers:
        if tier.instances != before[tier.name]:
            build.decide(
                f"budget:replicas:{tier.name}",
                f"{before[tier.name]} -> {_replicas_choice(tier)}",
                f"${start_cost:,.2f} a month is over the ${budget:,.2f} budget; the floor is {tier.floor} "
                f"(availability minimum {tier.minimum}, at least one per template resource)",
            )
        if tier.instances < tier.needed:
            build.warnings.append(
                f"budget: tier {tier.name} runs {tier.instances} instances, fewer than the {tier.needed} "
                f"its traffic needs ({_num(tier.per_instance_rps)} rps each with headroom)"
            )
    if cost > budget:
        cost = _shrink_to_budget(build, budget, cost, rules)
    if cost > budget:
        build.warnings.append(
            f"budget of ${budget:,.2f} a month cannot be met: the smallest configuration the rules allow costs "
            f"${cost:,.2f} (availability minimums, cpu and memory floors; storage is not reduced)"
        )
        build.decide("budget", "not met", f"${cost:,.2f} > ${budget:,.2f} a month at the smallest size")
    else:
        build.decide("budget", "met after reductions", f"${cost:,.2f} <= ${budget:,.2f} a month")
    return cost


def _shrink_to_budget(build: _Build, budget: float, cost: float, rules: CreateRules) -> float:
    # Each step is a fraction of the planned size, not of the previous step, so steps do not compound.
    planned = [(r["specs"].get("cpu"), r["specs"].get("memory")) for r in build.resources]
    factor = 1.0
    for step, factor in enumerate(rules.budget.size_steps, start=1):
        over = cost
        for res, (cpu, memory) in zip(build.resources, planned, strict=True):
            res["specs"].update({k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None})
            _shrink(res, factor, rules.floors.cpu, rules.floors.memory)
        cost = _cost(build, rules)
        build.decide(
            f"budget:size:{step}",
            f"cpu and memory x{_num(factor)}",
            f"${over:,.2f} a month is over the ${budget:,.2f} budget; now ${cost:,.2f} "
            f"(not below {format_cpu(rules.floors.cpu)} cores and {format_mib(rules.floors.memory)})",
        )
        if cost <= budget:
            break
    build.warnings.append(
        f"budget: cpu and memory cut to x{_num(factor)} of the planned size; each instance serves less "
        "than the throughput the replica counts assume"
    )
    return cost


def _cost_decision(build: _Build, cost: float, rules: CreateRules) -> None:
    prices = rules.prices
    disks = ", ".join(f"{t} ${p:g}" for t, p in prices.storage_gib_month.items())
    largest = max(build.resources, key=lambda r: prices.monthly_cost(r["specs"]), default=None)
    top = f"; the largest item is {largest['name']}" if largest is not None else ""
    build.decide(
        "cost",
        f"${cost:,.2f} a month",
        f"reference prices: ${prices.vcpu_hour:g} per vCPU-hour, ${prices.ram_gib_hour:g} per GiB-RAM-hour, "
        f"${prices.gpu_hour:g} per GPU-hour, {_num(prices.hours_per_month)} hours a month, "
        f"storage per GiB-month {disks}; every replica pays its own{top}",
    )


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    report = validate(data)
    if not report.valid or report.warnings:
        problems = "; ".join(f"[{i.code}] {i.message} at {i.path}" for i in (*report.errors, *report.warnings))
        raise CreateRulesBug(f"create_blueprint built a blueprint validate() does not accept cleanly: {problems}")
    return load_blueprint(data).to_data()


def _num(value: float) -> str:
    """A number as people write it: 99.95, 500, 17.36 (no exponent, no trailing zeros)."""
    return format(value, ".15g")
