"""The kubernetes engine beyond the contract, against the real control plane (and the fake kubelet).

Every test uses its own deployment ids and namespace prefix and removes its namespaces at the end.
What the engine made is read back through the Kubernetes API as raw JSON.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

pytest.importorskip("engines.kubernetes")  # skips without the [kubernetes] extra

from alma_mcp.analysis.create import BlueprintRequest, create_blueprint
from alma_mcp.errors import ConfigError, DeploymentNotFound, PermanentEngineError, TransientEngineError
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import open_services
from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.base import (
    Change,
    DeploymentRef,
    DesiredResource,
    DesiredState,
    Engine,
    ObservedResource,
    Plan,
)
from engines.kubernetes import (
    ApiException,
    KubernetesEngine,
    client_for,
    label_value,
    namespace_for,
    plan_changes,
    security_contexts,
    translate_error,
    workload_objects,
)
from tests.engines.case_kubernetes import FakeKubelet, kube_backend, make_engine, new_prefix, purge

pytestmark = pytest.mark.anyio

IMAGE = "registry.local/app:1.0"
# Where each kind's API lives; ``Cluster.labelled`` lists all of them.
KINDS = {
    "endpoints": "/api/v1",
    "deployments": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1",
    "pods": "/api/v1",
    "services": "/api/v1",
    "configmaps": "/api/v1",
    "secrets": "/api/v1",
    "persistentvolumeclaims": "/api/v1",
    "networkpolicies": "/apis/networking.k8s.io/v1",
}


class Cluster:
    """Reads the cluster through the API as raw JSON (``None`` for a 404)."""

    def __init__(self, kubeconfig: str) -> None:
        _, self.api = client_for(Path(kubeconfig), None)

    def get(self, path: str, **query: str) -> Any:
        try:
            response = self.api.call_api(
                path,
                "GET",
                query_params=list(query.items()),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def post(self, path: str, body: dict[str, Any]) -> None:
        self.api.call_api(
            path,
            "POST",
            body=body,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )

    def namespaced(self, namespace: str, kind: str, name: str) -> Any:
        return self.get(f"{KINDS[kind]}/namespaces/{namespace}/{kind}/{name}")

    def labelled(self, selector: str) -> dict[str, list[str]]:
        """Every object of the engine's kinds (plus ReplicaSets and Pods) matching ``selector``, anywhere."""
        found = {}
        for kind, prefix in KINDS.items():
            items = self.get(f"{prefix}/{kind}", labelSelector=selector)["items"]
            if items:
                found[kind] = [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items]
        return found

    def close(self) -> None:
        self.api.close()


@pytest.fixture
def kube() -> tuple[str, FakeKubelet]:
    return kube_backend()


@pytest.fixture
def cluster(kube: tuple[str, FakeKubelet]) -> Iterator[Cluster]:
    made = Cluster(kube[0])
    yield made
    made.close()


@pytest.fixture
async def engines(kube: tuple[str, FakeKubelet]) -> AsyncIterator[Callable[..., KubernetesEngine]]:
    """Builds engines (from_settings, with overrides) whose namespaces are removed at the end."""
    made: list[tuple[KubernetesEngine, str]] = []

    def build(**overrides: Any) -> KubernetesEngine:
        prefix = new_prefix()
        engine = make_engine(prefix, **overrides)
        made.append((engine, prefix))
        return engine

    yield build
    for engine, prefix in made:
        await engine.aclose()
        await anyio.to_thread.run_sync(purge, kube[1].core, prefix)


@pytest.fixture
def engine(engines: Callable[..., KubernetesEngine]) -> KubernetesEngine:
    return engines()


def ref() -> DeploymentRef:
    return DeploymentRef(id=f"k8s-{uuid.uuid4().hex[:8]}", blueprint="shop", ipr_id="7", revision="2")


def res(name: str, type_: str = "container", metadata: dict[str, Any] | None = None, **specs: Any) -> DesiredResource:
    base: dict[str, Any] = {"image": IMAGE} if type_ not in ("storage", "network", "load_balancer") else {}
    return DesiredResource(name=name, type=type_, provider="kubernetes", specs=base | specs, metadata=metadata or {})


async def converge(engine: Engine, deployment: DeploymentRef, *resources: DesiredResource) -> Plan:
    desired = DesiredState(deployment=deployment, resources=resources)
    plan = await engine.plan(desired, await engine.observe(deployment))
    with anyio.fail_after(90):
        await engine.apply(plan)
    return plan


async def eventually(check: Callable[[], bool], seconds: float = 30) -> None:
    """Wait until ``check()`` holds (the cluster's controllers work asynchronously)."""
    for _ in range(int(seconds / 0.2)):
        if check():
            return
        await anyio.sleep(0.2)
    assert check()


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


# -- objects ---------------------------------------------------------------------------------------


async def test_a_deployment_gets_its_own_namespace_labelled_with_its_identity(
    engine: KubernetesEngine, cluster: Cluster
) -> None:
    d = ref()
    await converge(engine, d, res("web"))

    namespace = cluster.get(f"/api/v1/namespaces/{engine.namespace(d)}")
    assert namespace["metadata"]["name"] == engine.namespace(d)
    assert engine.namespace(d).endswith(d.id)
    labels = namespace["metadata"]["labels"]
    labels.pop("kubernetes.io/metadata.name", None)  # servers from 1.21 on add it
    assert labels == {
        "alma.dev/deployment": d.id,
        "alma.dev/blueprint": "shop",
        "alma.dev/ipr": "7",
        "alma.dev/revision": "2",
        "app.kubernetes.io/managed-by": "alma-mcp",
    }


async def test_a_workload_becomes_a_restricted_deployment_with_resources_probes_service_and_env(
    engine: KubernetesEngine, cluster: Cluster
) -> None:
    d = ref()
    web = res(
        "web",
        replicas=2,
        cpu=0.5,
        memory=256,
        ports=[8080, 9090],
        command=["serve", "--port", "8080"],
        env={"MODE": "production", "WORKERS": "4"},
        healthcheck={"path": "/health", "port": 8080, "interval_s": 5, "timeout_s": 2, "retries": 4},
        capabilities=["NET_BIND_SERVICE"],
        read_only_root_filesystem=True,
    )
    plan = await converge(engine, d, web)
    ns = engine.namespace(d)

    deployment = cluster.namespaced(ns, "deployments", "web")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["status"]["availableReplicas"] == 2
    assert deployment["metadata"]["annotations"]["alma.dev/fingerprint"] == web.fingerprint
    assert deployment["metadata"]["labels"]["alma.dev/resource"] == "web"
    assert deployment["metadata"]["labels"]["alma.dev/deployment"] == d.id
    main = container(deployment)
    assert main["image"] == IMAGE
    assert main["args"] == ["serve", "--port", "8080"]
    assert main["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    probe = {"path": "/health", "port": 8080, "scheme": "HTTP"}
    for kind in ("readinessProbe", "livenessProbe"):
        assert main[kind]["httpGet"] == probe
        assert (main[kind]["periodSeconds"], main[kind]["timeoutSeconds"], main[kind]["failureThreshold"]) == (5, 2, 4)
    assert main["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    assert main["envFrom"] == [{"configMapRef": {"name": "web-env"}}]
    assert cluster.namespaced(ns, "configmaps", "web-env")["data"] == {"MODE": "production", "WORKERS": "4"}

    service = cluster.namespaced(ns, "services", "web")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["clusterIP"]
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in service["spec"]["ports"]] == [
        (8080, 8080, "TCP"),
        (9090, 9090, "TCP"),
    ]
    assert service["spec"]["selector"] == {"alma.dev/deployment": d.id, "alma.dev/resource": "web"}

    [observed] = await engine.observe(d)
    assert (observed.name, observed.status, observed.fingerprint) == ("web", "running", web.fingerprint)
    assert observed.engine_id == f"local:{ns}/deployment/web"
    assert observed.specs == web.specs
    assert plan.changes[0].action == "create"


async def test_a_public_workload_gets_a_load_balancer_service_and_root_is_only_allowed_when_asked(
    engine: KubernetesEngine, cluster: Cluster
) -> None:
    d = ref()
    await converge(engine, d, res("edge", ports=[80], public=True, user="0", privileged=True))
    ns = engine.namespace(d)

    assert cluster.namespaced(ns, "services", "edge")["spec"]["type"] == "LoadBalancer"
    security = container(cluster.namespaced(ns, "deployments", "edge"))["securityContext"]
    assert security["runAsNonRoot"] is False
    assert security["runAsUser"] == 0
    assert security["privileged"] is True
    assert "allowPrivilegeEscalation" not in security


def test_security_contexts_follow_the_user_spec() -> None:
    assert security_contexts({"user": "1000:2000"})[1] | {"capabilities": None} == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 2000,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": False,
        "capabilities": None,
    }
    assert security_contexts({"user": "root"})[1]["runAsNonRoot"] is False
    assert security_contexts({"user": "nginx"})[1]["runAsNonRoot"] is True
    assert security_contexts({"capabilities": ["cap_net_admin"]})[1]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN"],
    }


def test_names_become_valid_namespaces_and_label_values() -> None:
    assert namespace_for("shop") == "alma-shop"
    odd = namespace_for("Shop_Front/" + "x" * 70)
    assert len(odd) <= 63
    assert odd.startswith("alma-shop-front-x")
    assert namespace_for("Shop_Front") != namespace_for("shop-front")
    assert label_value("web-1") == "web-1"
    assert label_value("a b") != label_value("a  b")
    assert len(label_value("y" * 80)) <= 63


async def test_storage_network_and_load_balancer_resources_become_their_objects(
    engine: KubernetesEngine, cluster: Cluster
) -> None:
    d = ref()
    firewall = [{"action": "allow", "direction": "in", "protocol": "tcp", "port": 443, "source": "10.0.0.0/8"}]
    await converge(
        engine,
        d,
        res("files", "storage", storage=2048),
        res("backend", "network", cidr="10.1.0.0/16", firewall=firewall),
        res(
            "api",
            "service",
            ports=[8080],
            networks=["backend"],
            volumes=[{"name": "files", "mount_path": "/srv/files"}, {"name": "tmp", "mount_path": "/tmp"}],
        ).model_copy(update={"dependencies": ("files",)}),
        res("front", "load_balancer", ports=[443], public=True, backends=["api"], firewall=firewall),
    )
    ns = engine.namespace(d)

    claim = cluster.namespaced(ns, "persistentvolumeclaims", "files")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    policy = cluster.namespaced(ns, "networkpolicies", "backend")["spec"]
    members = {"alma.dev/deployment": d.id, "net.alma.dev/backend": "true"}
    assert policy["podSelector"] == {"matchLabels": members}
    assert policy["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": members}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 443}]},
    ]

    api = cluster.namespaced(ns, "deployments", "api")
    assert api["spec"]["template"]["metadata"]["labels"]["net.alma.dev/backend"] == "true"
    assert api["spec"]["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce claim is mounted
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["files"]["persistentVolumeClaim"] == {"claimName": "files"}
    assert volumes["tmp"]["emptyDir"] == {}

    front = cluster.namespaced(ns, "services", "front")["spec"]
    assert front["type"] == "LoadBalancer"
    assert front["selector"] == {"alma.dev/deployment": d.id, "alma.dev/resource": "api"}
    assert [(p["port"], p["targetPort"]) for p in front["ports"]] == [(443, 8080)]
    assert front["loadBalancerSourceRanges"] == ["10.0.0.0/8"]

    observed = {o.name: (o.type, o.engine_id.split("/")[-2]) for o in await engine.observe(d)}
    assert observed == {
        "api": ("service", "deployment"),
        "backend": ("network", "networkpolicy"),
        "files": ("storage", "persistentvolumeclaim"),
        "front": ("load_balancer", "service"),
    }


async def test_a_load_balancer_over_several_backends_labels_their_pods_and_releases_the_ones_it_drops(
    engine: KubernetesEngine, cluster: Cluster
) -> None:
    d = ref()
    backends = [res(name, ports=[8080]) for name in ("a", "b")]
    await converge(engine, d, *backends, res("lb", "load_balancer", ports=[80], backends=["a", "b"]))
    ns = engine.namespace(d)

    def lb_label(name: str) -> str | None:
        labels = cluster.namespaced(ns, "deployments", name)["spec"]["template"]["metadata"]["labels"]
        return labels.get("lb.alma.dev/lb")  # type: ignore[no-any-return]

    service = cluster.namespaced(ns, "services", "lb")["spec"]
    assert service["selector"] == {"alma.dev/deployment": d.id, "lb.alma.dev/lb": "true"}
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(80, 8080)]
    assert (lb_label("a"), lb_label("b")) == ("true", "true")
    await eventually(lambda: len(_addresses(cluster.namespaced(ns, "endpoints", "lb"))) == 2)

    plan = await converge(engine, d, *backends, res("lb", "load_balancer", ports=[80], backends=["a"]))

    assert [c.action for c in plan.changes] == ["noop", "noop", "update"]
    assert cluster.namespaced(ns, "services", "lb")["spec"]["selector"] == {
        "alma.dev/deployment": d.id,
        "alma.dev/resource": "a",
    }
    assert lb_label("b") is None
    assert {o.fingerprint for o in await engine.observe(d)} == {r.fingerprint for r in backends} | {
        res("lb", "load_balancer", ports=[80], backends=["a"]).fingerprint
    }


async def test_a_database_with_storage_keeps_its_data_on_a_claim(engine: KubernetesEngine, cluster: Cluster) -> None:
    d = ref()
    await converge(engine, d, res("db", "database", kind="postgresql", storage=4096, ports=[5432]))
    ns = engine.namespace(d)

    assert cluster.namespaced(ns, "persistentvolumeclaims", "db-data")["spec"]["resources"]["requests"] == {
        "storage": "4Gi"
    }
    main = container(cluster.namespaced(ns, "deployments", "db"))
    assert main["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]


async def test_a_compute_vm_is_planned_but_cannot_be_applied(engine: KubernetesEngine) -> None:
    d = ref()
    desired = DesiredState(deployment=d, resources=(res("vm", "compute", cpu=2),))
    plan = await engine.plan(desired, [])
    assert "cannot run on kubernetes" in plan.changes[0].reason

    with pytest.raises(PermanentEngineError) as caught:
        await engine.apply(plan)
    assert "compute VM" in caught.value.message
    assert await engine.observe(d) == []


# -- secrets -----------------------------------------------------------------------------------------

SECRET = "s3cr3t-Value-that-must-not-leak"


async def test_secrets_come_only_from_the_secrets_file_and_never_appear_in_results(
    engines: Callable[..., KubernetesEngine], cluster: Cluster, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(yaml.safe_dump({"db-password": SECRET, "unused": "other"}))
    engine = engines(secrets_file=secrets_file)
    d = ref()
    web = res("web", secrets={"DB_PASSWORD": "db-password"})

    plan = await engine.plan(DesiredState(deployment=d, resources=(web,)), [])
    result = await engine.apply(plan)
    observed = await engine.observe(d)

    secret = cluster.namespaced(engine.namespace(d), "secrets", "web-secrets")
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == SECRET
    assert set(secret["data"]) == {"DB_PASSWORD"}
    main = container(cluster.namespaced(engine.namespace(d), "deployments", "web"))
    assert main["envFrom"] == [{"secretRef": {"name": "web-secrets"}}]
    shown = repr(plan) + repr(result) + repr(observed) + json.dumps(observed[0].specs)
    assert SECRET not in shown
    assert base64.b64encode(SECRET.encode()).decode() not in shown
    assert observed[0].specs["secrets"] == {"DB_PASSWORD": "db-password"}

    missing = res("api", secrets={"TOKEN": "api-token"})
    with pytest.raises(PermanentEngineError) as caught:
        await engine.apply(await engine.plan(DesiredState(deployment=d, resources=(web, missing)), observed))
    assert "api-token" in caught.value.message
    assert SECRET not in str(caught.value)


async def test_secret_references_without_a_secrets_file_are_a_permanent_error(engine: KubernetesEngine) -> None:
    d = ref()
    plan = await engine.plan(DesiredState(deployment=d, resources=(res("web", secrets={"K": "key"}),)), [])
    with pytest.raises(PermanentEngineError) as caught:
        await engine.apply(plan)
    assert "ALMA_SECRETS_FILE" in caught.value.message


def test_error_messages_drop_secret_values_and_are_cut_at_256_characters() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = json.dumps(
        {"kind": "Status", "reason": "Invalid", "message": f"bad value {SECRET} and {'x' * 400}", "code": 422}
    )
    error = translate_error(exc, "creating Secret ns/web-secrets", [SECRET])

    assert isinstance(error, PermanentEngineError)
    assert SECRET not in error.message
    assert "[hidden]" in error.message
    assert len(error.message) == 256
    assert error.data == {"status": 422, "reason": "Invalid"}


@pytest.mark.parametrize(
    ("status", "reason", "message", "transient"),
    [
        (409, "Conflict", "the object has been modified", True),
        (409, "AlreadyExists", "already exists", False),
        (401, "Unauthorized", "Unauthorized", False),
        (403, "Forbidden", "forbidden: User cannot create", False),
        (403, "Forbidden", "unable to create new content in namespace x because it is being terminated", True),
        (400, "BadRequest", "bad request", False),
        (500, "InternalError", "etcd timeout", True),
        (503, "ServiceUnavailable", "unavailable", True),
        (429, "TooManyRequests", "slow down", True),
    ],
)
def test_api_statuses_map_to_transient_or_permanent(status: int, reason: str, message: str, transient: bool) -> None:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "reason": reason, "message": message, "code": status})
    error = translate_error(exc, "doing it")
    assert isinstance(error, TransientEngineError if transient else PermanentEngineError)
    assert message in error.message


# -- rollouts, updates, destroy ------------------------------------------------------------------------


async def test_the_rollout_wait_times_out_as_transient_without_a_kubelet(
    engines: Callable[..., KubernetesEngine], kube: tuple[str, FakeKubelet], cluster: Cluster
) -> None:
    engine = engines(engine_timeout_seconds=1.5)
    d = ref()
    ns = engine.namespace(d)
    # Other test processes sharing this control plane run fake kubelets of their own: a quota of
    # zero pods keeps any of them from starting this deployment's pods.
    cluster.post(
        "/api/v1/namespaces", {"metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": "alma-mcp"}}}
    )
    cluster.post(
        f"/api/v1/namespaces/{ns}/resourcequotas", {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    plan = await engine.plan(DesiredState(deployment=d, resources=(res("web", replicas=2),)), [])

    with kube[1].paused():
        started = time.monotonic()
        with pytest.raises(TransientEngineError) as caught:
            await engine.apply(plan)
        took = time.monotonic() - started

    assert "did not finish within 1.5s" in caught.value.message
    assert "0/2 available" in caught.value.message
    assert 1.5 <= took < 10
    [observed] = await engine.observe(d)
    assert observed.status == "unknown"


async def test_an_update_changes_the_deployment_in_place(engine: KubernetesEngine, cluster: Cluster) -> None:
    d = ref()
    await converge(engine, d, res("web", memory=256, ports=[80], env={"A": "1"}))
    ns = engine.namespace(d)
    before = cluster.namespaced(ns, "deployments", "web")

    plan = await converge(engine, d, res("web", memory=512, replicas=2, env={"B": "2"}))

    assert [(c.action, c.reason) for c in plan.changes] == [("update", "specs changed: env, memory, ports, replicas")]
    after = cluster.namespaced(ns, "deployments", "web")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert container(after)["resources"]["limits"]["memory"] == "512Mi"
    assert after["status"]["availableReplicas"] == after["status"]["updatedReplicas"] == 2
    assert cluster.namespaced(ns, "configmaps", "web-env")["data"] == {"B": "2"}
    assert cluster.namespaced(ns, "services", "web") is None  # no ports any more: no Service
    assert [o.status for o in await engine.observe(d)] == ["running"]


async def test_destroy_leaves_nothing_behind(
    engines: Callable[..., KubernetesEngine], cluster: Cluster, tmp_path: Path
) -> None:
    (tmp_path / "s.yaml").write_text("token: abc123-secret\n")
    engine = engines(secrets_file=tmp_path / "s.yaml")
    d = ref()
    await converge(
        engine,
        d,
        res("files", "storage", storage=512),
        res("net", "network"),
        res("web", ports=[80], env={"A": "1"}, secrets={"TOKEN": "token"}, networks=["net"], replicas=2),
        res("lb", "load_balancer", backends=["web"], public=True),
    )
    selector = f"alma.dev/deployment={d.id}"
    assert set(cluster.labelled(selector)) >= set(KINDS) - {"endpoints"}

    result = await engine.destroy(d)

    assert sorted((o.resource, o.status) for o in result.outcomes) == [
        ("files", "succeeded"),
        ("lb", "succeeded"),
        ("net", "succeeded"),
        ("web", "succeeded"),
    ]
    assert await engine.observe(d) == []
    await eventually(lambda: not cluster.labelled(selector))  # ReplicaSets and pods go by garbage collection
    namespace = cluster.get(f"/api/v1/namespaces/{engine.namespace(d)}")
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    assert (await engine.destroy(d)).outcomes == ()


async def test_deploying_again_right_after_destroy_waits_for_the_old_namespace_to_go(
    engine: KubernetesEngine, cluster: Cluster
) -> None:
    d = ref()
    await converge(engine, d, res("web"))
    first = cluster.get(f"/api/v1/namespaces/{engine.namespace(d)}")["metadata"]["uid"]
    await engine.destroy(d)

    await converge(engine, d, res("web"))

    namespace = cluster.get(f"/api/v1/namespaces/{engine.namespace(d)}")
    assert namespace["metadata"]["uid"] != first
    assert [o.status for o in await engine.observe(d)] == ["running"]


async def test_a_shared_namespace_holds_every_deployment_and_is_never_deleted(
    engines: Callable[..., KubernetesEngine], cluster: Cluster, kube: tuple[str, FakeKubelet]
) -> None:
    shared = f"{new_prefix()}shared"
    engine = engines(kube_namespace=shared)
    one, two = ref(), ref()
    await converge(engine, one, res("web"))
    await converge(engine, two, res("web", memory=128))

    assert engine.namespace(one) == engine.namespace(two) == shared
    assert [o.name for o in await engine.observe(one)] == ["web"]
    await engine.destroy(one)
    await engine.destroy(two)

    assert cluster.get(f"/api/v1/namespaces/{shared}")["status"]["phase"] == "Active"
    assert cluster.labelled(f"alma.dev/deployment in ({one.id},{two.id}),alma.dev/part=primary") == {}
    await anyio.to_thread.run_sync(purge, kube[1].core, shared)


# -- failures ----------------------------------------------------------------------------------------


async def test_an_invalid_name_is_a_permanent_error(engine: KubernetesEngine) -> None:
    d = ref()
    plan = await engine.plan(DesiredState(deployment=d, resources=(res("Bad_Name"),)), [])

    with pytest.raises(PermanentEngineError) as caught:
        await engine.apply(plan)

    assert caught.value.data["status"] == 422
    assert "Bad_Name" in caught.value.message
    assert len(caught.value.message) <= 256


async def test_a_change_to_a_missing_resource_is_deployment_not_found(engine: KubernetesEngine) -> None:
    d = ref()
    ghost = ObservedResource(
        name="ghost", type="container", provider="kubernetes", fingerprint="0" * 64, status="running", engine_id="x"
    )
    with pytest.raises(DeploymentNotFound):
        await engine.apply(
            Plan(deployment=d, changes=(Change(resource="ghost", action="delete", reason="t", observed=ghost),))
        )


def unreachable_kubeconfig(kubeconfig: str, tmp_path: Path) -> Path:
    data = yaml.safe_load(Path(kubeconfig).read_text())
    data["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "unreachable"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_an_unreachable_api_is_transient_and_unhealthy(kube: tuple[str, FakeKubelet], tmp_path: Path) -> None:
    settings = Settings(db_path=":memory:", kube_config=unreachable_kubeconfig(kube[0], tmp_path))
    engine = KubernetesEngine.from_settings(Store.open(":memory:"), settings)
    d = ref()
    try:
        health = await engine.health()
        assert not health.ok
        assert "unreachable" in health.detail
        with pytest.raises(TransientEngineError):
            await engine.observe(d)
        plan = await engine.plan(DesiredState(deployment=d, resources=(res("web"),)), [])
        with pytest.raises(TransientEngineError) as caught:
            await engine.apply(plan)
        assert caught.value.code == "engine.transient"
        assert len(caught.value.message) <= 256
    finally:
        await engine.aclose()


async def test_the_engine_satisfies_the_protocol_and_health_reports_the_server_version(
    engine: KubernetesEngine,
) -> None:
    assert isinstance(engine, Engine)
    assert KubernetesEngine.name == "kubernetes"
    health = await engine.health()
    assert health.ok
    assert health.detail == "local: kubernetes v1.20.2"


# -- contexts ----------------------------------------------------------------------------------------


def two_contexts(kubeconfig: str, tmp_path: Path) -> Path:
    """The test kubeconfig plus a context ``stranger`` on the same cluster with a token it refuses."""
    data = yaml.safe_load(Path(kubeconfig).read_text())
    data["users"].append({"name": "stranger", "user": {"token": "not-a-valid-token"}})
    data["contexts"].append({"name": "stranger", "context": {"cluster": "local", "user": "stranger"}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_a_resource_picks_its_context_from_metadata_and_each_context_has_its_client(
    engines: Callable[..., KubernetesEngine], kube: tuple[str, FakeKubelet], tmp_path: Path
) -> None:
    engine = engines(kube_config=two_contexts(kube[0], tmp_path), kube_contexts=["local", "stranger"])
    d = ref()
    assert engine.contexts == ["local", "stranger"]

    def plan(*resources: DesiredResource) -> Plan:
        return plan_changes(DesiredState(deployment=d, resources=resources), [], "local")

    result = await engine.apply(plan(res("web")))  # no kube_context: the first context
    assert (result.outcomes[0].engine_id or "").startswith(f"local:{engine.namespace(d)}/")
    for context, error in (("stranger", "HTTP 401"), ("elsewhere", "not configured")):
        with pytest.raises(PermanentEngineError) as caught:
            await engine.apply(plan(res("api", metadata={"kube_context": context})))
        assert error in caught.value.message
    with pytest.raises(PermanentEngineError, match="HTTP 401"):
        await engine.observe(d)  # observe looks in every context: one refusing us is an error, not "nothing"

    current = ObservedResource(
        name="web",
        type="container",
        provider="kubernetes",
        fingerprint=res("web").fingerprint,
        status="running",
        engine_id=f"local:{engine.namespace(d)}/deployment/web",
        specs=res("web").specs,
    )
    moved = res("web", metadata={"kube_context": "stranger"})
    change = plan_changes(DesiredState(deployment=d, resources=(moved,)), [current], "local").changes[0]
    assert (change.action, change.reason) == ("replace", "kube context changed: local -> stranger")


def test_a_missing_kubeconfig_or_context_is_a_config_error(kube: tuple[str, FakeKubelet], tmp_path: Path) -> None:
    store = Store.open(":memory:")
    with pytest.raises(ConfigError):
        KubernetesEngine.from_settings(store, Settings(kube_config=tmp_path / "absent"))
    with pytest.raises(ConfigError) as caught:
        KubernetesEngine.from_settings(store, Settings(kube_config=Path(kube[0]), kube_contexts=["nope"]))
    assert "nope" in caught.value.message
    assert "local" in caught.value.message


def test_builders_refuse_a_workload_without_an_image_or_a_probe_port() -> None:
    d = DeploymentRef(id="d", blueprint="b")
    with pytest.raises(PermanentEngineError, match=r"needs specs\.image"):
        workload_objects(d, DesiredResource(name="w", type="container", provider="kubernetes"), "ns", {})
    with pytest.raises(PermanentEngineError, match="healthcheck needs"):
        workload_objects(d, res("w", healthcheck={"path": "/"}), "ns", {})


# -- end to end --------------------------------------------------------------------------------------

MODEL = Principal(id="mcp:local", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER, Role.DEPLOYER}))


async def test_simple_web_app_on_kubernetes_deploys_observes_rolls_back_and_leaves_nothing(
    kube: tuple[str, FakeKubelet], cluster: Cluster
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        db_path=":memory:",
        engines={"kubernetes": "kubernetes"},
        kube_config=Path(kube[0]),
        sim_time_scale=0,
        engine_timeout_seconds=30,
    )
    timings: dict[str, float] = {}
    try:
        with open_services(settings, "test") as services:
            if "kubernetes" not in services.engines.names():  # until the registry lists it
                services.engines.register("kubernetes", KubernetesEngine)
            created = create_blueprint(
                BlueprintRequest(workload="web", provider="kubernetes", environment="development", name=name),
                services.catalog,
                services.create_rules,
            )
            blueprint = created.blueprint
            assert {r["provider"] for r in blueprint["resources"]} == {"kubernetes"}
            ipr = services.iprs.create(MODEL, title="simple web app on kubernetes", blueprint=blueprint).ipr.id
            services.iprs.review(ALICE, ipr, "approve")

            started = time.monotonic()
            with anyio.fail_after(120):
                deployed = await services.orchestrator.deploy(MODEL, ipr)
            timings["deploy"] = time.monotonic() - started
            assert deployed.state == "succeeded", deployed.steps
            assert {(s.resource, s.engine) for s in deployed.steps} == {
                (r["name"], "kubernetes") for r in blueprint["resources"]
            }

            engine = services.orchestrator.engines.get("kubernetes")
            d = DeploymentRef(id=name, blueprint=name)
            observed = {o.name: (o.type, o.status) for o in await engine.observe(d)}
            assert observed == {
                "postgres-db": ("database", "running"),
                "web-server-1": ("container", "running"),
                "web-server-2": ("container", "running"),
                "load-balancer": ("load_balancer", "running"),
            }
            ns = f"alma-{name}"
            lb = cluster.namespaced(ns, "services", "load-balancer")["spec"]
            assert lb["type"] == "LoadBalancer"
            assert lb["selector"] == {"alma.dev/deployment": name, "lb.alma.dev/load-balancer": "true"}
            # The endpoints controller finds one ready pod per backend behind the load balancer.
            await eventually(lambda: len(_addresses(cluster.namespaced(ns, "endpoints", "load-balancer"))) == 2)

            started = time.monotonic()
            with anyio.fail_after(120):
                rolled = await services.orchestrator.rollback(MODEL, ipr)
            timings["rollback"] = time.monotonic() - started
            assert rolled.state == "succeeded", rolled.steps
            assert {c.action for c in rolled.changes} == {"delete"}
            assert await engine.observe(d) == []

            started = time.monotonic()
            await engine.destroy(d)
            timings["destroy"] = time.monotonic() - started
        await eventually(lambda: not cluster.labelled(f"alma.dev/deployment={name}"))
        namespace = cluster.get(f"/api/v1/namespaces/{ns}")
        assert namespace is None or namespace["metadata"].get("deletionTimestamp")
        print(" ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    finally:
        await anyio.to_thread.run_sync(purge, kube[1].core, f"alma-{name}")


def _addresses(endpoints: Any) -> list[str]:
    if not endpoints:
        return []
    return [a["ip"] for subset in endpoints.get("subsets") or [] for a in subset.get("addresses") or []]
