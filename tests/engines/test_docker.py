"""The docker engine beyond the contract, against the real private dockerd (``scripts/backends start``).

Each test works in its own scope (a name prefix and an ``alma.scope`` label) and removes everything
carrying it afterwards; the end-to-end test uses the real, unscoped names and cleans up by its
deployment label. Docker's own API is the witness: what the engine says is checked against what the
daemon lists.
"""

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import docker  # type: ignore[import-untyped]
import pytest
import yaml
from docker import errors as docker_errors

from alma_mcp.errors import DeploymentNotFound, PermanentEngineError, TransientEngineError
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.base import ApplyResult, DeploymentRef, DesiredResource, DesiredState, Plan
from engines.docker import DRIFT, MESSAGE_LIMIT, DockerEngine, container_options, load_secrets
from tests.engines.backends import ROOT
from tests.engines.case_docker import (
    BASE_IMAGE,
    INDEX_PAGE,
    OTHER_WEB_IMAGE,
    WEB_IMAGE,
    WEB_PORT,
    docker_host,
    ensure_images,
    new_scope,
    purge,
)
from tests.ipr.test_service import ALICE, MODEL

pytestmark = pytest.mark.anyio

SHOP = DeploymentRef(id="shop", blueprint="shop", ipr_id="7", revision="3")
SECRET_VALUE = "s3cr3t-v4lue-never-shown"
PROBE = "while true; do if wget -q -O /dev/null http://web:{port}/; then echo ok; else echo FAIL; fi; sleep 0.05; done"


@pytest.fixture(name="client")
def client_fixture() -> Iterator[Any]:
    made = docker.DockerClient(base_url=docker_host())
    ensure_images(made)
    yield made
    made.close()


@pytest.fixture(name="scope")
def scope_fixture(client: Any) -> Iterator[str]:
    name = new_scope()
    yield name
    purge(client, f"alma.scope={name}")


@pytest.fixture(name="secrets_file")
def secrets_file_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(f"db-password: {SECRET_VALUE}\napi-token: 12345678\n")
    return path


def make(scope: str, **options: Any) -> DockerEngine:
    return DockerEngine(
        docker.DockerClient(base_url=docker_host()), address=docker_host(), scope=scope, stop_timeout=2, **options
    )


@pytest.fixture(name="engine")
async def engine_fixture(scope: str, secrets_file: Path) -> AsyncIterator[DockerEngine]:
    made = make(scope, secrets_file=secrets_file)
    yield made
    await made.aclose()


def web(name: str = "web", type_: str = "container", **specs: Any) -> DesiredResource:
    return DesiredResource(
        name=name, type=type_, provider="docker", specs={"image": WEB_IMAGE, "memory": 64, "ports": [WEB_PORT], **specs}
    )


def thing(name: str, type_: str, **specs: Any) -> DesiredResource:
    return DesiredResource(name=name, type=type_, provider="docker", specs=specs)


async def plan_for(engine: DockerEngine, *resources: DesiredResource, deployment: DeploymentRef = SHOP) -> Plan:
    desired = DesiredState(deployment=deployment, resources=resources)
    return await engine.plan(desired, await engine.observe(deployment))


async def converge(engine: DockerEngine, *resources: DesiredResource, deployment: DeploymentRef = SHOP) -> ApplyResult:
    return await engine.apply(await plan_for(engine, *resources, deployment=deployment))


def listed(client: Any, *labels: str) -> tuple[list[str], list[str], list[str]]:
    """Names of the containers, networks and volumes docker lists with all the ``labels`` (``key=value``)."""
    filters = {"label": list(labels)}
    return (
        sorted(c.name for c in client.containers.list(all=True, filters=filters)),
        sorted(n.name for n in client.networks.list(filters=filters)),
        sorted(v.name for v in client.volumes.list(filters=filters)),
    )


def host_port(container: Any, port: int = WEB_PORT) -> tuple[str, int]:
    container.reload()
    [binding] = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"]
    return binding["HostIp"], int(binding["HostPort"])


def http_get(port: int, path: str = "/") -> str:
    """GET through a published port, retried for a few seconds: without a health check the engine
    returns once the container runs, which can be a moment before the server in it listens."""
    deadline = time.monotonic() + 5
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Poll what a container reports until ``condition`` holds (fails after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- networks and labels ---------------------------------------------------------------------------


async def test_each_deployment_gets_a_network_that_leaves_with_its_last_container(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    other = DeploymentRef(id="other", blueprint="other")
    await converge(engine, web())
    await converge(engine, web(), deployment=other)

    network = client.networks.get(f"{scope}-shop_default")
    container = client.containers.get(f"{scope}-shop-web-0")
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [f"{scope}-shop_default"]
    assert network.attrs["Labels"]["alma.network"] == "deployment"
    assert listed(client, f"alma.scope={scope}")[1] == [f"{scope}-other_default", f"{scope}-shop_default"]

    await converge(engine)  # an empty blueprint: the last container goes, and its network with it

    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop") == ([], [], [])
    assert listed(client, f"alma.scope={scope}", "alma.deployment=other")[1] == [f"{scope}-other_default"]


async def test_everything_the_engine_makes_carries_the_deployment_labels(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    app = web(volumes=[{"name": "cache", "mount_path": "/cache"}], networks=["backend"])
    backend = thing("backend", "network", cidr="10.201.0.0/24")
    data = thing("data", "storage", storage=1024)
    await converge(engine, backend, data, app)

    identity = {"alma.deployment": "shop", "alma.blueprint": "shop", "alma.ipr": "7", "alma.revision": "3"}
    made = [
        client.containers.get(f"{scope}-shop-web-0").labels,
        client.networks.get(f"{scope}-shop_default").attrs["Labels"],
        client.networks.get(f"{scope}-shop-backend").attrs["Labels"],
        client.volumes.get(f"{scope}-shop-data").attrs["Labels"],
        client.volumes.get(f"{scope}-shop-web_cache").attrs["Labels"],
    ]
    assert all(labels.items() >= {**identity, "alma.scope": scope}.items() for labels in made)
    for labels, resource in zip(made[:1] + made[2:4], (app, backend, data), strict=True):
        assert labels["alma.resource"] == resource.name
        assert labels["alma.fingerprint"] == resource.fingerprint
    assert made[4]["alma.owner"] == "web"
    observed = {o.name: (o.type, o.fingerprint, o.status) for o in await engine.observe(SHOP)}
    assert observed == {
        "backend": ("network", backend.fingerprint, "running"),
        "data": ("storage", data.fingerprint, "running"),
        "web": ("container", app.fingerprint, "running"),
    }


async def test_a_container_joins_the_network_resources_it_lists_and_follows_their_replacement(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    await converge(engine, thing("backend", "network", cidr="10.202.0.0/24"), web(networks=["backend"]))
    container = client.containers.get(f"{scope}-shop-web-0")
    assert container.attrs["NetworkSettings"]["Networks"][f"{scope}-shop-backend"]["IPAddress"].startswith("10.202.0.")

    plan = await plan_for(engine, thing("backend", "network", cidr="10.203.0.0/24"), web(networks=["backend"]))
    assert [(c.resource, c.action, c.reason) for c in plan.changes] == [
        ("backend", "replace", "specs changed: cidr; a docker network cannot change in place"),
        ("web", "noop", "unchanged"),
    ]
    await engine.apply(plan)

    container.reload()
    assert container.attrs["NetworkSettings"]["Networks"][f"{scope}-shop-backend"]["IPAddress"].startswith("10.203.0.")
    assert {c.action for c in (await plan_for(engine, *(c.desired for c in plan.changes if c.desired))).changes} == {
        "noop"
    }


async def test_joining_a_network_that_is_not_deployed_is_permanent(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, web(networks=["backend"]))
    assert "joins network 'backend', which is not deployed" in caught.value.message
    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop") == ([], [], [])


# -- what a container gets -------------------------------------------------------------------------------


async def test_ports_are_published_on_localhost_and_serve_the_page(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    result = await converge(engine, web())

    host_ip, port = host_port(client.containers.get(f"{scope}-shop-web-0"))
    assert host_ip == "127.0.0.1"
    assert await anyio.to_thread.run_sync(http_get, port) == INDEX_PAGE
    [outcome] = result.outcomes
    assert outcome.message == f"created 'web': 1 container running; {WEB_PORT}/tcp on 127.0.0.1:{port}"


def test_public_resources_are_published_on_every_interface_and_others_on_localhost() -> None:
    # Checked on the options alone: the sandbox daemon must not listen beyond 127.0.0.1.
    def ports(resource: DesiredResource) -> Any:
        options = container_options(resource, name="n", labels={}, environment={}, network="net", binds={})
        return options["ports"]

    assert ports(web(public=True, ports=[80, 443])) == {"80/tcp": ("0.0.0.0", None), "443/tcp": ("0.0.0.0", None)}
    assert ports(web()) == {f"{WEB_PORT}/tcp": ("127.0.0.1", None)}


async def test_env_and_secrets_reach_the_container_but_secret_values_never_leave_it(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    app = web(env={"GREETING": "hello"}, secrets={"DB_PASSWORD": "db-password"})

    result = await converge(engine, app)

    env = client.containers.get(f"{scope}-shop-web-0").exec_run(["env"]).output.decode()
    assert "GREETING=hello" in env.splitlines()
    assert f"DB_PASSWORD={SECRET_VALUE}" in env.splitlines()
    observed = await engine.observe(SHOP)
    labels = client.containers.get(f"{scope}-shop-web-0").labels
    told = [result.model_dump_json(), *(o.model_dump_json() for o in observed), *labels.values()]
    assert not [text for text in told if SECRET_VALUE in text]
    assert observed[0].specs["secrets"] == {"DB_PASSWORD": "db-password"}


async def test_an_unknown_secret_reference_is_permanent_and_names_the_reference_only(
    engine: DockerEngine, client: Any, scope: str, secrets_file: Path
) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, web(secrets={"DB_PASSWORD": "db-pasword"}))

    assert caught.value.message == (
        f"resource 'web': secret reference 'db-pasword' (for DB_PASSWORD) is not in the secrets file {secrets_file}; "
        "add it there"
    )
    assert SECRET_VALUE not in str(caught.value.to_payload())
    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop") == ([], [], [])


async def test_secrets_without_a_secrets_file_are_permanent(scope: str) -> None:
    engine = make(scope)
    try:
        with pytest.raises(PermanentEngineError) as caught:
            await converge(engine, web(secrets={"DB_PASSWORD": "db-password"}))
    finally:
        await engine.aclose()
    assert caught.value.message == (
        "resource 'web' needs secrets (db-password) but no secrets file is configured; set ALMA_SECRETS_FILE"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"db-password: [{SECRET_VALUE}\n", "is not valid YAML (line 2); write one 'name: value' per line"),
        (f"- {SECRET_VALUE}\n", "must map secret names to values, not hold a list"),
        (f"db-password: {{nested: {SECRET_VALUE}}}\n", "secret 'db-password' in {path} must be a single value"),
    ],
)
def test_a_bad_secrets_file_is_permanent_and_never_quotes_a_value(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(text)

    with pytest.raises(PermanentEngineError) as caught:
        load_secrets(path)

    assert message.format(path=path) in caught.value.message
    assert SECRET_VALUE not in str(caught.value.to_payload())
    assert caught.value.__cause__ is None


async def test_limits_and_hardening_are_applied(engine: DockerEngine, client: Any, scope: str) -> None:
    await converge(
        engine,
        web(cpu=0.5, memory=96, user="1000:1000", read_only_root_filesystem=True, capabilities=["NET_ADMIN"]),
    )

    attrs = client.containers.get(f"{scope}-shop-web-0").attrs
    host = attrs["HostConfig"]
    assert (host["Memory"], host["NanoCpus"]) == (96 * 1024 * 1024, 500_000_000)
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert (host["Init"], host["ReadonlyRootfs"], host["CapAdd"], host["Privileged"]) == (
        True,
        True,
        ["NET_ADMIN"],
        False,
    )
    assert attrs["Config"]["User"] == "1000:1000"
    assert attrs["State"]["Status"] == "running"


async def test_a_health_check_path_becomes_a_docker_healthcheck_that_gates_readiness(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    await converge(engine, web(healthcheck={"path": "health", "port": WEB_PORT, "interval_s": 2, "retries": 4}))

    check = client.containers.get(f"{scope}-shop-web-0").attrs["Config"]["Healthcheck"]
    assert check == {
        "Test": ["CMD", "wget", "-q", "-O-", f"http://127.0.0.1:{WEB_PORT}/health"],
        "Interval": 2_000_000_000,
        "Timeout": 5_000_000_000,
        "Retries": 4,
    }


async def test_replicas_run_as_numbered_containers_and_scale_down(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    await converge(engine, web(replicas=2))

    assert listed(client, f"alma.scope={scope}")[0] == [f"{scope}-shop-web-0", f"{scope}-shop-web-1"]
    [observed] = await engine.observe(SHOP)
    assert (observed.status, len(observed.engine_id.split(","))) == ("running", 2)

    client.containers.get(f"{scope}-shop-web-1").remove(force=True)  # drift: a replica went missing
    [drifted] = await engine.observe(SHOP)
    assert drifted.fingerprint == DRIFT
    [change] = (await plan_for(engine, web(replicas=2))).changes
    assert (change.action, change.reason) == (
        "update",
        "its containers differ from what was deployed (missing, extra or mixed)",
    )

    await converge(engine, web(replicas=1))
    assert listed(client, f"alma.scope={scope}")[0] == [f"{scope}-shop-web-0"]


async def test_a_stopped_container_is_rebuilt_by_the_next_deploy(engine: DockerEngine, client: Any, scope: str) -> None:
    await converge(engine, web())
    client.containers.get(f"{scope}-shop-web-0").stop(timeout=1)

    [observed] = await engine.observe(SHOP)
    [change] = (await plan_for(engine, web())).changes
    await engine.apply(Plan(deployment=SHOP, changes=(change,)))

    assert (observed.status, observed.fingerprint) == ("stopped", web().fingerprint)
    assert (change.action, change.reason) == ("update", "its containers are stopped: they are rebuilt")
    assert [o.status for o in await engine.observe(SHOP)] == ["running"]


# -- updates -------------------------------------------------------------------------------------------------------


async def test_an_update_is_create_before_destroy_and_the_service_stays_reachable(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    ready = {"path": "/health"}  # the switch waits for the new container to answer
    await converge(engine, web(healthcheck=ready))
    old = client.containers.get(f"{scope}-shop-web-0")
    # A client inside the deployment network calls the service by name all along.
    prober = client.containers.run(
        BASE_IMAGE,
        ["sh", "-c", PROBE.format(port=WEB_PORT)],
        network=f"{scope}-shop_default",
        labels={"alma.scope": scope},
        init=True,
        detach=True,
    )

    def probes() -> list[str]:
        return str(prober.logs().decode()).split()

    try:
        await anyio.to_thread.run_sync(until, lambda: probes().count("ok") >= 3)
        plan = await plan_for(engine, web(memory=128, healthcheck=ready), web("api", image=OTHER_WEB_IMAGE))
        await engine.apply(plan)
        before = len(probes())
        await anyio.to_thread.run_sync(until, lambda: len(probes()) >= before + 3)
        seen = probes()
    finally:
        prober.remove(force=True)  # while "web" still resolves: a lookup of a gone name stalls removal

    assert "FAIL" not in seen
    new = client.containers.get(f"{scope}-shop-web-0")
    assert new.id != old.id
    assert new.attrs["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert await anyio.to_thread.run_sync(http_get, host_port(new)[1]) == INDEX_PAGE
    with pytest.raises(docker_errors.NotFound):
        client.containers.get(old.id)
    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop")[0] == [
        f"{scope}-shop-api-0",
        f"{scope}-shop-web-0",
    ]


async def test_a_failed_update_leaves_the_old_container_serving(engine: DockerEngine, client: Any, scope: str) -> None:
    await converge(engine, web())
    old = client.containers.get(f"{scope}-shop-web-0")
    broken = {"command": ["false"], "interval_s": 1, "timeout_s": 1, "retries": 1}

    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, web(healthcheck=broken))

    assert caught.value.message.startswith(
        f"container {scope}-shop-web-0_next did not pass its health check (false) within 1s"
    )
    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop")[0] == [f"{scope}-shop-web-0"]
    old.reload()
    assert old.status == "running"
    assert await anyio.to_thread.run_sync(http_get, host_port(old)[1]) == INDEX_PAGE


async def test_a_container_with_volumes_is_replaced_stop_first_and_keeps_its_data(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    app = web(volumes=[{"name": "data", "mount_path": "/data"}])
    await converge(engine, app)
    client.containers.get(f"{scope}-shop-web-0").exec_run(["sh", "-c", "echo kept > /data/file"])

    await converge(engine, web(image=OTHER_WEB_IMAGE, volumes=[{"name": "data", "mount_path": "/data"}]))

    container = client.containers.get(f"{scope}-shop-web-0")
    assert container.attrs["Config"]["Image"] == OTHER_WEB_IMAGE
    assert container.exec_run(["cat", "/data/file"]).output == b"kept\n"


# -- removal ---------------------------------------------------------------------------------------------------------


async def test_destroy_leaves_nothing_behind(engine: DockerEngine, client: Any, scope: str) -> None:
    await converge(
        engine,
        thing("backend", "network"),
        thing("data", "storage"),
        web(replicas=2, networks=["backend"], volumes=[{"name": "cache", "mount_path": "/cache"}]),
    )
    assert listed(client, f"alma.scope={scope}") != ([], [], [])

    result = await engine.destroy(SHOP)

    assert [(o.resource, o.action, o.status) for o in result.outcomes] == [
        ("backend", "delete", "succeeded"),
        ("data", "delete", "succeeded"),
        ("web", "delete", "succeeded"),
    ]
    assert listed(client, f"alma.scope={scope}") == ([], [], [])
    assert await engine.observe(SHOP) == []


async def test_keep_data_keeps_volumes_through_destroy_and_a_redeploy_finds_them(client: Any, scope: str) -> None:
    engine = make(scope, keep_data=True)
    try:
        app = web(volumes=[{"name": "data", "mount_path": "/data"}])
        data = thing("data", "storage")
        await converge(engine, data, app)
        client.containers.get(f"{scope}-shop-web-0").exec_run(["sh", "-c", "echo kept > /data/file"])

        result = await engine.destroy(SHOP)

        assert [(o.resource, o.status) for o in result.outcomes] == [("data", "skipped"), ("web", "succeeded")]
        assert listed(client, f"alma.scope={scope}") == ([], [], [f"{scope}-shop-data", f"{scope}-shop-web_data"])
        plan = await plan_for(engine, data, app)
        assert [(c.resource, c.action) for c in plan.changes] == [("data", "noop"), ("web", "create")]
        await engine.apply(plan)
        output = client.containers.get(f"{scope}-shop-web-0").exec_run(["cat", "/data/file"]).output
        assert output == b"kept\n"
    finally:
        await engine.aclose()


# -- failures --------------------------------------------------------------------------------------------------------


async def test_an_image_that_is_not_local_is_permanent_with_a_clear_message(
    engine: DockerEngine, client: Any, scope: str
) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        await converge(engine, web(image="alma-test/missing:1"))

    assert caught.value.message == "image alma-test/missing:1 is not available locally and cannot be pulled"
    assert caught.value.data["image"] == "alma-test/missing:1"
    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop") == ([], [], [])


async def test_an_unreachable_daemon_is_transient_and_unhealthy(tmp_path: Path) -> None:
    bogus = f"unix://{tmp_path}/no-docker.sock"
    store = Store.open(":memory:")
    engine = DockerEngine.from_settings(store, Settings(docker_host=bogus))
    plan = await engine.plan(DesiredState(deployment=SHOP, resources=(web(),)), [])  # planning needs no daemon

    with pytest.raises(TransientEngineError) as caught:
        await engine.observe(SHOP)
    with pytest.raises(TransientEngineError):
        await engine.apply(plan)
    health = await engine.health()
    await engine.aclose()
    store.close()

    assert caught.value.message.startswith(f"cannot reach the docker daemon at {bogus} to connect: ")
    assert caught.value.code == "engine.transient"
    assert health.ok is False
    assert bogus in health.detail


async def test_without_a_docker_host_setting_the_environment_names_the_daemon(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host())
    deployment = DeploymentRef(id=f"env-{uuid.uuid4().hex[:6]}", blueprint="env")
    store = Store.open(":memory:")
    engine = DockerEngine.from_settings(store, Settings())
    try:
        await converge(engine, web(), deployment=deployment)
        assert [(o.name, o.status) for o in await engine.observe(deployment)] == [("web", "running")]
        assert (await engine.health()).ok
    finally:
        await engine.aclose()
        store.close()
        purge(client, f"alma.deployment={deployment.id}")


async def test_an_invalid_spec_the_daemon_rejects_is_permanent(engine: DockerEngine, client: Any, scope: str) -> None:
    with pytest.raises(PermanentEngineError) as too_many:
        await converge(engine, web(cpu=64))
    with pytest.raises(PermanentEngineError) as no_user:
        await converge(engine, web(user="nosuchuser"))

    assert "Range of CPUs is from" in too_many.value.message
    assert too_many.value.data["status"] == 400
    assert "unable to find user nosuchuser" in no_user.value.message
    assert no_user.value.data["status"] == 500
    assert listed(client, f"alma.scope={scope}", "alma.deployment=shop") == ([], [], [])


async def test_daemon_messages_are_cut_to_256_characters_and_free_of_secrets(engine: DockerEngine) -> None:
    await converge(engine, web(secrets={"DB_PASSWORD": "db-password"}))  # the engine now knows the value
    error = docker_errors.APIError("boom", explanation=f"bad value {SECRET_VALUE} " + "x" * 400)
    error.response = type("R", (), {"status_code": 500})()

    translated = engine._error(error, "start web", {"resource": "web"})

    assert isinstance(translated, TransientEngineError)
    assert len(translated.message) == MESSAGE_LIMIT
    assert translated.message.startswith("docker could not start web: bad value [secret] xxx")
    assert SECRET_VALUE not in translated.message


async def test_compute_resources_cannot_be_planned_on_docker(engine: DockerEngine) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        await plan_for(engine, thing("vm", "compute", cpu=2))
    assert caught.value.message.startswith("resource 'vm' has type 'compute', which cannot run on docker")


async def test_a_change_to_a_resource_of_another_deployment_is_not_found(engine: DockerEngine) -> None:
    await converge(engine, web())
    [change] = (await plan_for(engine, web(memory=128))).changes
    with pytest.raises(DeploymentNotFound):
        await engine.apply(Plan(deployment=DeploymentRef(id="elsewhere", blueprint="shop"), changes=(change,)))


# -- end to end -----------------------------------------------------------------------------------------------------

E2E = f"simple-web-app-{uuid.uuid4().hex[:6]}"  # other runs may share the daemon


def simple_web_app_on_docker() -> dict[str, Any]:
    """The simple-web-app template, moved from Proxmox VMs to containers of the busybox web image."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "resources" / "templates" / "simple-web-app.yaml").read_text())
    data["name"] = E2E
    for resource in data["resources"]:
        resource["provider"] = "docker"
        if resource["type"] == "compute":
            resource["type"] = "container"
        specs = resource["specs"]
        for key in ("os", "template", "storage", "storage_type"):
            specs.pop(key, None)
        # Small enough for a CI runner; the sandbox daemon publishes on 127.0.0.1 only.
        specs.update(image=WEB_IMAGE, cpu=0.25, memory="64MB", ports=[WEB_PORT], public=False)
    return data


@pytest.fixture(name="services")
async def services_fixture(client: Any) -> AsyncIterator[Services]:
    purge(client, f"alma.deployment={E2E}")
    settings = Settings(
        db_path=":memory:",
        engines={"docker": "docker"},
        docker_host=docker_host(),
        sim_time_scale=0,
        deploy_retry_delay=0,
    )
    try:
        with open_services(settings, "test") as opened:
            if "docker" not in opened.engines.names():  # until the registry lists the docker engine
                opened.engines.register("docker", DockerEngine)
            yield opened
            await opened.orchestrator.engines.aclose()
    finally:
        purge(client, f"alma.deployment={E2E}")


async def test_simple_web_app_goes_through_an_approved_ipr_onto_docker_and_back(
    services: Services, client: Any
) -> None:
    ipr_id = services.iprs.create(MODEL, title="simple web app on docker", blueprint=simple_web_app_on_docker()).ipr.id
    services.iprs.review(ALICE, ipr_id, "approve")
    started = time.monotonic()

    deployed = await services.orchestrator.deploy(MODEL, ipr_id)

    assert deployed.state == "succeeded", deployed.summary
    assert sorted((c.resource, c.action, c.engine, c.wave) for c in deployed.changes) == [
        ("load-balancer", "create", "docker", 3),
        ("postgres-db", "create", "docker", 1),
        ("web-server-1", "create", "docker", 2),
        ("web-server-2", "create", "docker", 2),
    ]
    engine = services.orchestrator.engines.get("docker")
    ref = DeploymentRef(id=E2E, blueprint=E2E)
    observed = {o.name: (o.type, o.status) for o in await engine.observe(ref)}
    assert observed == {
        "load-balancer": ("load_balancer", "running"),
        "postgres-db": ("database", "running"),
        "web-server-1": ("container", "running"),
        "web-server-2": ("container", "running"),
    }
    balancer = client.containers.get(f"{E2E}-load-balancer-0")
    assert balancer.exec_run(["wget", "-q", "-O-", f"http://web-server-2:{WEB_PORT}/"]).output.decode() == INDEX_PAGE
    assert "ALMA_BACKENDS=web-server-1,web-server-2" in balancer.exec_run(["env"]).output.decode().splitlines()
    assert await anyio.to_thread.run_sync(http_get, host_port(balancer)[1]) == INDEX_PAGE
    assert listed(client, f"alma.deployment={E2E}")[1] == [f"{E2E}_default"]

    rolled = await services.orchestrator.rollback(MODEL, ipr_id)

    assert rolled.state == "succeeded", rolled.summary
    assert rolled.summary == "rollback succeeded: 4 delete"
    assert listed(client, f"alma.deployment={E2E}") == ([], [], [])
    assert (await engine.destroy(ref)).outcomes == ()
    assert await engine.observe(ref) == []
    print(f"\nsimple-web-app on docker: deploy + observe + rollback + destroy in {time.monotonic() - started:.2f}s")


@pytest.mark.slow
def test_the_benchmark_runs_and_prints_its_figures() -> None:
    docker_host()  # skip without the daemon, like the rest
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "engines_docker.py"), "--rounds", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert "orchestrated (IPR, deploy, rollback):" in out
    assert "docker SDK directly:" in out
    assert "overhead ratio (orchestrated / direct):" in out
