"""Deploy orchestration: an approved IPR -> engine plans -> waves -> recorded steps.

The blueprint name is the environment's identity: every engine scopes what it creates by it, so a
later IPR for the same blueprint updates what an earlier one deployed. Steps within a wave run
concurrently up to the parallelism bound; each step is written to SQLite when it starts and when it
ends, so a crash leaves a ``running`` row that start-up recovery marks ``interrupted``. Transient
engine errors are retried with doubling delays; a permanent failure skips the failed resource's
dependents and the IPR ends ``failed`` with everything that did happen recorded. Deploying again
continues (what exists is a no-op); rolling back returns to the previously deployed blueprint, or
destroys everything when there was none, deletes running dependents first.
"""

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel

from alma_mcp.analysis.plan import dependency_levels
from alma_mcp.blueprint.loader import Limits, load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import (
    AlmaError,
    DeploymentNotFoundError,
    EngineError,
    InvalidTransition,
    PermanentEngineError,
    TransientEngineError,
)
from alma_mcp.events import EventBus
from alma_mcp.ipr.principals import SYSTEM, Principal, Role
from alma_mcp.ipr.states import Action, next_state
from alma_mcp.ipr.store import IPRRecord, IPRStore
from alma_mcp.settings import Settings
from alma_mcp.store import Store, utc_now
from engines.base import Change, DeploymentRef, DesiredResource, DesiredState, Engine, Plan
from engines.registry import EngineRegistry

if TYPE_CHECKING:
    from sqlite_utils import Database

logger = logging.getLogger(__name__)

DEFAULT_ENGINE = "simulation"
MESSAGE_LIMIT = 256  # engine messages are the provider's words: keep them short in records
Progress = Callable[[int, int, str], Awaitable[None]]


class StepRecord(BaseModel):
    resource: str
    action: str
    engine: str
    wave: int
    attempt: int
    status: str
    message: str
    engine_id: str | None
    started_at: str
    finished_at: str | None


class DeploymentRecord(BaseModel):
    """One deploy or rollback of an IPR, with every step attempt."""

    id: int
    ipr_id: int
    revision: int | None
    kind: str
    state: str
    actor: str
    summary: str
    started_at: str
    finished_at: str | None
    plan: dict[str, Any]
    steps: list[StepRecord]


class PlannedChange(BaseModel):
    resource: str
    action: str
    engine: str
    wave: int
    reason: str


class DeployOutcome(BaseModel):
    """What ipr_deploy / ipr_rollback return."""

    ipr_id: int
    ipr_state: str
    dry_run: bool
    deployment_id: int | None
    state: str
    summary: str
    changes: list[PlannedChange]
    steps: list[StepRecord]


@dataclass
class _Step:
    change: Change
    engine_name: str
    wave: int
    dependencies: tuple[str, ...]


class EngineSet:
    """Engines by provider, built once from the registry and settings (``ALMA_ENGINES``)."""

    def __init__(self, registry: EngineRegistry, store: Store, settings: Settings) -> None:
        self._registry = registry
        self._store = store
        self._settings = settings
        self._engines: dict[str, Engine] = {}

    def name_for(self, provider: str) -> str:
        return self._settings.engines.get(provider, DEFAULT_ENGINE)

    def get(self, name: str) -> Engine:
        if name not in self._engines:
            factory: Any = self._registry.factory(name)
            self._engines[name] = factory.from_settings(self._store, self._settings)
        return self._engines[name]

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
        self._engines.clear()


def _desired(blueprint: Blueprint | None) -> list[DesiredResource]:
    if blueprint is None:
        return []
    return [
        DesiredResource(
            name=r.name,
            type=r.type.value,
            provider=r.provider.value,
            specs=r.specs.model_dump(mode="json", exclude_unset=True),
            dependencies=tuple(r.dependencies),
            metadata=dict(r.metadata),
        )
        for r in blueprint.resources
    ]


class Orchestrator:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        limits: Limits,
        engines: EngineSet,
        run_id: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        bus: EventBus | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.iprs = IPRStore(store, bus)
        self.settings = settings
        self.limits = limits
        self.engines = engines
        self.run_id = run_id
        self._sleep = sleep

    # -- planning ----------------------------------------------------------------------------------

    async def _plan(self, ref: DeploymentRef, target: Blueprint | None, previous: Blueprint | None) -> list[_Step]:
        """Engine plans per engine, placed into waves: dependencies first, deletes last (dependents first)."""
        desired = _desired(target)
        engine_names = {self.engines.name_for(d.provider) for d in desired}
        engine_names |= {self.engines.name_for(r.provider.value) for r in (previous.resources if previous else [])}
        engine_names.add(DEFAULT_ENGINE)
        changes: list[tuple[Change, str]] = []
        for name in sorted(engine_names):
            engine = self.engines.get(name)
            mine = tuple(d for d in desired if self.engines.name_for(d.provider) == name)
            observed = await engine.observe(ref)
            # An engine only deletes what it observes and no other engine now wants.
            plan = await engine.plan(DesiredState(deployment=ref, resources=mine), observed)
            wanted = {d.name for d in desired}
            for change in plan.changes:
                if change.action == "delete" and change.resource in wanted:
                    continue
                changes.append((change, name))
        by_name = {d.name: d for d in desired}
        edges = {d.name: [x for x in d.dependencies if x in by_name] for d in desired}
        levels = dependency_levels(list(by_name), edges)
        deepest = max(levels.values(), default=0)
        deletes = [c for c, _ in changes if c.action == "delete"]
        deleted = {c.resource for c in deletes}
        # Dependents first: the previous blueprint says who depended on whom.
        prev_deps = {
            r.name: [d for d in r.dependencies if d in deleted] for r in (previous.resources if previous else [])
        }
        reverse: dict[str, list[str]] = {name: [] for name in deleted}
        for name in deleted:
            for dep in prev_deps.get(name, []):
                reverse[dep].append(name)
        del_levels = dependency_levels(sorted(deleted), reverse)
        steps = []
        for change, engine_name in changes:
            if change.action == "delete":
                steps.append(_Step(change, engine_name, deepest + del_levels[change.resource], ()))
            else:
                res = by_name[change.resource]
                steps.append(_Step(change, engine_name, levels[change.resource], tuple(edges[res.name])))
        steps.sort(key=lambda s: (s.wave, s.change.resource))
        return steps

    # -- deploy and rollback -------------------------------------------------------------------------

    async def deploy(
        self, principal: Principal, ipr_id: int, *, dry_run: bool = False, progress: Progress | None = None
    ) -> DeployOutcome:
        """Deploy the IPR's current revision (or, with ``dry_run``, only say what would happen).

        Raises:
            Forbidden, IPRNotFound, InvalidTransition (not approved, or already deploying), IPRConflict.
        """
        principal.require(Role.DEPLOYER, "deploy an IPR")
        record = self.iprs.get(ipr_id)
        next_state(record.state, Action.DEPLOY)  # refuse early, before touching any engine
        revision = self.iprs.revision(ipr_id, record.revision)
        target = load_blueprint(revision.blueprint, self.limits)
        ref = DeploymentRef(id=target.name, blueprint=target.name, ipr_id=str(ipr_id), revision=str(record.revision))
        previous_data = self._previous_for_deploy(record)
        previous = load_blueprint(previous_data, self.limits) if previous_data is not None else None
        steps = await self._plan(ref, target, previous)
        if dry_run:
            return self._dry_run(record, steps)
        return await self._execute(
            principal, record, "deploy", Action.DEPLOY, ref, steps, record.revision, previous_data, progress
        )

    async def rollback(self, principal: Principal, ipr_id: int, *, progress: Progress | None = None) -> DeployOutcome:
        """Return to what was deployed before this IPR (or destroy everything if nothing was).

        Raises:
            Forbidden, IPRNotFound, InvalidTransition, IPRConflict.
        """
        principal.require(Role.DEPLOYER, "roll back an IPR")
        record = self.iprs.get(ipr_id)
        next_state(record.state, Action.ROLLBACK)
        previous_data = self._previous_of_last_deploy(ipr_id)
        previous = load_blueprint(previous_data, self.limits) if previous_data is not None else None
        current_data = self._last_attempted_blueprint(ipr_id)
        current = load_blueprint(current_data, self.limits) if current_data is not None else None
        name = current.name if current is not None else record.blueprint_name
        ref = DeploymentRef(id=name, blueprint=name, ipr_id=str(ipr_id), revision=None)
        steps = await self._plan(ref, previous, current)
        return await self._execute(principal, record, "rollback", Action.ROLLBACK, ref, steps, None, None, progress)

    def _previous_for_deploy(self, record: IPRRecord) -> dict[str, Any] | None:
        # Re-deploying or continuing keeps the first attempt's "before" picture, so a rollback still
        # returns to what was there before this IPR touched anything.
        first = self._previous_of_last_deploy(record.id, any_state=True)
        if first is not None or self._has_deploys(record.id):
            return first
        return self.iprs.deployed_blueprint(record.blueprint_name, exclude_ipr=record.id)

    def _has_deploys(self, ipr_id: int) -> bool:
        with self.store.lock:
            rows = list(self.store.db.query("SELECT 1 FROM deployments WHERE ipr_id = ? AND kind = 'deploy'", [ipr_id]))
        return bool(rows)

    def _previous_of_last_deploy(self, ipr_id: int, any_state: bool = True) -> dict[str, Any] | None:
        with self.store.lock:
            rows = list(
                self.store.db.query(
                    "SELECT plan FROM deployments WHERE ipr_id = ? AND kind = 'deploy' ORDER BY id LIMIT 1", [ipr_id]
                )
            )
        if not rows:
            return None
        previous = json.loads(rows[0]["plan"]).get("previous")
        return previous if isinstance(previous, dict) else None

    def _last_attempted_blueprint(self, ipr_id: int) -> dict[str, Any] | None:
        with self.store.lock:
            rows = list(
                self.store.db.query(
                    "SELECT r.blueprint FROM deployments d JOIN ipr_revisions r ON r.ipr_id = d.ipr_id "
                    "AND r.number = d.revision WHERE d.ipr_id = ? AND d.kind = 'deploy' ORDER BY d.id DESC LIMIT 1",
                    [ipr_id],
                )
            )
        return json.loads(rows[0]["blueprint"]) if rows else None

    def _dry_run(self, record: IPRRecord, steps: Sequence[_Step]) -> DeployOutcome:
        changes = [_planned(s) for s in steps]
        counts = _counts(changes)
        return DeployOutcome(
            ipr_id=record.id,
            ipr_state=record.state.value,
            dry_run=True,
            deployment_id=None,
            state="planned",
            summary=f"dry run, nothing changed: {counts}",
            changes=changes,
            steps=[],
        )

    async def _execute(
        self,
        principal: Principal,
        record: IPRRecord,
        kind: Literal["deploy", "rollback"],
        action: Action,
        ref: DeploymentRef,
        steps: Sequence[_Step],
        revision: int | None,
        previous: Mapping[str, Any] | None,
        progress: Progress | None,
    ) -> DeployOutcome:
        started = time.monotonic()
        changes = [_planned(s) for s in steps]
        plan_doc = {"changes": [c.model_dump() for c in changes], "previous": previous, "scope": ref.id}
        deployment_id = 0

        def open_deployment(db: "Database", rec: IPRRecord) -> None:
            nonlocal deployment_id
            cursor = db.execute(
                "INSERT INTO deployments (ipr_id, revision, kind, state, run_id, actor, plan, started_at) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                [rec.id, revision, kind, self.run_id, principal.id, json.dumps(plan_doc), utc_now()],
            )
            deployment_id = int(cursor.lastrowid or 0)

        self.iprs.transition(
            record.id,
            action,
            principal.id,
            payload={"revision": revision, "changes": _counts(changes)},
            expect_version=record.version,
            also=open_deployment,
        )
        outcome = await self._run_steps(deployment_id, ref, steps, progress)
        failed = [r for r, status in outcome.items() if status == "failed"]
        skipped = [r for r, status in outcome.items() if status == "skipped"]
        ok = not failed and not skipped
        summary = f"{kind} {'succeeded' if ok else 'failed'}: {_counts(changes)}"
        if failed:
            summary += f"; failed: {', '.join(sorted(failed))}"
        if skipped:
            summary += f"; skipped (a dependency failed): {', '.join(sorted(skipped))}"

        def close_deployment(db: "Database", rec: IPRRecord) -> None:
            db.execute(
                "UPDATE deployments SET state = ?, summary = ?, finished_at = ? WHERE id = ?",
                ["succeeded" if ok else "failed", summary, utc_now(), deployment_id],
            )

        updates: dict[str, Any] = {}
        if ok:
            updates["deployed_revision"] = revision if kind == "deploy" else None
        final = self.iprs.transition(
            record.id,
            Action.SUCCEED if ok else Action.FAIL,
            SYSTEM.id,
            payload={"deployment": deployment_id, "failed": sorted(failed), "skipped": sorted(skipped)},
            also=close_deployment,
            updates=updates,
        )
        if self.bus is not None:
            self.bus.emit(
                "deployment.finished",
                deployment_id=deployment_id,
                ipr_id=record.id,
                deployment_kind=kind,
                state="succeeded" if ok else "failed",
                engines=sorted({s.engine_name for s in steps}),
                seconds=time.monotonic() - started,
            )
        return DeployOutcome(
            ipr_id=record.id,
            ipr_state=final.state.value,
            dry_run=False,
            deployment_id=deployment_id,
            state="succeeded" if ok else "failed",
            summary=summary,
            changes=changes,
            steps=self.steps(deployment_id),
        )

    async def _run_steps(
        self, deployment_id: int, ref: DeploymentRef, steps: Sequence[_Step], progress: Progress | None
    ) -> dict[str, str]:
        status: dict[str, str] = {}
        total = len(steps)
        done = 0
        limiter = anyio.CapacityLimiter(max(1, self.settings.plan_parallelism))
        waves: dict[int, list[_Step]] = {}
        for step in steps:
            waves.setdefault(step.wave, []).append(step)

        async def run(step: _Step) -> None:
            nonlocal done
            async with limiter:
                status[step.change.resource] = await self._run_one(deployment_id, ref, step, status)
            done += 1
            if progress is not None:
                await progress(
                    done, total, f"{step.change.action} {step.change.resource}: {status[step.change.resource]}"
                )

        for number in sorted(waves):
            async with anyio.create_task_group() as group:
                for step in waves[number]:
                    group.start_soon(run, step)
        return status

    async def _run_one(self, deployment_id: int, ref: DeploymentRef, step: _Step, status: Mapping[str, str]) -> str:
        change = step.change
        blocked = [d for d in step.dependencies if status.get(d) in ("failed", "skipped")]
        if blocked:
            self._record_step(deployment_id, step, 1, "skipped", f"dependency {blocked[0]} did not deploy", None, True)
            return "skipped"
        engine = self.engines.get(step.engine_name)
        attempts = self.settings.deploy_retries + 1
        delay = self.settings.deploy_retry_delay
        for attempt in range(1, attempts + 1):
            row = self._record_step(deployment_id, step, attempt, "running", "", None, False)
            try:
                result = await engine.apply(Plan(deployment=ref, changes=(change,)))
            except TransientEngineError as err:
                self._finish_step(row, "failed", str(err)[:MESSAGE_LIMIT], None)
                if attempt == attempts:
                    return "failed"
                await self._sleep(max(delay, err.delay))
                delay *= 2
                continue
            except (PermanentEngineError, EngineError, AlmaError) as err:
                self._finish_step(row, "failed", str(err)[:MESSAGE_LIMIT], None)
                return "failed"
            outcome = result.outcomes[0] if result.outcomes else None
            if outcome is not None and outcome.status == "failed":
                self._finish_step(row, "failed", outcome.message[:MESSAGE_LIMIT], outcome.engine_id)
                return "failed"
            self._finish_step(
                row, "succeeded", outcome.message if outcome else "", outcome.engine_id if outcome else None
            )
            return "succeeded"
        return "failed"  # pragma: no cover - the loop always returns

    def _record_step(
        self,
        deployment_id: int,
        step: _Step,
        attempt: int,
        status: str,
        message: str,
        engine_id: str | None,
        finished: bool,
    ) -> int:
        now = utc_now()
        with self.store.atomic() as db:
            cursor = db.execute(
                "INSERT INTO deployment_steps (deployment_id, resource, action, engine, wave, attempt, status, "
                "message, engine_id, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    deployment_id,
                    step.change.resource,
                    step.change.action,
                    step.engine_name,
                    step.wave,
                    attempt,
                    status,
                    message,
                    engine_id,
                    now,
                    now if finished else None,
                ],
            )
            return int(cursor.lastrowid or 0)

    def _finish_step(self, row: int, status: str, message: str, engine_id: str | None) -> None:
        with self.store.atomic() as db:
            db.execute(
                "UPDATE deployment_steps SET status = ?, message = ?, engine_id = ?, finished_at = ? WHERE id = ?",
                [status, message, engine_id, utc_now(), row],
            )
            step = dict(
                next(
                    iter(
                        db.query(
                            "SELECT s.*, d.ipr_id FROM deployment_steps s JOIN deployments d ON d.id = s.deployment_id "
                            "WHERE s.id = ?",
                            [row],
                        )
                    )
                )
            )
        if self.bus is not None:
            self.bus.emit(
                "deployment.step",
                step_id=row,
                deployment_id=step["deployment_id"],
                ipr_id=step["ipr_id"],
                resource=step["resource"],
                action=step["action"],
                engine=step["engine"],
                attempt=step["attempt"],
                status=status,
                started_at=step["started_at"],
                finished_at=step["finished_at"],
            )

    # -- records and recovery -------------------------------------------------------------------------

    def steps(self, deployment_id: int) -> list[StepRecord]:
        with self.store.lock:
            rows = self.store.db.query(
                "SELECT resource, action, engine, wave, attempt, status, message, engine_id, started_at, finished_at "
                "FROM deployment_steps WHERE deployment_id = ? ORDER BY id",
                [deployment_id],
            )
            return [StepRecord.model_validate(dict(r)) for r in rows]

    def deployment(self, deployment_id: int) -> DeploymentRecord:
        with self.store.lock:
            rows = list(self.store.db.query("SELECT * FROM deployments WHERE id = ?", [deployment_id]))
        if not rows:
            raise DeploymentNotFoundError(
                f"no deployment {deployment_id}; ipr_get lists an IPR's deployments",
                data={"deployment_id": deployment_id},
            )
        row = dict(rows[0])
        row["plan"] = json.loads(row["plan"])
        row.pop("run_id", None)
        return DeploymentRecord.model_validate({**row, "steps": self.steps(deployment_id)})

    def latest_deployment(self, ipr_id: int) -> DeploymentRecord:
        self.iprs.get(ipr_id)
        with self.store.lock:
            rows = list(
                self.store.db.query("SELECT id FROM deployments WHERE ipr_id = ? ORDER BY id DESC LIMIT 1", [ipr_id])
            )
        if not rows:
            raise DeploymentNotFoundError(f"IPR {ipr_id} has never been deployed", data={"ipr_id": ipr_id})
        return self.deployment(int(rows[0]["id"]))

    def recover(self) -> list[int]:
        """Mark deploys that a previous process left running as interrupted; their IPRs become ``failed``.

        Run at start-up, before serving. Returns the ids of the deployments it marked.
        """
        with self.store.lock:
            rows = list(
                self.store.db.query(
                    "SELECT d.id, d.ipr_id, r.pid FROM deployments d LEFT JOIN server_runs r ON r.id = d.run_id "
                    "WHERE d.state = 'running' AND d.run_id IS NOT ?",
                    [self.run_id],
                )
            )
        marked = []
        for row in rows:
            if row["pid"] is not None and _alive(int(row["pid"])):
                continue  # another live server process is running this deploy
            deployment_id, ipr_id = int(row["id"]), int(row["ipr_id"])

            def interrupt(db: "Database", rec: IPRRecord, deployment_id: int = deployment_id) -> None:
                now = utc_now()
                db.execute(
                    "UPDATE deployment_steps SET status = 'interrupted', finished_at = ?, "
                    "message = 'the server stopped during this step' WHERE deployment_id = ? AND status = 'running'",
                    [now, deployment_id],
                )
                db.execute(
                    "UPDATE deployments SET state = 'interrupted', finished_at = ?, "
                    "summary = 'interrupted: the server stopped; deploy again to continue or roll back' WHERE id = ?",
                    [now, deployment_id],
                )

            try:
                self.iprs.transition(
                    ipr_id,
                    Action.FAIL,
                    SYSTEM.id,
                    payload={"deployment": deployment_id, "interrupted": True},
                    also=interrupt,
                )
            except InvalidTransition:
                # The IPR already left deploying (a racing process finished it): only close the record.
                with self.store.atomic() as db:
                    interrupt(db, self.iprs.get(ipr_id))
            marked.append(deployment_id)
            logger.warning("deployment %d of IPR %d was interrupted by a stop; marked failed", deployment_id, ipr_id)
        return marked


def _planned(step: _Step) -> PlannedChange:
    return PlannedChange(
        resource=step.change.resource,
        action=step.change.action,
        engine=step.engine_name,
        wave=step.wave,
        reason=step.change.reason,
    )


def _counts(changes: Sequence[PlannedChange]) -> str:
    order = ("create", "update", "replace", "delete", "noop")
    tally = {a: sum(1 for c in changes if c.action == a) for a in order}
    return ", ".join(f"{n} {a}" for a, n in tally.items() if n) or "no changes"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous run of this very pid cannot still be deploying: we are that pid now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
