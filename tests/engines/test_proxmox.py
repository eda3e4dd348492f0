"""The proxmox engine against fakepve: auth, TLS, clone and create, tasks, errors, power, destroy, end to end.

Each test gets a fresh fake from fakepve's ``fakepve`` fixture (127.0.0.1, a random port, tasks
finishing at once). What the engine did is checked through the PVE API with a separate proxmoxer
client, as an operator would see it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fakepve.certs import make_cert  # type: ignore[import-untyped]
from proxmoxer import ProxmoxAPI  # type: ignore[import-untyped]
from proxmoxer.tools import Tasks  # type: ignore[import-untyped]
from pydantic import SecretStr

from alma_mcp.errors import (
    ConfigError,
    DeploymentNotFound,
    InvalidRequest,
    PermanentEngineError,
    TransientEngineError,
)
from alma_mcp.services import open_services
from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.base import DeploymentRef, DesiredResource, DesiredState, ObservedResource
from engines.proxmox import (
    AUTH_HELP_API,
    AUTH_HELP_LOGIN,
    INCOMPLETE,
    ProxmoxEngine,
    plan_changes,
    tag,
    tags_for,
)
from tests.engines.case_proxmox import (
    OSTEMPLATE_FILE,
    TEMPLATE_NAME,
    TEMPLATE_VMID,
    TOKEN_NAME,
    TOKEN_VALUE,
    USER,
    seed,
    settings_for,
)
from tests.ipr.test_service import ALICE, MODEL

pytestmark = pytest.mark.anyio

OSTEMPLATE = f"local:vztmpl/{OSTEMPLATE_FILE}"


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store.open(":memory:")
    yield opened
    opened.close()


@pytest.fixture
def pve(fakepve: Any) -> Any:
    seed(fakepve)
    return fakepve


@pytest.fixture
def api(pve: Any, fakepve_cafile: str) -> Iterator[Any]:
    """A separate client: what an operator sees through the PVE API."""
    client = ProxmoxAPI(
        pve.host, port=pve.port, user=USER, token_name=TOKEN_NAME, token_value=TOKEN_VALUE, verify_ssl=fakepve_cafile
    )
    yield client
    client._store["session"].close()


def build(store: Store, pve: Any, cafile: str, **overrides: Any) -> ProxmoxEngine:
    return ProxmoxEngine.from_settings(store, settings_for(pve.host, pve.port, cafile, **overrides))


@pytest.fixture
async def engine(store: Store, pve: Any, fakepve_cafile: str) -> AsyncIterator[ProxmoxEngine]:
    made = build(store, pve, fakepve_cafile)
    yield made
    await made.aclose()


def ref(deployment: str = "shop") -> DeploymentRef:
    return DeploymentRef(id=deployment, blueprint=deployment, ipr_id="1", revision="1")


def vm(name: str = "web", **specs: Any) -> DesiredResource:
    return DesiredResource(
        name=name, type="compute", provider="proxmox", specs={"template": TEMPLATE_NAME, "cpu": 2, **specs}
    )


def ct(name: str = "db", **specs: Any) -> DesiredResource:
    return DesiredResource(name=name, type="database", provider="proxmox", specs={"memory": 1024, **specs})


async def converge(engine: ProxmoxEngine, deployment: DeploymentRef, *resources: DesiredResource) -> None:
    desired = DesiredState(deployment=deployment, resources=resources)
    result = await engine.apply(await engine.plan(desired, await engine.observe(deployment)))
    assert result.ok


def ours(api: Any, deployment: DeploymentRef) -> list[dict[str, Any]]:
    """Guests carrying the deployment's tag, from /cluster/resources."""
    dep_tag = tag("alma-dep", deployment.id)
    return [r for r in api.cluster.resources.get(type="vm") if dep_tag in str(r.get("tags", "")).split(";")]


def vmid_of(observed: ObservedResource) -> int:
    return int(observed.engine_id.split("/")[1])


# -- authentication and TLS ----------------------------------------------------------------------


async def test_a_token_login_is_healthy_and_reports_the_version(engine: ProxmoxEngine) -> None:
    health = await engine.health()

    assert health.ok
    assert "9.0.10" in health.detail


async def test_a_wrong_token_is_a_permanent_authentication_failure(store: Store, pve: Any, fakepve_cafile: str) -> None:
    engine = build(store, pve, fakepve_cafile, proxmox_token_value=SecretStr("not-the-token"))

    with pytest.raises(PermanentEngineError) as caught:
        await engine.observe(ref())

    assert caught.value.message == AUTH_HELP_API == "authentication failure: check ALMA_PROXMOX_TOKEN_*"
    assert caught.value.data["status"] == 401
    assert not (await engine.health()).ok
    await engine.aclose()


async def test_a_password_login_is_used_when_no_token_is_set(store: Store, pve: Any, fakepve_cafile: str) -> None:
    password = {"proxmox_token_name": None, "proxmox_token_value": None}
    good = build(store, pve, fakepve_cafile, proxmox_password=SecretStr("secret"), **password)
    bad = build(store, pve, fakepve_cafile, proxmox_password=SecretStr("wrong-password"), **password)

    assert (await good.health()).ok
    with pytest.raises(PermanentEngineError) as caught:
        await bad.observe(ref())
    assert caught.value.message == AUTH_HELP_LOGIN
    assert "wrong-password" not in str(caught.value.to_payload())
    pve.fail("POST", "/access/ticket", status=503, message="service unavailable", times=1)
    with pytest.raises(TransientEngineError):
        await build(store, pve, fakepve_cafile, proxmox_password=SecretStr("secret"), **password).observe(ref())
    await good.aclose()


async def test_tls_is_verified_with_the_configured_ca_and_another_ca_is_a_permanent_error(
    store: Store, pve: Any, fakepve_cafile: str, tmp_path: Path
) -> None:
    # A wrong CA does not fix itself: retrying cannot help, so it is permanent and says what to set.
    other_ca, _, _ = make_cert(str(tmp_path), name="other")
    wrong = build(store, pve, fakepve_cafile, proxmox_ca_file=Path(other_ca))
    system = build(store, pve, fakepve_cafile, proxmox_ca_file=None)
    trusted = build(store, pve, fakepve_cafile)

    for engine in (wrong, system):
        with pytest.raises(PermanentEngineError) as caught:
            await engine.observe(ref())
        assert caught.value.message.startswith(f"TLS verification of Proxmox VE at https://{pve.host}:{pve.port}")
        assert "ALMA_PROXMOX_CA_FILE" in caught.value.message
    assert await trusted.observe(ref()) == []
    for engine in (wrong, system, trusted):
        await engine.aclose()


async def test_an_unreachable_host_is_transient(store: Store, pve: Any, fakepve_cafile: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    engine = build(store, pve, fakepve_cafile, proxmox_port=closed_port)

    with pytest.raises(TransientEngineError) as caught:
        await engine.apply(
            await engine.plan(DesiredState(deployment=ref(), resources=(vm(),)), []),
        )

    assert caught.value.message.startswith(f"cannot reach Proxmox VE at https://127.0.0.1:{closed_port}")
    assert "Connection refused" in caught.value.message
    health = await engine.health()
    assert not health.ok
    assert "cannot reach" in health.detail
    await engine.aclose()


def test_settings_without_host_user_or_credentials_are_config_errors(store: Store) -> None:
    base = {"proxmox_host": "pve.example.com", "proxmox_user": USER}
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "ALMA_PROXMOX_HOST"),
        ({"proxmox_host": "pve.example.com"}, "ALMA_PROXMOX_USER"),
        (base, "no Proxmox credentials"),
        ({**base, "proxmox_token_name": "alma"}, "set both ALMA_PROXMOX_TOKEN_NAME"),
        ({**base, "proxmox_password": SecretStr("x"), "proxmox_ca_file": Path("/nonexistent/ca.pem")}, "CA_FILE"),
    ]
    for values, expected in cases:
        with pytest.raises(ConfigError) as caught:
            ProxmoxEngine.from_settings(store, Settings(**values))
        assert expected in caught.value.message


# -- deploying -----------------------------------------------------------------------------------


async def test_a_compute_resource_is_cloned_configured_tagged_started_and_observed(
    engine: ProxmoxEngine, api: Any, pve: Any
) -> None:
    d = ref()
    web = vm(memory=4096, storage=50 * 1024)

    plan = await engine.plan(DesiredState(deployment=d, resources=(web,)), [])
    result = await engine.apply(plan)

    [observed] = await engine.observe(d)
    assert (observed.name, observed.status, observed.fingerprint) == ("web", "running", web.fingerprint)
    assert result.outcomes[0].engine_id == observed.engine_id
    vmid = vmid_of(observed)
    config = api.nodes("pve1").qemu(vmid).config.get()
    assert (config["name"], config["cores"], config["memory"]) == ("web", "2", "4096")
    assert config["tags"] == "alma;alma-dep-shop;alma-res-web"
    assert web.fingerprint in config["description"]
    assert api.nodes("pve1").qemu(vmid).status.current.get()["status"] == "running"
    clone = next(body for method, path, body in pve.requests if path.endswith(f"/qemu/{TEMPLATE_VMID}/clone"))
    assert b"full=1" in clone
    resize = next(body for method, path, body in pve.requests if path.endswith(f"/qemu/{vmid}/resize"))
    assert b"size=50G" in resize
    again = await engine.plan(DesiredState(deployment=d, resources=(web,)), [observed])
    assert [c.action for c in again.changes] == ["noop"]


async def test_a_template_can_be_named_by_vmid_and_a_missing_one_is_permanent(engine: ProxmoxEngine) -> None:
    d = ref()
    await converge(engine, d, vm(template=str(TEMPLATE_VMID)))
    assert [o.status for o in await engine.observe(d)] == ["running"]

    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, d, vm("api", template="no-such-template"))
    assert "no VM template 'no-such-template'" in caught.value.message
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, d, DesiredResource(name="bare", type="compute", provider="proxmox"))
    assert "needs specs.template" in caught.value.message
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, d, DesiredResource(name="lan", type="network", provider="proxmox"))
    assert "not 'network' resources" in caught.value.message


async def test_a_database_becomes_an_lxc_container_from_the_default_or_given_ostemplate(
    engine: ProxmoxEngine, api: Any
) -> None:
    d = ref()
    await converge(engine, d, ct(cpu=0.5, storage=10 * 1024), ct("cache", ostemplate=OSTEMPLATE, memory=256))

    observed = {o.name: o for o in await engine.observe(d)}
    assert {name: (o.status, o.engine_id.split("/")[0]) for name, o in observed.items()} == {
        "cache": ("running", "lxc"),
        "db": ("running", "lxc"),
    }
    config = api.nodes("pve1").lxc(vmid_of(observed["db"])).config.get()
    assert (config["hostname"], config["memory"], config["cores"], config["cpulimit"]) == ("db", 1024, 1, 0.5)
    assert config["rootfs"].endswith("size=10G")
    assert config["tags"] == "alma;alma-dep-shop;alma-res-db"
    assert config["ostype"] == "debian"


async def test_a_missing_ostemplate_fails_the_create_task_permanently_with_its_exit_status(
    engine: ProxmoxEngine, api: Any
) -> None:
    d = ref()
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, d, ct(ostemplate="local:vztmpl/missing.tar.zst"))

    assert "volume 'local:vztmpl/missing.tar.zst' does not exist" in caught.value.data["exitstatus"]
    assert caught.value.data["exitstatus"] in caught.value.message
    assert ours(api, d) == []


async def test_a_failing_start_task_is_permanent_and_carries_the_exit_status(engine: ProxmoxEngine, pve: Any) -> None:
    d = ref()
    await converge(engine, d, vm())
    [observed] = await engine.observe(d)
    await engine.power(d, "web", "stop")
    pve.vm(vmid_of(observed)).start_error = "start failed: QEMU exited with code 1"

    [stopped] = await engine.observe(d)
    plan = await engine.plan(DesiredState(deployment=d, resources=(vm(),)), [stopped])
    assert [(c.action, c.reason) for c in plan.changes] == [("update", "unchanged but stopped: apply starts it")]
    with pytest.raises(PermanentEngineError) as caught:
        await engine.apply(plan)

    assert caught.value.data["exitstatus"] == "start failed: QEMU exited with code 1"
    assert caught.value.message.endswith("failed: start failed: QEMU exited with code 1")


async def test_a_parameter_error_is_permanent_with_the_field_errors(engine: ProxmoxEngine) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, ref(), ct(cpu=9000))

    assert "Parameter verification failed." in caught.value.message
    assert set(caught.value.data["errors"]) == {"cores"}
    assert caught.value.data["status"] == 400


async def test_a_vmid_taken_meanwhile_is_retried_with_the_next_free_one(engine: ProxmoxEngine, pve: Any) -> None:
    pve.fail("POST", "/clone", status=500, message="unable to create VM 100: config file already exists", times=1)

    await converge(engine, ref(), vm())

    assert [o.status for o in await engine.observe(ref())] == ["running"]


async def test_provider_messages_are_cut_and_never_carry_the_token(engine: ProxmoxEngine, pve: Any) -> None:
    pve.fail("GET", "/cluster/nextid", status=403, message=f"denied for {TOKEN_VALUE} " + "x" * 400)

    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, ref(), vm())

    assert TOKEN_VALUE not in caught.value.message
    assert "***" in caught.value.message
    assert len(caught.value.message) <= 256


async def test_a_task_outlasting_the_timeout_is_transient_and_may_still_finish(
    store: Store, pve: Any, fakepve_cafile: str, api: Any
) -> None:
    engine = build(store, pve, fakepve_cafile, engine_timeout_seconds=0.05)
    d = ref()
    await converge(engine, d, vm())
    await engine.power(d, "web", "stop")
    [observed] = await engine.observe(d)
    pve.time_scale = 0.01
    pve.vm(vmid_of(observed)).start_secs = 30  # 0.3 s of wall time

    with pytest.raises(TransientEngineError) as caught:
        await engine.power(d, "web", "start")

    assert "did not finish within 0.05 s; observe before retrying" in caught.value.message
    upid = caught.value.data["upid"]
    task = await anyio.to_thread.run_sync(lambda: Tasks.blocking_status(api, upid, timeout=5, polling_interval=0.02))
    assert task["exitstatus"] == "OK"
    assert [o.status for o in await engine.observe(d)] == ["running"]
    await engine.aclose()


async def test_replicas_are_guests_named_by_number_and_scale_in_place(engine: ProxmoxEngine, api: Any) -> None:
    d = ref()
    await converge(engine, d, vm(replicas=2))
    assert sorted(r["name"] for r in ours(api, d)) == ["web-1", "web-2"]

    [two] = await engine.observe(d)
    plan = await engine.plan(DesiredState(deployment=d, resources=(vm(replicas=3),)), [two])
    assert [(c.action, c.reason) for c in plan.changes] == [("update", "specs changed: replicas")]
    await engine.apply(plan)
    assert sorted(r["name"] for r in ours(api, d)) == ["web-1", "web-2", "web-3"]

    await converge(engine, d, vm())
    [one] = await engine.observe(d)
    assert [r["name"] for r in ours(api, d)] == ["web"]
    assert one.fingerprint == vm().fingerprint


async def test_updating_a_running_vm_reboots_it_to_apply_pending_memory(
    engine: ProxmoxEngine, api: Any, pve: Any
) -> None:
    d = ref()
    await converge(engine, d, vm(memory=2048))
    await converge(engine, d, vm(memory=8192))

    [observed] = await engine.observe(d)
    vmid = vmid_of(observed)
    assert api.nodes("pve1").qemu(vmid).config.get()["memory"] == "8192"
    assert "qmreboot" in [t["type"] for t in pve.tasklog if t["id"] == str(vmid)]
    assert observed.status == "running"


async def test_a_half_made_guest_is_found_and_finished_by_the_next_apply(engine: ProxmoxEngine, pve: Any) -> None:
    d = ref()
    pve.fail("POST", "/status/start", status=500, message="cluster not ready - no quorum?", times=1)
    with pytest.raises(TransientEngineError):
        await converge(engine, d, vm())

    [half] = await engine.observe(d)
    assert (half.fingerprint, half.status) == (INCOMPLETE, "stopped")
    plan = await engine.plan(DesiredState(deployment=d, resources=(vm(),)), [half])
    assert [(c.action, c.reason) for c in plan.changes] == [("update", "a previous apply did not finish")]
    await engine.apply(plan)
    [done] = await engine.observe(d)
    assert (done.fingerprint, done.status, done.engine_id) == (vm().fingerprint, "running", half.engine_id)


async def test_power_actions_start_stop_shut_down_and_reboot_every_guest(engine: ProxmoxEngine) -> None:
    d = ref()
    await converge(engine, d, vm(replicas=2))

    assert (await engine.power(d, "web", "stop")).status == "stopped"
    assert (await engine.power(d, "web", "stop")).status == "stopped"
    assert (await engine.power(d, "web", "start")).status == "running"
    assert (await engine.power(d, "web", "shutdown")).status == "stopped"
    assert (await engine.power(d, "web", "reboot")).status == "running"
    assert (await engine.power(d, "web", "reboot")).status == "running"
    with pytest.raises(InvalidRequest):
        await engine.power(d, "web", "hibernate")  # type: ignore[arg-type]
    with pytest.raises(DeploymentNotFound):
        await engine.power(d, "ghost", "start")


# -- destroying ----------------------------------------------------------------------------------


async def test_a_locked_vm_makes_destroy_transient_until_it_is_unlocked(
    engine: ProxmoxEngine, api: Any, pve: Any
) -> None:
    d = ref()
    await converge(engine, d, vm(), ct())
    web = next(o for o in await engine.observe(d) if o.name == "web")
    pve.vm(vmid_of(web)).lock = "backup"

    with pytest.raises(TransientEngineError) as caught:
        await engine.destroy(d)

    assert "VM is locked (backup)" in caught.value.message
    assert caught.value.data["deleted"] == ["db"]
    pve.vm(vmid_of(web)).lock = None
    assert [o.resource for o in (await engine.destroy(d)).outcomes] == ["web"]
    assert ours(api, d) == []


async def test_destroy_stops_and_purges_everything_and_leaves_nothing_behind(engine: ProxmoxEngine, api: Any) -> None:
    d, other = ref(), ref("other")
    await converge(engine, d, vm(replicas=2, storage=20 * 1024), ct())
    await converge(engine, other, ct())

    result = await engine.destroy(d)

    assert sorted((o.resource, o.action, o.status) for o in result.outcomes) == [
        ("db", "delete", "succeeded"),
        ("web", "delete", "succeeded"),
    ]
    assert ours(api, d) == []
    assert len(ours(api, other)) == 1
    volumes = api.nodes("pve1").storage("local-lvm").content.get()
    assert {v.get("vmid") for v in volumes} <= {TEMPLATE_VMID, vmid_of((await engine.observe(other))[0])}
    assert (await engine.destroy(d)).outcomes == ()


async def test_a_guest_destroyed_meanwhile_counts_as_deleted(engine: ProxmoxEngine, pve: Any) -> None:
    d = ref()
    await converge(engine, d, vm())
    vmid = vmid_of((await engine.observe(d))[0])
    gone = f"Configuration file 'nodes/pve1/qemu-server/{vmid}.conf' does not exist"
    pve.fail("POST", f"/qemu/{vmid}/status/stop", status=500, message=gone, times=1)

    result = await engine.destroy(d)

    assert [(o.resource, o.status) for o in result.outcomes] == [("web", "succeeded")]


async def test_deployments_whose_tags_collide_stay_apart_by_their_marker(engine: ProxmoxEngine, api: Any) -> None:
    slash, underscore = ref("team/a"), ref("team_a")
    assert tags_for(slash, "web") == tags_for(underscore, "web") == "alma;alma-dep-team_a;alma-res-web"
    await converge(engine, slash, vm())
    await converge(engine, underscore, ct("web"))

    assert [o.engine_id.split("/")[0] for o in await engine.observe(slash)] == ["qemu"]
    await engine.destroy(slash)
    assert [o.engine_id.split("/")[0] for o in await engine.observe(underscore)] == ["lxc"]


# -- planning ------------------------------------------------------------------------------------


def test_planning_replaces_what_cannot_change_in_place_and_updates_the_rest() -> None:
    d = ref()

    def seen(resource: DesiredResource, engine_id: str = "qemu/100", **changes: Any) -> ObservedResource:
        return ObservedResource(
            name=resource.name,
            type=resource.type,
            provider="proxmox",
            fingerprint="0" * 64,
            status="running",
            engine_id=engine_id,
            specs={**resource.specs, **changes},
        )

    cases = [
        (vm(storage=2048), seen(vm(), storage=4096), "replace", "storage shrinks from 4096 to 2048 MiB"),
        (vm(storage=8192), seen(vm(), storage=4096), "update", "specs changed: storage"),
        (vm(template="9001"), seen(vm()), "replace", "template changed"),
        (ct("web"), seen(ct("web"), "qemu/100"), "replace", "guest kind changed: qemu -> lxc"),
        (ct(memory=2048), seen(ct(), "lxc/101"), "update", "specs changed: memory"),
    ]
    for desired, observed, action, reason in cases:
        [change] = plan_changes(DesiredState(deployment=d, resources=(desired,)), [observed]).changes
        assert (change.action, reason in change.reason) == (action, True), change.reason


# -- end to end ----------------------------------------------------------------------------------


async def test_simple_web_app_deploys_through_an_approved_ipr_rolls_back_and_leaves_nothing(
    pve: Any, fakepve_cafile: str, api: Any
) -> None:
    settings = settings_for(
        pve.host,
        pve.port,
        fakepve_cafile,
        engines={"proxmox": "proxmox"},
        sim_time_scale=0.0,
        deploy_retry_delay=0.0,
    )
    with open_services(settings, "test") as services:
        if "proxmox" not in services.engines.names():  # until the registry lists it
            services.engines.register("proxmox", ProxmoxEngine)
        ipr_id = services.iprs.create(MODEL, title="simple web app on Proxmox", template="simple-web-app").ipr.id
        services.iprs.review(ALICE, ipr_id, "approve")

        deployed = await services.orchestrator.deploy(MODEL, ipr_id)

        assert deployed.state == "succeeded", deployed.summary
        assert deployed.summary == "deploy succeeded: 4 create"
        d = DeploymentRef(id="simple-web-app", blueprint="simple-web-app")
        engine = services.orchestrator.engines.get("proxmox")
        observed = {o.name: o for o in await engine.observe(d)}
        assert sorted(observed) == ["load-balancer", "postgres-db", "web-server-1", "web-server-2"]
        assert {o.status for o in observed.values()} == {"running"}
        guests = {r["name"]: r for r in ours(api, d)}
        assert {name: (r["type"], r["status"], r["maxcpu"]) for name, r in guests.items()} == {
            "load-balancer": ("qemu", "running", 2),
            "postgres-db": ("qemu", "running", 4),
            "web-server-1": ("qemu", "running", 2),
            "web-server-2": ("qemu", "running", 2),
        }
        assert guests["postgres-db"]["maxmem"] == 8 * 1024**3
        again = await services.orchestrator.deploy(MODEL, ipr_id)
        assert again.summary == "deploy succeeded: 4 noop"

        back = await services.orchestrator.rollback(MODEL, ipr_id)

        assert back.state == "succeeded", back.summary
        assert back.summary == "rollback succeeded: 4 delete"
        assert await engine.observe(d) == []
        assert (await engine.destroy(d)).outcomes == ()
        assert [r["vmid"] for r in api.cluster.resources.get(type="vm")] == [TEMPLATE_VMID]
        volumes = api.nodes("pve1").storage("local-lvm").content.get()
        assert [v for v in volumes if v.get("vmid") != TEMPLATE_VMID] == []
        await services.orchestrator.engines.aclose()
