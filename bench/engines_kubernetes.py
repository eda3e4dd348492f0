"""Kubernetes engine benchmark: a three-service blueprint through the orchestrator vs the client directly.

Orchestrated: open an IPR for three services (no dependencies: one wave), approve it, deploy it with
the kubernetes engine (namespace, ConfigMap-free Deployments + Services, rollout waits), roll it
back (every object deleted) and destroy the deployment (its namespace). Direct, in the same run, the
same objects through the same client with no orchestration: create the namespace, three Deployments
and three Services, poll until every Deployment is available, delete them and the namespace. Both
wait on the same fake kubelet (a thread that binds and starts pods every 0.2 s), so the ratio is
the engine's and orchestrator's own cost. Runs alternate and the medians are compared.

Needs the local control plane (``scripts/backends start``); reads ``.backends/env`` (or the
``ALMA_TEST_KUBECONFIG`` and ``ALMA_TEST_FAKE_KUBELET`` variables).
Usage: ``.venv/bin/python bench/engines_kubernetes.py [--runs 5]``. Target: overhead ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import open_services
from alma_mcp.settings import Settings
from engines.base import DeploymentRef
from engines.kubernetes import KubernetesEngine, client_for

ROOT = Path(__file__).resolve().parent.parent
PROPOSER = Principal(id="bench:model", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
APPROVER = Principal(id="bench:person", roles=frozenset({Role.VIEWER, Role.APPROVER}))
SERVICES = (("web", 8080), ("api", 9000), ("cache", 6379))
IMAGE = "registry.local/app:1.0"
TICK = 0.2
POLL = 0.1


def backend(key: str) -> str:
    name = f"ALMA_TEST_{key}"
    if name in os.environ:
        return os.environ[name]
    env = ROOT / ".backends" / "env"
    for line in env.read_text().splitlines() if env.exists() else []:
        k, _, v = line.partition("=")
        if k == name:
            return v
    raise SystemExit(f"{name} is not set and .backends/env lacks it: run scripts/backends start (as root)")


def start_kubelet(kubeconfig: str, script: str) -> Any:
    """Import the shared fake kubelet and run it every TICK seconds in a daemon thread; returns its module."""
    spec = importlib.util.spec_from_file_location("alma_fake_kubelet", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    os.environ["KUBECONFIG"] = kubeconfig  # the script reads it while importing
    spec.loader.exec_module(module)
    core = module.core

    def loop() -> None:
        while True:
            with contextlib.suppress(Exception):  # a pod vanishing mid-tick: the next tick catches up
                raw = core.list_namespace(_preload_content=False).data
                closing = {
                    n["metadata"]["name"] for n in json.loads(raw)["items"] if n["metadata"].get("deletionTimestamp")
                }
                for pod in json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]:
                    meta = pod["metadata"]
                    if meta.get("deletionTimestamp") or meta["namespace"] in closing:
                        core.delete_namespaced_pod(
                            meta["name"], meta["namespace"], grace_period_seconds=0, _preload_content=False
                        )
                module.reconcile_once()
            time.sleep(TICK)

    threading.Thread(target=loop, name="fake-kubelet", daemon=True).start()
    return module


def blueprint(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "resources": [
            {
                "name": svc,
                "type": "service",
                "provider": "kubernetes",
                "specs": {"image": IMAGE, "cpu": 0.5, "memory": "256Mi", "replicas": 1, "ports": [port]},
            }
            for svc, port in SERVICES
        ],
    }


async def orchestrated(kubeconfig: str) -> dict[str, float]:
    name = f"bench-k8s-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        db_path=":memory:",
        engines={"kubernetes": "kubernetes"},
        kube_config=Path(kubeconfig),
        sim_time_scale=0,
        engine_timeout_seconds=60,
        deploy_retry_delay=0.0,
        audit_enabled=False,
    )
    with open_services(settings, "bench") as services:
        if "kubernetes" not in services.engines.names():  # until the registry lists it
            services.engines.register("kubernetes", KubernetesEngine)
        times: dict[str, float] = {}
        start = time.perf_counter()
        ipr = services.iprs.create(PROPOSER, title="bench", blueprint=blueprint(name)).ipr.id
        services.iprs.review(APPROVER, ipr, "approve")
        times["ipr"] = time.perf_counter() - start
        mark = time.perf_counter()
        deployed = await services.orchestrator.deploy(PROPOSER, ipr)
        times["deploy"] = time.perf_counter() - mark
        assert deployed.state == "succeeded", deployed.steps
        mark = time.perf_counter()
        rolled = await services.orchestrator.rollback(PROPOSER, ipr)
        times["rollback"] = time.perf_counter() - mark
        assert rolled.state == "succeeded", rolled.steps
        mark = time.perf_counter()
        await services.orchestrator.engines.get("kubernetes").destroy(DeploymentRef(id=name, blueprint=name))
        times["destroy"] = time.perf_counter() - mark
        times["total"] = time.perf_counter() - start
        await services.orchestrator.engines.aclose()
    return times


def rest(api: Any, method: str, path: str, body: Any = None) -> Any:
    response = api.call_api(
        path,
        method,
        body=body,
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    return json.loads(response.data)


def direct(api: Any) -> dict[str, float]:
    """The same objects with the client alone: sequential creates, one wait for all, deletes."""
    ns = f"bench-direct-{uuid.uuid4().hex[:6]}"
    labels = {"app.kubernetes.io/managed-by": "alma-mcp"}
    times: dict[str, float] = {}
    start = time.perf_counter()
    rest(api, "POST", "/api/v1/namespaces", {"metadata": {"name": ns, "labels": labels}})
    for svc, port in SERVICES:
        selector = {"app": svc}
        container = {
            "name": svc,
            "image": IMAGE,
            "ports": [{"containerPort": port}],
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        }
        deployment = {
            "metadata": {"name": svc, "labels": labels | selector},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {"metadata": {"labels": selector}, "spec": {"containers": [container]}},
            },
        }
        rest(api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)
        service = {
            "metadata": {"name": svc, "labels": labels},
            "spec": {"selector": selector, "ports": [{"port": port}]},
        }
        rest(api, "POST", f"/api/v1/namespaces/{ns}/services", service)
    pending = {svc for svc, _ in SERVICES}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for svc in sorted(pending):
            status = rest(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{svc}/status").get("status", {})
            if status.get("availableReplicas", 0) >= 1 and status.get("updatedReplicas", 0) >= 1:
                pending.discard(svc)
        if pending:
            time.sleep(POLL)
    assert not pending, f"rollouts did not finish: {sorted(pending)}"
    times["deploy"] = time.perf_counter() - start
    mark = time.perf_counter()
    for svc, _ in SERVICES:
        rest(api, "DELETE", f"/api/v1/namespaces/{ns}/services/{svc}")
        rest(api, "DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/{svc}", {"propagationPolicy": "Background"})
    rest(api, "DELETE", f"/api/v1/namespaces/{ns}")
    times["delete"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="alternating runs of each path (medians reported)")
    args = parser.parse_args()
    kubeconfig = backend("KUBECONFIG")
    start_kubelet(kubeconfig, backend("FAKE_KUBELET"))
    _, api = client_for(Path(kubeconfig), None)
    anyio.run(orchestrated, kubeconfig)  # warm-up: imports, connection pools, first-use builds
    direct(api)
    runs: dict[str, list[dict[str, float]]] = {"orchestrated": [], "direct": []}
    for i in range(args.runs):
        first, second = ("orchestrated", "direct") if i % 2 == 0 else ("direct", "orchestrated")
        for path in (first, second):
            runs[path].append(anyio.run(orchestrated, kubeconfig) if path == "orchestrated" else direct(api))
    # Let the namespaces finish terminating while the fake kubelet still confirms pod deletions.
    for _ in range(150):
        names = [n["metadata"]["name"] for n in rest(api, "GET", "/api/v1/namespaces")["items"]]
        if not any(n.startswith(("bench-direct-", "alma-bench-k8s-")) for n in names):
            break
        time.sleep(0.2)
    api.close()

    def median(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    ours, theirs = median("orchestrated", "total"), median("direct", "total")
    phases = ", ".join(f"{k} {median('orchestrated', k):.2f}" for k in ("ipr", "deploy", "rollback", "destroy"))
    print(f"kubernetes engine, 3 services, {args.runs} runs each (medians, seconds)")
    print(f"orchestrator (IPR approved, deploy, rollback, destroy): {ours:.2f} s ({phases})")
    print(
        f"direct client (namespace, 3 deployments + services, wait, delete): {theirs:.2f} s "
        f"(deploy {median('direct', 'deploy'):.2f}, delete {median('direct', 'delete'):.2f})"
    )
    print(f"overhead ratio (orchestrator / direct): {ours / theirs:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
