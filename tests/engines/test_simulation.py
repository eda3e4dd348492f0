"""The simulation engine beyond the contract: persistence, failure injection, timing, progress."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alma_mcp.errors import ConfigError, PermanentEngineError, TransientEngineError
from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.base import Change, DeploymentRef, DesiredResource, DesiredState, Plan, ResourceOutcome
from engines.simulation import (
    FailureSpec,
    SimulationEngine,
    duration,
    failure_from_metadata,
    parse_fail_setting,
    parse_failure,
)

D = DeploymentRef(id="d1", blueprint="shop")


def res(name: str, type_: str = "container", metadata: dict[str, Any] | None = None, **specs: Any) -> DesiredResource:
    return DesiredResource(
        name=name, type=type_, provider="simulation", specs={"image": "nginx", **specs}, metadata=metadata or {}
    )


def desired(*resources: DesiredResource, deployment: DeploymentRef = D) -> DesiredState:
    return DesiredState(deployment=deployment, resources=resources)


async def converge(engine: SimulationEngine, target: DesiredState) -> list[ResourceOutcome]:
    plan = await engine.plan(target, await engine.observe(target.deployment))
    return list((await engine.apply(plan)).outcomes)


@pytest.fixture
def store() -> Store:
    return Store.open(":memory:")


# -- plan ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_plan_gives_each_change_a_human_reason(store: Store) -> None:
    engine = SimulationEngine(store)
    await converge(
        engine,
        desired(res("same"), res("mem", memory=1), res("img"), res("kind"), res("tpl", template="a"), res("gone")),
    )
    target = desired(
        res("same"),
        res("mem", memory=2),
        res("img", image="httpd"),
        res("kind", type_="compute"),
        res("tpl", template="b"),
        res("new"),
    )

    plan = await engine.plan(target, await engine.observe(D))

    assert [(c.resource, c.action, c.reason) for c in plan.changes] == [
        ("same", "noop", "unchanged"),
        ("mem", "update", "specs changed: memory"),
        ("img", "replace", "image changed"),
        ("kind", "replace", "type changed: container -> compute"),
        ("tpl", "replace", "template changed"),
        ("new", "create", "not present"),
        ("gone", "delete", "no longer in the blueprint"),
    ]


@pytest.mark.anyio
async def test_an_ostemplate_or_provider_change_replaces(store: Store) -> None:
    engine = SimulationEngine(store)
    await converge(engine, desired(res("ct", ostemplate="debian-12"), res("vm")))
    moved = DesiredResource(name="vm", type="container", provider="proxmox", specs={"image": "nginx"})

    plan = await engine.plan(desired(res("ct", ostemplate="debian-13"), moved), await engine.observe(D))

    assert [(c.action, c.reason) for c in plan.changes] == [
        ("replace", "ostemplate changed"),
        ("replace", "provider changed: simulation -> proxmox"),
    ]


@pytest.mark.anyio
async def test_equal_specs_under_another_fingerprint_plan_an_update(store: Store) -> None:
    engine = SimulationEngine(store)
    await converge(engine, desired(res("web")))
    [observed] = await engine.observe(D)
    stale = observed.model_copy(update={"fingerprint": "old-scheme"})

    plan = await engine.plan(desired(res("web")), [stale])

    assert [(c.action, c.reason) for c in plan.changes] == [("update", "fingerprint changed")]
    assert (await engine.apply(plan)).ok


@pytest.mark.anyio
async def test_a_create_without_a_desired_resource_is_a_permanent_error(store: Store) -> None:
    engine = SimulationEngine(store)
    plan = Plan(deployment=D, changes=(Change(resource="web", action="create", reason="hand-made"),))

    with pytest.raises(PermanentEngineError, match="carries no desired resource"):
        await engine.apply(plan)


@given(specs=st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=8), max_size=5))
@settings(max_examples=25, deadline=None)
def test_whatever_the_specs_applying_a_plan_leaves_nothing_to_do(specs: dict[str, Any]) -> None:
    async def check() -> None:
        store = Store.open(":memory:")
        engine = SimulationEngine(store)
        target = desired(DesiredResource(name="r", type="service", provider="simulation", specs=specs))
        await converge(engine, target)
        [observed] = await engine.observe(D)
        assert observed.specs == specs
        plan = await engine.plan(target, [observed])
        assert [c.action for c in plan.changes] == ["noop"]
        store.close()

    anyio.run(check)


# -- persistence -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    path = str(tmp_path / "alma.db")
    target = desired(res("db", type_="database", memory=512), res("web"))
    first = Store.open(path)
    await converge(SimulationEngine(first), target)
    first.close()

    reopened = Store.open(path)
    engine = SimulationEngine(reopened)
    observed = await engine.observe(D)
    plan = await engine.plan(target, observed)
    reopened.close()

    assert [(o.name, o.engine_id, o.status) for o in observed] == [
        ("db", "sim-d1-db", "running"),
        ("web", "sim-d1-web", "running"),
    ]
    assert {c.action for c in plan.changes} == {"noop"}


@pytest.mark.anyio
async def test_an_update_keeps_created_at_and_a_replayed_create_overwrites(store: Store) -> None:
    engine = SimulationEngine(store)
    await converge(engine, desired(res("web", memory=1)))
    created = store.db.execute("SELECT created_at FROM sim_resources").fetchone()[0]
    await converge(engine, desired(res("web", memory=2)))
    assert store.db.execute("SELECT created_at FROM sim_resources").fetchone()[0] == created

    create = await engine.plan(desired(res("web", memory=3)), [])
    await engine.apply(create)

    [observed] = await engine.observe(D)
    assert observed.specs["memory"] == 3


# -- failure injection -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_permanent_failure_raises_with_its_message_and_changes_nothing(store: Store) -> None:
    engine = SimulationEngine(store, fail_resources={"web": "fail:create"})
    plan = await engine.plan(desired(res("web")), [])

    with pytest.raises(PermanentEngineError) as caught:
        await engine.apply(plan)

    assert str(caught.value) == "[engine.permanent] simulated failure creating 'web'"
    assert caught.value.data == {"deployment": "d1", "resource": "web", "action": "create"}
    assert await engine.observe(D) == []


@pytest.mark.anyio
async def test_metadata_can_fail_only_the_update(store: Store) -> None:
    engine = SimulationEngine(store)
    failing = {"simulation": {"fail": "update"}}
    await converge(engine, desired(res("web", metadata=failing, memory=1)))
    before = await engine.observe(D)

    with pytest.raises(PermanentEngineError, match="simulated failure updating 'web'"):
        await converge(engine, desired(res("web", metadata=failing, memory=2)))

    assert await engine.observe(D) == before


@pytest.mark.anyio
async def test_fail_any_also_blocks_delete_and_destroy_ignores_injection(store: Store) -> None:
    await converge(SimulationEngine(store), desired(res("web"), res("db")))
    engine = SimulationEngine(store, fail_resources={"web": "fail:any"})

    with pytest.raises(PermanentEngineError, match="simulated failure deleting 'web'"):
        await converge(engine, desired(res("db")))
    assert [o.name for o in await engine.observe(D)] == ["db", "web"]

    assert [o.resource for o in (await engine.destroy(D)).outcomes] == ["db", "web"]


@pytest.mark.anyio
async def test_the_first_failure_of_a_multi_change_plan_raises_after_earlier_ones_persist(store: Store) -> None:
    engine = SimulationEngine(store, fail_resources={"b": "fail:create"})
    seen: list[str] = []

    async def record(outcome: ResourceOutcome) -> None:
        seen.append(outcome.resource)

    plan = await engine.plan(desired(res("a"), res("b"), res("c")), [])
    with pytest.raises(PermanentEngineError):
        await engine.apply(plan, record)

    assert seen == ["a"]
    assert [o.name for o in await engine.observe(D)] == ["a"]


@pytest.mark.anyio
async def test_transient_failures_fail_n_attempts_across_calls_then_succeed(store: Store) -> None:
    engine = SimulationEngine(store)
    plan = await engine.plan(desired(res("web", metadata={"simulation": {"transient_failures": 2}})), [])

    for left in (1, 0):
        with pytest.raises(TransientEngineError) as caught:
            await engine.apply(plan)
        assert caught.value.delay == 0
        assert caught.value.message == f"simulated transient failure creating 'web' ({left} more to come)"
        assert await engine.observe(D) == []
    result = await engine.apply(plan)

    assert result.ok
    assert [o.name for o in await engine.observe(D)] == ["web"]


@pytest.mark.anyio
async def test_transient_attempts_are_counted_across_a_store_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "alma.db")
    target = desired(res("web"))
    first = Store.open(path)
    engine = SimulationEngine(first, fail_resources={"web": "transient:2"})
    plan = await engine.plan(target, [])
    with pytest.raises(TransientEngineError):
        await engine.apply(plan)
    first.close()

    second = Store.open(path)
    engine = SimulationEngine(second, fail_resources={"web": "transient:2"})
    with pytest.raises(TransientEngineError, match="0 more to come"):
        await engine.apply(plan)
    result = await engine.apply(plan)
    second.close()

    assert result.ok


@pytest.mark.anyio
async def test_transient_counts_are_per_deployment(store: Store) -> None:
    engine = SimulationEngine(store, fail_resources={"web": "transient:1"})
    other = DeploymentRef(id="d2", blueprint="shop")
    for deployment in (D, other):
        plan = await engine.plan(desired(res("web"), deployment=deployment), [])
        with pytest.raises(TransientEngineError):
            await engine.apply(plan)
        assert (await engine.apply(plan)).ok


@pytest.mark.anyio
@pytest.mark.parametrize(
    "metadata",
    [{"fail": "explode"}, {"transient_failures": -1}, {"transient_failures": True}, {"retries": 1}, ["fail"], "boom"],
)
async def test_invalid_simulation_metadata_is_a_permanent_error(store: Store, metadata: object) -> None:
    engine = SimulationEngine(store)
    plan = await engine.plan(desired(res("web", metadata={"simulation": metadata})), [])

    with pytest.raises(PermanentEngineError, match=r"invalid metadata\.simulation"):
        await engine.apply(plan)


def test_metadata_accepts_the_string_form_too() -> None:
    assert failure_from_metadata(res("x", metadata={"simulation": "transient:3"})) == FailureSpec(transient=3)
    assert failure_from_metadata(res("x")) is None


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("fail:create", FailureSpec(fail="create")),
        (" fail : any ", FailureSpec(fail="any")),
        ("transient:2", FailureSpec(transient=2)),
    ],
)
def test_failure_specs_parse(text: str, spec: FailureSpec) -> None:
    assert parse_failure(text) == spec


@pytest.mark.parametrize("text", ["fail", "fail:explode", "transient:-1", "transient:x", "crash:1", ""])
def test_bad_failure_specs_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="expected fail:"):
        parse_failure(text)


def test_the_fail_setting_parses_name_spec_pairs() -> None:
    assert parse_fail_setting("name=fail:create, other=transient:2,") == {
        "name": FailureSpec(fail="create"),
        "other": FailureSpec(transient=2),
    }


@pytest.mark.parametrize(
    ("value", "named"), [("web", "'web'"), ("=fail:create", "'=fail:create'"), ("web=oops", "web=oops")]
)
def test_a_bad_fail_setting_is_a_config_error_naming_the_entry(value: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fail_setting(value)
    assert caught.value.code == "config.invalid"
    assert named in caught.value.message


def test_the_constructor_rejects_bad_input(store: Store) -> None:
    with pytest.raises(ConfigError):
        SimulationEngine(store, fail_resources={"web": "sometimes"})
    with pytest.raises(ConfigError):
        SimulationEngine(store, time_scale=-1)


@pytest.mark.anyio
async def test_from_settings_reads_the_environment(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMA_SIM_FAIL", "name=fail:create,other=transient:2")
    monkeypatch.setenv("ALMA_SIM_TIME_SCALE", "0")
    engine = SimulationEngine.from_settings(store, Settings())

    with pytest.raises(PermanentEngineError, match="creating 'name'"):
        await engine.apply(await engine.plan(desired(res("name")), []))
    plan = await engine.plan(desired(res("other")), [])
    for _ in range(2):
        with pytest.raises(TransientEngineError):
            await engine.apply(plan)
    assert (await engine.apply(plan)).ok


@pytest.mark.anyio
async def test_from_settings_accepts_a_string_and_missing_fields(store: Store) -> None:
    as_text = Settings(db_path=":memory:").model_copy(update={"sim_fail": "web=fail:create", "sim_time_scale": 0.0})
    engine = SimulationEngine.from_settings(store, as_text)
    with pytest.raises(PermanentEngineError):
        await engine.apply(await engine.plan(desired(res("web")), []))

    bare = SimulationEngine.from_settings(store, cast(Settings, SimpleNamespace()))  # an older Settings
    with anyio.fail_after(1):  # no failures, and the default time scale of 0 does not sleep
        assert (await bare.apply(await bare.plan(desired(res("web")), []))).ok


# -- timing and progress ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_time_scale_sleeps_each_type_and_action_duration(store: Store) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    engine = SimulationEngine(store, time_scale=0.5, sleep=fake_sleep)
    await converge(engine, desired(res("vm", type_="compute"), res("web", memory=1)))
    await converge(engine, desired(res("vm", type_="compute"), res("web", memory=2), res("odd", type_="mystery")))
    await engine.destroy(D)

    assert sleeps == [
        60.0,  # create compute
        7.5,  # create container
        3.75,  # update container (the unchanged vm costs nothing)
        15.0,  # create an unknown type: the default 30 s
        3.75,  # destroy: odd, then vm, then web, by name
        15.0,
        1.875,
    ]
    assert duration("compute", "replace") > duration("compute", "create") > duration("compute", "delete")


@pytest.mark.anyio
async def test_progress_receives_each_outcome_in_order(store: Store) -> None:
    engine = SimulationEngine(store)
    await converge(engine, desired(res("keep"), res("drop")))
    seen: list[ResourceOutcome] = []

    async def record(outcome: ResourceOutcome) -> None:
        seen.append(outcome)

    plan = await engine.plan(desired(res("keep"), res("new", memory=1)), await engine.observe(D))
    result = await engine.apply(plan, record)

    assert seen == list(result.outcomes)
    assert [(o.resource, o.action, o.message, o.engine_id) for o in seen] == [
        ("keep", "noop", "unchanged", "sim-d1-keep"),
        ("new", "create", "created 'new'", "sim-d1-new"),
        ("drop", "delete", "deleted 'drop'", "sim-d1-drop"),
    ]


# -- concurrency and health ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_one_deployment_can_apply_a_wave_in_parallel(store: Store) -> None:
    engine = SimulationEngine(store, time_scale=0.0001)
    plan = await engine.plan(desired(*(res(f"r{i}") for i in range(20))), [])
    single = [plan.model_copy(update={"changes": (change,)}) for change in plan.changes]

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for one in single:
                tg.start_soon(engine.apply, one)

    assert len(await engine.observe(D)) == 20


@pytest.mark.anyio
async def test_health_counts_resources_and_deployments(store: Store) -> None:
    engine = SimulationEngine(store)
    await converge(engine, desired(res("a"), res("b")))
    await converge(engine, desired(res("a"), deployment=DeploymentRef(id="d2", blueprint="shop")))

    health = await engine.health()

    assert health.ok
    assert health.detail == "simulation engine: 3 resources in 2 deployments"


@pytest.mark.anyio
async def test_health_is_not_ok_when_the_store_is_closed(store: Store) -> None:
    engine = SimulationEngine(store)
    store.close()

    health = await engine.health()

    assert not health.ok
    assert "database unavailable" in health.detail
