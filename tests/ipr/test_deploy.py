"""Deploy orchestration with the simulation engine: waves, retries, failures, rollback, races, recovery."""

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from alma_mcp.errors import AlmaError, DeploymentNotFoundError, Forbidden, InvalidTransition
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings
from alma_mcp.store import utc_now
from tests.ipr.test_service import ALICE, MODEL, READER

pytestmark = pytest.mark.anyio


def shop(memory: str = "4GB", extra: list[dict[str, Any]] | None = None, **db_meta: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "resources": [
            {"name": "net", "type": "network", "provider": "simulation", "specs": {"cidr": "10.1.0.0/16"}},
            {
                "name": "db",
                "type": "database",
                "provider": "simulation",
                "specs": {"memory": memory},
                "dependencies": ["net"],
                "metadata": db_meta,
            },
            {"name": "cache", "type": "cache", "provider": "simulation", "dependencies": ["net"]},
            {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db", "cache"]},
            *(extra or []),
        ],
    }


@pytest.fixture
def services() -> Iterator[Services]:
    settings = Settings(db_path=":memory:", sim_time_scale=0.0, deploy_retry_delay=0.0)
    with open_services(settings, "test") as opened:
        yield opened


def approved(services: Services, blueprint: dict[str, Any]) -> int:
    ipr_id = services.iprs.create(MODEL, title="change", blueprint=blueprint).ipr.id
    services.iprs.review(ALICE, ipr_id, "approve")
    return ipr_id


async def test_deploy_runs_waves_records_steps_and_reports_progress(services: Services) -> None:
    ipr_id = approved(services, shop())
    seen: list[tuple[int, int, str]] = []

    async def progress(done: int, total: int, message: str) -> None:
        seen.append((done, total, message))

    outcome = await services.orchestrator.deploy(MODEL, ipr_id, progress=progress)
    assert outcome.state == "succeeded"
    assert outcome.ipr_state == "deployed"
    assert outcome.summary == "deploy succeeded: 4 create"
    assert [(c.resource, c.action, c.wave, c.engine) for c in outcome.changes] == [
        ("net", "create", 1, "simulation"),
        ("cache", "create", 2, "simulation"),
        ("db", "create", 2, "simulation"),
        ("web", "create", 3, "simulation"),
    ]
    first = outcome.steps[0]
    assert (first.resource, first.status, first.attempt) == ("net", "succeeded", 1)
    assert sorted((s.resource, s.status) for s in outcome.steps) == [
        ("cache", "succeeded"),
        ("db", "succeeded"),
        ("net", "succeeded"),
        ("web", "succeeded"),
    ]
    assert [d for d, _, _ in seen] == [1, 2, 3, 4]
    assert all(total == 4 for _, total, _ in seen)
    view = services.iprs.get(READER, ipr_id)
    assert view.ipr.deployed_revision == 1
    assert [e.action for e in view.events] == ["open", "approve", "deploy", "succeed"]
    assert view.events[-1].actor == "system:orchestrator"


async def test_deploying_what_is_deployed_is_a_no_op(services: Services) -> None:
    ipr_id = approved(services, shop())
    await services.orchestrator.deploy(MODEL, ipr_id)
    again = await services.orchestrator.deploy(MODEL, ipr_id)
    assert again.state == "succeeded"
    assert again.summary == "deploy succeeded: 4 noop"
    assert {c.action for c in again.changes} == {"noop"}


async def test_dry_run_touches_nothing(services: Services) -> None:
    ipr_id = approved(services, shop())
    outcome = await services.orchestrator.deploy(MODEL, ipr_id, dry_run=True)
    assert outcome.dry_run is True
    assert outcome.deployment_id is None
    assert outcome.summary == "dry run, nothing changed: 4 create"
    view = services.iprs.get(READER, ipr_id)
    assert view.ipr.state == "approved"
    assert view.deployments == []


async def test_deploy_needs_approval_and_the_deployer_role(services: Services) -> None:
    ipr_id = services.iprs.create(MODEL, title="x", blueprint=shop()).ipr.id
    with pytest.raises(InvalidTransition) as info:
        await services.orchestrator.deploy(MODEL, ipr_id)
    assert info.value.message == (
        "cannot deploy an IPR that is 'open'; allowed from 'open': approve, request_changes, reject, revise, close"
    )
    services.iprs.review(ALICE, ipr_id, "approve")
    with pytest.raises(Forbidden):
        await services.orchestrator.deploy(READER, ipr_id)


async def test_a_permanent_failure_skips_dependents_and_fails_the_ipr(services: Services) -> None:
    ipr_id = approved(services, shop(simulation={"fail": "create"}))
    outcome = await services.orchestrator.deploy(MODEL, ipr_id)
    assert outcome.state == "failed"
    assert outcome.ipr_state == "failed"
    assert outcome.summary == ("deploy failed: 4 create; failed: db; skipped (a dependency failed): web")
    steps = {s.resource: (s.status, s.attempt) for s in outcome.steps}
    assert steps == {"net": ("succeeded", 1), "cache": ("succeeded", 1), "db": ("failed", 1), "web": ("skipped", 1)}
    failed = next(s for s in outcome.steps if s.resource == "db")
    assert failed.message.startswith("[engine.permanent] ")


async def test_transient_failures_are_retried_with_every_attempt_recorded(services: Services) -> None:
    ipr_id = approved(services, shop(simulation={"transient_failures": 2}))
    outcome = await services.orchestrator.deploy(MODEL, ipr_id)
    assert outcome.state == "succeeded"
    attempts = [(s.attempt, s.status) for s in outcome.steps if s.resource == "db"]
    assert attempts == [(1, "failed"), (2, "failed"), (3, "succeeded")]


async def test_transient_failures_past_the_retry_bound_fail() -> None:
    settings = Settings(db_path=":memory:", sim_time_scale=0.0, deploy_retry_delay=0.0, deploy_retries=1)
    with open_services(settings, "test") as services:
        ipr_id = approved(services, shop(simulation={"transient_failures": 5}))
        outcome = await services.orchestrator.deploy(MODEL, ipr_id)
    assert outcome.state == "failed"
    assert [(s.attempt, s.status) for s in outcome.steps if s.resource == "db"] == [(1, "failed"), (2, "failed")]


async def test_a_failed_ipr_deploys_again_and_continues(services: Services) -> None:
    ipr_id = approved(services, shop(simulation={"transient_failures": 4}))
    first = await services.orchestrator.deploy(MODEL, ipr_id)
    assert first.state == "failed"
    second = await services.orchestrator.deploy(MODEL, ipr_id)
    assert second.state == "succeeded"
    assert {c.resource: c.action for c in second.changes} == {
        "net": "noop",
        "cache": "noop",
        "db": "create",
        "web": "create",
    }


async def test_rollback_with_nothing_before_destroys_everything_dependents_first(services: Services) -> None:
    ipr_id = approved(services, shop())
    await services.orchestrator.deploy(MODEL, ipr_id)
    outcome = await services.orchestrator.rollback(MODEL, ipr_id)
    assert outcome.state == "succeeded"
    assert outcome.ipr_state == "rolled_back"
    assert [(c.resource, c.action) for c in outcome.changes] == [
        ("web", "delete"),
        ("cache", "delete"),
        ("db", "delete"),
        ("net", "delete"),
    ]
    waves = {c.resource: c.wave for c in outcome.changes}
    assert waves["web"] < waves["db"] < waves["net"]
    assert services.iprs.get(READER, ipr_id).ipr.deployed_revision is None


async def test_rollback_returns_to_the_previously_deployed_blueprint(services: Services) -> None:
    first = approved(services, shop())
    await services.orchestrator.deploy(MODEL, first)
    second = approved(
        services,
        shop(
            memory="8GB",
            extra=[{"name": "worker", "type": "compute", "provider": "simulation", "dependencies": ["db"]}],
        ),
    )
    deployed = await services.orchestrator.deploy(MODEL, second)
    assert {c.resource: c.action for c in deployed.changes if c.action != "noop"} == {
        "db": "update",
        "worker": "create",
    }
    back = await services.orchestrator.rollback(MODEL, second)
    assert {c.resource: c.action for c in back.changes if c.action != "noop"} == {"db": "update", "worker": "delete"}
    assert back.ipr_state == "rolled_back"
    again = await services.orchestrator.deploy(MODEL, first)
    assert again.summary == "deploy succeeded: 4 noop"


async def test_two_concurrent_deploys_one_runs_the_other_gets_a_coded_error(services: Services) -> None:
    ipr_id = approved(services, shop())
    results: list[str] = []

    async def attempt() -> None:
        try:
            outcome = await services.orchestrator.deploy(MODEL, ipr_id)
            results.append(outcome.state)
        except AlmaError as err:
            results.append(err.code)

    async with anyio.create_task_group() as group:
        group.start_soon(attempt)
        group.start_soon(attempt)
    assert sorted(results) in (
        ["ipr.conflict", "succeeded"],
        ["ipr.invalid_transition", "succeeded"],
    )
    assert len(services.iprs.get(READER, ipr_id).deployments) == 1


async def test_deployment_records_and_unknown_ids(services: Services) -> None:
    ipr_id = approved(services, shop())
    outcome = await services.orchestrator.deploy(MODEL, ipr_id)
    assert outcome.deployment_id is not None
    record = services.orchestrator.deployment(outcome.deployment_id)
    assert record.kind == "deploy"
    assert record.state == "succeeded"
    assert record.revision == 1
    assert record.plan["scope"] == "shop"
    assert services.orchestrator.latest_deployment(ipr_id).id == outcome.deployment_id
    with pytest.raises(DeploymentNotFoundError) as info:
        services.orchestrator.deployment(999)
    assert info.value.code == "deploy.not_found"


async def test_recovery_marks_a_deploy_left_running_by_a_dead_process(services: Services) -> None:
    ipr_id = approved(services, shop())
    store = services.store
    with store.atomic() as db:
        # What a killed process leaves behind: deploying, a running deployment, a running step.
        db.execute(
            "INSERT INTO server_runs (version, transport, pid, started_at) VALUES ('x', 'stdio', ?, ?)",
            [2**22 + 12345, utc_now()],
        )
        dead_run = db.execute("SELECT max(id) FROM server_runs").fetchone()[0]
        db.execute("UPDATE iprs SET state = 'deploying', version = version + 1 WHERE id = ?", [ipr_id])
        db.execute(
            "INSERT INTO deployments (ipr_id, revision, kind, state, run_id, actor, plan, started_at) "
            "VALUES (?, 1, 'deploy', 'running', ?, 'mcp:local', ?, ?)",
            [ipr_id, dead_run, json.dumps({"previous": None}), utc_now()],
        )
        dep = db.execute("SELECT max(id) FROM deployments").fetchone()[0]
        db.execute(
            "INSERT INTO deployment_steps (deployment_id, resource, action, engine, wave, attempt, status, started_at) "
            "VALUES (?, 'net', 'create', 'simulation', 1, 1, 'running', ?)",
            [dep, utc_now()],
        )
    assert services.orchestrator.recover() == [dep]
    record = services.orchestrator.deployment(dep)
    assert record.state == "interrupted"
    assert [(s.resource, s.status) for s in record.steps] == [("net", "interrupted")]
    assert services.iprs.get(READER, ipr_id).ipr.state == "failed"
    assert services.orchestrator.recover() == []
    outcome = await services.orchestrator.deploy(MODEL, ipr_id)
    assert outcome.state == "succeeded"


async def test_the_deployer_role_is_needed_to_roll_back(services: Services) -> None:
    ipr_id = approved(services, shop())
    await services.orchestrator.deploy(MODEL, ipr_id)
    viewer = Principal(id="user:v", roles=frozenset({Role.VIEWER}))
    with pytest.raises(Forbidden):
        await services.orchestrator.rollback(viewer, ipr_id)
