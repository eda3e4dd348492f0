"""estimate_resources: cpu, memory, storage and monthly cost per resource and in total, and hosts needed.

The cost model is OpenCost's allocation model with Infracost's presentation: every instance pays
for what it requests (cores x vCPU-hour, GiB x GiB-hour, GPUs x GPU-hour, all x 730 hours) plus its
own disks (GiB-month of its storage class; named volumes at the profile's default class); a load
balancer pays its monthly fee per instance, and a public resource one public IP. Each line is
rounded to the cent once and totals are sums of lines, so every breakdown adds up exactly.
Instances are ``replicas``, else the autoscaling minimum, else 1; the autoscaling maximum gives a
second, worst-case total. Hosts are counted by First-Fit-Decreasing over instances (``binpack``).
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, Field

from alma_mcp.analysis.binpack import Shape, pack
from alma_mcp.analysis.pricing import PriceCatalog, StorageClass, UnitPrices
from alma_mcp.blueprint.model import Blueprint, Environment, Resource, ResourceType
from alma_mcp.errors import InvalidRequest
from alma_mcp.gcpause import without_gc

CostItem = Literal["cpu", "memory", "gpu", "storage", "volumes", "load_balancer", "public_ip"]
COST_ITEMS: Final[tuple[CostItem, ...]] = ("cpu", "memory", "gpu", "storage", "volumes", "load_balancer", "public_ip")
SIZED_TYPES: Final = frozenset(
    {
        ResourceType.COMPUTE,
        ResourceType.CONTAINER,
        ResourceType.SERVICE,
        ResourceType.DATABASE,
        ResourceType.CACHE,
        ResourceType.QUEUE,
    }
)
"""Types expected to state cpu and memory; a missing value counts 0 and is noted."""

DEFAULT_HOST: Final = (32.0, 128.0)
"""Host shape (vCPU, GiB) when neither the call nor the profile gives one."""


@dataclass(frozen=True, slots=True)
class Sizing:
    """One resource's per-instance demand and instance counts: everything its cost depends on."""

    cpu: float
    memory_mib: int
    storage_mib: int
    storage_type: StorageClass | None
    volume_mib: int
    gpus: int
    instances: int
    max_instances: int
    load_balancer: bool
    public: bool

    @classmethod
    def of(cls, res: Resource) -> "Sizing":
        specs = res.specs
        scaling = specs.autoscaling
        instances = specs.replicas or (scaling.min if scaling is not None else 1)
        return cls(
            cpu=specs.cpu or 0.0,
            memory_mib=specs.memory or 0,
            storage_mib=specs.storage or 0,
            storage_type=specs.storage_type,
            volume_mib=sum(v.size or 0 for v in specs.volumes),
            gpus=specs.gpu_count or (1 if specs.gpu else 0),
            instances=instances,
            max_instances=max(instances, scaling.max if scaling is not None else 0),
            load_balancer=res.type is ResourceType.LOAD_BALANCER,
            public=specs.public,
        )


class CostLine(BaseModel):
    """One priced quantity: Infracost's cost component (monthly quantity x unit price)."""

    item: CostItem
    quantity: float = Field(description="Monthly quantity in `unit`, all instances.")
    unit: str
    unit_price: float
    monthly_cost: float = Field(description="quantity x unit_price, rounded to the cent.")
    storage_class: StorageClass | None = None


class ResourceEstimate(BaseModel):
    """Demand and cost of one resource (all its instances)."""

    name: str
    type: str
    provider: str
    instances: int
    min_instances: int
    max_instances: int
    cpu: float = Field(description="Cores, all instances.")
    memory_gib: float
    storage_gib: float = Field(description="Disk and volumes, all instances.")
    gpus: int
    monthly_cost: float
    monthly_cost_max: float = Field(description="At the autoscaling maximum.")
    breakdown: list[CostLine]
    assumptions: list[str] = Field(default_factory=list)


class Totals(BaseModel):
    """Whole-blueprint demand at the baseline instance count and at the autoscaling maximum."""

    instances: int
    max_instances: int
    cpu: float
    cpu_max: float
    memory_gib: float
    memory_gib_max: float
    storage_gib: float
    storage_gib_by_class: dict[StorageClass, float]
    gpus: int


class HostPlan(BaseModel):
    """Hosts of one shape needed to hold every instance (First-Fit-Decreasing on cpu and memory)."""

    host_cpu: float
    host_memory_gib: float
    reserved_fraction: float
    usable_cpu: float
    usable_memory_gib: float
    hosts: int
    hosts_at_max: int
    lower_bound: int = Field(description="max(ceil(sum cpu / usable), ceil(sum memory / usable)).")
    spare_hosts: int = Field(description="N+1 in production.")
    hosts_recommended: int
    cpu_efficiency: float = Field(description="Allocated cpu / usable cpu of the hosts used.")
    memory_efficiency: float
    oversized: list[str] = Field(description="Resources whose instance exceeds one host; not packed.")
    monthly_cost: float | None = Field(default=None, description="hosts_recommended x the profile's host cost.")


class CostEstimate(BaseModel):
    """estimate_resources' result."""

    blueprint: str
    profile: str
    currency: str
    monthly_cost: float
    monthly_cost_max: float
    breakdown: dict[CostItem, float]
    by_provider: dict[str, float]
    by_type: dict[str, float]
    totals: Totals
    hosts: HostPlan
    resources: list[ResourceEstimate]
    unit_prices: UnitPrices
    assumptions: list[str]


def cost_lines(sizing: Sizing, prices: UnitPrices, instances: int | None = None) -> list[CostLine]:
    """The priced lines of one resource at ``instances`` (default: its baseline count)."""
    return [_cost_line(line) for line in _lines(sizing, prices, instances)]


def cost_cents(sizing: Sizing, prices: UnitPrices, instances: int | None = None) -> int:
    """Monthly cost of one resource in cents (the sum of its rounded lines)."""
    return sum(line[4] for line in _lines(sizing, prices, instances))


_Line = tuple[CostItem, float, str, float, int, StorageClass | None]


def _lines(s: Sizing, p: UnitPrices, instances: int | None) -> list[_Line]:
    n = s.instances if instances is None else instances
    hours = p.hours_per_month
    disk_class = s.storage_type or p.default_storage_type
    candidates: list[tuple[CostItem, float, str, float, StorageClass | None]] = [
        ("cpu", s.cpu * n * hours, "vCPU-hour", p.vcpu_hour, None),
        ("memory", s.memory_mib / 1024 * n * hours, "GiB-hour", p.ram_gib_hour, None),
        ("gpu", s.gpus * n * hours, "GPU-hour", p.gpu_hour, None),
        ("storage", s.storage_mib / 1024 * n, "GiB-month", p.storage_gib_month[disk_class], disk_class),
        (
            "volumes",
            s.volume_mib / 1024 * n,
            "GiB-month",
            p.storage_gib_month[p.default_storage_type],
            p.default_storage_type,
        ),
        ("load_balancer", float(n) if s.load_balancer else 0.0, "LB-month", p.load_balancer_month, None),
        ("public_ip", 1.0 if s.public and n else 0.0, "IP-month", p.public_ip_month, None),
    ]
    return [(i, q, u, price, round(q * price * 100), c) for i, q, u, price, c in candidates if q > 0]


def _cost_line(line: _Line) -> CostLine:
    item, quantity, unit, price, cents, storage_class = line
    # Built by us from checked numbers: skipping validation keeps 10,000-resource estimates fast.
    return CostLine.model_construct(
        item=item,
        quantity=round(quantity, 6),
        unit=unit,
        unit_price=price,
        monthly_cost=cents / 100,
        storage_class=storage_class,
    )


def monthly_cost(blueprint: Blueprint, catalog: PriceCatalog, profile: str | None = None) -> float:
    """Total monthly cost at baseline instance counts (what the IPR cost delta compares).

    Raises:
        InvalidRequest: unknown profile.
    """
    prices = catalog.get(profile)
    return sum(cost_cents(Sizing.of(res), prices) for res in blueprint.resources) / 100


@without_gc
def estimate_resources(
    blueprint: Blueprint,
    catalog: PriceCatalog,
    profile: str | None = None,
    host_cpu: float | None = None,
    host_memory_gib: float | None = None,
    reserved_fraction: float = 0.1,
) -> CostEstimate:
    """Demand, monthly cost with its breakdown, and hosts needed, per resource and in total.

    The host shape defaults to the profile's host, else 32 vCPU / 128 GiB; ``reserved_fraction`` of
    each host is kept for the OS or hypervisor.

    Raises:
        InvalidRequest: unknown profile, or a host shape or reserve out of range.
    """
    prices = catalog.get(profile)
    default_shape = (prices.host.vcpus, prices.host.ram_gib) if prices.host is not None else DEFAULT_HOST
    shape = (
        default_shape[0] if host_cpu is None else host_cpu,
        default_shape[1] if host_memory_gib is None else host_memory_gib,
    )
    capacity = capacity_of(shape, reserved_fraction)
    rows: list[ResourceEstimate] = []
    by_item: dict[CostItem, int] = dict.fromkeys(COST_ITEMS, 0)
    by_provider: dict[str, int] = defaultdict(int)
    by_type: dict[str, int] = defaultdict(int)
    by_class: dict[StorageClass, float] = {"HDD": 0.0, "SSD": 0.0, "NVMe": 0.0}
    base_demand: dict[Shape, int] = defaultdict(int)
    max_demand: dict[Shape, int] = defaultdict(int)
    oversized: list[str] = []
    total_max = 0
    for res in blueprint.resources:
        s = Sizing.of(res)
        lines = _lines(s, prices, None)
        cents = sum(line[4] for line in lines)
        cents_max = cents if s.max_instances == s.instances else cost_cents(s, prices, s.max_instances)
        total_max += cents_max
        for line in lines:
            by_item[line[0]] += line[4]
        by_provider[res.provider.value] += cents
        by_type[res.type.value] += cents
        disk_class = s.storage_type or prices.default_storage_type
        by_class[disk_class] += s.storage_mib * s.instances / 1024
        by_class[prices.default_storage_type] += s.volume_mib * s.instances / 1024
        item = (round(s.cpu * 1000), s.memory_mib)
        base_demand[item] += s.instances
        max_demand[item] += s.max_instances
        if item[0] > capacity[0] or item[1] > capacity[1]:
            oversized.append(res.name)
        rows.append(_row(res, s, lines, cents, cents_max, prices))
    totals = _totals(rows, by_class)
    env = blueprint.metadata.environment
    hosts = _host_plan(shape, reserved_fraction, capacity, base_demand, max_demand, prices, default_shape, env)
    hosts.oversized.extend(oversized)
    notes = [f"{len(rows)} resources priced with profile {prices.profile!r} ({prices.currency})"]
    unsized = sum(bool(r.assumptions) for r in rows)
    if unsized:
        notes.append(f"{unsized} resources lack cpu or memory; the missing values count 0 (see each resource)")
    return CostEstimate(
        blueprint=blueprint.name,
        profile=prices.profile,
        currency=prices.currency,
        monthly_cost=sum(by_item.values()) / 100,
        monthly_cost_max=total_max / 100,
        breakdown={k: v / 100 for k, v in by_item.items()},
        by_provider={k: v / 100 for k, v in sorted(by_provider.items())},
        by_type={k: v / 100 for k, v in sorted(by_type.items())},
        totals=totals,
        hosts=hosts,
        resources=rows,
        unit_prices=prices,
        assumptions=notes,
    )


def capacity_of(shape: tuple[float, float], reserved_fraction: float) -> Shape:
    """Usable (millicores, MiB) of one host after the reserve."""
    for name, value in (("host_cpu", shape[0]), ("host_memory_gib", shape[1])):
        if not (math.isfinite(value) and value > 0):
            raise InvalidRequest(f"{name} must be a positive finite number, got {value!r}", data={name: value})
    if not (math.isfinite(reserved_fraction) and 0 <= reserved_fraction < 1):
        raise InvalidRequest(
            f"reserved_fraction must be at least 0 and below 1, got {reserved_fraction!r}",
            data={"reserved_fraction": reserved_fraction},
        )
    capacity = (
        math.floor(shape[0] * 1000 * (1 - reserved_fraction)),
        math.floor(shape[1] * 1024 * (1 - reserved_fraction)),
    )
    if min(capacity) <= 0:
        raise InvalidRequest(f"a host of {shape[0]} vCPU / {shape[1]} GiB keeps no capacity after the reserve")
    return capacity


def _row(res: Resource, s: Sizing, lines: list[_Line], cents: int, cents_max: int, p: UnitPrices) -> ResourceEstimate:
    notes: list[str] = []
    if res.type in SIZED_TYPES:
        notes.extend(f"no {what} given; counted 0" for what, v in (("cpu", s.cpu), ("memory", s.memory_mib)) if not v)
    scaling = res.specs.autoscaling
    return ResourceEstimate.model_construct(
        name=res.name,
        type=res.type.value,
        provider=res.provider.value,
        instances=s.instances,
        min_instances=scaling.min if scaling is not None else s.instances,
        max_instances=s.max_instances,
        cpu=round(s.cpu * s.instances, 3),
        memory_gib=round(s.memory_mib * s.instances / 1024, 4),
        storage_gib=round((s.storage_mib + s.volume_mib) * s.instances / 1024, 4),
        gpus=s.gpus * s.instances,
        monthly_cost=cents / 100,
        monthly_cost_max=cents_max / 100,
        breakdown=[_cost_line(line) for line in lines],
        assumptions=notes,
    )


def _totals(rows: list[ResourceEstimate], by_class: dict[StorageClass, float]) -> Totals:
    per_instance = [(r, r.max_instances / r.instances if r.instances else 0.0) for r in rows]
    return Totals(
        instances=sum(r.instances for r in rows),
        max_instances=sum(r.max_instances for r in rows),
        cpu=round(sum(r.cpu for r in rows), 3),
        cpu_max=round(sum(r.cpu * f for r, f in per_instance), 3),
        memory_gib=round(sum(r.memory_gib for r in rows), 4),
        memory_gib_max=round(sum(r.memory_gib * f for r, f in per_instance), 4),
        storage_gib=round(sum(r.storage_gib for r in rows), 4),
        storage_gib_by_class={k: round(v, 4) for k, v in by_class.items()},
        gpus=sum(r.gpus for r in rows),
    )


def _host_plan(
    shape: tuple[float, float],
    reserved: float,
    capacity: Shape,
    base: dict[Shape, int],
    peak: dict[Shape, int],
    prices: UnitPrices,
    profile_shape: tuple[float, float],
    env: Environment | None,
) -> HostPlan:
    packing = pack(base, capacity)
    at_max = pack(peak, capacity)
    used_c = sum(c for c, _ in packing.loads)
    used_m = sum(m for _, m in packing.loads)
    n = packing.count
    spare = 1 if env is Environment.PRODUCTION and n else 0
    host_cost = prices.host_monthly_cost if prices.host is not None and shape == profile_shape else None
    return HostPlan(
        host_cpu=shape[0],
        host_memory_gib=shape[1],
        reserved_fraction=reserved,
        usable_cpu=capacity[0] / 1000,
        usable_memory_gib=round(capacity[1] / 1024, 4),
        hosts=n,
        hosts_at_max=at_max.count,
        lower_bound=packing.lower_bound,
        spare_hosts=spare,
        hosts_recommended=n + spare,
        cpu_efficiency=round(used_c / (n * capacity[0]), 4) if n else 0.0,
        memory_efficiency=round(used_m / (n * capacity[1]), 4) if n else 0.0,
        oversized=[],
        monthly_cost=None if host_cost is None else round((n + spare) * host_cost, 2),
    )
