"""Cut-over waves for migrate_infrastructure: dependency order, a pilot first, a runbook per wave.

Waves come from the dependency graph of what moves: strongly connected components are condensed
(a cycle moves together), each component's wave is one more than the deepest of what it depends
on, so every dependency lands in the same or an earlier wave, and a level bigger than the wave cap
is split in declaration order (members of one level never depend on each other). The first wave is
the pilot: the runbook is rehearsed there before anything else moves.

Downtime per resource, from ``resources/architecture/migration.yaml``:

- stateless (VMs, containers, services): run side by side, then switch traffic: ``stateless_switch``;
- balancers: a DNS or address switch: ``switch``;
- data stores: ``data_gb / gb_per_minute + warm_up`` (dump and restore), or, above
  ``replication_above_gb`` for kinds that replicate, ``replication_lag + switch``;
- storage (objects, files): copied ahead, then a final sync of about 1% of the data and a switch;
- networks: created ahead, no downtime.

A wave's resources are cut over together, so its downtime is its longest resource's.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel

from alma_mcp.analysis.architecture_data import MigrationFile
from alma_mcp.analysis.plan import dependency_levels
from alma_mcp.blueprint.graph import strongly_connected_components
from alma_mcp.blueprint.model import Provider, Resource, ResourceType

FINAL_SYNC_FRACTION: Final = 0.01
_DATA: Final = frozenset({ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE})


class CutoverWave(BaseModel):
    """One group of resources cut over together, with its runbook."""

    number: int
    pilot: bool
    resources: list[str]
    downtime_minutes: float
    pre_checks: list[str]
    cutover: list[str]
    validation: list[str]
    rollback: list[str]
    risks: list[str]


def data_gb(res: Resource) -> float:
    """Data to move: ``metadata.migration.data_gb`` when given, else the allocated storage and volumes."""
    hint = res.metadata.get("migration")
    if isinstance(hint, Mapping):
        given = hint.get("data_gb")
        if isinstance(given, int | float) and not isinstance(given, bool) and given >= 0:
            return float(given)
    volumes = sum(v.size or 0 for v in res.specs.volumes)
    stored = (res.specs.storage or 0) if res.type in (*_DATA, ResourceType.STORAGE) else 0
    return round((stored + volumes) / 1024, 3)


def transfer_for(res: Resource, disposition: str, mig: MigrationFile) -> tuple[str, float]:
    """(method, downtime minutes) of one resource's move."""
    t = mig.transfer
    if disposition in ("retire", "repurchase", "retain"):
        return "none", 0.0
    if res.type is ResourceType.NETWORK:
        return "recreate", 0.0
    gb = data_gb(res)
    if res.type is ResourceType.STORAGE:
        return "bulk-copy", round(gb * FINAL_SYNC_FRACTION / t.storage_copy_gb_per_minute + t.switch_minutes, 1)
    if res.type in _DATA:
        if gb > t.replication_above_gb and (res.specs.kind or "").lower() in mig.replicating_kinds:
            return "replication", round(t.replication_lag_minutes + t.switch_minutes, 1)
        return "dump-restore", round(gb / t.gb_per_minute + t.warm_up_minutes, 1)
    if res.type is ResourceType.LOAD_BALANCER:
        return "side-by-side", float(t.switch_minutes)
    return "side-by-side", float(t.stateless_switch_minutes)


def plan_waves(
    moving: Sequence[tuple[str, dict[str, Any] | None]],
    transfers: Mapping[str, tuple[str, float]],
    mig: MigrationFile,
    target: Provider,
) -> list[CutoverWave]:
    """Waves over the resources that move (name, target data), dependencies first."""
    names = [n for n, _ in moving]
    known = set(names)
    edges = {n: [d for d in (data or {}).get("dependencies", []) if d in known and d != n] for n, data in moving}
    components = strongly_connected_components(edges)
    owner = {member: k for k, comp in enumerate(components) for member in comp}
    comp_ids = [str(k) for k in range(len(components))]
    comp_edges = {
        str(k): sorted({str(owner[d]) for m in comp for d in edges[m] if owner[d] != k})
        for k, comp in enumerate(components)
    }
    levels = dependency_levels(comp_ids, comp_edges)
    by_level: dict[int, list[str]] = {}
    for name in names:
        by_level.setdefault(levels[str(owner[name])], []).append(name)
    groups: list[list[str]] = []
    for level in sorted(by_level):
        members = by_level[level]
        groups.extend(members[i : i + mig.max_wave_size] for i in range(0, len(members), mig.max_wave_size))
    types = {n: str((data or {}).get("type", "")) for n, data in moving}
    return [_wave(k, group, transfers, types, target) for k, group in enumerate(groups, start=1)]


def _wave(
    number: int,
    group: list[str],
    transfers: Mapping[str, tuple[str, float]],
    types: Mapping[str, str],
    target: Provider,
) -> CutoverWave:
    pre = [f"the {target.value} engine is healthy (alma-mcp readyz) and the wave's blueprint is approved as an IPR"]
    if number > 1:
        pre.append(f"wave {number - 1} is validated and accepted")
    else:
        pre.append("pilot wave: rehearse this runbook, measure the real downtime, then plan the next waves with it")
    cutover: list[str] = []
    validation: list[str] = []
    rollback: list[str] = []
    risks: list[str] = []
    for name in group:
        method, minutes = transfers[name]
        if method == "recreate":
            cutover.append(f"create network {name} on {target.value} (ahead of the resources that join it)")
            validation.append(f"{name} exists with its subnet")
            rollback.append(f"delete network {name} on {target.value} (nothing uses it yet)")
        elif method == "side-by-side":
            pre.append(f"{name} deployed on {target.value} next to the source, health check green")
            how = "DNS or address" if types[name] == "load_balancer" else "load balancer"
            cutover.append(f"switch {name}'s traffic to {target.value} ({how}, ~{minutes:g} min)")
            validation.append(f"{name}: health check green, error rate and latency as before the switch")
            rollback.append(f"switch {name}'s traffic back to the source (still running)")
        elif method == "dump-restore":
            pre.append(f"{name}: the latest backup restores (tested), clients can be paused")
            cutover.append(
                f"{name}: stop writes (read-only or maintenance mode), dump, restore on {target.value}, point the "
                f"clients at the target (~{minutes:g} min)"
            )
            validation.append(f"{name}: row counts or key counts and checksums match the source")
            rollback.append(
                f"{name}: point the clients back at the source and re-enable writes (unchanged since the stop)"
            )
            risks.append(f"{name} is down for about {minutes:g} min (dump and restore)")
        elif method == "replication":
            pre.append(f"{name}: replicate from the source to {target.value}; wait until the lag stays under 1 min")
            cutover.append(
                f"{name}: stop writes, let the lag reach 0, promote the target, point the clients (~{minutes:g} min)"
            )
            validation.append(f"{name}: replication lag was 0 at promotion; row counts match")
            rollback.append(
                f"{name}: keep the source as a replica of the target until the wave is accepted, then switch back "
                "by promoting it (writes made since the switch are kept)"
            )
            risks.append(f"{name}: writes pause for about {minutes:g} min during promotion")
        elif method == "bulk-copy":
            pre.append(f"{name}: copy the data to {target.value} ahead of the cut-over (rclone or rsync, repeated)")
            cutover.append(f"{name}: final incremental sync, then switch the clients (~{minutes:g} min)")
            validation.append(f"{name}: object or file counts and sizes match the source")
            rollback.append(f"{name}: switch the clients back; the source still holds every object")
    downtime = max((transfers[n][1] for n in group), default=0.0)
    return CutoverWave(
        number=number,
        pilot=number == 1,
        resources=group,
        downtime_minutes=round(downtime, 1),
        pre_checks=pre,
        cutover=cutover,
        validation=validation,
        rollback=rollback,
        risks=risks,
    )
