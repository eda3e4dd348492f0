"""The engine protocol: the small, provider-neutral seam between deploy orchestration and a backend.

An engine turns a desired state into changes on a real (or simulated) provider. Everything it
creates carries the deployment identity (labels, tags or names) so that ``observe`` finds it again
after a restart. Inputs and outputs are frozen models defined here; nothing provider-specific
crosses the boundary, and the domain's blueprint model stays out of it (engines sit below the
domain). Failures are ``TransientEngineError`` (retried, bounded) or ``PermanentEngineError``.
"""

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["create", "update", "replace", "delete", "noop"]
ResourceStatus = Literal["running", "stopped", "failed", "unknown"]
OutcomeStatus = Literal["succeeded", "failed", "skipped"]


class _Frozen(BaseModel):
    # Built on first use, not at import: a stdio server that never deploys never pays for them.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def fingerprint(data: Mapping[str, Any]) -> str:
    """A stable SHA-256 of canonical JSON: equal specs give equal fingerprints across runs."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class DeploymentRef(_Frozen):
    """Who a deployment belongs to; engines stamp these onto everything they create."""

    id: str = Field(min_length=1, max_length=63)
    blueprint: str
    ipr_id: str | None = None
    revision: str | None = None

    def labels(self) -> dict[str, str]:
        """The identity as labels/tags (values are never secrets)."""
        out = {"alma.deployment": self.id, "alma.blueprint": self.blueprint}
        if self.ipr_id is not None:
            out["alma.ipr"] = self.ipr_id
        if self.revision is not None:
            out["alma.revision"] = self.revision
        return out


class DesiredResource(_Frozen):
    """One resource as the blueprint wants it: specs already normalised (MiB, cores)."""

    name: str
    type: str
    provider: str
    specs: dict[str, Any] = Field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="The resource's metadata (not part of the fingerprint)."
    )

    @property
    def fingerprint(self) -> str:
        return fingerprint({"type": self.type, "provider": self.provider, "specs": self.specs})


class DesiredState(_Frozen):
    """The whole target of one deployment."""

    deployment: DeploymentRef
    resources: tuple[DesiredResource, ...]


class ObservedResource(_Frozen):
    """One resource as the engine finds it on the provider."""

    name: str
    type: str
    provider: str
    fingerprint: str
    status: ResourceStatus
    engine_id: str = Field(description="The provider's own id: container id, VMID, object name.")
    specs: dict[str, Any] = Field(default_factory=dict)


class Change(_Frozen):
    """What one resource needs: the action, and why."""

    resource: str
    action: Action
    reason: str
    desired: DesiredResource | None = None
    observed: ObservedResource | None = None


class Plan(_Frozen):
    """Every change one deployment needs; computing it has no side effects."""

    deployment: DeploymentRef
    changes: tuple[Change, ...]

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)


class ResourceOutcome(_Frozen):
    """What happened to one resource during apply or destroy."""

    resource: str
    action: Action
    status: OutcomeStatus
    message: str = ""
    engine_id: str | None = None


class ApplyResult(_Frozen):
    deployment: DeploymentRef
    outcomes: tuple[ResourceOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.status != "failed" for o in self.outcomes)


class EngineHealth(_Frozen):
    ok: bool
    detail: str


ProgressCallback = Callable[[ResourceOutcome], Awaitable[None]]
Compare = Callable[["DesiredResource", "ObservedResource"], tuple[Action, str]]
"""An engine's judgement of one present resource: the action it needs and why."""

_MISSING = object()


def plan_by_name(
    desired: DesiredState,
    observed: Sequence[ObservedResource],
    compare: Compare,
    create_reason: Callable[[DesiredResource], str] = lambda _: "not present",
) -> Plan:
    """The changes from ``observed`` to ``desired`` that every engine shares: a create for each missing
    resource, ``compare``'s verdict for each present one (desired order), then a delete for each resource
    no longer wanted (by name)."""
    found = {o.name: o for o in observed}
    changes: list[Change] = []
    for resource in desired.resources:
        current = found.get(resource.name)
        if current is None:
            changes.append(
                Change(resource=resource.name, action="create", reason=create_reason(resource), desired=resource)
            )
            continue
        action, reason = compare(resource, current)
        changes.append(Change(resource=resource.name, action=action, reason=reason, desired=resource, observed=current))
    wanted = {r.name for r in desired.resources}
    changes += [
        Change(resource=name, action="delete", reason="no longer in the blueprint", observed=found[name])
        for name in sorted(found.keys() - wanted)
    ]
    return Plan(deployment=desired.deployment, changes=tuple(changes))


async def apply_in_order(
    plan: Plan,
    apply_one: Callable[[Change], Awaitable[ResourceOutcome]],
    on_progress: ProgressCallback | None = None,
) -> ApplyResult:
    """Every engine's apply loop: each change in plan order, progress after each; the first failure
    raises out of ``apply_one`` and the outcomes before it stay done."""
    outcomes: list[ResourceOutcome] = []
    for change in plan.changes:
        outcome = await apply_one(change)
        outcomes.append(outcome)
        if on_progress is not None:
            await on_progress(outcome)
    return ApplyResult(deployment=plan.deployment, outcomes=tuple(outcomes))


def rebuild_reasons(desired: DesiredResource, observed: ObservedResource, replacing: Iterable[str]) -> list[str]:
    """Why a resource must be replaced rather than updated: its type, provider or an identity spec changed."""
    reasons: list[str] = []
    if observed.type != desired.type:
        reasons.append(f"type changed: {observed.type} -> {desired.type}")
    if observed.provider != desired.provider:
        reasons.append(f"provider changed: {observed.provider} -> {desired.provider}")
    reasons += [
        f"{key} changed" for key in replacing if desired.specs.get(key, _MISSING) != observed.specs.get(key, _MISSING)
    ]
    return reasons


def changed_spec_keys(desired: DesiredResource, observed: ObservedResource) -> list[str]:
    """Spec keys whose value differs (sorted)."""
    return sorted(
        k
        for k in desired.specs.keys() | observed.specs.keys()
        if desired.specs.get(k, _MISSING) != observed.specs.get(k, _MISSING)
    )


@runtime_checkable
class Engine(Protocol):
    """**Protocol:** what every engine (simulation, docker, kubernetes, proxmox) implements."""

    name: ClassVar[str]

    async def plan(self, desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
        """The changes that turn ``observed`` into ``desired``; pure and repeatable."""
        ...

    async def apply(self, plan: Plan, on_progress: ProgressCallback | None = None) -> ApplyResult:
        """Carry out a plan, reporting each resource's outcome as it happens."""
        ...

    async def destroy(self, deployment: DeploymentRef) -> ApplyResult:
        """Remove everything the deployment created; idempotent."""
        ...

    async def observe(self, deployment: DeploymentRef) -> list[ObservedResource]:
        """What exists now for the deployment, found by its identity labels."""
        ...

    async def health(self) -> EngineHealth:
        """Whether the backend answers."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections."""
        ...
