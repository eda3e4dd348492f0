"""suggest_architecture's request and answer models, and the resolved context the steps share."""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alma_mcp.analysis.architecture_build import RecoveryPlan
from alma_mcp.analysis.architecture_data import Maturity, Pillar
from alma_mcp.analysis.availability import AvailabilityReport
from alma_mcp.blueprint.model import Provider


class Requirements(BaseModel):
    """What the design must do; every field has a default except what the caller knows best."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload_type: str = Field(default="web", description="web, api, worker, database or cache (aliases accepted).")
    peak_rps: float | None = Field(default=None, ge=0, le=10_000_000, allow_inf_nan=False)
    users: int | None = Field(default=None, ge=0, le=100_000_000, description="Concurrent users, when rps is unknown.")
    availability_target: float = Field(default=99.9, description="Percent, 90 to 99.999.")
    rpo_minutes: float = Field(default=60, ge=0, le=525_600, allow_inf_nan=False)
    rto_minutes: float = Field(default=60, ge=0, le=525_600, allow_inf_nan=False)
    data_size_gb: float = Field(default=50, ge=0, le=10_000_000, allow_inf_nan=False)
    budget_monthly: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    compliance: list[str] = Field(default_factory=list, max_length=6)
    providers: list[str] | None = Field(default=None, max_length=4)
    latency_slo_ms: float | None = Field(default=None, gt=0, le=600_000, allow_inf_nan=False)
    team_ops_maturity: Maturity = "medium"
    priorities: dict[str, float] | None = None

    @field_validator("workload_type", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class PillarScore(BaseModel):
    score: int = Field(ge=0, le=100)
    reasons: list[str]


class Quorum(BaseModel):
    component: str
    members: int
    majority: int
    tolerates_failures: int
    why: str


class Candidate(BaseModel):
    """One design: where it runs, how it is made, what it achieves, and why it ranks where it does."""

    rank: int
    name: str
    pattern: str
    pattern_title: str
    provider: str
    based_on: list[str] = Field(description="Catalogue templates this pattern generalises (alma://templates/...).")
    score: float = Field(description="Weighted sum of the pillar scores, 0-100.")
    pillars: dict[str, PillarScore]
    availability: AvailabilityReport
    quorums: list[Quorum]
    recovery: list[str]
    capacity: dict[str, Any]
    monthly_cost: float
    over_budget_by: float | None = None
    compliance_gaps: dict[str, list[str]] = Field(description="Framework -> failing control ids.")
    audit: dict[str, int] = Field(description="Findings per severity from security_audit.")
    blueprint: dict[str, Any]


class Rejected(BaseModel):
    name: str
    reason: str


class ArchitectureSuggestion(BaseModel):
    """The outcome of suggest_architecture."""

    summary: str
    chosen: str
    blueprint: dict[str, Any] = Field(description="The chosen candidate's blueprint: valid, no high/critical finding.")
    candidates: list[Candidate]
    rejected: list[Rejected]
    trade_offs: list[str]
    resolved: dict[str, Any]
    notes: list[str]
    weights: dict[str, float]


@dataclass
class Context:
    """A request resolved: what every step of the design works from."""

    req: Requirements
    workload: str
    rps: float
    target: float
    providers: list[Provider]
    frameworks: list[str]
    weights: dict[Pillar, float]
    recovery: RecoveryPlan
    notes: list[str]


def pct(value: float) -> str:
    """A number as people write it: 99.95, 500 (no exponent, no trailing zeros)."""
    return format(value, ".15g")
