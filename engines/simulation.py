"""The simulation engine: the default backend and the test double.

It is a real engine that happens to need no infrastructure: deterministic, with its state in the
alma-mcp SQLite store (tables ``sim_resources`` and ``sim_failures``), so a re-deploy after a
restart finds what the last run made and plans nothing. State is scoped by deployment id: one
deployment's resources never touch another's.

Failures can be injected per resource, from the engine's ``fail_resources`` (``ALMA_SIM_FAIL``:
``web=fail:create,db=transient:2``) or from a resource's ``metadata["simulation"]``
(``{"fail": "create"}``, ``{"transient_failures": 2}``). A permanent failure raises
``PermanentEngineError`` and changes nothing; a transient one raises ``TransientEngineError`` for
the first N attempts on that resource (counted in SQLite, so across calls and restarts) and then
lets it through.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import anyio

from alma_mcp.errors import (
    AlmaError,
    ConfigError,
    DeploymentNotFound,
    PermanentEngineError,
    TransientEngineError,
)
from alma_mcp.settings import Settings
from alma_mcp.store import Store, utc_now
from engines.base import (
    Action,
    ApplyResult,
    Change,
    DeploymentRef,
    DesiredResource,
    DesiredState,
    EngineHealth,
    ObservedResource,
    Plan,
    ProgressCallback,
    ResourceOutcome,
    apply_in_order,
    changed_spec_keys,
    plan_by_name,
    rebuild_reasons,
)

if TYPE_CHECKING:
    from sqlite_utils import Database

# Seconds a create takes on a realistic provider, by resource type; scaled by ``time_scale``.
BASE_SECONDS: Final[Mapping[str, float]] = {
    "compute": 120.0,
    "database": 90.0,
    "load_balancer": 45.0,
    "cache": 30.0,
    "queue": 30.0,
    "storage": 20.0,
    "container": 15.0,
    "service": 10.0,
    "network": 5.0,
}
DEFAULT_SECONDS: Final = 30.0
# An update touches a running resource; a replace is a delete plus a create; a delete is quick.
ACTION_FACTOR: Final[Mapping[Action, float]] = {
    "create": 1.0,
    "update": 0.5,
    "replace": 1.25,
    "delete": 0.25,
    "noop": 0.0,
}
# A change to any of these specs cannot be made in place: the resource is rebuilt.
REPLACING_SPECS: Final = ("image", "template", "ostemplate")
FAIL_ACTIONS: Final = frozenset({"create", "update", "replace", "delete", "any"})
# Words for messages: "simulated failure creating 'web'", "created 'web'".
_WORDS: Final[Mapping[Action, tuple[str, str]]] = {
    "create": ("creating", "created"),
    "update": ("updating", "updated"),
    "replace": ("replacing", "replaced"),
    "delete": ("deleting", "deleted"),
    "noop": ("checking", "unchanged"),
}


def _engine_id(scope: str, name: str) -> str:
    return f"sim-{scope}-{name}"


def duration(resource_type: str, action: Action) -> float:
    """Realistic seconds for ``action`` on a resource of ``resource_type`` (before scaling)."""
    return BASE_SECONDS.get(resource_type, DEFAULT_SECONDS) * ACTION_FACTOR[action]


@dataclass(frozen=True)
class FailureSpec:
    """How one resource is made to fail: permanently for an action, and/or transiently N times."""

    fail: str | None = None
    transient: int = 0

    def fails(self, action: Action) -> bool:
        return self.fail is not None and self.fail in (action, "any")


def parse_failure(text: str) -> FailureSpec:
    """``"fail:create"`` (or update/replace/delete/any) or ``"transient:N"`` as a FailureSpec.

    Raises:
        ValueError: the text is neither form.
    """
    kind, _, arg = text.strip().partition(":")
    kind, arg = kind.strip(), arg.strip()
    if kind == "fail" and arg in FAIL_ACTIONS:
        return FailureSpec(fail=arg)
    if kind == "transient" and arg.isdigit():
        return FailureSpec(transient=int(arg))
    raise ValueError(f"expected fail:<{'|'.join(sorted(FAIL_ACTIONS))}> or transient:<N>, got {text!r}")


def _split_pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        name, sep, spec = piece.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"ALMA_SIM_FAIL entry {piece!r} is not name=spec; write e.g. web=fail:create,db=transient:2",
                data={"entry": piece},
            )
        pairs[name.strip()] = spec.strip()
    return pairs


def parse_fail_setting(value: str | Mapping[str, str]) -> dict[str, FailureSpec]:
    """The ``sim_fail`` setting (``"a=fail:create,b=transient:2"`` or a mapping) by resource name.

    Raises:
        ConfigError: an entry is not ``name=spec`` or its spec is invalid (the entry is named).
    """
    pairs = _split_pairs(value) if isinstance(value, str) else dict(value)
    specs: dict[str, FailureSpec] = {}
    for name, spec in pairs.items():
        try:
            specs[name] = parse_failure(spec)
        except ValueError as exc:
            raise ConfigError(
                f"ALMA_SIM_FAIL entry {name}={spec}: {exc}", data={"resource": name, "spec": spec}
            ) from exc
    return specs


def failure_from_metadata(resource: DesiredResource) -> FailureSpec | None:
    """The failure a resource's ``metadata["simulation"]`` asks for, if any.

    Raises:
        PermanentEngineError: the metadata is not a valid failure spec (retrying will not fix it).
    """
    raw = resource.metadata.get("simulation")
    if raw is None:
        return None
    try:
        if isinstance(raw, str):
            return parse_failure(raw)
        if not isinstance(raw, Mapping) or not set(raw) <= {"fail", "transient_failures"}:
            raise ValueError("expected a mapping with keys 'fail' and/or 'transient_failures'")
        fail, transient = raw.get("fail"), raw.get("transient_failures", 0)
        if fail is not None and fail not in FAIL_ACTIONS:
            raise ValueError(f"'fail' must be one of {', '.join(sorted(FAIL_ACTIONS))}, got {fail!r}")
        if isinstance(transient, bool) or not isinstance(transient, int) or transient < 0:
            raise ValueError(f"'transient_failures' must be a whole number >= 0, got {transient!r}")
        return FailureSpec(fail=fail, transient=transient)
    except ValueError as exc:
        raise PermanentEngineError(
            f"resource {resource.name!r} has invalid metadata.simulation: {exc}",
            data={"resource": resource.name},
        ) from exc


def plan_changes(desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
    """The changes from ``observed`` to ``desired``: desired order first, then deletes by name."""
    return plan_by_name(desired, observed, _compare)


def _compare(desired: DesiredResource, observed: ObservedResource) -> tuple[Action, str]:
    if observed.fingerprint == desired.fingerprint:
        return "noop", "unchanged"
    rebuild = rebuild_reasons(desired, observed, REPLACING_SPECS)
    if rebuild:
        return "replace", "; ".join(rebuild)
    keys = changed_spec_keys(desired, observed)
    # Equal specs yet another fingerprint: the resource was made by an older fingerprint scheme.
    return "update", f"specs changed: {', '.join(keys)}" if keys else "fingerprint changed"


class SimulationEngine:
    """A deterministic engine whose "provider" is two tables in the alma-mcp store."""

    name: ClassVar[str] = "simulation"

    def __init__(
        self,
        store: Store,
        *,
        time_scale: float = 0.0,
        fail_resources: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """Use ``store`` for state; sleep ``duration() * time_scale`` per change (0 = instant).

        Raises:
            ConfigError: ``time_scale`` is negative or a ``fail_resources`` spec is invalid.
        """
        if time_scale < 0:
            raise ConfigError(f"time_scale must be >= 0, got {time_scale}", data={"time_scale": time_scale})
        self._store = store
        self._time_scale = time_scale
        self._fail = parse_fail_setting(fail_resources or {})
        self._sleep = sleep

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> SimulationEngine:
        """Build from ``sim_time_scale`` and ``sim_fail`` (absent settings mean instant, no failures).

        Raises:
            ConfigError: ``sim_fail`` holds an invalid entry.
        """
        # getattr: the settings fields may be absent from an older Settings; a string is parsed here too.
        fail: str | Mapping[str, str] = getattr(settings, "sim_fail", {})
        scale = float(getattr(settings, "sim_time_scale", 0.0))
        return cls(store, time_scale=scale, fail_resources=_split_pairs(fail) if isinstance(fail, str) else fail)

    async def plan(self, desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
        return plan_changes(desired, observed)

    async def apply(self, plan: Plan, on_progress: ProgressCallback | None = None) -> ApplyResult:
        """Carry out the changes in order; the first failure raises (earlier outcomes are kept).

        Raises:
            DeploymentNotFound: an update, replace or delete names a resource the engine has no record of.
            PermanentEngineError: a simulated permanent failure (or invalid ``metadata.simulation``).
            TransientEngineError: a simulated transient failure (``delay`` 0); retrying will get through.
        """
        return await apply_in_order(plan, lambda change: self._apply_change(plan.deployment.id, change), on_progress)

    async def destroy(self, deployment: DeploymentRef) -> ApplyResult:
        """Delete every resource of the deployment, by name; nothing to delete is not an error."""
        outcomes: list[ResourceOutcome] = []
        while (row := self._first_row(deployment.id)) is not None:
            name, resource_type, engine_id = row
            await self._pause(resource_type, "delete")
            with self._store.atomic() as db:
                deleted = db.execute(
                    "DELETE FROM sim_resources WHERE scope = ? AND name = ?", [deployment.id, name]
                ).rowcount
            if deleted:  # a concurrent apply may have deleted it first
                outcomes.append(
                    ResourceOutcome(
                        resource=name,
                        action="delete",
                        status="succeeded",
                        message=f"deleted {name!r}",
                        engine_id=engine_id,
                    )
                )
        return ApplyResult(deployment=deployment, outcomes=tuple(outcomes))

    async def observe(self, deployment: DeploymentRef) -> list[ObservedResource]:
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT name, type, provider, fingerprint, status, engine_id, specs FROM sim_resources"
                " WHERE scope = ? ORDER BY name",
                [deployment.id],
            ).fetchall()
        return [
            ObservedResource(
                name=name,
                type=resource_type,
                provider=provider,
                fingerprint=fp,
                status=status,
                engine_id=engine_id,
                specs=json.loads(specs),
            )
            for name, resource_type, provider, fp, status, engine_id, specs in rows
        ]

    async def health(self) -> EngineHealth:
        try:
            with self._store.lock:
                resources, deployments = self._store.db.execute(
                    "SELECT count(*), count(DISTINCT scope) FROM sim_resources"
                ).fetchone()
        except sqlite3.Error as exc:
            return EngineHealth(ok=False, detail=f"simulation engine: database unavailable ({exc})")
        return EngineHealth(ok=True, detail=f"simulation engine: {resources} resources in {deployments} deployments")

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the caller."""

    # -- internals -------------------------------------------------------------------------------

    async def _apply_change(self, scope: str, change: Change) -> ResourceOutcome:
        name, action = change.resource, change.action
        if action == "noop":
            engine_id = change.observed.engine_id if change.observed else _engine_id(scope, name)
            return ResourceOutcome(
                resource=name, action=action, status="succeeded", message="unchanged", engine_id=engine_id
            )
        failure = self._failure_for(change)
        if change.desired is not None:
            await self._pause(change.desired.type, action)
        elif change.observed is not None:
            await self._pause(change.observed.type, action)
        with self._store.atomic() as db:
            result = self._write(db, scope, change, failure)
        if isinstance(result, AlmaError):
            raise result  # raised after the commit, so a transient attempt stays counted
        return result

    def _failure_for(self, change: Change) -> FailureSpec:
        # The operator's setting overrides what the blueprint's metadata asks for.
        if change.resource in self._fail:
            return self._fail[change.resource]
        if change.desired is not None:
            return failure_from_metadata(change.desired) or FailureSpec()
        return FailureSpec()

    async def _pause(self, resource_type: str, action: Action) -> None:
        seconds = duration(resource_type, action) * self._time_scale
        if seconds > 0:
            await self._sleep(seconds)

    def _first_row(self, scope: str) -> tuple[str, str, str] | None:
        with self._store.lock:
            row = self._store.db.execute(
                "SELECT name, type, engine_id FROM sim_resources WHERE scope = ? ORDER BY name LIMIT 1", [scope]
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _write(self, db: Database, scope: str, change: Change, failure: FailureSpec) -> ResourceOutcome | AlmaError:
        """Check, count and write one change inside the caller's transaction; errors are returned."""
        name, action = change.resource, change.action
        data = {"deployment": scope, "resource": name, "action": action}
        row = db.execute(
            "SELECT created_at, engine_id FROM sim_resources WHERE scope = ? AND name = ?", [scope, name]
        ).fetchone()
        if row is None and action != "create":
            return DeploymentNotFound(
                f"deployment {scope!r} has no resource {name!r} to {action}; observe the deployment and re-plan",
                data=data,
            )
        desired = change.desired
        if desired is None and action != "delete":
            return PermanentEngineError(
                f"the {action} change for {name!r} carries no desired resource; re-plan", data=data
            )
        if failure.fails(action):
            return PermanentEngineError(f"simulated failure {_WORDS[action][0]} {name!r}", data=data)
        if failure.transient:
            counted = db.execute(
                "SELECT remaining FROM sim_failures WHERE scope = ? AND name = ?", [scope, name]
            ).fetchone()
            remaining = failure.transient if counted is None else int(counted[0])
            if remaining > 0:
                db.execute(
                    "INSERT OR REPLACE INTO sim_failures (scope, name, remaining) VALUES (?, ?, ?)",
                    [scope, name, remaining - 1],
                )
                return TransientEngineError(
                    f"simulated transient failure {_WORDS[action][0]} {name!r} ({remaining - 1} more to come)",
                    delay=0,
                    data=data,
                )
        message = f"{_WORDS[action][1]} {name!r}"
        if desired is None or action == "delete":
            db.execute("DELETE FROM sim_resources WHERE scope = ? AND name = ?", [scope, name])
            return ResourceOutcome(resource=name, action=action, status="succeeded", message=message, engine_id=row[1])
        now = utc_now()
        engine_id = _engine_id(scope, name)
        db.execute(
            "INSERT OR REPLACE INTO sim_resources"
            " (scope, name, type, provider, fingerprint, specs, status, engine_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            [
                scope,
                name,
                desired.type,
                desired.provider,
                desired.fingerprint,
                json.dumps(desired.specs, sort_keys=True, default=str),
                engine_id,
                row[0] if action == "update" and row is not None else now,
                now,
            ],
        )
        return ResourceOutcome(resource=name, action=action, status="succeeded", message=message, engine_id=engine_id)
