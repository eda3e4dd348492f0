"""The blueprint model (format v1): one typed vocabulary for templates, analysis and engines.

Unknown keys in typed places are errors with a path; free-form data has two explicit homes:
``metadata`` (labels, notes) and ``specs.options`` (settings only one kind of service understands,
such as Kafka partitions or Kong plugins). Quantities are normalised here, once.
"""

import ipaddress
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from alma_mcp.blueprint.quantities import parse_cpu, parse_size_mib

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class ResourceType(StrEnum):
    """What a resource is; engines and rules dispatch on it."""

    COMPUTE = "compute"
    CONTAINER = "container"
    SERVICE = "service"
    DATABASE = "database"
    CACHE = "cache"
    QUEUE = "queue"
    STORAGE = "storage"
    NETWORK = "network"
    LOAD_BALANCER = "load_balancer"


class Provider(StrEnum):
    """Where a resource runs; settings map each provider to an engine."""

    SIMULATION = "simulation"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    PROXMOX = "proxmox"


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"
    DEVELOPMENT = "development"


_ENVIRONMENT_ALIASES = {"prod": "production", "stage": "staging", "stg": "staging", "dev": "development"}


def normalise_environment(value: str) -> str:
    """``prod`` -> ``production`` and the like; other spellings are lower-cased and left to validation."""
    return _ENVIRONMENT_ALIASES.get(value.lower(), value.lower())


def _name_check(value: object) -> object:
    if isinstance(value, str) and not _is_dns_label(value):
        raise PydanticCustomError(
            "blueprint.invalid_name",
            "invalid name {value}: use a DNS-1123 label (lowercase a-z, 0-9 and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
            {"value": repr(value)},
        )
    return value


def _is_dns_label(value: str) -> bool:
    if not 1 <= len(value) <= 63 or not value.isascii():
        return False
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return set(value) <= allowed and value[0] != "-" and value[-1] != "-"


Name = Annotated[
    str,
    BeforeValidator(_name_check),
    WithJsonSchema({"type": "string", "pattern": DNS1123_LABEL, "maxLength": 63}),
]
"""A DNS-1123 label: the name of a blueprint, a resource, a network or a volume."""

_SIZE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "description": "MiB"},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([bkmgtpBKMGTP](i?[bB])?)?\s*$"},
    ],
    "description": "A size: whole MiB, or a string such as 512Mi, 4GB, 4Gi, 1TB (binary units).",
}

SizeMiB = Annotated[int, BeforeValidator(partial(parse_size_mib, what="size")), WithJsonSchema(_SIZE_SCHEMA)]
"""A size, normalised to whole MiB (errors say which field: size, memory or storage)."""
MemoryMiB = Annotated[int, BeforeValidator(partial(parse_size_mib, what="memory")), WithJsonSchema(_SIZE_SCHEMA)]
StorageMiB = Annotated[int, BeforeValidator(partial(parse_size_mib, what="storage")), WithJsonSchema(_SIZE_SCHEMA)]

Cores = Annotated[
    float,
    BeforeValidator(parse_cpu),
    PlainSerializer(lambda v: int(v) if float(v).is_integer() else v, return_type=int | float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\d+m)\s*$"},
            ],
            "description": "CPU: cores (2, 0.5) or millicores ('500m').",
        }
    ),
]
"""CPU in cores, with millicore precision."""

Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Autoscaling(_Strict):
    """Horizontal scaling bounds; ``replicas`` is the starting count."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)
    target_cpu: int = Field(default=70, ge=1, le=100, description="Target CPU utilisation, percent.")

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.max < self.min:
            raise PydanticCustomError(
                "blueprint.invalid_value",
                "autoscaling max ({max}) is below min ({min})",
                {"max": self.max, "min": self.min},
            )
        return self


class Healthcheck(_Strict):
    """How an engine knows an instance is healthy: an HTTP path or a command."""

    path: str | None = None
    command: list[str] | None = None
    port: Port | None = None
    interval_s: int = Field(default=10, ge=1, le=3600)
    timeout_s: int = Field(default=5, ge=1, le=3600)
    retries: int = Field(default=3, ge=1, le=100)


class Backup(_Strict):
    """Backups of a resource's data."""

    enabled: bool = True
    schedule: str | None = Field(default=None, description="Cron expression, e.g. '0 2 * * *'.")
    retention_days: int | None = Field(default=None, ge=1)


class FirewallRule(_Strict):
    """One allow or deny rule on a resource or network."""

    action: Literal["allow", "deny"] = "allow"
    direction: Literal["in", "out"] = "in"
    protocol: Literal["tcp", "udp", "icmp", "any"] = "tcp"
    port: Port | None = None
    source: str = Field(default="0.0.0.0/0", description="CIDR the rule matches (destination for 'out').")


class Volume(_Strict):
    """A named volume mounted into the resource."""

    name: Name
    mount_path: str = Field(pattern=r"^/")
    size: SizeMiB | None = None
    read_only: bool = False


def _accept_bool(value: object, model: str) -> object:
    # ``backup: true`` and ``healthcheck: /health`` are the common short forms.
    if isinstance(value, bool):
        return {"enabled": value} if model == "backup" else value
    if isinstance(value, str) and model == "healthcheck":
        return {"path": value}
    return value


class Specs(_Strict):
    """Sizing, image, exposure, hardening and data protection of one resource (DESIGN's vocabulary)."""

    kind: str | None = Field(
        default=None,
        description="Subtype within the resource type: postgresql, redis, http, cdn, ... "
        "(the original format's specs.type is read as an alias).",
    )
    role: str | None = Field(default=None, description="Role in a group: primary, replica, worker, ...")
    cpu: Cores | None = None
    memory: MemoryMiB | None = None
    storage: StorageMiB | None = Field(default=None, description="Disk or volume size ('size' is an alias).")
    storage_type: Literal["HDD", "SSD", "NVMe"] | None = None
    gpu: str | None = Field(default=None, description="GPU model, e.g. 'NVIDIA A100'.")
    gpu_count: int | None = Field(default=None, ge=1)
    replicas: int | None = Field(default=None, ge=1, description="Instance count.")
    autoscaling: Autoscaling | None = None
    image: str | None = Field(default=None, description="Container image with tag or digest.")
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment, never secrets.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variable -> secret reference (a name resolved by the engine), never a value.",
    )
    os: str | None = Field(default=None, description="OS label for a VM, e.g. ubuntu-22.04.")
    template: str | None = Field(default=None, description="Proxmox VM template to clone.")
    ostemplate: str | None = Field(default=None, description="Proxmox LXC template, e.g. local:vztmpl/...")
    ports: list[Port] = Field(default_factory=list)
    public: bool = Field(default=False, description="Reachable from outside the blueprint's networks.")
    tls: bool | None = Field(default=None, description="TLS on the endpoint.")
    privileged: bool | None = None
    user: str | None = Field(default=None, description="User (name or uid) the process runs as.")
    read_only_root_filesystem: bool | None = None
    capabilities: list[str] = Field(default_factory=list, description="Linux capabilities added.")
    host_network: bool | None = None
    healthcheck: Healthcheck | None = None
    backup: Backup | None = None
    encryption_at_rest: bool | None = None
    encryption_in_transit: bool | None = None
    retention_days: int | None = Field(default=None, ge=1, description="How long data is kept.")
    networks: list[Name] = Field(default_factory=list, description="Network resources this one joins.")
    cidr: str | None = Field(default=None, description="Subnet of a network resource.")
    firewall: list[FirewallRule] = Field(default_factory=list)
    backends: list[Name] = Field(default_factory=list, description="Load-balancer targets (resource names).")
    algorithm: str | None = Field(default=None, description="Load-balancing algorithm.")
    volumes: list[Volume] = Field(default_factory=list)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings only this kind of service understands (free-form, passed to the engine).",
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for alias, canonical in (("type", "kind"), ("size", "storage")):
            if alias in out:
                if canonical in out:
                    raise PydanticCustomError(
                        "blueprint.duplicate_field",
                        "specs has both '{alias}' and '{canonical}'; '{alias}' is an alias of '{canonical}', keep one",
                        {"alias": alias, "canonical": canonical},
                    )
                out[canonical] = out.pop(alias)
        if "backup" in out:
            out["backup"] = _accept_bool(out["backup"], "backup")
        if "healthcheck" in out:
            out["healthcheck"] = _accept_bool(out["healthcheck"], "healthcheck")
        if isinstance(out.get("storage_type"), str):
            spelled = {"hdd": "HDD", "ssd": "SSD", "nvme": "NVMe"}
            out["storage_type"] = spelled.get(out["storage_type"].lower(), out["storage_type"])
        return out

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise PydanticCustomError(
                "blueprint.invalid_cidr",
                "invalid CIDR {value}: {reason}; write a network such as 10.0.0.0/16",
                {"value": repr(value), "reason": str(exc)},
            ) from exc


class Resource(_Strict):
    """One thing to run: a VM, a container, a database, a network, ..."""

    name: Name
    type: ResourceType
    provider: Provider
    specs: Specs = Field(default_factory=Specs)
    dependencies: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Names of resources in this blueprint that must exist first (at most 1000).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class BlueprintMetadata(BaseModel):
    """Blueprint-level labels; ``environment`` drives environment-sensitive rules."""

    model_config = ConfigDict(extra="allow", frozen=True)

    environment: Environment | None = None
    owner: str | None = None

    @field_validator("environment", mode="before")
    @classmethod
    def _environment_alias(cls, value: object) -> object:
        return normalise_environment(value) if isinstance(value, str) else value


class Blueprint(_Strict):
    """A whole system: named resources and the dependencies between them."""

    version: Literal["1.0"] = "1.0"
    name: Name
    description: str = ""
    metadata: BlueprintMetadata = Field(default_factory=BlueprintMetadata)
    resources: list[Resource] = Field(default_factory=list)

    def resource(self, name: str) -> Resource | None:
        """The resource with that name, if any."""
        return next((r for r in self.resources if r.name == name), None)

    def to_data(self) -> dict[str, Any]:
        """Plain JSON-able data, normalised, with only the fields the author set: what tools hand back."""
        return {"version": self.version, **self.model_dump(mode="json", exclude_unset=True, by_alias=True)}


def blueprint_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the blueprint format, generated from the model."""
    schema = Blueprint.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "alma://schema/blueprint"
    schema["title"] = "alma-mcp blueprint v1"
    return schema
