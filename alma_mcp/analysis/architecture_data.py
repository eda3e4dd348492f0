"""The data suggest_architecture and migrate_infrastructure decide with: ``resources/architecture/*.yaml``.

Three files, validated once at start-up (a bad file stops it, named): ``platforms.yaml`` (the
availability model of each platform, failover times, traffic sizing, recovery thresholds and the
default pillar weights), ``patterns.yaml`` (composable patterns and the roles they are made of) and
``migration.yaml`` (data transfer rates and what cannot move).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alma_mcp.blueprint.model import Name, Provider, ResourceType
from alma_mcp.datacache import NO_CACHE, ParseCache
from alma_mcp.errors import ConfigError

Pillar = Literal[
    "operational_excellence",
    "security",
    "reliability",
    "performance_efficiency",
    "cost_optimization",
    "sustainability",
]
PILLARS: tuple[Pillar, ...] = (
    "operational_excellence",
    "security",
    "reliability",
    "performance_efficiency",
    "cost_optimization",
    "sustainability",
)
Maturity = Literal["low", "medium", "high"]
Composition = Literal["any", "capacity", "failover", "quorum"]
Probability = float


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlatformPart(_Data):
    """What every resource of a design shares: one host, or a quorum of control-plane members."""

    name: Name
    what: str
    members: int = Field(ge=1)
    max_members: int = Field(ge=1)
    member_availability: Probability = Field(gt=0, lt=1)
    quorum: bool

    @model_validator(mode="after")
    def _sizes(self) -> "PlatformPart":
        if self.max_members < self.members:
            raise ValueError(f"max_members {self.max_members} is below members {self.members}")
        if self.quorum and (self.members % 2 == 0 or self.members < 3):
            raise ValueError("a quorum platform needs an odd number of members, at least 3")
        return self


class Platform(_Data):
    title: str
    instance_availability: Probability = Field(gt=0, lt=1)
    failure_domains: int = Field(ge=1)
    price_profile: str
    ops_score: dict[Maturity, int]
    platform: PlatformPart


class Failover(_Data):
    automatic_seconds: float = Field(ge=0)
    manual_seconds: float = Field(ge=0)
    primary_outages_per_year: float = Field(ge=0)


class Traffic(_Data):
    target_utilisation: float = Field(gt=0, lt=1)
    per_instance_rps: dict[str, float]
    default_rps: dict[str, float]
    rps_per_user: float = Field(gt=0)
    max_instances: int = Field(ge=1)


class Recovery(_Data):
    synchronous_rpo_minutes: float = Field(ge=0)
    continuous_rpo_minutes: float = Field(ge=0)
    automatic_rto_minutes: float = Field(ge=0)
    restore_gb_per_minute: float = Field(gt=0)
    restore_warmup_minutes: float = Field(ge=0)


class PlatformsFile(_Data):
    version: Literal[1]
    platforms: dict[Provider, Platform]
    failover: Failover
    traffic: Traffic
    recovery: Recovery
    default_priorities: dict[Pillar, float]


class RoleResource(_Data):
    type: ResourceType
    vm_type: ResourceType | None = None
    image: str | None = None
    specs: dict[str, Any] = Field(default_factory=dict)


class Role(_Data):
    title: str
    name: Name
    composition: Composition
    traffic: Literal["request", "worker"] | None = None
    critical: bool
    min_instances: int = Field(ge=1)
    max_instances: int = Field(ge=1)
    network: Literal["app", "data", "both"]
    automatic_failover_only: bool = False
    follows_recovery_plan: bool = False
    not_on: list[Provider] = Field(default_factory=list)
    uses: list[str] = Field(default_factory=list)
    balances: str | None = None
    client_env: dict[str, str] = Field(default_factory=dict)
    client_secrets: dict[str, str] = Field(default_factory=dict)
    resource: RoleResource

    @model_validator(mode="after")
    def _consistent(self) -> "Role":
        if (self.composition == "capacity") != (self.traffic is not None):
            raise ValueError("'traffic' is required for capacity roles and only for them")
        if self.composition == "quorum" and self.min_instances % 2 == 0:
            raise ValueError("a quorum role starts at an odd size")
        if self.max_instances < self.min_instances:
            raise ValueError("max_instances is below min_instances")
        return self


class Pattern(_Data):
    title: str
    based_on: list[str]
    workloads: list[str] = Field(min_length=1)
    roles: list[str] = Field(min_length=1)
    critical_roles: list[str] = Field(default_factory=list)


class NetworkSpec(_Data):
    cidr: str


class Guest(_Data):
    os: str
    template: str


class PatternsFile(_Data):
    version: Literal[1]
    networks: dict[Name, NetworkSpec]
    proxmox_guest: Guest
    patterns: dict[Name, Pattern]
    roles: dict[str, Role]

    @model_validator(mode="after")
    def _references(self) -> "PatternsFile":
        for name, pattern in self.patterns.items():
            unknown = [r for r in (*pattern.roles, *pattern.critical_roles) if r not in self.roles]
            if unknown:
                raise ValueError(f"pattern {name} names unknown roles: {', '.join(unknown)}")
        for name, role in self.roles.items():
            named = [*role.uses, *([role.balances] if role.balances else [])]
            unknown = [r for r in named if r not in self.roles]
            if unknown:
                raise ValueError(f"role {name} uses unknown roles: {', '.join(unknown)}")
        if set(self.networks) != {"app-net", "data-net"}:
            raise ValueError("networks must be exactly app-net and data-net")
        return self


class Transfer(_Data):
    gb_per_minute: float = Field(gt=0)
    warm_up_minutes: float = Field(ge=0)
    replication_above_gb: float = Field(ge=0)
    replication_lag_minutes: float = Field(ge=0)
    switch_minutes: float = Field(ge=0)
    stateless_switch_minutes: float = Field(ge=0)
    retain_above_gb: float = Field(gt=0)
    storage_copy_gb_per_minute: float = Field(gt=0)


class MigrationFile(_Data):
    version: Literal[1]
    transfer: Transfer
    replicating_kinds: list[str]
    not_containerizable_os: list[str]
    provided_by_target: dict[Provider, list[str]]
    max_wave_size: int = Field(ge=1)


@dataclass(frozen=True)
class ArchitectureData:
    """Everything in ``resources/architecture``, validated."""

    platforms: PlatformsFile
    patterns: PatternsFile
    migration: MigrationFile

    def workloads(self) -> list[str]:
        """Workload types some pattern serves, sorted."""
        return sorted({w for p in self.patterns.patterns.values() for w in p.workloads})


def _read(path: Path, model: type[_Data], cache: ParseCache) -> Any:
    try:
        return model.model_validate(cache.data_file(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"architecture data file {path.name} is invalid: {exc}", data={"file": str(path)}) from exc


def load_architecture_data(folder: Path, cache: ParseCache = NO_CACHE) -> ArchitectureData:
    """Read (through ``cache``) and validate ``platforms.yaml``, ``patterns.yaml`` and ``migration.yaml`` in ``folder``.

    Raises:
        ConfigError: a file is missing or invalid, or names something unknown (the file is named).
    """
    platforms: PlatformsFile = _read(folder / "platforms.yaml", PlatformsFile, cache)
    patterns: PatternsFile = _read(folder / "patterns.yaml", PatternsFile, cache)
    migration: MigrationFile = _read(folder / "migration.yaml", MigrationFile, cache)
    workloads = {w for p in patterns.patterns.values() for w in p.workloads}
    missing = sorted(w for w in workloads if w not in platforms.traffic.per_instance_rps)
    if missing:
        raise ConfigError(
            f"architecture data file platforms.yaml: traffic.per_instance_rps lacks workloads {', '.join(missing)}",
            data={"file": str(folder / "platforms.yaml")},
        )
    return ArchitectureData(platforms=platforms, patterns=patterns, migration=migration)
