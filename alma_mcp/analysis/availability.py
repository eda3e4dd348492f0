"""Availability of composed systems: serial, parallel, k-of-n and quorum, and sizing to a target.

The model (SRE practice; the formulas of docs/tool-algorithms.md section 13):

- a tier of ``n`` independent instances, each up with probability ``a``, is up while at least ``k``
  are: ``A = sum_{j=k..n} C(n, j) a^j (1 - a)^(n - j)``. ``k`` is 1 for stateless balancers and for a
  primary with standbys (parallel: ``1 - (1 - a)^n``), the instances the traffic needs for a capacity
  tier, and a majority (``n // 2 + 1``) for a consensus group;
- a primary with standbys also loses the promotion time at each primary outage:
  ``A x (1 - outages_per_year x failover_seconds / seconds_per_year)``;
- tiers in series multiply: ``A = prod A_i``; downtime a year is ``(1 - A) x 8,760`` hours.

Unavailability is summed from the failure side so that 99.999% and beyond keep their digits.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from pydantic import BaseModel, Field

HOURS_PER_YEAR: Final = 8760.0
SECONDS_PER_YEAR: Final = HOURS_PER_YEAR * 3600.0
TierComposition = Literal["any", "capacity", "failover", "quorum", "single"]


def k_of_n(n: int, k: int, a: float) -> float:
    """Probability that at least ``k`` of ``n`` independent members, each up with ``a``, are up."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    q = 1.0 - a
    down = math.fsum(math.comb(n, j) * q**j * a ** (n - j) for j in range(n - k + 1, n + 1))
    return max(0.0, 1.0 - down)


def serial(availabilities: Sequence[float]) -> float:
    """Components that must all be up: the product."""
    return math.prod(availabilities)


def parallel(availabilities: Sequence[float]) -> float:
    """Components of which one suffices: one minus the product of the unavailabilities."""
    return 1.0 - math.prod(1.0 - a for a in availabilities)


def downtime_hours(availability: float) -> float:
    """Expected hours down a year."""
    return (1.0 - availability) * HOURS_PER_YEAR


@dataclass(frozen=True)
class Tier:
    """One redundant group: its rule for being up, its size, and how far it may grow."""

    role: str
    resource: str | None
    composition: TierComposition
    instances: int
    member_availability: float
    critical: bool
    needed: int = 1
    """Instances the traffic needs (capacity tiers)."""
    max_instances: int = 1
    failover_seconds_per_year: float = 0.0
    """Promotion time lost a year (failover tiers with a standby)."""

    @property
    def up_needed(self) -> int:
        if self.composition == "capacity":
            return self.needed
        if self.composition == "quorum":
            return self.instances // 2 + 1
        return 1

    @property
    def step(self) -> int:
        return 2 if self.composition == "quorum" else 1

    def availability(self) -> float:
        value = k_of_n(self.instances, self.up_needed, self.member_availability)
        if self.composition == "failover" and self.instances > 1:
            value *= 1.0 - self.failover_seconds_per_year / SECONDS_PER_YEAR
        return value

    def can_grow(self) -> bool:
        return self.composition != "single" and self.instances + self.step <= self.max_instances

    def grown(self) -> "Tier":
        return replace(self, instances=self.instances + self.step)

    def formula(self) -> str:
        a = _short(self.member_availability)
        n, k = self.instances, self.up_needed
        if self.composition == "single" or n == 1:
            return f"A = a = {a}"
        if self.composition == "quorum":
            base = f"majority {k} of {n} up: sum_(j={k}..{n}) C({n},j) a^j (1-a)^({n}-j), a = {a}"
        elif k == 1:
            base = f"1 of {n} up (parallel): 1 - (1 - {a})^{n}"
        else:
            base = f"at least {k} of {n} up: sum_(j={k}..{n}) C({n},j) a^j (1-a)^({n}-j), a = {a}"
        if self.composition == "failover":
            base += (
                f"; x (1 - {_short(self.failover_seconds_per_year)} s of promotion a year / {SECONDS_PER_YEAR:.0f} s)"
            )
        return base


class TierAvailability(BaseModel):
    """One tier of a design: enough to recompute its availability by hand."""

    role: str
    resource: str | None = Field(description="The blueprint resource; null for the platform itself.")
    composition: TierComposition
    instances: int
    up_needed: int = Field(description="Instances that must be up for the tier to serve.")
    member_availability: float
    failover_seconds_per_year: float
    critical: bool = Field(description="On the request path: multiplied into the design's availability.")
    availability: float
    formula: str


class AvailabilityReport(BaseModel):
    """A design's availability: every tier, the serial composite of the critical ones, and the target."""

    target_percent: float
    composite: float = Field(description="Product of the critical tiers' availabilities (a fraction, unrounded).")
    percent: float = Field(description="The composite in percent, rounded to 5 decimals for reading.")
    meets_target: bool
    downtime_hours_per_year: float
    allowed_downtime_hours_per_year: float
    formula: str
    tiers: list[TierAvailability]


def composite(tiers: Sequence[Tier]) -> float:
    return serial([t.availability() for t in tiers if t.critical])


def size_to_target(tiers: Sequence[Tier], target: float) -> tuple[list[Tier], bool]:
    """Grow critical tiers until the composite reaches ``target`` (a fraction), or nothing can grow.

    Each step adds the instance (two for a quorum, to stay odd) that buys the largest gain in the
    composite per instance added; ties go to the earlier tier, so the result is deterministic.
    """
    current = list(tiers)
    while composite(current) < target:
        best: tuple[float, int] | None = None
        for i, tier in enumerate(current):
            if not tier.critical or not tier.can_grow():
                continue
            before = tier.availability()
            after = tier.grown().availability()
            if after <= before:
                continue
            gain = (math.log(after) - math.log(before)) / tier.step if before > 0 else math.inf
            if best is None or gain > best[0]:
                best = (gain, i)
        if best is None:
            return current, False
        current[best[1]] = current[best[1]].grown()
    return current, True


def report(tiers: Sequence[Tier], target_percent: float) -> AvailabilityReport:
    value = composite(tiers)
    names = " x ".join(f"A({t.role})" for t in tiers if t.critical)
    return AvailabilityReport(
        target_percent=target_percent,
        composite=value,
        percent=round(value * 100, 5),
        meets_target=value >= target_percent / 100,
        downtime_hours_per_year=round(downtime_hours(value), 3),
        allowed_downtime_hours_per_year=round((1 - target_percent / 100) * HOURS_PER_YEAR, 3),
        formula=f"serial composition of the critical tiers: A = {names}",
        tiers=[
            TierAvailability(
                role=t.role,
                resource=t.resource,
                composition=t.composition,
                instances=t.instances,
                up_needed=t.up_needed,
                member_availability=t.member_availability,
                failover_seconds_per_year=t.failover_seconds_per_year,
                critical=t.critical,
                availability=t.availability(),
                formula=t.formula(),
            )
            for t in tiers
        ],
    )


def _short(value: float) -> str:
    return format(value, ".10g")
