"""Per-type step durations for deployment plans, read from ``resources/plan/durations.yaml``."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alma_mcp.blueprint.loader import load_data_file
from alma_mcp.blueprint.model import Provider, ResourceType
from alma_mcp.errors import ConfigError

PlanAction = str  # "create" | "update" | "delete"; replace = delete + create


class DurationTable(BaseModel):
    """Seconds per (action, resource type), scaled per provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    create: dict[ResourceType, float]
    update: dict[ResourceType, float]
    delete: dict[ResourceType, float]
    provider_factor: dict[Provider, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> "DurationTable":
        for action in ("create", "update", "delete"):
            table: dict[ResourceType, float] = getattr(self, action)
            missing = sorted(t.value for t in ResourceType if t not in table)
            if missing:
                raise ValueError(f"'{action}' lacks durations for: {', '.join(missing)}")
            if any(v < 0 for v in table.values()):
                raise ValueError(f"'{action}' has a negative duration")
        return self

    def seconds(self, action: str, rtype: ResourceType, provider: Provider) -> float:
        """Estimated seconds of one step; ``replace`` is a delete then a create, ``no-op`` is free."""
        factor = self.provider_factor.get(provider, 1.0)
        if action == "no-op":
            return 0.0
        if action == "replace":
            return (self.delete[rtype] + self.create[rtype]) * factor
        table: dict[ResourceType, float] = getattr(self, action)
        return table[rtype] * factor


def load_durations(path: Path) -> DurationTable:
    """Read and validate the duration table.

    Raises:
        ConfigError: the file is missing or invalid (named).
    """
    try:
        return DurationTable.model_validate(load_data_file(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"duration table {path} is invalid: {exc}", data={"file": str(path)}) from exc
