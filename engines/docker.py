"""The docker engine: blueprint resources as containers, networks and volumes on one docker daemon.

What one deployment ``<d>`` becomes (names get the engine's ``scope`` and a ``-`` in front when set):

- a bridge network ``<d>_default`` that every container joins, where each answers to its resource
  name. It is made with the first container and removed with the last: a daemon started with
  ``--bridge=none`` has no default network, and deployments must not see each other anyway.
- ``container``, ``service``, ``database``, ``cache``, ``queue`` and ``load_balancer`` resources:
  ``replicas`` containers ``<d>-<resource>-<i>`` running ``specs.image`` (required; never pulled, it
  must already be on the daemon) with the image's own command unless ``specs.command`` is set.
  ``env``, ``secrets`` (references resolved from the secrets file), ``ports`` (published on an
  ephemeral host port on 127.0.0.1, or on every interface when ``public``), ``cpu`` and ``memory``
  limits, ``healthcheck`` (a ``command``, or a ``path`` probed with busybox-compatible ``wget``),
  ``volumes`` (named volumes ``<d>-<resource>_<volume>``), ``user``, ``read_only_root_filesystem``,
  ``privileged``, ``capabilities`` and ``host_network`` are applied; every container runs under an
  init process with the ``unless-stopped`` restart policy. A load balancer is a container like the
  others: its image does the balancing, its ``backends`` resolve by name on the deployment network
  and are also passed as ``ALMA_BACKENDS``.
- ``network`` resources: a bridge network ``<d>-<resource>`` (``cidr`` is its subnet) that the
  containers listing it in ``specs.networks`` join too; ``firewall`` rules are not enforced.
- ``storage`` resources: a named volume ``<d>-<resource>`` (the local driver has no size or type).
- ``compute`` resources are virtual machines: planning one on docker is a ``PermanentEngineError``.

Everything carries the deployment's ``alma.*`` labels plus ``alma.resource``, ``alma.type``,
``alma.provider``, ``alma.fingerprint`` and ``alma.specs`` (the specs as JSON: secret references,
never values), so ``observe`` rebuilds the state from the daemon alone.

Docker cannot change a container, network or volume in place, so an update rebuilds. A container
is replaced create-before-destroy: the new one starts under a temporary name without the resource
name, must be running and pass its health check (without one, running is all that is known), then
takes the resource name on its networks; the old one leaves them, stops and is removed, and the new
one takes its name. If the new one fails, the old one keeps serving. Containers with volumes (two
processes must not share a data directory) or on the host network (ports would clash) are stopped
first and restarted if their successor fails. A container found stopped or failed is rebuilt by
the next deploy. A network is recreated and its containers reattached; a volume is recreated
empty, which the plan's reason says. ``keep_data`` keeps volumes when resources are deleted or the
deployment is destroyed (kept storage resources stay observable, and a redeploy reuses them).
Published host ports are ephemeral: the outcome message says where each port landed.

Failures are typed: an unreachable daemon, a conflict (409), something vanishing under us (404)
and daemon errors (5xx) are transient; an invalid spec, a missing image, an unknown secret
reference or a failed health check are permanent. Messages are the daemon's words with every known
secret value removed, at most 256 characters. Resolved secrets end up in the container's
environment, which anyone with access to the daemon can inspect: docker has no other secret store
outside swarm.

The SDK blocks: every call runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeVar

import anyio
import anyio.to_thread
import docker  # type: ignore[import-untyped]
import yaml
from docker import errors as docker_errors

from alma_mcp.errors import DeploymentNotFound, EngineError, PermanentEngineError, TransientEngineError
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
    OutcomeStatus,
    Plan,
    ProgressCallback,
    ResourceOutcome,
    ResourceStatus,
    apply_in_order,
    changed_spec_keys,
    plan_by_name,
    rebuild_reasons,
)

T = TypeVar("T")
Kind = Literal["container", "network", "volume"]

MIB: Final = 1024 * 1024
MESSAGE_LIMIT: Final = 256
CONTAINER_TYPES: Final = frozenset({"container", "service", "database", "cache", "queue", "load_balancer"})
# A change to any of these rebuilds the resource even where an update would otherwise do.
REPLACING_SPECS: Final = ("image",)
DRIFT: Final = "drift"
"""The fingerprint ``observe`` reports when a resource's containers disagree or are missing."""
LOCALHOST: Final = "127.0.0.1"
EVERY_INTERFACE: Final = "0.0.0.0"  # noqa: S104 - where public resources are published, on purpose
READY_POLL_SECONDS: Final = 0.1
API_TIMEOUT_SECONDS: Final = 60.0
SECRET_MIN_LENGTH: Final = 4
"""Shorter secret values are not scrubbed from messages (they would blank out ordinary words)."""
# Daemon 500s that are really invalid specs: retrying will not help.
_PERMANENT_DAEMON_ERRORS: Final = ("unable to find user", "executable file not found", "invalid ")
_NOT_A_NAME: Final = re.compile(r"[^a-zA-Z0-9_.-]")
_WORDS: Final[Mapping[Action, tuple[str, str]]] = {
    "create": ("create", "created"),
    "update": ("update", "updated"),
    "replace": ("replace", "replaced"),
    "delete": ("delete", "deleted"),
    "noop": ("check", "unchanged"),
}

# Labels beyond DeploymentRef.labels().
SCOPE: Final = "alma.scope"
RESOURCE: Final = "alma.resource"
TYPE: Final = "alma.type"
PROVIDER: Final = "alma.provider"
FINGERPRINT: Final = "alma.fingerprint"
SPECS: Final = "alma.specs"
REPLICA: Final = "alma.replica"
OWNER: Final = "alma.owner"
"""On a container's data volume: the resource that mounts it."""
VOLUME: Final = "alma.volume"
NETWORK: Final = "alma.network"
"""``deployment`` on the network every container of the deployment joins."""


# -- pure helpers ----------------------------------------------------------------------------------


def resource_kind(resource: DesiredResource) -> Kind:
    """What a resource becomes on docker.

    Raises:
        PermanentEngineError: the type cannot run on docker (compute), or a container type has no image.
    """
    if resource.type in CONTAINER_TYPES:
        if not resource.specs.get("image"):
            raise PermanentEngineError(
                f"resource {resource.name!r} ({resource.type}) has no specs.image; the docker engine runs "
                "images present on the daemon: set one",
                data={"resource": resource.name, "type": resource.type},
            )
        return "container"
    if resource.type == "network":
        return "network"
    if resource.type == "storage":
        return "volume"
    hint = (
        "a compute resource is a virtual machine: use type 'container' with an image, or a VM provider"
        if resource.type == "compute"
        else f"supported types: {', '.join(sorted({*CONTAINER_TYPES, 'network', 'storage'}))}"
    )
    raise PermanentEngineError(
        f"resource {resource.name!r} has type {resource.type!r}, which cannot run on docker; {hint}",
        data={"resource": resource.name, "type": resource.type},
    )


def _kind_of_type(resource_type: str) -> Kind | None:
    if resource_type in CONTAINER_TYPES:
        return "container"
    return {"network": "network", "storage": "volume"}.get(resource_type)  # type: ignore[return-value]


def plan_changes(desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
    """The changes from ``observed`` to ``desired``: desired order first, then deletes by name.

    Raises:
        PermanentEngineError: a desired resource cannot run on docker (its type is named).
    """
    kinds = {resource.name: resource_kind(resource) for resource in desired.resources}  # refuses compute first
    return plan_by_name(desired, observed, lambda r, o: _compare_running(r, kinds[r.name], o))


def _compare(desired: DesiredResource, kind: Kind, observed: ObservedResource) -> tuple[Action, str]:
    if observed.fingerprint == desired.fingerprint:
        return "noop", "unchanged"
    rebuild = rebuild_reasons(desired, observed, REPLACING_SPECS)
    if rebuild:
        return "replace", "; ".join(rebuild)
    keys = changed_spec_keys(desired, observed)
    changed = f"specs changed: {', '.join(keys)}" if keys else "fingerprint changed"
    if observed.fingerprint == DRIFT:
        changed = "its containers differ from what was deployed (missing, extra or mixed)"
    if kind == "network":
        return "replace", f"{changed}; a docker network cannot change in place"
    if kind == "volume":
        return "replace", f"{changed}; a docker volume cannot change in place: it is recreated empty"
    return "update", changed


def _compare_running(desired: DesiredResource, kind: Kind, observed: ObservedResource) -> tuple[Action, str]:
    action, reason = _compare(desired, kind, observed)
    if action == "noop" and kind == "container" and observed.status in ("stopped", "failed"):
        return "update", f"its containers are {observed.status}: they are rebuilt"
    return action, reason


def healthcheck_test(specs: Mapping[str, Any]) -> list[str] | None:
    """The health check as a command: ``specs.healthcheck.command``, or ``wget`` of its ``path``."""
    check = specs.get("healthcheck")
    if not isinstance(check, Mapping):
        return None
    if check.get("command"):
        return [str(part) for part in check["command"]]
    if check.get("path") is not None:
        ports = specs.get("ports") or []
        port = check.get("port") or (ports[0] if ports else 80)
        path = str(check["path"])
        return ["wget", "-q", "-O-", f"http://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"]
    return None


def _check_timing(specs: Mapping[str, Any]) -> tuple[int, int, int]:
    check = specs.get("healthcheck")
    check = check if isinstance(check, Mapping) else {}
    return int(check.get("interval_s", 10)), int(check.get("timeout_s", 5)), int(check.get("retries", 3))


def container_options(
    resource: DesiredResource,
    *,
    name: str,
    labels: Mapping[str, str],
    environment: Mapping[str, str],
    network: str,
    binds: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The ``containers.create`` keyword arguments for one replica (the network aliases are added apart)."""
    specs = resource.specs
    options: dict[str, Any] = {
        "image": str(specs["image"]),
        "name": name,
        "labels": dict(labels),
        "environment": dict(environment),
        "restart_policy": {"Name": "unless-stopped"},
        "init": True,
        "detach": True,
    }
    if specs.get("command"):
        options["command"] = [str(part) for part in specs["command"]]
    if specs.get("host_network"):
        options["network_mode"] = "host"  # ports are the host's own; nothing to publish
    else:
        options["network"] = network
        host_ip = EVERY_INTERFACE if specs.get("public") else LOCALHOST
        options["ports"] = {f"{int(port)}/tcp": (host_ip, None) for port in specs.get("ports") or []}
    if specs.get("cpu"):
        options["nano_cpus"] = round(float(specs["cpu"]) * 1e9)
    if specs.get("memory"):
        options["mem_limit"] = int(specs["memory"]) * MIB
    if specs.get("user") is not None:
        options["user"] = str(specs["user"])
    if specs.get("read_only_root_filesystem"):
        options["read_only"] = True
    if specs.get("privileged"):
        options["privileged"] = True
    if specs.get("capabilities"):
        options["cap_add"] = [str(c) for c in specs["capabilities"]]
    if binds:
        options["volumes"] = {k: dict(v) for k, v in binds.items()}
    test = healthcheck_test(specs)
    if test is not None:
        interval, timeout, retries = _check_timing(specs)
        options["healthcheck"] = {
            "test": ["CMD", *test],
            "interval": interval * 1_000_000_000,
            "timeout": timeout * 1_000_000_000,
            "retries": retries,
        }
    return options


def load_secrets(path: Path) -> dict[str, str]:
    """The secrets file: a YAML mapping of secret name -> value (values never appear in errors).

    Raises:
        PermanentEngineError: the file cannot be read, is not YAML, or is not a flat mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PermanentEngineError(
            f"cannot read the secrets file {path}: {exc.strerror or type(exc).__name__}; check ALMA_SECRETS_FILE",
            data={"path": str(path)},
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        # from None: the YAML error quotes the offending line, which may hold a value.
        raise PermanentEngineError(
            f"the secrets file {path} is not valid YAML{where}; write one 'name: value' per line",
            data={"path": str(path)},
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PermanentEngineError(
            f"the secrets file {path} must map secret names to values, not hold a {type(data).__name__}",
            data={"path": str(path)},
        )
    secrets: dict[str, str] = {}
    for key, value in data.items():
        if value is None or isinstance(value, Mapping | list):
            raise PermanentEngineError(
                f"secret {key!r} in {path} must be a single value (text or number)", data={"path": str(path)}
            )
        secrets[str(key)] = str(value)
    return secrets


def _slug(text: str) -> str:
    cleaned = _NOT_A_NAME.sub("-", text).lstrip("_.-")
    return cleaned or "x"


def _labels_of(obj: Any) -> dict[str, str]:
    attrs = obj.attrs
    labels = attrs.get("Labels")
    if labels is None and isinstance(attrs.get("Config"), Mapping):
        labels = attrs["Config"].get("Labels")
    return dict(labels or {})


def _container_name(container: Any) -> str:
    attrs = container.attrs
    if attrs.get("Names"):
        return str(attrs["Names"][0]).lstrip("/")
    return str(attrs.get("Name", "")).lstrip("/")


def _container_status(container: Any) -> ResourceStatus:
    # Under the unless-stopped policy an exited container was stopped by someone; a crashing one restarts.
    attrs = container.attrs
    state = attrs.get("State")
    if isinstance(state, Mapping):  # inspected
        status, health = str(state.get("Status", "")), str((state.get("Health") or {}).get("Status", ""))
    else:  # listed
        status, health = str(state or ""), "unhealthy" if "(unhealthy)" in str(attrs.get("Status", "")) else ""
    if status == "running":
        return "failed" if health == "unhealthy" else "running"
    if status in ("exited", "created", "paused"):
        return "stopped"
    if status in ("restarting", "dead"):
        return "failed"
    return "unknown"


def _published(container: Any) -> list[str]:
    ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    return [
        f"{port} on {binding['HostIp']}:{binding['HostPort']}"
        for port, bindings in sorted(ports.items())
        for binding in bindings or []
    ]


def _combined_status(statuses: Iterable[ResourceStatus]) -> ResourceStatus:
    seen = set(statuses)
    for status in ("failed", "unknown", "stopped"):
        if status in seen:
            return status
    return "running" if seen else "unknown"


def _check_unix_socket(url: str, timeout: float) -> None:
    """Connect to a unix socket once and close it: docker-py leaks the socket of a failed connect."""
    for scheme in ("unix://", "http+unix://"):
        if url.startswith(scheme):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(url.removeprefix(scheme))
            return


# -- the engine ------------------------------------------------------------------------------------


class DockerEngine:
    """Containers, networks and volumes on one docker daemon, found again by their labels."""

    name: ClassVar[str] = "docker"

    def __init__(
        self,
        client: Any = None,
        *,
        connect: Callable[[], Any] | None = None,
        address: str | None = None,
        secrets_file: Path | None = None,
        keep_data: bool = False,
        timeout: float = 300.0,
        stop_timeout: int = 10,
        scope: str | None = None,
    ) -> None:
        """Use ``client`` (a ``docker.DockerClient``), or build one with ``connect`` on first use.

        ``address`` only names the daemon in messages. ``timeout`` bounds each wait for a container
        to pass its health check; ``stop_timeout`` is how long a container gets to stop before it is
        killed. ``scope`` (a name prefix and an ``alma.scope`` label) lets several alma-mcp
        instances, or test runs, share one daemon without seeing each other's deployments.
        """
        if client is None and connect is None:
            raise ValueError("DockerEngine needs a client or a connect function")
        self._client = client
        self._connect = connect
        self._address = address
        self._secrets_file = secrets_file
        self._keep_data = keep_data
        self._timeout = timeout
        self._stop_timeout = stop_timeout
        self._scope = scope
        self._prefix = f"{_slug(scope)}-" if scope else ""
        self._known_secrets: set[str] = set()
        self._connect_lock = anyio.Lock()
        self._locks: dict[str, anyio.Lock] = {}

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> DockerEngine:
        """An engine for ``docker_host`` (default: the environment's ``DOCKER_HOST``); connects on first use.

        The store is not used: the daemon's labels are the engine's whole state.
        """
        url = settings.docker_host
        timeout = min(API_TIMEOUT_SECONDS, settings.engine_timeout_seconds)

        def connect() -> Any:
            target = url or docker.utils.kwargs_from_env().get("base_url") or docker.constants.DEFAULT_UNIX_SOCKET
            _check_unix_socket(str(target), timeout)
            if url:
                return docker.DockerClient(base_url=url, timeout=timeout)
            return docker.from_env(timeout=timeout)

        return cls(
            connect=connect,
            address=url or "DOCKER_HOST",
            secrets_file=settings.secrets_file,
            keep_data=bool(getattr(settings, "docker_keep_data", False)),
            timeout=settings.engine_timeout_seconds,
        )

    # -- protocol ----------------------------------------------------------------------------------

    async def plan(self, desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
        """The changes; a resource docker cannot run raises ``PermanentEngineError`` naming its type."""
        return plan_changes(desired, observed)

    async def apply(self, plan: Plan, on_progress: ProgressCallback | None = None) -> ApplyResult:
        """Carry out the changes in order; the first failure raises (earlier changes stay done).

        Raises:
            DeploymentNotFound: an update, replace or delete names a resource the daemon does not have.
            PermanentEngineError: an invalid spec, a missing image or secret, a failed health check.
            TransientEngineError: the daemon is unreachable, busy or conflicting; retrying may succeed.
        """
        return await apply_in_order(plan, lambda change: self._apply_change(plan.deployment, change), on_progress)

    async def destroy(self, deployment: DeploymentRef) -> ApplyResult:
        """Remove the deployment's containers, networks and (unless ``keep_data``) volumes; idempotent.

        Raises:
            TransientEngineError: the daemon is unreachable or busy.
            PermanentEngineError: the daemon refused a removal.
        """
        ctx = {"deployment": deployment.id}
        containers, networks, volumes = await self._run(
            "list the deployment", ctx, lambda client: self._inventory(client, deployment)
        )
        removed: dict[str, list[str]] = {}
        kept: dict[str, list[str]] = {}
        for container in containers:
            removed.setdefault(_labels_of(container).get(RESOURCE, ""), []).append(container.id[:12])
        await self._each(ctx, [partial(self._retire, container=c, graceful=True) for c in containers])
        async with self._lock(deployment.id):
            for network in networks:
                labels = _labels_of(network)
                if RESOURCE in labels:
                    removed.setdefault(labels[RESOURCE], []).append(network.name)
                await self._run(f"remove network {network.name}", ctx, partial(self._remove_network, network=network))
        for volume in volumes:
            labels = _labels_of(volume)
            owner = labels.get(RESOURCE)
            if self._keep_data:
                if owner:
                    kept.setdefault(owner, []).append(volume.name)
                continue
            if owner:
                removed.setdefault(owner, []).append(volume.name)
            await self._run(f"remove volume {volume.name}", ctx, partial(self._remove_volume, volume=volume))
        outcomes = [
            ResourceOutcome(
                resource=name,
                action="delete",
                status="succeeded",
                message=f"deleted {name!r}",
                engine_id=",".join(ids),
            )
            for name, ids in removed.items()
            if name
        ]
        outcomes += [
            ResourceOutcome(
                resource=name,
                action="delete",
                status="skipped",
                message=f"kept volume {', '.join(names)} (keep_data)",
                engine_id=",".join(names),
            )
            for name, names in kept.items()
            if name not in removed
        ]
        return ApplyResult(deployment=deployment, outcomes=tuple(sorted(outcomes, key=lambda o: o.resource)))

    async def observe(self, deployment: DeploymentRef) -> list[ObservedResource]:
        """Every resource of the deployment, rebuilt from labels.

        Raises:
            TransientEngineError: the daemon is unreachable or busy.
        """
        ctx = {"deployment": deployment.id}
        containers, networks, volumes = await self._run(
            "list the deployment", ctx, lambda client: self._inventory(client, deployment)
        )
        groups: dict[str, list[Any]] = {}
        for obj in [*containers, *networks, *volumes]:
            labels = _labels_of(obj)
            if RESOURCE in labels:
                groups.setdefault(labels[RESOURCE], []).append(obj)
        return [self._observed(name, objects) for name, objects in sorted(groups.items())]

    async def health(self) -> EngineHealth:
        """Whether the daemon answers a ping (and which version it is)."""
        try:
            version = await self._run("ping the daemon", {}, lambda client: (client.ping(), client.version())[1])
        except EngineError as err:
            return EngineHealth(ok=False, detail=f"docker engine: {err.message}")
        return EngineHealth(
            ok=True,
            detail=f"docker engine: dockerd {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})",
        )

    async def aclose(self) -> None:
        """Close the client's connections (the engine owns its client)."""
        client, self._client = self._client, None
        if client is not None:
            await anyio.to_thread.run_sync(client.close)

    # -- plumbing ----------------------------------------------------------------------------------

    async def _docker(self) -> Any:
        if self._client is None:
            async with self._connect_lock:
                if self._client is None:
                    connect = self._connect
                    assert connect is not None  # __init__ guarantees a client or a connect function
                    try:
                        self._client = await anyio.to_thread.run_sync(connect)
                    except (docker_errors.DockerException, OSError) as exc:
                        raise self._error(exc, "connect", {}) from None
        return self._client

    async def _run(self, what: str, ctx: Mapping[str, Any], call: Callable[[Any], T]) -> T:
        """``call(client)`` in a worker thread; SDK and connection errors become engine errors."""
        client = await self._docker()
        try:
            return await anyio.to_thread.run_sync(call, client, abandon_on_cancel=True)
        except (docker_errors.DockerException, OSError) as exc:
            raise self._error(exc, what, ctx) from None

    async def _each(self, ctx: Mapping[str, Any], calls: Sequence[Callable[[Any], object]]) -> None:
        """Run the calls concurrently; the first failure is raised once all have finished."""
        errors: list[EngineError] = []

        async def one(call: Callable[[Any], object]) -> None:
            try:
                await self._run("remove a container", ctx, call)
            except EngineError as err:
                errors.append(err)

        async with anyio.create_task_group() as group:
            for call in calls:
                group.start_soon(one, call)
        if errors:
            raise errors[0]

    def _lock(self, deployment_id: str) -> anyio.Lock:
        return self._locks.setdefault(deployment_id, anyio.Lock())

    def _clean(self, text: str) -> str:
        """One line, known secret values removed, at most ``MESSAGE_LIMIT`` characters."""
        text = " ".join(text.split())
        for secret in sorted(self._known_secrets, key=len, reverse=True):
            text = text.replace(secret, "[secret]")
        return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."

    def _error(self, exc: BaseException, what: str, ctx: Mapping[str, Any]) -> EngineError:
        """An SDK or connection failure as a typed engine error."""
        data = dict(ctx)
        if isinstance(exc, docker_errors.APIError):
            status = exc.status_code
            detail = str(exc.explanation or exc)
            data["status"] = status
            message = self._clean(f"docker could not {what}: {detail}")
            if status is None or status in (404, 409, 429) or status >= 500:
                if status is not None and status >= 500 and any(p in detail for p in _PERMANENT_DAEMON_ERRORS):
                    return PermanentEngineError(message, data=data)
                return TransientEngineError(message, data=data)
            return PermanentEngineError(message, data=data)
        if isinstance(exc, OSError) or "Error while fetching server API version" in str(exc):
            where = self._address or "the configured address"
            return TransientEngineError(
                self._clean(f"cannot reach the docker daemon at {where} to {what}: {exc}; is it running?"), data=data
            )
        return PermanentEngineError(self._clean(f"docker could not {what}: {exc}"), data=data)

    # -- names and labels ------------------------------------------------------------------------------

    def _name(self, ref: DeploymentRef, *parts: str) -> str:
        return self._prefix + "-".join(_slug(p) for p in (ref.id, *parts))

    def _deployment_network(self, ref: DeploymentRef) -> str:
        return f"{self._prefix}{_slug(ref.id)}_default"

    def _base_labels(self, ref: DeploymentRef) -> dict[str, str]:
        labels = ref.labels()
        if self._scope:
            labels[SCOPE] = self._scope
        return labels

    def _resource_labels(self, ref: DeploymentRef, resource: DesiredResource) -> dict[str, str]:
        return {
            **self._base_labels(ref),
            RESOURCE: resource.name,
            TYPE: resource.type,
            PROVIDER: resource.provider,
            FINGERPRINT: resource.fingerprint,
            SPECS: json.dumps(resource.specs, sort_keys=True, separators=(",", ":"), default=str),
        }

    def _filters(self, ref: DeploymentRef, **extra: str) -> dict[str, list[str]]:
        wanted = {"alma.deployment": ref.id, **({SCOPE: self._scope} if self._scope else {}), **extra}
        return {"label": [f"{k}={v}" for k, v in wanted.items()]}

    def _mine(self, objects: Iterable[Any]) -> list[Any]:
        # Docker filters cannot say "label absent": an unscoped engine drops scoped objects here.
        return [o for o in objects if self._scope or SCOPE not in _labels_of(o)]

    # -- reading the daemon (worker threads) -----------------------------------------------------------------

    def _containers(self, client: Any, ref: DeploymentRef, **extra: str) -> list[Any]:
        found = client.containers.list(all=True, sparse=True, filters=self._filters(ref, **extra))
        return self._mine(found)

    def _inventory(self, client: Any, ref: DeploymentRef) -> tuple[list[Any], list[Any], list[Any]]:
        filters = self._filters(ref)
        return (
            self._containers(client, ref),
            self._mine(client.networks.list(filters=filters)),
            self._mine(client.volumes.list(filters=filters)),
        )

    def _objects_of(self, client: Any, ref: DeploymentRef, name: str, kind: Kind | None) -> list[Any]:
        filters = self._filters(ref, **{RESOURCE: name})
        found: list[Any] = []
        if kind in (None, "container"):
            found += self._containers(client, ref, **{RESOURCE: name})
        if kind in (None, "network"):
            found += self._mine(client.networks.list(filters=filters))
        if kind in (None, "volume"):
            found += self._mine(client.volumes.list(filters=filters))
        return found

    def _observed(self, name: str, objects: list[Any]) -> ObservedResource:
        labels = _labels_of(objects[0])
        try:
            specs = json.loads(labels.get(SPECS, "{}"))
        except json.JSONDecodeError:
            specs = {}
        containers = [o for o in objects if REPLICA in _labels_of(o)]
        fingerprints = {_labels_of(o).get(FINGERPRINT, "") for o in objects}
        fingerprint = labels.get(FINGERPRINT, "")
        if containers:
            containers.sort(key=lambda c: int(_labels_of(c).get(REPLICA, "0")))
            replicas = sorted(int(_labels_of(c).get(REPLICA, "0")) for c in containers)
            expected = list(range(int(specs.get("replicas") or 1)))
            if len(fingerprints) != 1 or replicas != expected or len(containers) != len(objects):
                fingerprint = DRIFT
            status = _combined_status(_container_status(c) for c in containers)
            engine_id = ",".join(c.id[:12] for c in containers)
        else:
            fingerprint = fingerprint if len(objects) == 1 else DRIFT
            status = "running"
            engine_id = str(objects[0].name)
        return ObservedResource(
            name=name,
            type=labels.get(TYPE, "container"),
            provider=labels.get(PROVIDER, "docker"),
            fingerprint=fingerprint,
            status=status,
            engine_id=engine_id,
            specs=specs if isinstance(specs, dict) else {},
        )

    # -- changing the daemon (worker threads) --------------------------------------------------------

    def _retire(self, client: Any, container: Any, *, graceful: bool, leave_networks: bool = False) -> None:
        """Stop (politely when ``graceful``) and remove a container; already gone is fine."""
        try:
            if leave_networks:  # out of DNS before it stops answering
                for network in list((container.attrs.get("NetworkSettings") or {}).get("Networks") or {}):
                    client.api.disconnect_container_from_network(container.id, network, force=True)
            if graceful:
                client.api.stop(container.id, timeout=self._stop_timeout)
            client.api.remove_container(container.id, force=True)
        except docker_errors.NotFound:
            pass

    def _remove_network(self, client: Any, network: Any) -> None:
        try:
            network.reload()
            for container_id in network.attrs.get("Containers") or {}:
                client.api.disconnect_container_from_network(container_id, network.id, force=True)
            network.remove()
        except docker_errors.NotFound:
            pass

    def _remove_volume(self, client: Any, volume: Any) -> None:
        with contextlib.suppress(docker_errors.NotFound):
            volume.remove(force=True)

    def _ensure_network(self, client: Any, name: str, labels: Mapping[str, str], cidr: str | None = None) -> Any:
        existing = [n for n in client.networks.list(names=[name]) if n.name == name]
        if existing:
            return existing[0]
        ipam = None
        if cidr:
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=cidr)])
        try:
            return client.networks.create(name, driver="bridge", labels=dict(labels), ipam=ipam, check_duplicate=True)
        except docker_errors.APIError as exc:
            if exc.status_code != 409:
                raise
            return client.networks.get(name)  # created concurrently by another process

    def _gc_network(self, client: Any, ref: DeploymentRef) -> None:
        """Remove the deployment network once no container of the deployment is left."""
        if self._containers(client, ref):
            return
        for network in self._mine(client.networks.list(filters=self._filters(ref, **{NETWORK: "deployment"}))):
            self._remove_network(client, network)

    def _ensure_volumes(self, client: Any, ref: DeploymentRef, resource: DesiredResource) -> dict[str, dict[str, str]]:
        binds: dict[str, dict[str, str]] = {}
        for volume in resource.specs.get("volumes") or []:
            name = f"{self._name(ref, resource.name)}_{_slug(str(volume['name']))}"
            try:
                client.volumes.get(name)
            except docker_errors.NotFound:
                labels = {**self._base_labels(ref), OWNER: resource.name, VOLUME: str(volume["name"])}
                client.volumes.create(name=name, labels=labels)
            binds[name] = {"bind": str(volume["mount_path"]), "mode": "ro" if volume.get("read_only") else "rw"}
        return binds

    def _drop_volumes(self, client: Any, ref: DeploymentRef, owner: str, keep: Iterable[str] = ()) -> None:
        """Remove the owner's data volumes not in ``keep`` (none under ``keep_data``)."""
        if self._keep_data:
            return
        kept = set(keep)
        for volume in self._mine(client.volumes.list(filters=self._filters(ref, **{OWNER: owner}))):
            if volume.name not in kept:
                self._remove_volume(client, volume)

    def _start(
        self, client: Any, options: Mapping[str, Any], aliases: Sequence[str], extra: Sequence[str], announce: bool
    ) -> Any:
        """Create, attach and start one container; it is removed again if any step fails.

        Unless ``announce``, it joins the deployment network under its own name only, and no other.
        """
        options = dict(options)
        if "network" in options and announce:
            endpoint = client.api.create_endpoint_config(aliases=list(aliases))
            options["networking_config"] = {options["network"]: endpoint}
        container = client.containers.create(**options)
        try:
            for network in extra if announce else ():
                client.api.connect_container_to_network(container.id, network, aliases=list(aliases))
            container.start()
            container.reload()
        except BaseException:
            client.api.remove_container(container.id, force=True)
            raise
        return container

    def _announce(
        self, client: Any, container: Any, network: str | None, aliases: Sequence[str], extra: Sequence[str]
    ) -> None:
        """Give a ready container its resource name on its networks (rejoining: aliases are set on joining)."""
        if network is not None:
            client.api.disconnect_container_from_network(container.id, network, force=True)
            client.api.connect_container_to_network(container.id, network, aliases=list(aliases))
        for name in extra:
            client.api.connect_container_to_network(container.id, name, aliases=list(aliases))
        container.reload()

    def _probe(self, client: Any, container: Any, test: Sequence[str]) -> tuple[int | None, str]:
        """Run the health check inside the container: (exit code, output), or (None, why) if it stopped."""
        try:
            result = container.exec_run(list(test))
        except docker_errors.APIError as exc:
            if exc.status_code != 409:
                raise
            container.reload()
            return None, f"the container is {container.status}"
        output = result.output.decode("utf-8", "replace") if isinstance(result.output, bytes) else str(result.output)
        return result.exit_code, output

    def _exit_report(self, client: Any, container: Any) -> str:
        container.reload()
        state = container.attrs.get("State") or {}
        logs = container.logs(tail=5).decode("utf-8", "replace")
        return f"{state.get('Status', '?')} (exit code {state.get('ExitCode', '?')}); last output: {logs or 'none'}"

    # -- applying one change -----------------------------------------------------------------------

    async def _apply_change(self, ref: DeploymentRef, change: Change) -> ResourceOutcome:
        name, action = change.resource, change.action
        ctx = {"deployment": ref.id, "resource": name, "action": action}
        if action == "noop":
            engine_id = change.observed.engine_id if change.observed else None
            return ResourceOutcome(
                resource=name, action=action, status="succeeded", message="unchanged", engine_id=engine_id
            )
        desired = change.desired
        if desired is None and action != "delete":
            raise PermanentEngineError(
                f"the {action} change for {name!r} carries no desired resource; re-plan", data=ctx
            )
        old_kind = _kind_of_type(change.observed.type) if change.observed else None
        existing = await self._run(
            f"find {name!r}",
            ctx,
            lambda client: self._objects_of(client, ref, name, None if action == "create" else old_kind),
        )
        if not existing and action != "create":
            raise DeploymentNotFound(
                f"deployment {ref.id!r} has no resource {name!r} to {action}; observe the deployment and re-plan",
                data=ctx,
            )
        if desired is None or action == "delete":
            return await self._delete(ref, name, existing, ctx)
        kind = resource_kind(desired)
        stale = [o for o in existing if self._kind_of_object(o) != kind]
        if stale:  # the type changed: the old objects go first
            await self._delete(ref, name, stale, ctx)
            existing = [o for o in existing if o not in stale]
        if kind == "container":
            return await self._apply_containers(ref, action, desired, existing, ctx)
        return await self._apply_object(ref, action, desired, kind, existing, ctx)

    @staticmethod
    def _kind_of_object(obj: Any) -> Kind:
        if REPLICA in _labels_of(obj):
            return "container"
        return "network" if isinstance(obj, docker.models.networks.Network) else "volume"

    async def _delete(
        self, ref: DeploymentRef, name: str, existing: list[Any], ctx: Mapping[str, Any]
    ) -> ResourceOutcome:
        containers = [o for o in existing if self._kind_of_object(o) == "container"]
        networks = [o for o in existing if self._kind_of_object(o) == "network"]
        volumes = [o for o in existing if self._kind_of_object(o) == "volume"]
        await self._each(ctx, [partial(self._retire, container=c, graceful=True) for c in containers])
        ids = [c.id[:12] for c in containers]
        for network in networks:
            await self._run(f"remove network {network.name}", ctx, partial(self._remove_network, network=network))
            ids.append(network.name)
        status: OutcomeStatus = "succeeded"
        message = f"deleted {name!r}"
        for volume in volumes:
            if self._keep_data:
                status, message = "skipped", f"kept volume {volume.name} (keep_data)"
            else:
                await self._run(f"remove volume {volume.name}", ctx, partial(self._remove_volume, volume=volume))
            ids.append(volume.name)
        if containers:
            await self._run("remove data volumes", ctx, lambda client: self._drop_volumes(client, ref, name))
            async with self._lock(ref.id):
                await self._run("remove the deployment network", ctx, lambda client: self._gc_network(client, ref))
        return ResourceOutcome(resource=name, action="delete", status=status, message=message, engine_id=",".join(ids))

    async def _environment(self, resource: DesiredResource) -> dict[str, str]:
        specs = resource.specs
        env = {str(k): str(v) for k, v in (specs.get("env") or {}).items()}
        references: Mapping[str, Any] = specs.get("secrets") or {}
        ctx = {"resource": resource.name}
        if references:
            if self._secrets_file is None:
                raise PermanentEngineError(
                    f"resource {resource.name!r} needs secrets ({', '.join(sorted(map(str, references.values())))}) "
                    "but no secrets file is configured; set ALMA_SECRETS_FILE",
                    data=ctx,
                )
            secrets = await anyio.to_thread.run_sync(load_secrets, self._secrets_file)
            self._known_secrets.update(v for v in secrets.values() if len(v) >= SECRET_MIN_LENGTH)
            for variable, reference in sorted(references.items()):
                if str(reference) not in secrets:
                    raise PermanentEngineError(
                        f"resource {resource.name!r}: secret reference {reference!r} (for {variable}) is not in "
                        f"the secrets file {self._secrets_file}; add it there",
                        data={**ctx, "reference": str(reference)},
                    )
                if variable in env:
                    raise PermanentEngineError(
                        f"resource {resource.name!r} sets {variable} both in env and in secrets; keep one",
                        data={**ctx, "variable": variable},
                    )
                env[str(variable)] = secrets[str(reference)]
        if resource.type == "load_balancer" and specs.get("backends"):
            env.setdefault("ALMA_BACKENDS", ",".join(map(str, specs["backends"])))
        return env

    async def _apply_containers(
        self, ref: DeploymentRef, action: Action, resource: DesiredResource, existing: list[Any], ctx: Mapping[str, Any]
    ) -> ResourceOutcome:
        specs = resource.specs
        image = str(specs["image"])
        environment = await self._environment(resource)
        joined = [str(n) for n in specs.get("networks") or []]
        extra = [self._name(ref, n) for n in joined]

        def prepare(client: Any) -> dict[str, dict[str, str]]:
            try:
                client.images.get(image)
            except docker_errors.ImageNotFound:
                raise PermanentEngineError(
                    f"image {image} is not available locally and cannot be pulled", data={**ctx, "image": image}
                ) from None
            for network, docker_name in zip(joined, extra, strict=True):
                if not [n for n in client.networks.list(names=[docker_name]) if n.name == docker_name]:
                    raise PermanentEngineError(
                        f"resource {resource.name!r} joins network {network!r}, which is not deployed; add a network "
                        f"resource named {network!r} and a dependency on it",
                        data={**ctx, "network": network},
                    )
            return self._ensure_volumes(client, ref, resource)

        binds = await self._run(f"prepare {resource.name!r}", ctx, prepare)
        network = self._deployment_network(ref)
        if not specs.get("host_network"):
            async with self._lock(ref.id):
                labels = {**self._base_labels(ref), NETWORK: "deployment"}
                await self._run(
                    "create the deployment network", ctx, lambda c: self._ensure_network(c, network, labels)
                )
        stateful = bool(binds) or bool(specs.get("host_network"))
        by_replica: dict[int, list[Any]] = {}
        for container in existing:
            by_replica.setdefault(int(_labels_of(container).get(REPLICA, "0")), []).append(container)
        started: list[Any] = []
        try:
            for index in range(int(specs.get("replicas") or 1)):
                final = self._name(ref, resource.name, str(index))
                labels = {**self._resource_labels(ref, resource), REPLICA: str(index)}

                def options(name: str, labels: Mapping[str, str] = labels) -> dict[str, Any]:
                    return container_options(
                        resource, name=name, labels=labels, environment=environment, network=network, binds=binds
                    )

                old = await self._one_of(by_replica.pop(index, []), final, ctx)
                started.append(await self._roll(resource, old, final, options, extra, stateful, ctx))
        except EngineError:
            if not existing and not started:
                async with self._lock(ref.id):
                    await self._run("remove the deployment network", ctx, lambda c: self._gc_network(c, ref))
            raise
        surplus = [c for group in by_replica.values() for c in group]  # replicas beyond the count
        await self._each(ctx, [partial(self._retire, container=c, graceful=True) for c in surplus])
        await self._run("remove unused data volumes", ctx, lambda c: self._drop_volumes(c, ref, resource.name, binds))
        published = [p for c in started for p in _published(c)]
        count = f"{len(started)} container{'s' if len(started) != 1 else ''} running"
        message = f"{_WORDS[action][1]} {resource.name!r}: {count}" + (f"; {', '.join(published)}" if published else "")
        return ResourceOutcome(
            resource=resource.name,
            action=action,
            status="succeeded",
            message=self._clean(message),
            engine_id=",".join(c.id[:12] for c in started),
        )

    async def _one_of(self, group: list[Any], final: str, ctx: Mapping[str, Any]) -> Any:
        """The container to replace for one replica; duplicates left by an interrupted update are removed."""
        if len(group) <= 1:
            return group[0] if group else None
        keep = next((c for c in group if _container_name(c) == final), group[0])
        await self._each(ctx, [partial(self._retire, container=c, graceful=False) for c in group if c is not keep])
        return keep

    async def _roll(
        self,
        resource: DesiredResource,
        old: Any,
        final: str,
        options: Callable[[str], dict[str, Any]],
        extra: Sequence[str],
        stateful: bool,
        ctx: Mapping[str, Any],
    ) -> Any:
        """Start the replica ``final``, replacing ``old`` create-before-destroy (or stop-first when stateful)."""
        if old is None:
            return await self._start_ready(resource, options(final), extra, ctx)
        temporary = f"{final}_next"
        if stateful:
            await self._run(
                f"stop {_container_name(old)}", ctx, lambda c: c.api.stop(old.id, timeout=self._stop_timeout)
            )
            try:
                new = await self._start_ready(resource, options(temporary), extra, ctx)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._run(f"restart {_container_name(old)}", ctx, lambda c: c.api.start(old.id))
                raise
            await self._run(f"remove {_container_name(old)}", ctx, partial(self._retire, container=old, graceful=False))
        else:
            new = await self._start_ready(resource, options(temporary), extra, ctx, announce=False)
            await self._run(
                f"remove {_container_name(old)}",
                ctx,
                partial(self._retire, container=old, graceful=True, leave_networks=True),
            )
        await self._run(f"rename {temporary}", ctx, lambda c: c.api.rename(new.id, final))
        return new

    async def _start_ready(
        self,
        resource: DesiredResource,
        options: dict[str, Any],
        extra: Sequence[str],
        ctx: Mapping[str, Any],
        *,
        announce: bool = True,
    ) -> Any:
        """Start a container and wait until it runs and passes its health check; removed again if not.

        Unless ``announce``, the container answers to its resource name only once it is ready: a name
        that resolves to a server not yet listening would fail the clients of a running service.
        """
        name = options["name"]
        aliases = [resource.name]
        container = await self._run(f"start {name}", ctx, lambda c: self._start(c, options, aliases, extra, announce))
        try:
            await self._wait_ready(resource, container, name, ctx)
            if not announce:
                network = options.get("network")
                await self._run(
                    f"announce {name}", ctx, lambda c: self._announce(c, container, network, aliases, extra)
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._run(f"remove {name}", ctx, partial(self._retire, container=container, graceful=False))
            raise
        return container

    async def _wait_ready(self, resource: DesiredResource, container: Any, name: str, ctx: Mapping[str, Any]) -> None:
        if container.status != "running":
            report = await self._run(f"inspect {name}", ctx, lambda c: self._exit_report(c, container))
            raise PermanentEngineError(self._clean(f"container {name} stopped right after start: {report}"), data=ctx)
        test = healthcheck_test(resource.specs)
        if test is None:
            return
        interval, timeout, retries = _check_timing(resource.specs)
        deadline = min(self._timeout, max(timeout, interval * retries))
        last = "no probe finished"
        with anyio.move_on_after(deadline):
            while True:
                code: int | None = 1
                with anyio.move_on_after(timeout):
                    code, last = await self._run(f"probe {name}", ctx, lambda c: self._probe(c, container, test))
                if code == 0:
                    return
                if code is None:
                    report = await self._run(f"inspect {name}", ctx, lambda c: self._exit_report(c, container))
                    raise PermanentEngineError(
                        self._clean(f"container {name} stopped while starting: {report}"), data=ctx
                    )
                await anyio.sleep(READY_POLL_SECONDS)
        raise PermanentEngineError(
            self._clean(
                f"container {name} did not pass its health check ({' '.join(test)}) within {deadline:g}s: {last}"
            ),
            data=ctx,
        )

    async def _apply_object(
        self,
        ref: DeploymentRef,
        action: Action,
        resource: DesiredResource,
        kind: Kind,
        existing: list[Any],
        ctx: Mapping[str, Any],
    ) -> ResourceOutcome:
        """Create or rebuild a network or storage resource."""
        name = self._name(ref, resource.name)
        labels = self._resource_labels(ref, resource)

        def network(client: Any) -> str:
            attached: dict[str, list[str]] = {}
            for old in existing:
                old.reload()
                for container_id in old.attrs.get("Containers") or {}:
                    attached[container_id] = [_labels_of(client.containers.get(container_id)).get(RESOURCE, "")]
                self._remove_network(client, old)
            cidr = resource.specs.get("cidr")
            made = self._ensure_network(client, name, labels, str(cidr) if cidr else None)
            for container_id, aliases in attached.items():
                client.api.connect_container_to_network(container_id, made.id, aliases=[a for a in aliases if a])
            return str(made.id)[:12]

        def volume(client: Any) -> str:
            for old in existing:
                self._remove_volume(client, old)
            try:
                found = client.volumes.get(name)
            except docker_errors.NotFound:
                return str(client.volumes.create(name=name, labels=labels).name)
            if _labels_of(found).get(RESOURCE) != resource.name:
                raise PermanentEngineError(
                    f"volume {name} exists but does not belong to resource {resource.name!r}; remove or rename it",
                    data=ctx,
                )
            return str(found.name)

        engine_id = await self._run(f"{_WORDS[action][0]} {name}", ctx, network if kind == "network" else volume)
        what = "network" if kind == "network" else "volume"
        return ResourceOutcome(
            resource=resource.name,
            action=action,
            status="succeeded",
            message=f"{_WORDS[action][1]} {resource.name!r}: {what} {name}",
            engine_id=engine_id,
        )
