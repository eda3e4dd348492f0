"""The Kubernetes engine: Deployments, Services, ConfigMaps, Secrets, PVCs and NetworkPolicies.

What a resource becomes (object names are the resource's name unless said otherwise):

- ``container``, ``service``, ``database``, ``cache``, ``queue``: a **Deployment** (``replicas``, or
  ``autoscaling.min``, or 1) and, when it has ``ports``, a **Service** (``ClusterIP``; ``LoadBalancer``
  when ``public``). ``cpu``/``memory`` set equal requests and limits; ``healthcheck`` becomes readiness
  and liveness probes (``command`` -> exec, ``path`` -> HTTP GET on ``port`` or the first port, else a
  TCP check); ``command`` becomes the container's ``args`` (Docker's meaning: the image's entrypoint
  stays); ``env`` goes to a ConfigMap ``<name>-env`` and ``secrets`` (env var -> reference) to a
  Secret ``<name>-secrets`` whose values come only from ``ALMA_SECRETS_FILE``, never from the
  blueprint. ``volumes`` mount the PVC of a storage resource listed in ``dependencies`` under the
  volume's name, else a PVC ``<name>-<volume>`` of ``size``, else an ``emptyDir``; a database, cache
  or queue with ``storage`` gets a PVC ``<name>-data`` at its kind's data path (``options.data_path``
  overrides). A Deployment with a claim rolls out with ``Recreate`` (claims are ReadWriteOnce).
  Every container runs restricted by default: ``runAsNonRoot`` (unless ``user`` is ``root``/``0``),
  ``allowPrivilegeEscalation: false`` (unless ``privileged``), ``readOnlyRootFilesystem`` from
  ``read_only_root_filesystem``, capabilities ``drop: [ALL]`` plus ``capabilities``, the
  ``RuntimeDefault`` seccomp profile (the pod field, GA since 1.19) and no service-account token.
- ``storage``: a **PersistentVolumeClaim** of ``storage`` MiB (ReadWriteOnce; ``options.storage_class``).
- ``network``: a **NetworkPolicy** (networking.k8s.io/v1) selecting the pods of the resources that list
  it in ``networks`` and allowing ingress from each other and from the ``allow``/``in`` firewall
  rules (NetworkPolicy can only allow: deny rules and ICMP are recorded, not enforced; ``cidr`` means
  nothing to a pod network).
- ``load_balancer``: a **Service** (``LoadBalancer`` when ``public``, else ``ClusterIP``) in front of its
  ``backends`` (or dependencies). One backend is selected by its resource label; several get the
  label ``lb.alma.dev/<lb>`` on their pod template (a rolling restart of each backend, once).
- ``compute``: a VM cannot run on Kubernetes: planned like any create, but applying it is a
  ``PermanentEngineError``.

Identity: everything carries ``DeploymentRef.labels()`` as ``alma.dev/<key>`` labels, plus
``alma.dev/resource``, ``alma.dev/part`` (``primary`` on the object ``observe`` reads) and
``app.kubernetes.io/managed-by: alma-mcp``; a primary object also carries its fingerprint, type,
provider and specs as ``alma.dev/*`` annotations. Each deployment gets a namespace
``alma-<deployment id>`` (sanitised to a DNS label) unless ``ALMA_KUBE_NAMESPACE`` names one for all;
``destroy`` deletes what the deployment owns, and its namespace only if this engine created it.

Contexts: one ``ApiClient`` per kubeconfig context in ``ALMA_KUBE_CONTEXTS`` (the first is the
default; none configured = the kubeconfig's current context). A resource picks one with
``metadata.kube_context``; ``observe`` and ``destroy`` look in all of them.

Applying waits for the Deployment's rollout (all replicas updated and available) for at most
``engine_timeout_seconds``; running out of time is transient. Errors are typed: connection failures,
5xx, 429 and 409 conflicts are ``TransientEngineError``; 400/422 (invalid objects), 401/403, an
object of the same name owned by someone else and a failed rollout are ``PermanentEngineError``.
Messages are cut at 256 characters with every secret value (and its base64 form) removed.

The client is blocking: each call runs in a worker thread. Responses are read as raw JSON
(``_preload_content=False``) because the client's models describe a newer API than some servers
speak (a 1.20 server answering a Service delete with a ``Status`` breaks their validation).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import anyio
import anyio.to_thread
import urllib3
import yaml
from kubernetes import client as k8s  # type: ignore[import-untyped]
from kubernetes import config as k8s_config

from alma_mcp.errors import (
    AlmaError,
    ConfigError,
    DeploymentNotFound,
    EngineError,
    PermanentEngineError,
    TransientEngineError,
)
from alma_mcp.settings import Settings
from alma_mcp.store import Store
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
    ResourceStatus,
    apply_in_order,
    changed_spec_keys,
    plan_by_name,
    rebuild_reasons,
)

Obj = dict[str, Any]
T = TypeVar("T")
ApiException: Any = k8s.ApiException
"""The client's HTTP error (status, reason, body); ``translate_error`` turns it into an engine error."""

PREFIX: Final = "alma.dev/"
DEPLOYMENT: Final = "alma.dev/deployment"
RESOURCE: Final = "alma.dev/resource"
PART: Final = "alma.dev/part"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGER: Final = "alma-mcp"
FINGERPRINT: Final = "alma.dev/fingerprint"
SPECS: Final = "alma.dev/specs"
TYPE: Final = "alma.dev/type"
PROVIDER: Final = "alma.dev/provider"
DEPLOYMENT_ID: Final = "alma.dev/deployment-id"
LB_LABEL: Final = "lb.alma.dev/"
NET_LABEL: Final = "net.alma.dev/"
MESSAGE_LIMIT: Final = 256
HIDDEN: Final = "[hidden]"

WORKLOAD_TYPES: Final = frozenset({"container", "service", "database", "cache", "queue"})
KNOWN_TYPES: Final = WORKLOAD_TYPES | {"storage", "network", "load_balancer", "compute"}
# A change to one of these cannot be made in place: the resource is rebuilt (for a Deployment that
# is a rolling replacement of every pod).
REPLACING_SPECS: Final = ("image",)
DATA_PATHS: Final[Mapping[str, str]] = {
    "postgresql": "/var/lib/postgresql/data",
    "postgres": "/var/lib/postgresql/data",
    "mysql": "/var/lib/mysql",
    "mariadb": "/var/lib/mysql",
    "mongodb": "/data/db",
    "redis": "/data",
    "rabbitmq": "/var/lib/rabbitmq",
    "kafka": "/var/lib/kafka/data",
}
DEFAULT_STORAGE_MIB: Final = 1024
_WORDS: Final[Mapping[Action, str]] = {
    "create": "created",
    "update": "updated",
    "replace": "replaced",
    "delete": "deleted",
    "noop": "unchanged",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class _Kind:
    """One object kind: which API serves it and the suffix of its client methods."""

    def __init__(self, kind: str, api_version: str, api: str, suffix: str) -> None:
        self.kind, self.api_version, self.api, self.suffix = kind, api_version, api, suffix


KINDS: Final[Mapping[str, _Kind]] = {
    k.kind: k
    for k in (
        _Kind("ConfigMap", "v1", "core", "config_map"),
        _Kind("Secret", "v1", "core", "secret"),
        _Kind("PersistentVolumeClaim", "v1", "core", "persistent_volume_claim"),
        _Kind("NetworkPolicy", "networking.k8s.io/v1", "networking", "network_policy"),
        _Kind("Deployment", "apps/v1", "apps", "deployment"),
        _Kind("Service", "v1", "core", "service"),
    )
}
CREATE_ORDER: Final = tuple(KINDS)
# Traffic first, then workloads, then what they used.
DELETE_ORDER: Final = ("Service", "Deployment", "NetworkPolicy", "ConfigMap", "Secret", "PersistentVolumeClaim")
PRIMARY_KINDS: Final = ("Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy")


# -- names and labels ----------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def label_value(text: str) -> str:
    """``text`` as a valid label value: itself when valid, else a cleaned prefix plus a hash."""
    if _LABEL_VALUE.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")[:54].strip("-_.")
    return f"{cleaned}-{_digest(text)}" if cleaned else _digest(text)


def namespace_for(deployment_id: str, prefix: str = "alma-") -> str:
    """The per-deployment namespace: ``<prefix><id>`` when that is a DNS label, else a cleaned, hashed one."""
    candidate = f"{prefix}{deployment_id}"
    if _DNS_LABEL.match(candidate):
        return candidate
    cleaned = re.sub(r"[^a-z0-9-]+", "-", candidate.lower()).strip("-")[:54].strip("-")
    return f"{cleaned}-{_digest(deployment_id)}" if cleaned else f"alma-{_digest(deployment_id)}"


def object_name(prefix: str, name: str) -> str:
    """``<prefix><name>``, cut to 63 characters with a hash when longer (Service names are DNS labels)."""
    full = f"{prefix}{name}"
    return full if len(full) <= 63 else f"{full[:54].rstrip('-')}-{_digest(full)}"


def identity_labels(ref: DeploymentRef) -> dict[str, str]:
    """``DeploymentRef.labels()`` with Kubernetes keys (``alma.deployment`` -> ``alma.dev/deployment``)."""
    return {PREFIX + key.removeprefix("alma."): label_value(value) for key, value in ref.labels().items()}


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _owner(ref: DeploymentRef, resource: str) -> dict[str, str]:
    return {DEPLOYMENT: label_value(ref.id), RESOURCE: label_value(resource)}


def engine_id(context: str, namespace: str, kind: str, name: str) -> str:
    """``<context>:<namespace>/<kind>/<name>``: where an object lives (the context may hold ``:``)."""
    return f"{context}:{namespace}/{kind.lower()}/{name}"


def context_of(engine_id_text: str) -> str | None:
    context, sep, _ = engine_id_text.rpartition(":")
    return context if sep else None


# -- building objects ------------------------------------------------------------------------------


def _meta(ref: DeploymentRef, resource: DesiredResource, name: str, namespace: str, primary: bool) -> Obj:
    labels = identity_labels(ref) | _owner(ref, resource.name) | {PART: "primary" if primary else "secondary"}
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels | {MANAGED_BY: MANAGER}}
    if primary:
        meta["annotations"] = {
            FINGERPRINT: resource.fingerprint,
            SPECS: json.dumps(resource.specs, sort_keys=True, separators=(",", ":"), default=str),
            TYPE: resource.type,
            PROVIDER: resource.provider,
            RESOURCE: resource.name,
            DEPLOYMENT_ID: ref.id,
        }
    return meta


def _cpu(cores: Any) -> str:
    millis = round(float(cores) * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _resources(specs: Mapping[str, Any]) -> Obj:
    amounts: dict[str, str] = {}
    if specs.get("cpu") is not None:
        amounts["cpu"] = _cpu(specs["cpu"])
    if specs.get("memory") is not None:
        amounts["memory"] = f"{int(specs['memory'])}Mi"
    limits = dict(amounts)
    if specs.get("gpu") or specs.get("gpu_count"):
        limits["nvidia.com/gpu"] = str(int(specs.get("gpu_count") or 1))
    return {"requests": amounts, "limits": limits} if limits else {}


def _probe(specs: Mapping[str, Any], resource: str) -> Obj | None:
    check = specs.get("healthcheck")
    if not isinstance(check, Mapping):
        return None
    ports = list(specs.get("ports") or [])
    port = check.get("port") or (ports[0] if ports else None)
    probe: Obj
    if check.get("command"):
        probe = {"exec": {"command": list(check["command"])}}
    elif port is None:
        raise PermanentEngineError(
            f"resource {resource!r}: healthcheck needs a command, or a port (healthcheck.port or specs.ports)",
            data={"resource": resource},
        )
    elif check.get("path"):
        probe = {"httpGet": {"path": check["path"], "port": int(port)}}
    else:
        probe = {"tcpSocket": {"port": int(port)}}
    return probe | {
        "periodSeconds": int(check.get("interval_s", 10)),
        "timeoutSeconds": int(check.get("timeout_s", 5)),
        "failureThreshold": int(check.get("retries", 3)),
    }


def _user(user: Any) -> tuple[bool, int | None, int | None]:
    """(runs as root, uid, gid) from ``specs.user``: ``root``, ``0``, ``1000`` or ``1000:1000``; names give no uid."""
    if user is None:
        return False, None, None
    text = str(user).strip()
    if text == "root":
        return True, 0, None
    uid_text, _, gid_text = text.partition(":")
    uid = int(uid_text) if uid_text.isdigit() else None
    gid = int(gid_text) if gid_text.isdigit() else None
    return uid == 0, uid, gid


def security_contexts(specs: Mapping[str, Any]) -> tuple[Obj, Obj]:
    """(pod, container) security contexts: restricted unless the specs ask otherwise."""
    root, uid, gid = _user(specs.get("user"))
    capabilities: Obj = {"drop": ["ALL"]}
    added = sorted({str(c).upper().removeprefix("CAP_") for c in specs.get("capabilities") or []})
    if added:
        capabilities["add"] = added
    container: Obj = {
        "runAsNonRoot": not root,
        "readOnlyRootFilesystem": bool(specs.get("read_only_root_filesystem", False)),
        "capabilities": capabilities,
    }
    if specs.get("privileged"):
        container["privileged"] = True  # the API refuses allowPrivilegeEscalation: false with it
    else:
        container["allowPrivilegeEscalation"] = False
    if uid is not None:
        container["runAsUser"] = uid
    if gid is not None:
        container["runAsGroup"] = gid
    return {"seccompProfile": {"type": "RuntimeDefault"}}, container


def _pvc(meta: Obj, mib: int, specs: Mapping[str, Any]) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{mib}Mi"}}}
    storage_class = (specs.get("options") or {}).get("storage_class")
    if storage_class:
        spec["storageClassName"] = str(storage_class)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def _volumes(
    ref: DeploymentRef, resource: DesiredResource, namespace: str, prefix: str
) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(claims to make, pod volumes, container mounts)."""
    specs = resource.specs
    claims: list[Obj] = []
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    wanted = [dict(v) for v in specs.get("volumes") or []]
    kind = str(specs.get("kind") or "").lower()
    if (
        resource.type in ("database", "cache", "queue")
        and specs.get("storage")
        and "data" not in {v.get("name") for v in wanted}
    ):
        path = (specs.get("options") or {}).get("data_path") or DATA_PATHS.get(kind, "/data")
        wanted.append({"name": "data", "mount_path": path, "size": specs["storage"]})
    for volume in wanted:
        name = str(volume["name"])
        if name in resource.dependencies:
            source: Obj = {"persistentVolumeClaim": {"claimName": object_name(prefix, name)}}
        elif volume.get("size"):
            claim = object_name(prefix, f"{resource.name}-{name}")
            claims.append(_pvc(_meta(ref, resource, claim, namespace, False), int(volume["size"]), specs))
            source = {"persistentVolumeClaim": {"claimName": claim}}
        else:
            source = {"emptyDir": {}}
        volumes.append({"name": name, **source})
        mounts.append({"name": name, "mountPath": volume["mount_path"], "readOnly": bool(volume.get("read_only"))})
    return claims, volumes, mounts


def _service(meta: Obj, selector: Mapping[str, str], ports: Sequence[tuple[int, int]], public: bool) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "LoadBalancer" if public else "ClusterIP",
            "selector": dict(selector),
            "ports": [
                {"name": f"tcp-{port}", "port": port, "targetPort": target, "protocol": "TCP"} for port, target in ports
            ],
        },
    }


def workload_objects(
    ref: DeploymentRef,
    resource: DesiredResource,
    namespace: str,
    secret_values: Mapping[str, str],
    prefix: str = "",
) -> list[Obj]:
    """The objects of a workload resource in creation order; ``secret_values`` maps env var -> value.

    Object names are ``<prefix><resource>`` (a prefix keeps deployments apart in a shared namespace).

    Raises:
        PermanentEngineError: the specs cannot be expressed (an image is missing, a probe has no port).
    """
    specs = resource.specs
    image = specs.get("image")
    if not image:
        raise PermanentEngineError(
            f"resource {resource.name!r} ({resource.type}) needs specs.image to run on kubernetes",
            data={"resource": resource.name},
        )
    objects: list[Obj] = []
    env_from: list[Obj] = []
    if specs.get("env"):
        name = object_name(prefix, f"{resource.name}-env")
        data = {str(k): str(v) for k, v in specs["env"].items()}
        meta = _meta(ref, resource, name, namespace, False)
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
        env_from.append({"configMapRef": {"name": name}})
    if secret_values:
        name = object_name(prefix, f"{resource.name}-secrets")
        meta = _meta(ref, resource, name, namespace, False)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta,
                "type": "Opaque",
                "stringData": dict(secret_values),
            }
        )
        env_from.append({"secretRef": {"name": name}})
    claims, volumes, mounts = _volumes(ref, resource, namespace, prefix)
    objects += claims
    pod_security, container_security = security_contexts(specs)
    ports = [int(p) for p in specs.get("ports") or []]
    container: Obj = {
        "name": resource.name,
        "image": str(image),
        "securityContext": container_security,
        "resources": _resources(specs),
    }
    if specs.get("command"):
        container["args"] = [str(a) for a in specs["command"]]  # Docker's "command": the entrypoint stays
    if env_from:
        container["envFrom"] = env_from
    if ports:
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in ports]
    if mounts:
        container["volumeMounts"] = mounts
    probe = _probe(specs, resource.name)
    if probe is not None:
        container["readinessProbe"] = probe
        container["livenessProbe"] = probe
    owner = _owner(ref, resource.name)
    pod_labels = identity_labels(ref) | owner | {MANAGED_BY: MANAGER}
    pod_labels |= {NET_LABEL + str(n): "true" for n in specs.get("networks") or []}
    pod_spec: Obj = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if specs.get("host_network"):
        pod_spec["hostNetwork"] = True
    autoscaling = specs.get("autoscaling") or {}
    replicas = int(specs.get("replicas") or autoscaling.get("min") or 1)
    strategy: Obj = (
        {"type": "Recreate"}
        if any("persistentVolumeClaim" in v for v in volumes)
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    )
    base = object_name(prefix, resource.name)
    meta = _meta(ref, resource, base, namespace, True)
    objects.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": owner},
                "strategy": strategy,
                "template": {
                    # The fingerprint rolls the pods on any spec change (env and secrets included).
                    "metadata": {"labels": pod_labels, "annotations": {FINGERPRINT: resource.fingerprint}},
                    "spec": pod_spec,
                },
            },
        }
    )
    if ports:
        meta = _meta(ref, resource, base, namespace, False)
        objects.append(_service(meta, owner, [(p, p) for p in ports], bool(specs.get("public"))))
    return objects


def storage_objects(ref: DeploymentRef, resource: DesiredResource, namespace: str, prefix: str = "") -> list[Obj]:
    mib = int(resource.specs.get("storage") or DEFAULT_STORAGE_MIB)
    return [_pvc(_meta(ref, resource, object_name(prefix, resource.name), namespace, True), mib, resource.specs)]


def network_objects(ref: DeploymentRef, resource: DesiredResource, namespace: str, prefix: str = "") -> list[Obj]:
    members = {DEPLOYMENT: label_value(ref.id), NET_LABEL + resource.name: "true"}
    ingress: list[Obj] = [{"from": [{"podSelector": {"matchLabels": members}}]}]
    for rule in resource.specs.get("firewall") or []:
        protocol = str(rule.get("protocol", "tcp"))
        if rule.get("action", "allow") != "allow" or rule.get("direction", "in") != "in" or protocol == "icmp":
            continue  # NetworkPolicy only allows, has no ICMP, and egress stays open
        entry: Obj = {"from": [{"ipBlock": {"cidr": str(rule.get("source", "0.0.0.0/0"))}}]}
        if protocol in ("tcp", "udp"):
            entry["ports"] = [{"protocol": protocol.upper()} | ({"port": rule["port"]} if rule.get("port") else {})]
        ingress.append(entry)
    meta = _meta(ref, resource, object_name(prefix, resource.name), namespace, True)
    spec = {"podSelector": {"matchLabels": members}, "policyTypes": ["Ingress"], "ingress": ingress}
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}]


def load_balancer_service(
    ref: DeploymentRef,
    resource: DesiredResource,
    namespace: str,
    selector: Mapping[str, str],
    backend_ports: Sequence[int],
    prefix: str = "",
) -> Obj:
    """The Service of a load balancer: its ports (or the backends') sent to the backends' ports."""
    specs = resource.specs
    ports = [int(p) for p in specs.get("ports") or []] or list(backend_ports)
    if not ports:
        raise PermanentEngineError(
            f"load balancer {resource.name!r} has no ports and neither do its backends",
            data={"resource": resource.name},
        )
    targets = list(backend_ports) or ports
    pairs = [(port, targets[i] if i < len(targets) else targets[0]) for i, port in enumerate(ports)]
    meta = _meta(ref, resource, object_name(prefix, resource.name), namespace, True)
    service = _service(meta, selector, pairs, bool(specs.get("public")))
    sources = sorted(
        {
            str(r.get("source", "0.0.0.0/0"))
            for r in specs.get("firewall") or []
            if r.get("action", "allow") == "allow" and r.get("direction", "in") == "in"
        }
    )
    if specs.get("public") and sources and "0.0.0.0/0" not in sources:
        service["spec"]["loadBalancerSourceRanges"] = sources
    return service


# -- reading objects -------------------------------------------------------------------------------


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _annotations(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def rollout(deployment: Obj) -> tuple[str, str]:
    """(``done`` | ``progressing`` | ``failed``, detail) of a Deployment, as ``kubectl rollout status`` judges."""
    meta, spec, status = deployment.get("metadata") or {}, deployment.get("spec") or {}, deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    current = int(status.get("replicas") or 0)
    detail = f"{available}/{want} available"
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return "progressing", f"{detail}, waiting for the controller"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"{detail}: {condition.get('message', 'progress deadline exceeded')}"
    if updated < want:
        return "progressing", f"{detail}, {updated}/{want} updated"
    if current > updated:
        return "progressing", f"{detail}, {current - updated} old replicas terminating"
    if available < updated:
        return "progressing", detail
    return "done", detail


def status_of(kind: str, obj: Obj) -> ResourceStatus:
    if kind == "Deployment":
        state, _ = rollout(obj)
        if state == "failed":
            return "failed"
        if int((obj.get("spec") or {}).get("replicas", 1)) == 0:
            return "stopped"
        return "running" if state == "done" else "unknown"
    if kind == "PersistentVolumeClaim":
        phase = (obj.get("status") or {}).get("phase")
        return "running" if phase == "Bound" else "failed" if phase == "Lost" else "unknown"
    return "running"


# -- errors ----------------------------------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any secret value (raw or base64) and cut at 256 characters."""
    hidden: set[str] = set()
    for value in secrets:
        if value:
            hidden |= {value, base64.b64encode(value.encode()).decode()}
    for value in sorted(hidden, key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


@contextmanager
def _bounded() -> Iterator[None]:
    """Errors leave the engine with messages of at most 256 characters (names can be long)."""
    try:
        yield
    except AlmaError as err:
        err.message = _cut(err.message)
        err.args = (err.message,)
        raise


def _api_message(exc: Any) -> tuple[str, str]:
    """(reason, message) from an ApiException's Status body, else its HTTP reason."""
    body = exc.body
    try:
        status = json.loads(body) if body else {}
    except (ValueError, TypeError):
        status = {}
    if not isinstance(status, dict):
        status = {}
    reason = str(status.get("reason") or exc.reason or "")
    message = str(status.get("message") or exc.reason or "no detail")
    return reason, " ".join(message.split())


def translate_error(exc: BaseException, what: str, secrets: Iterable[str] = ()) -> EngineError:
    """The typed engine error for a client exception while doing ``what``.

    ``data`` carries ``status`` (HTTP status, 0 without a response) and ``reason`` (the API's).
    """
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason, detail = _api_message(exc)
        data = {"status": status, "reason": reason}
        if status == 0:
            message = scrub(f"{what}: kubernetes API unreachable ({detail})", secrets)
            if "CERTIFICATE_VERIFY_FAILED" in detail:
                return PermanentEngineError(message + "; check the kubeconfig's certificate authority", data=data)
            return TransientEngineError(message, delay=2.0, data=data)
        message = scrub(f"{what}: {detail} (HTTP {status} {reason})".strip(), secrets)
        if status in (401, 403):
            if "being terminated" in detail:
                return TransientEngineError(message, delay=2.0, data=data)
            return PermanentEngineError(message, data=data)
        if status == 409 and reason != "AlreadyExists":
            return TransientEngineError(message, delay=0.5, data=data)
        if status == 429 or status >= 500:
            headers = dict(exc.headers or {})
            retry = headers.get("Retry-After") or headers.get("retry-after") or ""
            delay = float(retry) if str(retry).isdigit() else 1.0
            return TransientEngineError(message, delay=delay, data=data)
        return PermanentEngineError(message, data=data)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        detail = " ".join(str(exc).split()) or type(exc).__name__
        message = scrub(f"{what}: kubernetes API unreachable ({type(exc).__name__}: {detail})", secrets)
        return TransientEngineError(message, delay=2.0, data={"status": 0, "reason": type(exc).__name__})
    message = scrub(f"{what}: unexpected {type(exc).__name__}: {exc}", secrets)
    return PermanentEngineError(message, data={"status": 0, "reason": type(exc).__name__})


def _status(err: EngineError) -> int:
    return int(err.data.get("status") or 0)


# -- planning --------------------------------------------------------------------------------------


def plan_changes(desired: DesiredState, observed: Sequence[ObservedResource], default_context: str) -> Plan:
    """The changes from ``observed`` to ``desired``: desired order first, then deletes by name."""
    return plan_by_name(desired, observed, lambda r, o: _compare(r, o, default_context), create_reason=_create_reason)


def _create_reason(resource: DesiredResource) -> str:
    if resource.type == "compute":
        return "not present; a compute VM cannot run on kubernetes, so this change will fail (use type container)"
    return "not present"


def _compare(desired: DesiredResource, observed: ObservedResource, default_context: str) -> tuple[Action, str]:
    rebuild: list[str] = []
    wanted_context = str(desired.metadata.get("kube_context") or default_context)
    current_context = context_of(observed.engine_id)
    if current_context is not None and current_context != wanted_context:
        rebuild.append(f"kube context changed: {current_context} -> {wanted_context}")
    if observed.fingerprint == desired.fingerprint and not rebuild:
        return "noop", "unchanged"
    rebuild += rebuild_reasons(desired, observed, REPLACING_SPECS)
    if rebuild:
        return "replace", "; ".join(rebuild)
    keys = changed_spec_keys(desired, observed)
    return "update", f"specs changed: {', '.join(keys)}" if keys else "fingerprint changed"


# -- clients ---------------------------------------------------------------------------------------


def client_for(config_file: Path | None, context: str | None) -> tuple[str, Any]:
    """(context name, ApiClient) from a kubeconfig (default location, else in-cluster when no file is given).

    Raises:
        ConfigError: the kubeconfig is missing or invalid, or has no such context.
    """
    configuration = k8s.Configuration()
    path = str(config_file) if config_file is not None else None
    try:
        contexts, current = k8s_config.list_kube_config_contexts(path)
        if context is None and not current:
            raise ConfigError(
                f"the kubeconfig {path or '~/.kube/config'} has no current context; set ALMA_KUBE_CONTEXTS"
            )
        name = context or str(current["name"])
        if name not in {c["name"] for c in contexts}:
            known = ", ".join(sorted(c["name"] for c in contexts))
            raise ConfigError(
                f"ALMA_KUBE_CONTEXTS: the kubeconfig has no context {name!r}; it has: {known}",
                data={"context": name, "available": sorted(c["name"] for c in contexts)},
            )
        k8s_config.load_kube_config(
            config_file=path, context=name, client_configuration=configuration, persist_config=False
        )
    except k8s_config.ConfigException as exc:
        if config_file is not None or context is not None:
            raise ConfigError(f"ALMA_KUBE_CONFIG {path or '~/.kube/config'}: {exc}", data={"path": path}) from exc
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException as inner:
            raise ConfigError(
                f"no kubeconfig at ~/.kube/config and not running in a cluster ({inner}); set ALMA_KUBE_CONFIG",
                data={"path": None},
            ) from inner
        name = "in-cluster"
    configuration.connection_pool_maxsize = 32  # calls run in worker threads, several per change
    return name, k8s.ApiClient(configuration=configuration)


_API_CLASSES: Final[Mapping[str, str]] = {
    "core": "CoreV1Api",
    "apps": "AppsV1Api",
    "networking": "NetworkingV1Api",
    "version": "VersionApi",
}


class KubernetesEngine:
    """Deploys blueprint resources as Kubernetes objects through one ApiClient per kubeconfig context."""

    name: ClassVar[str] = "kubernetes"

    def __init__(
        self,
        clients: Mapping[str, Any],
        *,
        namespace: str | None = None,
        namespace_prefix: str = "alma-",
        secrets_file: Path | None = None,
        timeout: float = 300.0,
        request_timeout: float = 30.0,
    ) -> None:
        """Use ``clients`` (context name -> ``kubernetes.client.ApiClient``; the first is the default).

        The engine owns the clients: ``aclose`` closes them. ``namespace`` puts every deployment in
        that one namespace; otherwise each gets ``<namespace_prefix><deployment id>``.

        Raises:
            ConfigError: no client, or a timeout that is not positive.
        """
        if not clients:
            raise ConfigError("the kubernetes engine needs at least one context", data={})
        if timeout <= 0 or request_timeout <= 0:
            raise ConfigError(f"timeouts must be > 0, got {timeout} and {request_timeout}", data={})
        self._clients = dict(clients)
        self._contexts = list(self._clients)
        self._apis: dict[tuple[str, str], Any] = {}
        self._shared_namespace = namespace
        self._prefix = namespace_prefix
        self._secrets_file = secrets_file
        self._timeout = timeout
        self._request_timeout = (min(5.0, request_timeout), request_timeout)
        self._ready: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._secret_values: set[str] = set()

    @classmethod
    def from_settings(cls, store: Store, settings: Settings, *, namespace_prefix: str = "alma-") -> KubernetesEngine:
        """Build from ``kube_config``, ``kube_contexts``, ``kube_namespace``, ``secrets_file`` and
        ``engine_timeout_seconds`` (the store is not used: the cluster holds the state).

        Raises:
            ConfigError: the kubeconfig cannot be read or lacks a configured context.
        """
        clients: dict[str, Any] = {}
        wanted: list[str | None] = [*settings.kube_contexts] or [None]
        for context in wanted:
            name, api_client = client_for(settings.kube_config, context)
            clients[name] = api_client
        return cls(
            clients,
            namespace=settings.kube_namespace,
            namespace_prefix=namespace_prefix,
            secrets_file=settings.secrets_file,
            timeout=settings.engine_timeout_seconds,
        )

    @property
    def contexts(self) -> list[str]:
        """The contexts this engine talks to; the first is the default."""
        return list(self._contexts)

    def namespace(self, deployment: DeploymentRef) -> str:
        """The namespace the deployment's objects live in."""
        return self._shared_namespace or namespace_for(deployment.id, self._prefix)

    def name_prefix(self, deployment: DeploymentRef) -> str:
        """What object names start with: nothing in the deployment's namespace, ``<deployment>-`` in a shared one."""
        return "" if self._shared_namespace is None else namespace_for(deployment.id, "") + "-"

    # -- the protocol ------------------------------------------------------------------------------

    async def plan(self, desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
        return plan_changes(desired, observed, self._contexts[0])

    async def apply(self, plan: Plan, on_progress: ProgressCallback | None = None) -> ApplyResult:
        """Carry out the changes in order, each waiting for its rollout; the first failure raises.

        Raises:
            DeploymentNotFound: an update, replace or delete names a resource that does not exist.
            PermanentEngineError: invalid objects, refused credentials, a compute resource, a failed rollout.
            TransientEngineError: the API is unreachable or overloaded, a conflict, a rollout past the timeout.
        """

        async def apply_one(change: Change) -> ResourceOutcome:
            with _bounded():
                return await self._apply_change(plan.deployment, change)

        return await apply_in_order(plan, apply_one, on_progress)

    async def destroy(self, deployment: DeploymentRef) -> ApplyResult:
        """Delete every object the deployment owns in every context, then its namespace if this engine made it.

        Raises:
            PermanentEngineError, TransientEngineError: the API refused or could not be reached.
        """
        outcomes: list[ResourceOutcome] = []
        for context in self._contexts:
            with _bounded():
                outcomes += await self._destroy_in(context, deployment)
        return ApplyResult(deployment=deployment, outcomes=tuple(outcomes))

    async def _destroy_in(self, context: str, deployment: DeploymentRef) -> list[ResourceOutcome]:
        namespace = self.namespace(deployment)
        selector = _selector({DEPLOYMENT: label_value(deployment.id)})
        listed = await self._list(context, namespace, selector, CREATE_ORDER)
        found = [(kind, obj) for kind, obj in listed if not _terminating(obj)]
        await self._delete_objects(context, namespace, found)
        by_resource: dict[str, str | None] = {}
        for kind, obj in found:
            resource = _annotations(obj).get(RESOURCE) or _labels(obj).get(RESOURCE, obj["metadata"]["name"])
            primary = _labels(obj).get(PART) == "primary"
            ident = engine_id(context, namespace, kind, obj["metadata"]["name"]) if primary else None
            by_resource[resource] = by_resource.get(resource) or ident
        if self._shared_namespace is None:
            await self._delete_namespace(context, namespace, deployment)
        return [
            ResourceOutcome(
                resource=name, action="delete", status="succeeded", message=f"deleted {name!r}", engine_id=ident
            )
            for name, ident in sorted(by_resource.items())
        ]

    async def observe(self, deployment: DeploymentRef) -> list[ObservedResource]:
        """The primary object of each resource, found by the deployment's labels in every context.

        Raises:
            PermanentEngineError, TransientEngineError: the API refused or could not be reached.
        """
        namespace = self.namespace(deployment)
        selector = _selector({DEPLOYMENT: label_value(deployment.id), PART: "primary"})
        seen: dict[str, ObservedResource] = {}
        for context in self._contexts:
            with _bounded():
                listed = await self._list(context, namespace, selector, PRIMARY_KINDS)
            for kind, obj in listed:
                observed = self._observed(context, namespace, kind, obj)
                if observed is not None and observed.name not in seen:
                    seen[observed.name] = observed
        return [seen[name] for name in sorted(seen)]

    async def health(self) -> EngineHealth:
        """``GET /version`` on every context."""
        details: list[str] = []
        ok = True
        for context in self._contexts:
            try:
                version = await self._call(context, "version", "get_code", what=f"GET /version (context {context})")
                details.append(f"{context}: kubernetes {version.get('gitVersion', '?')}")
            except EngineError as err:
                ok = False
                details.append(err.message)
        return EngineHealth(ok=ok, detail="; ".join(details))

    async def aclose(self) -> None:
        """Close every ApiClient (and its connection pool)."""
        clients, self._clients, self._apis = list(self._clients.values()), {}, {}
        for api_client in clients:
            await anyio.to_thread.run_sync(api_client.close)

    # -- calls -------------------------------------------------------------------------------------

    def _api(self, context: str, api: str) -> Any:
        key = (context, api)
        if key not in self._apis:
            if context not in self._clients:
                raise PermanentEngineError(f"the kubernetes engine is closed (context {context!r})", data={})
            self._apis[key] = getattr(k8s, _API_CLASSES[api])(self._clients[context])
        return self._apis[key]

    async def _call(self, context: str, api: str, method: str, *args: Any, what: str, **kwargs: Any) -> Obj:
        """One API call in a worker thread, its JSON body parsed; failures become typed engine errors."""
        function = getattr(self._api(context, api), method)

        def run() -> bytes:
            response = function(*args, _preload_content=False, _request_timeout=self._request_timeout, **kwargs)
            return bytes(response.data)

        try:
            raw = await anyio.to_thread.run_sync(run)
            parsed = json.loads(raw) if raw else {}
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise translate_error(exc, what, self._secret_values) from exc
        return parsed if isinstance(parsed, dict) else {}

    async def _gather(self, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        results: list[Any] = [None] * len(calls)

        async def run(index: int) -> None:
            results[index] = await calls[index]()

        try:
            async with anyio.create_task_group() as group:
                for index in range(len(calls)):
                    group.start_soon(run, index)
        except BaseExceptionGroup as errors:
            # Callers (and the orchestrator) handle typed engine errors, not groups: raise the first.
            first: BaseException = errors
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from errors
        return results

    async def _list(self, context: str, namespace: str, selector: str, kinds: Sequence[str]) -> list[tuple[str, Obj]]:
        """Objects of ``kinds`` matching ``selector`` (an absent namespace lists nothing)."""

        def lister(kind: str) -> Callable[[], Awaitable[Obj]]:
            spec = KINDS[kind]
            return partial(
                self._call,
                context,
                spec.api,
                f"list_namespaced_{spec.suffix}",
                namespace,
                label_selector=selector,
                what=f"listing {kind}s in {namespace}",
            )

        pages = await self._gather([lister(kind) for kind in kinds])
        return [(kind, item) for kind, page in zip(kinds, pages, strict=True) for item in page.get("items") or []]

    async def _delete(self, context: str, namespace: str, kind: str, name: str) -> None:
        spec = KINDS[kind]
        try:
            await self._call(
                context,
                spec.api,
                f"delete_namespaced_{spec.suffix}",
                name,
                namespace,
                body={"propagationPolicy": "Background"},
                what=f"deleting {kind} {namespace}/{name}",
            )
        except EngineError as err:
            if _status(err) != 404:
                raise

    async def _delete_objects(self, context: str, namespace: str, objects: Sequence[tuple[str, Obj]]) -> None:
        for kind in DELETE_ORDER:
            names = [o["metadata"]["name"] for k, o in objects if k == kind]
            await self._gather([partial(self._delete, context, namespace, kind, name) for name in names])

    # -- namespaces --------------------------------------------------------------------------------

    def _namespace_object(self, namespace: str, deployment: DeploymentRef) -> Obj:
        labels = {MANAGED_BY: MANAGER}
        annotations: dict[str, str] = {}
        if self._shared_namespace is None:
            labels |= identity_labels(deployment)
            annotations[DEPLOYMENT_ID] = deployment.id
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": labels, "annotations": annotations},
        }

    async def _ensure_namespace(self, context: str, namespace: str, deployment: DeploymentRef, deadline: float) -> None:
        key = (context, namespace)
        if key in self._ready:
            return
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            while key not in self._ready:
                try:
                    current: Obj | None = await self._call(
                        context, "core", "read_namespace", namespace, what=f"reading namespace {namespace}"
                    )
                except EngineError as err:
                    if _status(err) != 404:
                        raise
                    current = None
                if current is None:
                    try:
                        await self._call(
                            context,
                            "core",
                            "create_namespace",
                            self._namespace_object(namespace, deployment),
                            what=f"creating namespace {namespace}",
                        )
                    except EngineError as err:
                        if _status(err) != 409:
                            raise
                        continue  # made meanwhile (or being deleted): read it again
                    self._ready.add(key)
                elif not _terminating(current):
                    self._ready.add(key)
                elif time.monotonic() >= deadline:
                    raise TransientEngineError(
                        f"namespace {namespace} is still being deleted (a destroy just ran); retry once it is gone",
                        delay=5.0,
                        data={"namespace": namespace},
                    )
                else:
                    await anyio.sleep(0.25)

    async def _delete_namespace(self, context: str, namespace: str, deployment: DeploymentRef) -> None:
        self._ready.discard((context, namespace))
        try:
            current = await self._call(
                context, "core", "read_namespace", namespace, what=f"reading namespace {namespace}"
            )
        except EngineError as err:
            if _status(err) == 404:
                return
            raise
        labels = _labels(current)
        made_here = labels.get(MANAGED_BY) == MANAGER and labels.get(DEPLOYMENT) == label_value(deployment.id)
        if made_here and not _terminating(current):
            try:
                await self._call(
                    context,
                    "core",
                    "delete_namespace",
                    namespace,
                    body={"propagationPolicy": "Background"},
                    what=f"deleting namespace {namespace}",
                )
            except EngineError as err:
                if _status(err) != 404:
                    raise

    # -- applying one change -------------------------------------------------------------------------

    def _context_for(self, resource: DesiredResource) -> str:
        wanted = resource.metadata.get("kube_context")
        if wanted is None:
            return self._contexts[0]
        if wanted not in self._clients:
            raise PermanentEngineError(
                f"resource {resource.name!r} asks for kube context {wanted!r}, which is not configured; "
                f"allowed (ALMA_KUBE_CONTEXTS): {', '.join(self._contexts)}",
                data={"resource": resource.name, "context": str(wanted), "allowed": self._contexts},
            )
        return str(wanted)

    async def _apply_change(self, deployment: DeploymentRef, change: Change) -> ResourceOutcome:
        name, action = change.resource, change.action
        namespace = self.namespace(deployment)
        if action == "noop":
            ident = change.observed.engine_id if change.observed else None
            return ResourceOutcome(
                resource=name, action=action, status="succeeded", message="unchanged", engine_id=ident
            )
        deadline = time.monotonic() + self._timeout
        selector = _selector(_owner(deployment, name))
        if action == "delete":
            found = await self._find(namespace, selector, self._contexts)
            if not found:
                raise self._not_found(deployment, name, action, namespace)
            ident = None
            for context, objects in found.items():
                await self._delete_objects(context, namespace, objects)
                ident = ident or self._primary_id(context, namespace, objects)
                if any(_annotations(o).get(TYPE) == "load_balancer" for _, o in objects):
                    await self._release_backends(context, namespace, deployment, name)
            return ResourceOutcome(
                resource=name, action=action, status="succeeded", message=f"deleted {name!r}", engine_id=ident
            )
        desired = change.desired
        if desired is None:
            raise PermanentEngineError(
                f"the {action} change for {name!r} carries no desired resource; re-plan",
                data={"deployment": deployment.id, "resource": name, "action": action},
            )
        if desired.type not in KNOWN_TYPES:
            raise PermanentEngineError(
                f"resource {name!r} has type {desired.type!r}, which the kubernetes engine does not know",
                data={"resource": name, "type": desired.type},
            )
        if desired.type == "compute":
            raise PermanentEngineError(
                f"resource {name!r} is a compute VM, which cannot run on kubernetes; "
                "use type container (with an image), or the proxmox provider",
                data={"resource": name, "type": desired.type},
            )
        context = self._context_for(desired)
        existing: list[tuple[str, Obj]] = []
        if action in ("update", "replace"):
            others = [c for c in self._contexts if c != context]
            found = await self._find(namespace, selector, [context, *others])
            if not found:
                raise self._not_found(deployment, name, action, namespace)
            for other, objects in found.items():
                if other != context:  # moving to another context: the old one goes
                    await self._delete_objects(other, namespace, objects)
            existing = found.get(context, [])
        await self._ensure_namespace(context, namespace, deployment, deadline)
        detail = await self._converge(context, namespace, deployment, desired, existing, deadline)
        return ResourceOutcome(
            resource=name,
            action=action,
            status="succeeded",
            message=f"{_WORDS[action]} {name!r} ({detail})",
            engine_id=engine_id(
                context, namespace, self._primary_kind(desired), object_name(self.name_prefix(deployment), name)
            ),
        )

    @staticmethod
    def _primary_kind(resource: DesiredResource) -> str:
        return {"storage": "PersistentVolumeClaim", "network": "NetworkPolicy", "load_balancer": "Service"}.get(
            resource.type, "Deployment"
        )

    @staticmethod
    def _primary_id(context: str, namespace: str, objects: Sequence[tuple[str, Obj]]) -> str | None:
        for kind, obj in objects:
            if _labels(obj).get(PART) == "primary":
                return engine_id(context, namespace, kind, obj["metadata"]["name"])
        return None

    @staticmethod
    def _not_found(deployment: DeploymentRef, name: str, action: str, namespace: str) -> DeploymentNotFound:
        return DeploymentNotFound(
            f"deployment {deployment.id!r} has no resource {name!r} to {action} on kubernetes "
            f"(namespace {namespace}); observe the deployment and re-plan",
            data={"deployment": deployment.id, "resource": name, "action": action, "namespace": namespace},
        )

    async def _find(self, namespace: str, selector: str, contexts: Sequence[str]) -> dict[str, list[tuple[str, Obj]]]:
        found: dict[str, list[tuple[str, Obj]]] = {}
        for context in contexts:
            objects = await self._list(context, namespace, selector, CREATE_ORDER)
            if objects:
                found[context] = objects
        return found

    async def _converge(
        self,
        context: str,
        namespace: str,
        deployment: DeploymentRef,
        resource: DesiredResource,
        existing: Sequence[tuple[str, Obj]],
        deadline: float,
    ) -> str:
        """Create or update the resource's objects, delete the ones it no longer has, wait for rollouts."""
        prefix = self.name_prefix(deployment)
        base = object_name(prefix, resource.name)
        waits: list[str] = []
        if resource.type in WORKLOAD_TYPES:
            values = await self._resolve_secrets(resource)
            objects = workload_objects(deployment, resource, namespace, values, prefix)
            waits.append(base)
        elif resource.type == "storage":
            objects = storage_objects(deployment, resource, namespace, prefix)
        elif resource.type == "network":
            objects = network_objects(deployment, resource, namespace, prefix)
        else:
            service, backends = await self._load_balancer(context, namespace, deployment, resource)
            objects = [service]
            waits += backends
        current = {(k, o["metadata"]["name"]): o for k, o in existing}
        for obj in objects:
            key = (obj["kind"], obj["metadata"]["name"])
            await self._upsert(context, namespace, deployment, resource.name, obj, current.get(key))
        keep = {(o["kind"], o["metadata"]["name"]) for o in objects}
        await self._delete_objects(context, namespace, [(k, o) for (k, n), o in current.items() if (k, n) not in keep])
        details = [await self._wait_rollout(context, namespace, name, deadline) for name in waits]
        if resource.type in WORKLOAD_TYPES:
            return f"Deployment {namespace}/{base}: {details[0]}"
        kind = self._primary_kind(resource)
        return f"{kind} {namespace}/{base}" + (f", {len(details)} backends rolled out" if details else "")

    async def _resolve_secrets(self, resource: DesiredResource) -> dict[str, str]:
        """Env var -> value for the resource's ``secrets`` references, from the secrets file only."""
        references = {str(k): str(v) for k, v in (resource.specs.get("secrets") or {}).items()}
        if not references:
            return {}
        path = self._secrets_file
        if path is None:
            raise PermanentEngineError(
                f"resource {resource.name!r} references secrets ({', '.join(sorted(set(references.values())))}) "
                "but no secrets file is configured; set ALMA_SECRETS_FILE",
                data={"resource": resource.name},
            )
        try:
            loaded = yaml.safe_load(await anyio.to_thread.run_sync(path.read_text))
        except (OSError, yaml.YAMLError) as exc:
            raise PermanentEngineError(
                f"the secrets file {path} cannot be read as a YAML mapping ({type(exc).__name__})",
                data={"path": str(path)},
            ) from exc
        if not isinstance(loaded, dict):
            raise PermanentEngineError(
                f"the secrets file {path} is not a mapping of name -> value", data={"path": str(path)}
            )
        values = {str(k): str(v) for k, v in loaded.items() if v is not None}
        self._secret_values |= set(values.values())
        missing = sorted({ref for ref in references.values() if ref not in values})
        if missing:
            raise PermanentEngineError(
                f"resource {resource.name!r} references secrets missing from the secrets file: {', '.join(missing)}; "
                f"add them to {path}",
                data={"resource": resource.name, "missing": missing},
            )
        return {env: values[ref] for env, ref in references.items()}

    async def _upsert(
        self, context: str, namespace: str, deployment: DeploymentRef, resource: str, obj: Obj, existing: Obj | None
    ) -> None:
        kind = KINDS[obj["kind"]]
        name = obj["metadata"]["name"]
        if existing is None:
            try:
                await self._call(
                    context,
                    kind.api,
                    f"create_namespaced_{kind.suffix}",
                    namespace,
                    obj,
                    what=f"creating {kind.kind} {namespace}/{name}",
                )
                return
            except EngineError as err:
                if _status(err) == 404 or "being terminated" in err.message:
                    # The namespace went (or is going) away under us: the retry makes it again.
                    self._ready.discard((context, namespace))
                    raise TransientEngineError(err.message, delay=1.0, data=err.data) from err
                if _status(err) != 409:
                    raise
            existing = await self._call(
                context,
                kind.api,
                f"read_namespaced_{kind.suffix}",
                name,
                namespace,
                what=f"reading {kind.kind} {namespace}/{name}",
            )
            owner = _owner(deployment, resource)
            if any(_labels(existing).get(k) != v for k, v in owner.items()):
                raise PermanentEngineError(
                    f"{kind.kind} {namespace}/{name} already exists and does not belong to resource {resource!r} of "
                    f"deployment {deployment.id!r}; rename the resource or remove that object",
                    data={"kind": kind.kind, "namespace": namespace, "name": name},
                )
        body = merge_for_update(existing, obj)
        await self._call(
            context,
            kind.api,
            f"replace_namespaced_{kind.suffix}",
            name,
            namespace,
            body,
            what=f"updating {kind.kind} {namespace}/{name}",
        )

    async def _wait_rollout(self, context: str, namespace: str, name: str, deadline: float) -> str:
        """Poll the Deployment's status until it is rolled out: every 0.05-0.2 s for the first 5 s (most
        rollouts take about a second), then backing off to 1 s."""
        delay, started = 0.05, time.monotonic()
        while True:
            obj = await self._call(
                context,
                "apps",
                "read_namespaced_deployment_status",
                name,
                namespace,
                what=f"reading Deployment {namespace}/{name}",
            )
            state, detail = rollout(obj)
            if state == "done":
                return detail
            if state == "failed":
                raise PermanentEngineError(f"rollout of Deployment {namespace}/{name} failed: {detail}"[:MESSAGE_LIMIT])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientEngineError(
                    f"rollout of Deployment {namespace}/{name} did not finish within {self._timeout:g}s: {detail}"[
                        :MESSAGE_LIMIT
                    ],
                    delay=5.0,
                    data={"namespace": namespace, "name": name},
                )
            await anyio.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.2 if time.monotonic() - started < 5 else 1.0)

    # -- load balancers ------------------------------------------------------------------------------

    async def _load_balancer(
        self, context: str, namespace: str, deployment: DeploymentRef, resource: DesiredResource
    ) -> tuple[Obj, list[str]]:
        """The LB's Service, and the backends whose pods had to be labelled (to wait for)."""
        backends = [str(b) for b in resource.specs.get("backends") or resource.dependencies]
        if not backends:
            raise PermanentEngineError(
                f"load balancer {resource.name!r} has no backends; list them in specs.backends",
                data={"resource": resource.name},
            )
        found: dict[str, Obj] = {}
        selector = _selector({DEPLOYMENT: label_value(deployment.id), PART: "primary"})
        for _, obj in await self._list(context, namespace, selector, ("Deployment",)):
            found[_labels(obj).get(RESOURCE, "")] = obj
        missing = [b for b in backends if label_value(b) not in found]
        if missing:
            raise PermanentEngineError(
                f"load balancer {resource.name!r}: backend {missing[0]!r} is not a workload deployed in {namespace} "
                "(deploy it first: list it in dependencies)",
                data={"resource": resource.name, "missing": missing},
            )
        ports: list[list[int]] = []
        for backend in backends:
            specs = json.loads(_annotations(found[label_value(backend)]).get(SPECS) or "{}")
            ports.append([int(p) for p in specs.get("ports") or []])
        if any(p != ports[0] for p in ports):
            raise PermanentEngineError(
                f"load balancer {resource.name!r}: its backends listen on different ports ({ports}); "
                "use one port list for every backend",
                data={"resource": resource.name},
            )
        labelled: list[str] = []
        if len(backends) == 1:
            pods: dict[str, str] = _owner(deployment, backends[0])
        else:
            key = LB_LABEL + resource.name
            pods = {DEPLOYMENT: label_value(deployment.id), key: "true"}
            labelled = [
                found[label_value(b)]["metadata"]["name"]
                for b in backends
                if await self._set_lb_label(context, namespace, found[label_value(b)], key, True)
            ]
        await self._release_backends(context, namespace, deployment, resource.name, keep=set(backends))
        prefix = self.name_prefix(deployment)
        return load_balancer_service(deployment, resource, namespace, pods, ports[0], prefix), labelled

    async def _set_lb_label(self, context: str, namespace: str, deployment_obj: Obj, key: str, on: bool) -> bool:
        """Add or remove a load balancer's label on a Deployment and its pod template; whether it changed."""
        body = copy.deepcopy(deployment_obj)
        template_labels = body["spec"]["template"]["metadata"].setdefault("labels", {})
        if (key in template_labels) == on:
            return False
        labels = body["metadata"].setdefault("labels", {})
        if on:
            labels[key] = template_labels[key] = "true"
        else:
            labels.pop(key, None)
            template_labels.pop(key, None)
        body.pop("status", None)
        body |= {"apiVersion": "apps/v1", "kind": "Deployment"}
        name = body["metadata"]["name"]
        await self._call(
            context,
            "apps",
            "replace_namespaced_deployment",
            name,
            namespace,
            body,
            what=f"labelling Deployment {namespace}/{name}",
        )
        return True

    async def _release_backends(
        self, context: str, namespace: str, deployment: DeploymentRef, lb: str, keep: set[str] | None = None
    ) -> None:
        """Take a load balancer's label off the Deployments it no longer fronts (all of them when deleted)."""
        key = LB_LABEL + lb
        selector = _selector({DEPLOYMENT: label_value(deployment.id), key: "true"})
        for _, obj in await self._list(context, namespace, selector, ("Deployment",)):
            if _labels(obj).get(RESOURCE) in {label_value(k) for k in keep or set()} or _terminating(obj):
                continue
            try:
                await self._set_lb_label(context, namespace, obj, key, False)
            except EngineError as err:
                if _status(err) != 404:
                    raise

    # -- observing -------------------------------------------------------------------------------------

    def _observed(self, context: str, namespace: str, kind: str, obj: Obj) -> ObservedResource | None:
        annotations = _annotations(obj)
        if FINGERPRINT not in annotations or _terminating(obj):
            return None
        try:
            specs = json.loads(annotations.get(SPECS) or "{}")
        except ValueError:
            specs = {}
        name = obj["metadata"]["name"]
        return ObservedResource(
            name=annotations.get(RESOURCE) or _labels(obj).get(RESOURCE, name),
            type=annotations.get(TYPE, "container"),
            provider=annotations.get(PROVIDER, "kubernetes"),
            fingerprint=annotations[FINGERPRINT],
            status=status_of(kind, obj),
            engine_id=engine_id(context, namespace, kind, name),
            specs=specs if isinstance(specs, dict) else {},
        )


def merge_for_update(existing: Obj, desired: Obj) -> Obj:
    """The body that replaces ``existing`` with ``desired``, keeping what the cluster owns.

    Kept: the resourceVersion (a concurrent change is a 409, retried), annotations of other tools,
    a Service's cluster IPs and node ports, a claim's bound spec (only its size may change), and the
    load-balancer labels this engine put on a Deployment's pods.
    """
    body = copy.deepcopy(desired)
    old_meta = existing.get("metadata") or {}
    meta = body["metadata"]
    meta["resourceVersion"] = old_meta.get("resourceVersion")
    foreign = {k: v for k, v in (old_meta.get("annotations") or {}).items() if not k.startswith(PREFIX)}
    if foreign or "annotations" in meta:
        meta["annotations"] = foreign | dict(meta.get("annotations") or {})
    kind = desired["kind"]
    old_spec = existing.get("spec") or {}
    if kind == "Deployment":
        kept = old_spec.get("template", {}).get("metadata", {}).get("labels") or {}
        lb = {k: v for k, v in kept.items() if k.startswith(LB_LABEL)}
        body["spec"]["template"]["metadata"]["labels"] |= lb
        meta["labels"] |= {k: v for k, v in (old_meta.get("labels") or {}).items() if k.startswith(LB_LABEL)}
    elif kind == "Service":
        spec = body["spec"]
        for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"):
            if field in old_spec:
                spec[field] = old_spec[field]
        if spec.get("type") == old_spec.get("type") and spec["type"] != "ClusterIP":
            node_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
            for port in spec["ports"]:
                if node_ports.get(port["port"]):
                    port["nodePort"] = node_ports[port["port"]]
    elif kind == "PersistentVolumeClaim":
        spec = copy.deepcopy(old_spec)
        spec.setdefault("resources", {}).setdefault("requests", {})["storage"] = desired["spec"]["resources"][
            "requests"
        ]["storage"]
        body["spec"] = spec
    elif kind == "Secret":
        body["data"] = {}  # stringData is merged into data: start empty so removed keys go
    return body
