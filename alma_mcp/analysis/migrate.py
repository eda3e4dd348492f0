"""migrate_infrastructure: a blueprint or Docker Compose file moved to another provider, resource by resource.

Anchors: AWS's 7 Rs (retire, retain, rehost, relocate, replatform, repurchase, refactor) for the
decision per resource; Kompose's conversion table for Compose (``compose.py``); the rewrite of each
resource for its target (``migrate_transform.py``); wave planning (dependencies first, a pilot wave
first, capped wave size) for the cut-over (``migrate_waves.py``).

Decisions, in order (the first that applies wins):

1. ``metadata.migration.disposition`` on the resource forces one (with the author's reason);
   ``eol``/``unused`` -> retire, ``saas: <product>`` -> repurchase, ``pinned: <why>`` -> retain;
2. a role the target provides itself (Kubernetes nodes and control plane) -> retire; a balancer whose
   backends all retire, or a network whose every member retires -> retire;
3. what cannot move (a Windows or appliance VM to a container platform, a workload driving the
   Docker socket to Kubernetes, a Compose service with no image) -> retain, marked not migratable, with the reason;
4. already on the target provider -> relocate (same platform, new place, no change);
5. a data store bigger than ``retain_above_gb`` that its engine cannot replicate -> retain;
6. a change of resource type or runtime (VM <-> container), or a data store (StatefulSet, volume, VM)
   -> replatform; ``strategy: refactor`` turns stateless tiers into refactor (autoscaling, health
   checks, non-root, read-only root filesystem);
7. otherwise (a container image moving between Docker and Kubernetes, a network) -> rehost.

The target blueprint keeps retained resources on their own provider (reached over a hybrid link),
drops retired and repurchased ones (and dependencies on them), and must validate.
"""

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from alma_mcp.analysis.architecture_data import ArchitectureData
from alma_mcp.analysis.audit import PolicyCatalog, audit
from alma_mcp.analysis.compose import DOCKER_SOCKETS, ComposeProject, dns_name, is_compose, parse_compose
from alma_mcp.analysis.create import CreateRules
from alma_mcp.analysis.migrate_transform import CONTAINER_PROVIDERS, target_type, transform
from alma_mcp.analysis.migrate_waves import CutoverWave, data_gb, plan_waves, transfer_for
from alma_mcp.analysis.validate import validate
from alma_mcp.blueprint.loader import DEFAULT_LIMITS, Limits, load_blueprint, parse_document
from alma_mcp.blueprint.model import Blueprint, Provider, Resource, ResourceType
from alma_mcp.errors import BlueprintError, InvalidRequest, Issue

Disposition = Literal["retire", "retain", "rehost", "relocate", "replatform", "repurchase", "refactor"]
DISPOSITIONS: Final[tuple[Disposition, ...]] = (
    "retire",
    "retain",
    "rehost",
    "relocate",
    "replatform",
    "repurchase",
    "refactor",
)
STRATEGIES: Final = ("auto", "rehost", "replatform", "refactor")
DATA_TYPES: Final = frozenset({ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE, ResourceType.STORAGE})
STATELESS_TYPES: Final = frozenset({ResourceType.COMPUTE, ResourceType.CONTAINER, ResourceType.SERVICE})


class Decision(BaseModel):
    """What happens to one resource, and why."""

    resource: str
    type: str
    source_provider: str
    target_provider: str | None = Field(description="Null when the resource does not carry on (retire, repurchase).")
    target_type: str | None
    disposition: Disposition
    migratable: bool
    reason: str
    changes: list[str] = Field(default_factory=list)
    data_gb: float = 0.0
    method: str = Field(description="How it moves: recreate, side-by-side, dump-restore, replication, bulk-copy, none.")
    downtime_minutes: float = 0.0
    wave: int | None = None


class NotMigratable(BaseModel):
    resource: str
    reason: str


class TargetCheck(BaseModel):
    valid: bool
    errors: list[Issue]
    warnings: list[Issue]
    audit_counts: dict[str, int]


class Migration(BaseModel):
    """The outcome of migrate_infrastructure."""

    summary: str
    source_format: Literal["blueprint", "compose"]
    source_providers: list[str]
    target_provider: str
    strategy: str
    counts: dict[str, int] = Field(description="Resources per disposition (the 7 Rs), every disposition listed.")
    decisions: list[Decision]
    not_migratable: list[NotMigratable]
    target_blueprint: dict[str, Any]
    target_check: TargetCheck
    waves: list[CutoverWave]
    total_downtime_minutes: float
    downtime_formula: str
    risks: list[str]
    conversions: list[str] = Field(description="Compose -> blueprint conversions (Kompose's table), per service.")
    decisions_omitted: int = 0
    waves_omitted: int = 0
    conversions_omitted: int = 0


def trim(migration: Migration, max_items: int) -> Migration:
    """The migration within an output budget: long lists cut, with counts of what was left out."""
    return migration.model_copy(
        update={
            "decisions": migration.decisions[:max_items],
            "decisions_omitted": max(0, len(migration.decisions) - max_items),
            "waves": migration.waves[:max_items],
            "waves_omitted": max(0, len(migration.waves) - max_items),
            "conversions": migration.conversions[:max_items],
            "conversions_omitted": max(0, len(migration.conversions) - max_items),
        }
    )


@dataclass
class _Item:
    res: Resource
    disposition: Disposition = "rehost"
    reason: str = ""
    migratable: bool = True
    changes: list[str] = field(default_factory=list)
    data: dict[str, Any] | None = None
    hinted: bool = False


def load_source(
    source: str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> tuple[Blueprint, ComposeProject | None]:
    """The source as a blueprint, and the Compose project it came from (if it was one).

    Raises:
        InvalidRequest: the document is not a mapping, or a Compose file is malformed.
        BlueprintError: a blueprint source is invalid (every issue listed).
    """
    data = parse_document(source, limits) if isinstance(source, str) else source
    if not isinstance(data, Mapping):
        kind = "an empty document" if data is None else f"a {type(data).__name__}"
        raise InvalidRequest(
            f"source must be a blueprint (name, resources) or a Docker Compose file (services), both mappings; "
            f"got {kind}",
            data={"field": "source", "allowed": ["blueprint", "compose"]},
        )
    if not is_compose(data):
        return load_blueprint(data, limits), None
    project = parse_compose(data)
    raw_name = data.get("name")
    name = str(raw_name) if isinstance(raw_name, str) and raw_name else "compose-project"
    blueprint_data = project.blueprint(dns_name(name))
    try:
        return load_blueprint(blueprint_data, limits), project
    except BlueprintError as err:
        raise InvalidRequest(
            f"the Compose file converts to an invalid blueprint: {err.message}; fix the service named there",
            data={"issues": err.data.get("issues", [])},
        ) from None


def resolve_target(target_provider: str) -> Provider:
    """The target provider.

    Raises:
        InvalidRequest: unknown provider, naming the allowed ones.
    """
    try:
        return Provider(target_provider.strip().lower())
    except ValueError:
        allowed = [p.value for p in Provider]
        raise InvalidRequest(
            f"unknown target_provider {target_provider!r}; allowed: {', '.join(allowed)}",
            data={"field": "target_provider", "allowed": allowed},
        ) from None


def migrate(
    source: Blueprint,
    target: Provider,
    data: ArchitectureData,
    rules: CreateRules,
    policies: PolicyCatalog,
    *,
    strategy: str = "auto",
    project: ComposeProject | None = None,
) -> Migration:
    """Decide, transform, validate and plan the cut-over of ``source`` onto ``target``.

    Raises:
        InvalidRequest: an unknown strategy or a malformed ``metadata.migration`` hint.
    """
    strategy = strategy.strip().lower()
    if strategy not in STRATEGIES:
        raise InvalidRequest(
            f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)} (retire, retain and repurchase are "
            "set per resource in metadata.migration)",
            data={"field": "strategy", "allowed": list(STRATEGIES)},
        )
    items = [_Item(res=r) for r in source.resources]
    refused = _refusals(project)
    _decide(items, target, data, strategy, refused)
    gone = {i.res.name for i in items if i.disposition in ("retire", "repurchase")}
    for item in items:
        if item.disposition not in ("retire", "repurchase"):
            item.data, changes = transform(item.res, item.disposition, target, rules, gone)
            item.changes.extend(changes)
    target_data = _target_blueprint(source, target, strategy, items)
    report = validate(target_data)
    counts_audit: dict[str, int] = {}
    if report.valid:
        counts_audit = audit(load_blueprint(target_data), policies).counts
    transfers = {i.res.name: transfer_for(i.res, i.disposition, data.migration) for i in items}
    waves = plan_waves(_moving(items), transfers, data.migration, target)
    wave_of = {name: w.number for w in waves for name in w.resources}
    decisions = [_decision(i, target, transfers[i.res.name], wave_of.get(i.res.name)) for i in items]
    not_migratable = [NotMigratable(resource=i.res.name, reason=i.reason) for i in items if not i.migratable]
    for name, reasons in refused.items():
        if source.resource(name) is None:
            not_migratable.append(NotMigratable(resource=name, reason="; ".join(reasons)))
    counts = {d: sum(1 for x in decisions if x.disposition == d) for d in DISPOSITIONS}
    total = round(sum(w.downtime_minutes for w in waves), 1)
    risks = _risks(items, report.warnings, counts_audit, target, data, refused, source)
    summary = (
        f"{source.name}: {len(items)} resources to {target.value} ({strategy}): "
        + ", ".join(f"{n} {d}" for d, n in counts.items() if n)
        + f"; {len(waves)} waves, about {total} min of downtime in total"
    )
    if not_migratable:
        summary += f"; {len(not_migratable)} not migratable"
    return Migration(
        summary=summary,
        source_format="compose" if project is not None else "blueprint",
        source_providers=sorted({r.provider.value for r in source.resources}),
        target_provider=target.value,
        strategy=strategy,
        counts=counts,
        decisions=decisions,
        not_migratable=not_migratable,
        target_blueprint=target_data,
        target_check=TargetCheck(
            valid=report.valid, errors=report.errors, warnings=report.warnings, audit_counts=counts_audit
        ),
        waves=waves,
        total_downtime_minutes=total,
        downtime_formula=(
            f"per data store: dump/restore = data_gb / {data.migration.transfer.gb_per_minute} GB/min + "
            f"{data.migration.transfer.warm_up_minutes} min warm-up; replication (above "
            f"{data.migration.transfer.replication_above_gb} GB, replicating kinds) = "
            f"{data.migration.transfer.replication_lag_minutes} min lag + {data.migration.transfer.switch_minutes} "
            f"min switch; stateless = {data.migration.transfer.stateless_switch_minutes} min switch; a wave's "
            "downtime is its longest resource (cut over together); the total adds the waves"
        ),
        risks=risks,
        conversions=[f"{s.compose_name}: {c}" for s in (project.services if project else []) for c in s.conversions],
    )


def _moving(items: list[_Item]) -> list[tuple[str, dict[str, Any]]]:
    """(name, target resource data) of what moves (not retired, repurchased or retained)."""
    return [
        (i.res.name, i.data)
        for i in items
        if i.data is not None and i.disposition not in ("retire", "repurchase", "retain")
    ]


def _refusals(project: ComposeProject | None) -> dict[str, list[str]]:
    if project is None:
        return {}
    return {(s.resource or {}).get("name", s.compose_name): s.refused for s in project.services if s.refused}


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


def _decide(
    items: list[_Item], target: Provider, data: ArchitectureData, strategy: str, refused: Mapping[str, list[str]]
) -> None:
    mig = data.migration
    provided = set(mig.provided_by_target.get(target, []))
    for item in items:
        res = item.res
        hint = _hint(res)
        if hint is not None:
            item.disposition, item.reason = hint
            item.hinted = True
        elif res.type is ResourceType.COMPUTE and (res.specs.role or "").lower() in provided:
            item.disposition = "retire"
            item.reason = f"{target.value} provides its own {res.specs.role} nodes: nothing to move"
    _cascade_retirement(items)
    for item in items:
        if item.disposition in ("retire", "repurchase") or item.reason:
            continue
        res = item.res
        problem = _cannot_move(res, target, mig.not_containerizable_os, refused.get(res.name, []))
        if problem is not None:
            item.disposition, item.reason, item.migratable = "retain", f"not migratable: {problem}", False
            continue
        if res.provider is target:
            item.disposition = "relocate"
            item.reason = f"already on {target.value}: moved to the new {target.value} as it is"
            continue
        gb = data_gb(res)
        replicable = (res.specs.kind or "").lower() in mig.replicating_kinds
        if res.type in DATA_TYPES and gb > mig.transfer.retain_above_gb and not replicable:
            hours = gb / mig.transfer.storage_copy_gb_per_minute / 60
            item.disposition = "retain"
            item.reason = (
                f"{gb:,.0f} GB that its engine cannot replicate would take about {hours:,.0f} h to copy: keep it on "
                f"{res.provider.value} and reach it over a hybrid link, or move it with a storage-level tool later"
            )
            continue
        item.disposition, item.reason = _move_kind(res, target, strategy)


def _hint(res: Resource) -> tuple[Disposition, str] | None:
    raw = res.metadata.get("migration")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidRequest(
            f"metadata.migration of '{res.name}' must be a mapping such as {{disposition: retain, reason: ...}}",
            data={"resource": res.name},
        )
    why = str(raw.get("reason", "")).strip()
    forced = raw.get("disposition")
    if forced is not None:
        if forced not in DISPOSITIONS:
            raise InvalidRequest(
                f"metadata.migration.disposition of '{res.name}' is {forced!r}; allowed: {', '.join(DISPOSITIONS)}",
                data={"resource": res.name, "allowed": list(DISPOSITIONS)},
            )
        return forced, f"set in metadata.migration{': ' + why if why else ''}"
    if raw.get("eol") or raw.get("unused"):
        return "retire", why or "marked end-of-life or unused in metadata.migration"
    if raw.get("saas"):
        return "repurchase", f"replaced by {raw['saas']} (metadata.migration.saas){': ' + why if why else ''}"
    if raw.get("pinned"):
        return "retain", f"pinned: {raw['pinned']}"
    return None


def _cascade_retirement(items: list[_Item]) -> None:
    """A balancer or network whose every user retires retires too; a retirement still needed is refused."""
    gone = {i.res.name for i in items if i.disposition in ("retire", "repurchase")}
    networks = {i.res.name for i in items if i.res.type is ResourceType.NETWORK}
    changed = True
    while changed:
        changed = False
        for item in items:
            res = item.res
            if res.name in gone or res.type not in (ResourceType.LOAD_BALANCER, ResourceType.NETWORK):
                continue
            if res.type is ResourceType.LOAD_BALANCER:
                # A balancer in front of retired backends only fronted what the target now provides.
                served = list(res.specs.backends) or [d for d in res.dependencies if d not in networks]
                if not served or any(s not in gone for s in served):
                    continue
                item.disposition = "retire"
                item.reason = f"it only balanced retired {', '.join(sorted(set(served)))}; the target provides that"
            else:
                users = [
                    i.res.name for i in items if res.name in i.res.dependencies or res.name in i.res.specs.networks
                ]
                if not users or any(u not in gone for u in users):
                    continue
                item.disposition, item.reason = "retire", "every resource on this network retires"
            gone.add(res.name)
            changed = True
    for item in items:
        if item.disposition != "retire" or not item.hinted:
            continue
        needed = [i.res.name for i in items if item.res.name in i.res.dependencies and i.res.name not in gone]
        if needed:
            item.disposition = "retain"
            item.reason = f"marked for retirement but still needed by {', '.join(needed)}: retire those first"


def _cannot_move(res: Resource, target: Provider, bad_os: list[str], refused: list[str]) -> str | None:
    if refused:
        return "; ".join(refused)
    if target in CONTAINER_PROVIDERS and res.type is ResourceType.COMPUTE:
        os_label = (res.specs.os or res.specs.template or res.specs.ostemplate or "").lower()
        for prefix in bad_os:
            if prefix in os_label:
                return (
                    f"a {res.specs.os or res.specs.template} VM cannot become a Linux container, and {target.value} "
                    "cannot run VMs in the blueprint format (KubeVirt is outside it); keep it on Proxmox"
                )
    if target is Provider.KUBERNETES and res.provider is Provider.DOCKER:
        paths = res.specs.options.get("host_paths")
        mounts = [v.mount_path for v in res.specs.volumes]
        entries = [str(e) for e in paths] if isinstance(paths, list) else []
        if any(p.split(":", 1)[0].rstrip("/") in DOCKER_SOCKETS for p in entries) or any(
            m.rstrip("/") in DOCKER_SOCKETS for m in mounts
        ):
            return (
                "it drives the host's Docker daemon through the Docker socket; Kubernetes nodes run containerd and "
                "offer no Docker socket (run it in a VM with Docker, or use a Kubernetes-native agent)"
            )
    return None


def _move_kind(res: Resource, target: Provider, strategy: str) -> tuple[Disposition, str]:
    new_type = target_type(res.type, target)
    if res.type in STATELESS_TYPES and strategy == "refactor" and not _has_data(res):
        return "refactor", (
            f"stateless {res.type.value}: rebuilt for {target.value} as a twelve-factor service (autoscaling, health "
            "checks, non-root, read-only root filesystem)"
        )
    if new_type is not res.type:
        note = " (rehost is impossible: the target cannot run it as it is)" if strategy == "rehost" else ""
        return (
            "replatform",
            f"{res.type.value} on {res.provider.value} becomes a {new_type.value} on {target.value}{note}",
        )
    if res.type in DATA_TYPES:
        form = {
            Provider.KUBERNETES: "a StatefulSet with a persistent volume",
            Provider.DOCKER: "a container with a named volume",
            Provider.PROXMOX: "a VM with its own disk",
            Provider.SIMULATION: "a simulated data store",
        }[target]
        return "replatform", f"{res.type.value} ({res.specs.kind or 'data'}) moves with its data to {form}"
    if res.type is ResourceType.LOAD_BALANCER and (res.provider is Provider.PROXMOX or target is Provider.PROXMOX):
        return "replatform", f"a balancer VM and a {target.value} balancer are configured differently"
    if res.type is ResourceType.NETWORK:
        return "rehost", f"recreated as a {target.value} network with the same subnet"
    if res.provider is Provider.PROXMOX or target is Provider.PROXMOX:
        return "replatform", f"a {res.type.value} moves between VMs and containers"
    return "rehost", f"the same image runs on {target.value} unchanged (lift and shift)"


def _has_data(res: Resource) -> bool:
    return bool(res.specs.volumes) or res.type in DATA_TYPES


def _target_blueprint(source: Blueprint, target: Provider, strategy: str, items: list[_Item]) -> dict[str, Any]:
    meta = source.metadata.model_dump(mode="json", exclude_unset=True)
    meta["migration"] = {"from": sorted({r.provider.value for r in source.resources}), "strategy": strategy}
    name = f"{source.name}-{target.value}"[:63].rstrip("-")
    return {
        "version": "1.0",
        "name": name,
        "description": f"{source.name} migrated to {target.value} by migrate_infrastructure ({strategy}). "
        + source.description,
        "metadata": meta,
        "resources": [copy.deepcopy(i.data) for i in items if i.data is not None],
    }


def _decision(item: _Item, target: Provider, transfer: tuple[str, float], wave: int | None) -> Decision:
    res = item.res
    gone = item.disposition in ("retire", "repurchase")
    carried = item.data if item.data is not None else {}
    return Decision(
        resource=res.name,
        type=res.type.value,
        source_provider=res.provider.value,
        target_provider=None if gone else str(carried.get("provider", res.provider.value)),
        target_type=None if gone else str(carried.get("type", res.type.value)),
        disposition=item.disposition,
        migratable=item.migratable,
        reason=item.reason,
        changes=item.changes,
        data_gb=data_gb(res),
        method=transfer[0],
        downtime_minutes=transfer[1],
        wave=wave,
    )


def _risks(
    items: list[_Item],
    warnings: list[Issue],
    audit_counts: Mapping[str, int],
    target: Provider,
    data: ArchitectureData,
    refused: Mapping[str, list[str]],
    source: Blueprint,
) -> list[str]:
    out: list[str] = []
    retained = [i.res.name for i in items if i.disposition == "retain"]
    moving = {i.res.name for i in items if i.disposition not in ("retain", "retire", "repurchase")}
    hybrid = sorted(
        {f"{i.res.name} -> {d}" for i in items if i.res.name in moving for d in i.res.dependencies if d in retained}
    )
    if hybrid:
        out.append(f"hybrid links until the retained resources move: {', '.join(hybrid)} (latency, a VPN or peering)")
    placeholders = [i.res.name for i in items if any("PLACEHOLDER" in c for c in i.changes)]
    if placeholders:
        out.append(f"placeholder images on {', '.join(placeholders)}: build the application images before wave 1")
    large = [
        i.res.name
        for i in items
        if i.res.name in moving and data_gb(i.res) > data.migration.transfer.replication_above_gb
    ]
    if large:
        out.append(f"large data sets ({', '.join(large)}): rehearse the copy and measure its real throughput")
    if audit_counts.get("critical") or audit_counts.get("high"):
        out.append(
            f"security_audit of the target finds {audit_counts.get('critical', 0)} critical and "
            f"{audit_counts.get('high', 0)} high findings (carried over from the source): fix them before cut-over"
        )
    if warnings:
        out.append(f"the target validates with {len(warnings)} warnings (first: {warnings[0].message})")
    for name, reasons in refused.items():
        if source.resource(name) is None:
            out.append(f"{name} is left behind: {'; '.join(reasons)}")
    if target is Provider.DOCKER and any(i.res.provider is not Provider.DOCKER for i in items if i.res.name in moving):
        out.append("Docker runs on one host: the migrated system has one failure domain")
    return out
