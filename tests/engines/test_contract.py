"""One contract for every engine: each test runs against every factory in ``ENGINES``.

Real engines join the list with fake clients; resources here use the engine's own name as their
provider and plain container specs, so any backend can carry them.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from alma_mcp.errors import DeploymentNotFound
from alma_mcp.store import Store
from engines.base import (
    Action,
    Change,
    DeploymentRef,
    DesiredResource,
    DesiredState,
    Engine,
    ObservedResource,
    Plan,
)
from tests.engines.backends import EngineCase, engine_cases

CASES = engine_cases()
IMAGES: dict[str, str] = {case.name: case.image for case in CASES}
OTHER_IMAGES: dict[str, str] = {case.name: case.other_image for case in CASES}

pytestmark = pytest.mark.anyio


@pytest.fixture(params=CASES, ids=lambda case: case.name)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    store = Store.open(":memory:")
    case: EngineCase = request.param
    made: Engine = case.factory(store)
    try:
        yield made
    finally:
        await made.aclose()
        store.close()


def ref(deployment_id: str = "d1") -> DeploymentRef:
    return DeploymentRef(id=deployment_id, blueprint="shop", ipr_id="7", revision="1")


def resource(engine: Engine, name: str, **specs: Any) -> DesiredResource:
    return DesiredResource(
        name=name, type="container", provider=engine.name, specs={"image": IMAGES[engine.name], "memory": 256, **specs}
    )


def state(deployment: DeploymentRef, *resources: DesiredResource) -> DesiredState:
    return DesiredState(deployment=deployment, resources=resources)


async def converge(engine: Engine, desired: DesiredState) -> Plan:
    """Plan against what exists, apply it, and return the plan that was applied."""
    plan = await engine.plan(desired, await engine.observe(desired.deployment))
    await engine.apply(plan)
    return plan


async def test_plan_is_pure_and_repeatable(engine: Engine) -> None:
    d = ref()
    await converge(engine, state(d, resource(engine, "db"), resource(engine, "old")))
    desired = state(d, resource(engine, "db", memory=512), resource(engine, "web"))
    before = await engine.observe(d)

    first = await engine.plan(desired, before)
    second = await engine.plan(desired, before)

    assert first == second
    assert await engine.observe(d) == before
    assert [(c.resource, c.action) for c in first.changes] == [("db", "update"), ("web", "create"), ("old", "delete")]


async def test_apply_then_observe_agrees_and_a_second_plan_is_all_noop(engine: Engine) -> None:
    d = ref()
    desired = state(d, resource(engine, "db"), resource(engine, "web", port=80))

    plan = await engine.plan(desired, await engine.observe(d))
    result = await engine.apply(plan)

    assert [c.action for c in plan.changes] == ["create", "create"]
    assert result.ok
    assert [(o.resource, o.status) for o in result.outcomes] == [("db", "succeeded"), ("web", "succeeded")]
    observed = {o.name: o for o in await engine.observe(d)}
    assert {name: o.fingerprint for name, o in observed.items()} == {r.name: r.fingerprint for r in desired.resources}
    assert all(o.status == "running" for o in observed.values())
    again = await engine.plan(desired, list(observed.values()))
    assert {c.action for c in again.changes} == {"noop"}


async def test_update_and_replace_are_planned_for_the_right_changes(engine: Engine) -> None:
    d = ref()
    await converge(engine, state(d, resource(engine, "db"), resource(engine, "web")))

    desired = state(d, resource(engine, "db", memory=512), resource(engine, "web", image=OTHER_IMAGES[engine.name]))
    plan = await engine.plan(desired, await engine.observe(d))

    assert [(c.resource, c.action) for c in plan.changes] == [("db", "update"), ("web", "replace")]
    assert "memory" in plan.changes[0].reason
    assert "image" in plan.changes[1].reason
    await engine.apply(plan)
    after = await engine.plan(desired, await engine.observe(d))
    assert {c.action for c in after.changes} == {"noop"}


async def test_removed_resources_are_planned_for_delete_and_deleted(engine: Engine) -> None:
    d = ref()
    await converge(engine, state(d, resource(engine, "db"), resource(engine, "web"), resource(engine, "cache")))

    plan = await converge(engine, state(d, resource(engine, "db")))

    assert [(c.resource, c.action) for c in plan.changes] == [("db", "noop"), ("cache", "delete"), ("web", "delete")]
    assert [o.name for o in await engine.observe(d)] == ["db"]


async def test_destroy_is_idempotent(engine: Engine) -> None:
    d = ref()
    await converge(engine, state(d, resource(engine, "db"), resource(engine, "web")))

    first = await engine.destroy(d)
    second = await engine.destroy(d)

    assert sorted((o.resource, o.action, o.status) for o in first.outcomes) == [
        ("db", "delete", "succeeded"),
        ("web", "delete", "succeeded"),
    ]
    assert second.outcomes == ()
    assert await engine.observe(d) == []


async def test_destroying_a_deployment_that_never_existed_is_empty(engine: Engine) -> None:
    assert (await engine.destroy(ref("never"))).outcomes == ()
    assert await engine.observe(ref("never")) == []


async def test_deployments_are_isolated(engine: Engine) -> None:
    one, two = ref("one"), ref("two")
    await converge(engine, state(one, resource(engine, "web")))
    await converge(engine, state(two, resource(engine, "web", memory=1024)))

    await engine.destroy(one)

    assert await engine.observe(one) == []
    [kept] = await engine.observe(two)
    assert kept.name == "web"
    assert kept.fingerprint == resource(engine, "web", memory=1024).fingerprint


@pytest.mark.parametrize("action", ["update", "replace", "delete"])
async def test_a_change_to_an_unknown_resource_raises_deployment_not_found(engine: Engine, action: Action) -> None:
    d = ref()
    await converge(engine, state(d, resource(engine, "web")))
    ghost = ObservedResource(
        name="ghost", type="container", provider=engine.name, fingerprint="0" * 64, status="running", engine_id="x"
    )
    desired = None if action == "delete" else resource(engine, "ghost")
    change = Change(resource="ghost", action=action, reason="test", desired=desired, observed=ghost)

    with pytest.raises(DeploymentNotFound) as caught:
        await engine.apply(Plan(deployment=d, changes=(change,)))

    assert caught.value.code == "deployment.not_found"
    assert "ghost" in caught.value.message
    assert d.id in caught.value.message
    assert [o.name for o in await engine.observe(d)] == ["web"]


async def test_the_engine_satisfies_the_protocol_and_is_healthy(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name
    assert (await engine.health()).ok
