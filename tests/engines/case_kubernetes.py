"""The kubernetes engine in the contract suite, and the fake kubelet its tests share.

The control plane (etcd, kube-apiserver, kube-controller-manager) is the one ``scripts/backends
start`` runs; it has no kubelet, so ``FakeKubelet`` plays one in a background thread: the shared
``fake_kubelet.reconcile_once()`` binds pending pods and marks them Running, and this module adds
what a kubelet also does, confirming the deletion of terminating pods (without it they, and their
namespaces, would stay terminating forever). Pods never really run, so any image string works.

Each contract engine gets its own namespace prefix, so runs never see each other's objects, and
its ``aclose`` removes every namespace with that prefix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import anyio.to_thread

from alma_mcp.store import Store
from engines.base import (
    ApplyResult,
    DeploymentRef,
    DesiredState,
    Engine,
    EngineHealth,
    ObservedResource,
    Plan,
    ProgressCallback,
)
from tests.engines.backends import EngineCase, require_backend

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engines.kubernetes import KubernetesEngine

KUBE = "the local Kubernetes control plane"
TICK_SECONDS = 0.2


class FakeKubelet:
    """Runs the shared fake kubelet every ``TICK_SECONDS`` in a daemon thread (one per process)."""

    _instance: ClassVar[FakeKubelet | None] = None
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.core: Any = module.core
        self._running = threading.Event()
        self._running.set()
        self._ticked = threading.Condition()
        self._ticks = 0
        threading.Thread(target=self._loop, name="fake-kubelet", daemon=True).start()

    @classmethod
    def start(cls, kubeconfig: str, script: str) -> FakeKubelet:
        """The process's fake kubelet, importing ``script`` (which registers a Ready node) on first use."""
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls(_import_kubelet(kubeconfig, script))
            return cls._instance

    def tick(self) -> None:
        """Finish the deletion of terminating pods (and of pods in terminating namespaces, which
        cannot be bound), then bind and start the pending ones."""
        raw = self.core.list_namespace(_preload_content=False).data
        closing = {n["metadata"]["name"] for n in json.loads(raw)["items"] if n["metadata"].get("deletionTimestamp")}
        raw = self.core.list_pod_for_all_namespaces(_preload_content=False).data
        for pod in json.loads(raw).get("items", []):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or meta["namespace"] in closing:
                with contextlib.suppress(Exception):  # already gone
                    self.core.delete_namespaced_pod(
                        meta["name"], meta["namespace"], grace_period_seconds=0, _preload_content=False
                    )
        self.module.reconcile_once()

    def _loop(self) -> None:
        while True:
            if self._running.is_set():
                # A pod vanishing mid-tick is normal: the next tick catches up.
                with contextlib.suppress(Exception):
                    self.tick()
            with self._ticked:
                self._ticks += 1
                self._ticked.notify_all()
            threading.Event().wait(TICK_SECONDS)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No kubelet inside the block: pods stay pending (the in-flight tick finishes first)."""
        self._running.clear()
        with self._ticked:
            start = self._ticks
            self._ticked.wait_for(lambda: self._ticks > start, timeout=5)
        try:
            yield
        finally:
            self._running.set()


def _import_kubelet(kubeconfig: str, script: str) -> ModuleType:
    # The script reads KUBECONFIG while importing; set it only for that moment.
    spec = importlib.util.spec_from_file_location("alma_fake_kubelet", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = kubeconfig
    try:
        spec.loader.exec_module(module)
    finally:
        if before is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = before
    return module


def kube_backend() -> tuple[str, FakeKubelet]:
    """(kubeconfig path, the running fake kubelet); skips (fails in CI) when the backend is not running."""
    kubeconfig = require_backend("KUBECONFIG", KUBE)
    script = require_backend("FAKE_KUBELET", f"{KUBE} (fake kubelet)")
    return kubeconfig, FakeKubelet.start(kubeconfig, script)


def purge(core: Any, prefix: str) -> None:
    """Delete every namespace whose name starts with ``prefix``, its pods at once (as a kubelet would)."""
    raw = core.list_namespace(label_selector="app.kubernetes.io/managed-by=alma-mcp", _preload_content=False).data
    for item in json.loads(raw).get("items", []):
        name = item["metadata"]["name"]
        if not name.startswith(prefix):
            continue
        if not item["metadata"].get("deletionTimestamp"):
            core.delete_namespace(name, _preload_content=False)
        # After the namespace: a terminating namespace takes no new pods.
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0, _preload_content=False)


def new_prefix() -> str:
    return f"alma-t{uuid.uuid4().hex[:6]}-"


class ContractEngine:
    """A KubernetesEngine with its own namespace prefix whose ``aclose`` also removes its namespaces."""

    name: ClassVar[str] = "kubernetes"

    def __init__(self, engine: KubernetesEngine, kubelet: FakeKubelet, prefix: str) -> None:
        self.engine, self.kubelet, self.prefix = engine, kubelet, prefix

    async def plan(self, desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
        return await self.engine.plan(desired, observed)

    async def apply(self, plan: Plan, on_progress: ProgressCallback | None = None) -> ApplyResult:
        return await self.engine.apply(plan, on_progress)

    async def destroy(self, deployment: DeploymentRef) -> ApplyResult:
        return await self.engine.destroy(deployment)

    async def observe(self, deployment: DeploymentRef) -> list[ObservedResource]:
        return await self.engine.observe(deployment)

    async def health(self) -> EngineHealth:
        return await self.engine.health()

    async def aclose(self) -> None:
        try:
            await anyio.to_thread.run_sync(purge, self.kubelet.core, self.prefix)
        finally:
            await self.engine.aclose()


def make_engine(prefix: str, store: Store | None = None, **overrides: Any) -> KubernetesEngine:
    """A KubernetesEngine on the test control plane, built by from_settings (plus setting overrides)."""
    from alma_mcp.settings import Settings
    from engines.kubernetes import KubernetesEngine

    kubeconfig, _ = kube_backend()
    values: dict[str, Any] = {"kube_config": Path(kubeconfig), "engine_timeout_seconds": 60} | overrides
    settings = Settings(db_path=":memory:", **values)
    return KubernetesEngine.from_settings(store or Store.open(":memory:"), settings, namespace_prefix=prefix)


def _factory(store: Store) -> Engine:
    _, kubelet = kube_backend()
    prefix = new_prefix()
    return ContractEngine(make_engine(prefix, store), kubelet, prefix)


CASE = EngineCase("kubernetes", _factory, "registry.local/app:1.0", "registry.local/app:1.1")
