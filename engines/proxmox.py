"""The Proxmox VE engine: QEMU VMs cloned from templates and LXC containers, through proxmoxer.

What a resource becomes:

- ``specs.template`` set (a VM template's name or vmid), or type ``compute``: a **QEMU VM**, a full
  clone of the template (``compute`` without a template is a permanent error).
- ``specs.ostemplate`` set (``local:vztmpl/...``), or type container, service, database, cache, queue
  or load_balancer: an **LXC container** from that OS template, or from the engine's default one.
  PVE's "containers" are LXC system containers: an OCI ``specs.image`` cannot run on them, so the
  image is recorded (and a change to it replaces the guest, as for the other engines) but not used.
- network and storage resources: not made here (a permanent error naming the type).

``cpu`` becomes ``cores`` (rounded up; a fraction also sets ``cpulimit``), ``memory`` (MiB) the
memory, ``storage`` (MiB) the boot disk or ``rootfs`` in whole GiB (rounded up; disks only grow in
place, a smaller size replaces the guest). ``replicas: N`` makes N guests named ``<resource>-1`` ..
``<resource>-N`` (one guest keeps the resource's name). Ports, firewall, volumes, env and the other
specs are recorded, not applied. An update reconfigures the guests in place (a running VM whose cores
or memory PVE keeps pending is rebooted to apply them) and adds or removes replicas; a replace
removes the old guests, then creates new ones. load_balancer and database resources carrying a
``template`` (as the catalogue's simple-web-app does) are VMs like compute.

Identity: every guest carries the PVE tags ``alma;alma-dep-<deployment>;alma-res-<resource>``
(lower-cased, characters outside PVE's tag set replaced by ``_``) and, in its ``description``, a
marker line with the exact deployment id, resource, replica and fingerprint. ``observe`` lists
``/cluster/resources?type=vm``, keeps the guests with the deployment's tag and reads their markers. A
guest being made carries the fingerprint ``incomplete`` until its last step, so an interrupted
apply is planned as an update that finishes it. A guest that is not running is planned as an update
that starts it.

Every call that returns a UPID is awaited (polling ``/nodes/{node}/tasks/{upid}/status``) for at most
``engine_timeout_seconds``. Errors are typed: connection failures, time-outs, locked guests, a vmid
taken by a concurrent create (another vmid is tried) and lost quorum are ``TransientEngineError``,
also when a task ends on them; authentication (401), permissions (403), parameter verification (400,
with the field errors), a failed TLS verification (a wrong CA does not fix itself) and a task ending
in any other error are ``PermanentEngineError``, carrying the task's exit status. Messages are cut at
256 characters and never contain the token or password.

proxmoxer is blocking: each call runs in a worker thread (at most ``max_threads`` at once).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import requests
from proxmoxer import AuthenticationError, ProxmoxAPI, ResourceException  # type: ignore[import-untyped]

from alma_mcp.errors import (
    ConfigError,
    DeploymentNotFound,
    EngineError,
    InvalidRequest,
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
    plan_by_name,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["qemu", "lxc"]
PowerAction = Literal["start", "stop", "reboot", "shutdown"]
POWER_ACTIONS: Final = get_args(PowerAction)

LXC_TYPES: Final = frozenset({"container", "service", "database", "cache", "queue", "load_balancer"})
# A change to any of these cannot be made in place: the guest is rebuilt.
REPLACING_SPECS: Final = ("image", "template", "ostemplate")
DEFAULT_OSTEMPLATE: Final = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
DEFAULT_STORAGE: Final = "local-lvm"
DEFAULT_BRIDGE: Final = "vmbr0"
DEFAULT_LXC_DISK_GIB: Final = 8
AUTH_HELP_API: Final = "authentication failure: check ALMA_PROXMOX_TOKEN_*"
AUTH_HELP_LOGIN: Final = "authentication failure: check ALMA_PROXMOX_USER and ALMA_PROXMOX_PASSWORD"
MESSAGE_LIMIT: Final = 256
MARKER: Final = "alma-mcp:"
MARKER_LIMIT: Final = 7000  # PVE's description holds 8 KiB
INCOMPLETE: Final = "incomplete"
TAG_BASE: Final = "alma"
_TAG_UNSAFE: Final = re.compile(r"[^a-z0-9_+.\-]")
_CONFIG_GONE: Final = re.compile(r"Configuration file '[^']*\.conf' does not exist")
_TRANSIENT: Final = re.compile(
    r"locked|got timeout|already exists|no quorum|cluster not ready|try again|checksum mismatch|temporarily", re.I
)
_DISK_KEY: Final = re.compile(r"(scsi|virtio|sata|ide)(\d+)")
_UNITS: Final = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def clean(text: str, secrets: Sequence[str] = ()) -> str:
    """Provider text fit for a record: secrets replaced by ``***``, one line, at most 256 characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def tag(prefix: str, value: str) -> str:
    """``prefix-value`` in PVE's tag charset (lower case; anything else becomes ``_``)."""
    return f"{prefix}-{_TAG_UNSAFE.sub('_', value.lower())}"


def tags_for(deployment: DeploymentRef, resource: str) -> str:
    return ";".join((TAG_BASE, tag("alma-dep", deployment.id), tag("alma-res", resource)))


def guest_name(resource: str, replica: int, replicas: int) -> str:
    return resource if replicas == 1 else f"{resource}-{replica + 1}"


def describe(deployment: DeploymentRef, resource: DesiredResource, replica: int, fingerprint: str) -> str:
    """The guest's description: a line for people, then the marker that ``observe`` reads."""
    payload: dict[str, Any] = {
        "deployment": deployment.id,
        "blueprint": deployment.blueprint,
        "ipr": deployment.ipr_id,
        "revision": deployment.revision,
        "resource": resource.name,
        "type": resource.type,
        "provider": resource.provider,
        "replica": replica,
        "fingerprint": fingerprint,
        "specs": resource.specs,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > MARKER_LIMIT:  # keep what planning needs; the fingerprint still covers everything
        keep = (*REPLACING_SPECS, "cpu", "memory", "storage", "replicas")
        payload["specs"] = {k: v for k, v in resource.specs.items() if k in keep}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"Managed by alma-mcp: deployment {deployment.id}, resource {resource.name}.\n{MARKER} {text}"


def read_marker(description: object) -> dict[str, Any] | None:
    """The marker in a description, or None when there is none (or it is not ours)."""
    for line in str(description or "").splitlines():
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def guest_kind(resource: DesiredResource) -> Kind | None:
    """QEMU for a template or a compute resource, LXC for an OS template or a container-like type."""
    if resource.specs.get("template") is not None:
        return "qemu"
    if resource.specs.get("ostemplate") is not None:
        return "lxc"
    if resource.type == "compute":
        return "qemu"
    return "lxc" if resource.type in LXC_TYPES else None


def _gib(size: object) -> float:
    """GiB in a PVE size such as ``8G`` or ``512M`` (0 when there is none)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])?", str(size or "").strip())
    return float(found.group(1)) * _UNITS[found.group(2) or "G"] if found else 0.0


def _option(value: object, key: str) -> str | None:
    for part in str(value).split(","):
        name, sep, val = part.partition("=")
        if sep and name == key:
            return val
    return None


@dataclass(frozen=True)
class Shape:
    """What PVE is asked for, from a resource's normalised specs."""

    kind: Kind
    source: str
    cores: int | None
    cpulimit: float | None
    memory: int | None
    disk_gib: int | None
    replicas: int

    @classmethod
    def of(cls, resource: DesiredResource, default_ostemplate: str) -> Shape:
        """What ``resource`` asks of PVE (LXC without an OS template uses ``default_ostemplate``).

        Raises:
            PermanentEngineError: the type has no PVE guest, compute lacks a template, or a spec is invalid.
        """
        kind = guest_kind(resource)
        if kind is None:
            raise PermanentEngineError(
                f"the proxmox engine makes VMs and LXC containers, not {resource.type!r} resources"
                f" ({resource.name!r}); map that provider to another engine",
                data={"resource": resource.name, "type": resource.type},
            )
        specs = resource.specs
        source = specs.get("template") if kind == "qemu" else specs.get("ostemplate") or default_ostemplate
        if source is None:
            raise PermanentEngineError(
                f"compute resource {resource.name!r} needs specs.template: the name or vmid of a VM template to clone",
                data={"resource": resource.name},
            )
        cpu, memory, storage = (_positive(resource, k) for k in ("cpu", "memory", "storage"))
        replicas = 1 if specs.get("replicas") is None else specs["replicas"]
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise PermanentEngineError(
                f"resource {resource.name!r}: specs.replicas must be a whole number >= 1, got {replicas!r}",
                data={"resource": resource.name},
            )
        return cls(
            kind=kind,
            source=str(source),
            cores=None if cpu is None else max(1, math.ceil(cpu)),
            cpulimit=None if cpu is None or float(cpu).is_integer() else cpu,
            memory=None if memory is None else max(16, math.ceil(memory)),
            disk_gib=None if storage is None else max(1, math.ceil(storage / 1024)),
            replicas=replicas,
        )

    def hardware(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cores": self.cores, "cpulimit": self.cpulimit, "memory": self.memory}
        return {k: v for k, v in out.items() if v is not None}


def _positive(resource: DesiredResource, key: str) -> float | None:
    value = resource.specs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PermanentEngineError(
            f"resource {resource.name!r}: specs.{key} must be a positive number (cores or MiB), got {value!r}",
            data={"resource": resource.name, "spec": key},
        )
    return float(value)


@dataclass(frozen=True)
class Guest:
    """One PVE guest of a deployment, as listed and marked."""

    kind: Kind
    vmid: int
    node: str
    status: str
    resource: str
    marker: Mapping[str, Any]

    @property
    def engine_id(self) -> str:
        return f"{self.kind}/{self.vmid}"

    @property
    def replica(self) -> int:
        replica = self.marker.get("replica", 0)
        return replica if isinstance(replica, int) else 0

    @property
    def fingerprint(self) -> str:
        return str(self.marker.get("fingerprint") or INCOMPLETE)


def _gone(exc: EngineError) -> bool:
    """True when PVE answered that the guest's config file does not exist (it was destroyed meanwhile)."""
    return bool(exc.data.get("gone"))


def plan_changes(desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
    """The changes from ``observed`` to ``desired``: desired order first, then deletes by name."""
    return plan_by_name(desired, observed, _compare)


def _compare(desired: DesiredResource, observed: ObservedResource) -> tuple[Action, str]:
    if observed.fingerprint == desired.fingerprint:
        if observed.status == "running":
            return "noop", "unchanged"
        if observed.status == "unknown":
            return "noop", "unchanged (status unknown: is its node offline?)"
        return "update", f"unchanged but {observed.status}: apply starts it"
    missing = object()
    rebuild: list[str] = []
    if observed.type != desired.type:
        rebuild.append(f"type changed: {observed.type} -> {desired.type}")
    if observed.provider != desired.provider:
        rebuild.append(f"provider changed: {observed.provider} -> {desired.provider}")
    kinds = {part.split("/")[0] for part in observed.engine_id.split(",")}
    kind = guest_kind(desired)
    if kind is not None and kinds != {kind}:
        rebuild.append(f"guest kind changed: {', '.join(sorted(kinds))} -> {kind}")
    rebuild += [
        f"{key} changed"
        for key in REPLACING_SPECS
        if desired.specs.get(key, missing) != observed.specs.get(key, missing)
    ]
    old, new = observed.specs.get("storage"), desired.specs.get("storage")
    if isinstance(old, int | float) and isinstance(new, int | float) and new < old:
        rebuild.append(f"storage shrinks from {old} to {new} MiB (disks cannot shrink in place)")
    if rebuild:
        return "replace", "; ".join(rebuild)
    keys = sorted(
        k
        for k in desired.specs.keys() | observed.specs.keys()
        if desired.specs.get(k, missing) != observed.specs.get(k, missing)
    )
    if keys:
        return "update", f"specs changed: {', '.join(keys)}"
    if observed.fingerprint == INCOMPLETE:
        return "update", "a previous apply did not finish"
    return "update", "fingerprint changed"


class ProxmoxEngine:
    """Deploys resources as PVE guests through a proxmoxer client (made by ``connect`` on first use)."""

    name: ClassVar[str] = "proxmox"

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        endpoint: str = "proxmox",
        node: str | None = None,
        timeout: float = 300.0,
        default_ostemplate: str = DEFAULT_OSTEMPLATE,
        storage: str | None = None,
        bridge: str = DEFAULT_BRIDGE,
        auth_hint: str = AUTH_HELP_API,
        secrets: Sequence[str | None] = (),
        poll_interval: float = 0.1,
        max_threads: int = 4,
    ) -> None:
        """``connect()`` makes the proxmoxer client; it runs once, in a worker thread (a password login talks
        to the server). ``timeout`` bounds every task wait; ``storage`` is where clones and container root
        disks go (default: the template's storage for clones, ``local-lvm`` for containers).

        Raises:
            ConfigError: ``timeout``, ``poll_interval`` or ``max_threads`` is not positive.
        """
        if timeout <= 0 or poll_interval <= 0 or max_threads < 1:
            raise ConfigError(
                "the proxmox engine needs timeout > 0, poll_interval > 0 and max_threads >= 1",
                data={"timeout": timeout, "poll_interval": poll_interval, "max_threads": max_threads},
            )
        self._connect = connect
        self._endpoint = endpoint
        self._node = node
        self._timeout = timeout
        self._ostemplate = default_ostemplate
        self._storage = storage
        self._bridge = bridge
        self._auth_hint = auth_hint
        self._secrets = tuple(s for s in secrets if s)
        self._poll = poll_interval
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._connect_lock = anyio.Lock()
        self._alloc_lock = anyio.Lock()
        self._api: Any = None

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> ProxmoxEngine:
        """Build from the ``proxmox_*`` settings: an API token if one is set, else the password.

        Raises:
            ConfigError: the host, the user or the credentials are missing, or the CA file does not exist.
        """
        if not settings.proxmox_host:
            raise ConfigError(
                "ALMA_PROXMOX_HOST is not set: the proxmox engine needs the PVE API host (pve.example.com)",
                data={"setting": "ALMA_PROXMOX_HOST"},
            )
        host, port = _host_port(settings.proxmox_host, settings.proxmox_port)
        user = settings.proxmox_user
        if not user:
            raise ConfigError("ALMA_PROXMOX_USER is not set: name the token's owner, e.g. alma@pve")
        token_name = settings.proxmox_token_name
        token = settings.proxmox_token_value.get_secret_value() if settings.proxmox_token_value else None
        password = settings.proxmox_password.get_secret_value() if settings.proxmox_password else None
        options: dict[str, Any] = {"port": port, "timeout": min(30.0, settings.engine_timeout_seconds)}
        if token_name and token:
            owner, _, token_name = token_name.rpartition("!")  # the whole id user@realm!name works too
            options.update(user=owner or user, token_name=token_name, token_value=token)
            hint = AUTH_HELP_API
        elif token_name or token:
            raise ConfigError("set both ALMA_PROXMOX_TOKEN_NAME and ALMA_PROXMOX_TOKEN_VALUE (or neither)")
        elif password:
            options.update(user=user, password=password)
            hint = AUTH_HELP_LOGIN
        else:
            raise ConfigError(
                "no Proxmox credentials: set ALMA_PROXMOX_TOKEN_NAME and ALMA_PROXMOX_TOKEN_VALUE (preferred)"
                " or ALMA_PROXMOX_PASSWORD"
            )
        verify: bool | str = settings.proxmox_verify_tls
        if verify and settings.proxmox_ca_file is not None:
            if not settings.proxmox_ca_file.is_file():
                raise ConfigError(
                    f"ALMA_PROXMOX_CA_FILE {str(settings.proxmox_ca_file)!r} is not a file",
                    data={"setting": "ALMA_PROXMOX_CA_FILE"},
                )
            verify = str(settings.proxmox_ca_file)
        options["verify_ssl"] = verify
        return cls(
            partial(ProxmoxAPI, host, **options),
            endpoint=f"https://{host}:{port}",
            node=settings.proxmox_node,
            timeout=settings.engine_timeout_seconds,
            # getattr: settings this engine can use once they exist.
            default_ostemplate=getattr(settings, "proxmox_ostemplate", None) or DEFAULT_OSTEMPLATE,
            storage=getattr(settings, "proxmox_storage", None),
            bridge=getattr(settings, "proxmox_bridge", None) or DEFAULT_BRIDGE,
            auth_hint=hint,
            secrets=(token, password),
        )

    # -- the protocol --------------------------------------------------------------------------------

    async def plan(self, desired: DesiredState, observed: Sequence[ObservedResource]) -> Plan:
        return plan_changes(desired, observed)

    async def apply(self, plan: Plan, on_progress: ProgressCallback | None = None) -> ApplyResult:
        """Carry out the changes in order; the first failure raises (earlier changes stay made).

        Raises:
            DeploymentNotFound: an update, replace or delete names a resource with no guests.
            PermanentEngineError: PVE refused, a task failed, or the resource cannot be a PVE guest.
            TransientEngineError: PVE is unreachable, busy (locked, no quorum) or a task outlasted the timeout.
        """
        return await apply_in_order(plan, lambda change: self._apply_change(plan.deployment, change), on_progress)

    async def destroy(self, deployment: DeploymentRef) -> ApplyResult:
        """Stop and purge every guest of the deployment; what cannot be removed is retried next time.

        Raises:
            TransientEngineError, PermanentEngineError: the first failure, once every resource was tried.
        """
        groups = _by_resource(await self._guests(deployment))
        outcomes: list[ResourceOutcome] = []
        errors: list[EngineError] = []
        for name, guests in sorted(groups.items()):
            try:
                for guest in guests:
                    await self._remove(guest)
            except EngineError as exc:
                errors.append(exc)
                continue
            ids = ",".join(g.engine_id for g in guests)
            outcomes.append(
                ResourceOutcome(
                    resource=name, action="delete", status="succeeded", message=f"deleted {name!r}", engine_id=ids
                )
            )
        if errors:
            first = errors[0]
            first.data.setdefault("deleted", [o.resource for o in outcomes])
            raise first
        return ApplyResult(deployment=deployment, outcomes=tuple(outcomes))

    async def observe(self, deployment: DeploymentRef) -> list[ObservedResource]:
        """The deployment's resources, found by tag and marker.

        Raises:
            TransientEngineError, PermanentEngineError: PVE cannot be read.
        """
        groups = _by_resource(await self._guests(deployment))
        return [_observed(name, guests) for name, guests in sorted(groups.items())]

    async def health(self) -> EngineHealth:
        try:
            api = await self._client()
            version = await self._run("reading the version", lambda: api.version.get())
        except EngineError as exc:
            return EngineHealth(ok=False, detail=f"proxmox at {self._endpoint}: {exc.message}")
        return EngineHealth(ok=True, detail=f"proxmox VE {version.get('version', '?')} at {self._endpoint}")

    async def aclose(self) -> None:
        """Close the HTTP session (the client is made again on next use)."""
        api, self._api = self._api, None
        session = getattr(api, "_store", {}).get("session") if api is not None else None
        if session is not None:
            session.close()

    async def power(self, deployment: DeploymentRef, resource: str, action: PowerAction) -> ObservedResource:
        """Start, stop (hard), shut down (ACPI) or reboot every guest of a resource; already there is fine.

        A reboot of a stopped guest starts it. Returns the resource as observed afterwards.

        Raises:
            InvalidRequest: an unknown action.
            DeploymentNotFound: the deployment has no such resource.
            TransientEngineError, PermanentEngineError: as for ``apply``.
        """
        if action not in POWER_ACTIONS:
            raise InvalidRequest(
                f"unknown power action {action!r}; use one of {', '.join(POWER_ACTIONS)}",
                data={"action": action, "allowed": list(POWER_ACTIONS)},
            )
        guests = await self._guests(deployment, resource)
        if not guests:
            raise _not_found(deployment, resource, action)
        for guest in guests:
            running = await self._status(guest) == "running"
            if action == "start":
                verb = None if running else "start"
            elif action == "reboot":
                verb = "reboot" if running else "start"
            else:
                verb = action if running else None
            if verb is not None:
                await self._task(guest, verb, f"{verb} of {guest.engine_id} ({resource})")
        return _observed(resource, await self._guests(deployment, resource))

    # -- apply ---------------------------------------------------------------------------------------

    async def _apply_change(self, deployment: DeploymentRef, change: Change) -> ResourceOutcome:
        name, action = change.resource, change.action
        if action == "noop":
            engine_id = change.observed.engine_id if change.observed else None
            return ResourceOutcome(
                resource=name, action=action, status="succeeded", message="unchanged", engine_id=engine_id
            )
        guests = await self._guests(deployment, name)
        if not guests and action != "create":
            raise _not_found(deployment, name, action)
        if action == "delete":
            for guest in guests:
                await self._remove(guest)
            removed = ",".join(g.engine_id for g in guests)
            return ResourceOutcome(
                resource=name, action=action, status="succeeded", message=f"deleted {name!r}", engine_id=removed
            )
        if change.desired is None:
            raise PermanentEngineError(
                f"the {action} change for {name!r} carries no desired resource; re-plan",
                data={"deployment": deployment.id, "resource": name, "action": action},
            )
        ids = await self._converge(deployment, change.desired, guests, rebuild=action == "replace")
        word = {"create": "created", "update": "updated", "replace": "replaced"}[action]
        return ResourceOutcome(
            resource=name, action=action, status="succeeded", message=f"{word} {name!r}", engine_id=",".join(ids)
        )

    async def _converge(
        self, deployment: DeploymentRef, desired: DesiredResource, guests: list[Guest], *, rebuild: bool
    ) -> list[str]:
        """Make the resource's guests match ``desired``: reuse what fits, remove the rest, create what is missing."""
        shape = Shape.of(desired, self._ostemplate)  # invalid specs fail before anything is touched
        node = await self._target_node()
        template = await self._template(shape.source, node) if shape.kind == "qemu" else None
        keep: dict[int, Guest] = {}
        for guest in sorted(guests, key=lambda g: (g.replica, g.vmid)):
            stale = any(desired.specs.get(k) != guest.marker.get("specs", {}).get(k) for k in REPLACING_SPECS)
            if rebuild or stale or guest.kind != shape.kind or guest.replica >= shape.replicas or guest.replica in keep:
                await self._remove(guest)
            else:
                keep[guest.replica] = guest
        ids = []
        for replica in range(shape.replicas):
            if replica in keep:
                guest = await self._update_guest(deployment, desired, shape, keep[replica])
            else:
                guest = await self._create_guest(deployment, desired, shape, replica, node, template)
            ids.append(guest.engine_id)
        return ids

    async def _create_guest(
        self,
        deployment: DeploymentRef,
        desired: DesiredResource,
        shape: Shape,
        replica: int,
        node: str,
        template: Guest | None,
    ) -> Guest:
        api = await self._client()
        name = guest_name(desired.name, replica, shape.replicas)
        marker = describe(deployment, desired, replica, INCOMPLETE)
        tags = tags_for(deployment, desired.name)
        if template is not None:
            options: dict[str, Any] = {"name": name, "full": 1, "description": marker}
            if template.node != node:
                options["target"] = node
            if self._storage:
                options["storage"] = self._storage
            source = api.nodes(template.node).qemu(template.vmid).clone
            what = f"cloning template {template.vmid} as {name!r}"
            vmid, upid = await self._allocate(what, lambda vmid: source.post(newid=vmid, **options))
        else:
            options = {
                "hostname": name,
                "ostemplate": shape.source,
                "rootfs": f"{self._storage or DEFAULT_STORAGE}:{shape.disk_gib or DEFAULT_LXC_DISK_GIB}",
                "net0": f"name=eth0,bridge={self._bridge},ip=dhcp",
                "unprivileged": 1,
                "tags": tags,
                "description": marker,
                **shape.hardware(),
            }
            lxc = api.nodes(node).lxc
            what = f"creating container {name!r} from {shape.source}"
            vmid, upid = await self._allocate(what, lambda vmid: lxc.post(vmid=vmid, **options))
        guest = Guest(shape.kind, vmid, node, "stopped", desired.name, {"replica": replica})
        await self._wait(upid, what)
        if template is not None:
            try:  # until the tags are on, nothing would find this VM again: remove it on failure
                await self._configure_vm(guest, shape, name, tags)
            except EngineError:
                with anyio.CancelScope(shield=True):
                    await self._remove_quietly(guest)
                raise
            await self._grow_disk(guest, shape)
        await self._task(guest, "start", f"starting {guest.engine_id} ({name})")
        await self._set_description(guest, describe(deployment, desired, replica, desired.fingerprint))
        return guest

    async def _update_guest(
        self, deployment: DeploymentRef, desired: DesiredResource, shape: Shape, guest: Guest
    ) -> Guest:
        api = await self._client()
        base = _guest_api(api, guest)
        name = guest_name(desired.name, guest.replica, shape.replicas)
        tags = tags_for(deployment, desired.name)
        changed: set[str] = set()
        if guest.kind == "qemu":
            changed = await self._configure_vm(guest, shape, name, tags)
        else:
            config = await self._run(f"reading {guest.engine_id}", lambda: base.config.get())
            options = {"hostname": name, "tags": tags, **shape.hardware()}
            if shape.cpulimit is None and "cpulimit" in config:
                options["delete"] = "cpulimit"
            await self._run(f"configuring {guest.engine_id} ({name})", lambda: base.config.put(**options))
        await self._grow_disk(guest, shape)
        if await self._status(guest) != "running":
            await self._task(guest, "start", f"starting {guest.engine_id} ({name})")
        elif guest.kind == "qemu":
            pending = await self._run(f"reading pending changes of {guest.engine_id}", lambda: base.pending.get())
            if any(item.get("key") in changed and ("pending" in item or item.get("delete")) for item in pending or ()):
                # PVE keeps cores and memory of a running VM pending until it restarts.
                await self._task(guest, "reboot", f"rebooting {guest.engine_id} ({name}) to apply its changes")
        await self._set_description(guest, describe(deployment, desired, guest.replica, desired.fingerprint))
        return guest

    async def _configure_vm(self, guest: Guest, shape: Shape, name: str, tags: str) -> set[str]:
        """Set name, tags and the hardware that differs; returns the hardware keys changed."""
        base = _guest_api(await self._client(), guest)
        config = await self._run(f"reading {guest.engine_id}", lambda: base.config.get())
        # Only what differs: PVE keeps a running VM's cores and memory pending, even when equal.
        hardware = {k: v for k, v in shape.hardware().items() if _number(config.get(k)) != v}
        options: dict[str, Any] = {"name": name, "tags": tags, **hardware}
        if shape.cpulimit is None and "cpulimit" in config:
            options["delete"] = "cpulimit"
            hardware["cpulimit"] = None
        what = f"configuring {guest.engine_id} ({name})"
        await self._wait(await self._run(what, lambda: base.config.post(**options)), what)
        return set(hardware)

    async def _grow_disk(self, guest: Guest, shape: Shape) -> None:
        if shape.disk_gib is None:
            return
        base = _guest_api(await self._client(), guest)
        config = await self._run(f"reading {guest.engine_id}", lambda: base.config.get())
        if guest.kind == "lxc":
            disk, current = "rootfs", _gib(_option(config.get("rootfs", ""), "size"))
        else:
            disks = sorted(
                (("scsi", "virtio", "sata", "ide").index(m.group(1)), int(m.group(2)), key)
                for key in config
                if (m := _DISK_KEY.fullmatch(key)) and not re.search(r"media=cdrom|cloudinit", str(config[key]))
            )
            if not disks:
                return
            disk = disks[0][2]
            current = _gib(_option(config[disk], "size"))
        if shape.disk_gib > current:
            what = f"growing {disk} of {guest.engine_id} to {shape.disk_gib}G"
            upid = await self._run(what, lambda: base.resize.put(disk=disk, size=f"{shape.disk_gib}G"))
            if isinstance(upid, str) and upid.startswith("UPID:"):
                await self._wait(upid, what)

    async def _set_description(self, guest: Guest, description: str) -> None:
        base = _guest_api(await self._client(), guest)
        await self._run(f"marking {guest.engine_id}", lambda: base.config.put(description=description))

    async def _allocate(self, what: str, make: Callable[[int], Any]) -> tuple[int, str]:
        """A free vmid and the creating task's UPID; a vmid taken meanwhile (another client) is tried again."""
        api = await self._client()
        async with self._alloc_lock:  # our own concurrent creates never race for one id
            for attempt in range(3):
                vmid = int(await self._run("asking for a free vmid", lambda: api.cluster.nextid.get()))
                try:
                    return vmid, str(await self._run(what, partial(make, vmid)))
                except TransientEngineError as exc:
                    if "already exists" not in exc.message or attempt == 2:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- removal, power and tasks --------------------------------------------------------------------

    async def _remove(self, guest: Guest) -> None:
        """Stop (if running) and destroy with purge; a guest already gone is fine."""
        base = _guest_api(await self._client(), guest)
        try:
            if await self._status(guest) == "running":
                await self._task(guest, "stop", f"stopping {guest.engine_id} ({guest.resource})")
            params = {"purge": 1, "destroy-unreferenced-disks": 1} if guest.kind == "qemu" else {"purge": 1}
            what = f"destroying {guest.engine_id} ({guest.resource})"
            await self._wait(await self._run(what, lambda: base.delete(**params)), what)
        except PermanentEngineError as exc:
            if not _gone(exc):
                raise

    async def _remove_quietly(self, guest: Guest) -> None:
        try:
            await self._remove(guest)
        except EngineError as exc:
            logger.warning("could not remove half-made %s: %s", guest.engine_id, exc.message)

    async def _status(self, guest: Guest) -> str:
        base = _guest_api(await self._client(), guest)
        current = await self._run(f"reading the status of {guest.engine_id}", lambda: base.status.current.get())
        return str(current.get("status", "unknown"))

    async def _task(self, guest: Guest, verb: str, what: str) -> None:
        base = _guest_api(await self._client(), guest)
        await self._wait(await self._run(what, lambda: getattr(base.status, verb).post()), what)

    async def _wait(self, upid: object, what: str) -> None:
        """Poll a UPID until the task stops; its error exit status becomes the error's text.

        Raises:
            TransientEngineError: the task outlasted the timeout, or ended on a lock (retrying helps).
            PermanentEngineError: the task ended with another error.
        """
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            return  # a synchronous answer: nothing to wait for
        api = await self._client()
        node = upid.split(":")[1]
        deadline = anyio.current_time() + self._timeout
        delay = self._poll
        while True:
            task = await self._run(f"waiting for {what}", lambda: api.nodes(node).tasks(upid).status.get())
            if task.get("status") == "stopped":
                exit_status = str(task.get("exitstatus") or "")
                if exit_status == "OK" or exit_status.startswith("WARNINGS"):
                    return
                message = clean(f"{what} failed: {exit_status}", self._secrets)
                data = {"upid": upid, "exitstatus": clean(exit_status, self._secrets)}
                if _TRANSIENT.search(exit_status):
                    raise TransientEngineError(message, delay=2.0, data=data)
                raise PermanentEngineError(message, data=data)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                raise TransientEngineError(
                    clean(f"{what} did not finish within {self._timeout:g} s; observe before retrying", self._secrets),
                    delay=5.0,
                    data={"upid": upid},
                )
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)

    # -- reading PVE ---------------------------------------------------------------------------------

    async def _guests(self, deployment: DeploymentRef, resource: str | None = None) -> list[Guest]:
        api = await self._client()
        rows = await self._run("listing guests", lambda: api.cluster.resources.get(type="vm"))
        dep_tag = tag("alma-dep", deployment.id)
        res_tag = tag("alma-res", resource) if resource is not None else None
        guests = []
        for row in rows or ():
            tags = set(re.split(r"[;, ]+", str(row.get("tags") or "")))
            kind = row.get("type")
            if row.get("template") or kind not in ("qemu", "lxc") or not {TAG_BASE, dep_tag} <= tags:
                continue
            if res_tag is not None and res_tag not in tags:
                continue
            found = Guest(kind, int(row["vmid"]), str(row["node"]), str(row.get("status", "unknown")), "", {})
            try:
                config = await self._run(f"reading {found.engine_id}", _guest_api(api, found).config.get)
            except PermanentEngineError as exc:
                if _gone(exc):
                    continue  # destroyed since the listing
                raise
            marker = read_marker(config.get("description")) or {}
            if marker and marker.get("deployment") != deployment.id:
                continue  # another deployment whose id sanitises to the same tag
            name = marker.get("resource") or next(
                (t.removeprefix("alma-res-") for t in sorted(tags) if t.startswith("alma-res-")), "unknown"
            )
            if resource is None or name == resource:
                guests.append(Guest(found.kind, found.vmid, found.node, found.status, str(name), marker))
        return guests

    async def _target_node(self) -> str:
        if self._node is None:
            api = await self._client()
            nodes = await self._run("listing nodes", lambda: api.nodes.get())
            online = sorted(str(n["node"]) for n in nodes or () if n.get("status") == "online")
            if not online:
                raise TransientEngineError("no Proxmox node is online", delay=5.0)
            self._node = online[0]
        return self._node

    async def _template(self, wanted: str, node: str) -> Guest:
        """The VM template named (or numbered) ``wanted``: on our node if there is one there, else the lowest vmid.

        Raises:
            PermanentEngineError: there is no such template.
        """
        api = await self._client()
        rows = await self._run("listing templates", lambda: api.cluster.resources.get(type="vm"))
        matches = sorted(
            (row.get("node") != node, int(row["vmid"]), str(row["node"]))
            for row in rows or ()
            if row.get("type") == "qemu"
            and row.get("template")
            and (str(row.get("vmid")) == wanted or row.get("name") == wanted)
        )
        if not matches:
            raise PermanentEngineError(
                f"no VM template {wanted!r} on the cluster: specs.template must name an existing template or its vmid",
                data={"template": wanted},
            )
        _, vmid, where = matches[0]
        return Guest("qemu", vmid, where, "stopped", wanted, {})

    async def _client(self) -> Any:
        if self._api is None:
            async with self._connect_lock:
                if self._api is None:
                    self._api = await self._run("connecting", self._connect)
        return self._api

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        """One blocking proxmoxer call in a worker thread, its failures translated."""
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        except (ResourceException, AuthenticationError, requests.RequestException, OSError) as exc:
            # Without its traceback: proxmoxer's frames hold the HTTP response, whose socket would stay open.
            raise self._translate(exc, what) from exc.with_traceback(None)

    def _translate(self, exc: Exception, what: str) -> EngineError:
        where = f"Proxmox VE at {self._endpoint}"
        if isinstance(exc, AuthenticationError):  # a password login answered with something other than 200
            code = re.search(r"code: (\d+)", str(exc))
            status = int(code.group(1)) if code else 401
            if status >= 500:
                return TransientEngineError(
                    clean(f"{where} could not log in while {what}: HTTP {status}"), delay=2.0, data={"status": status}
                )
            return PermanentEngineError(self._auth_hint, data={"status": status, "while": what})
        if isinstance(exc, ResourceException):
            status = int(exc.status_code)
            text = str(exc.content or exc.status_message or "")
            data: dict[str, Any] = {"status": status, "while": what}
            if isinstance(exc.errors, dict) and exc.errors:
                data["errors"] = {str(k): clean(str(v), self._secrets) for k, v in exc.errors.items()}
                text += " " + "; ".join(f"{k}: {v}" for k, v in data["errors"].items())
            message = clean(f"{what} failed: {text}", self._secrets)
            if status == 401:
                return PermanentEngineError(self._auth_hint, data=data)
            if status == 500 and _CONFIG_GONE.search(text):
                return PermanentEngineError(message, data={**data, "gone": True})
            if status == 500 and _TRANSIENT.search(text):
                return TransientEngineError(message, delay=0.0 if "already exists" in text else 2.0, data=data)
            if status < 500 or status in (500, 501):
                return PermanentEngineError(message, data=data)
            return TransientEngineError(message, delay=2.0, data=data)  # 502-504, 595-599: the way there
        text = str(exc)
        if isinstance(exc, requests.exceptions.SSLError) and "certificate verify failed" in text:
            reason = re.search(r"certificate verify failed: ([^(]*)", text)
            detail = reason.group(1).strip() if reason else "certificate verify failed"
            return PermanentEngineError(
                clean(f"TLS verification of {where} failed ({detail}): set ALMA_PROXMOX_CA_FILE to its CA"),
                data={"while": what},
            )
        if isinstance(exc, requests.Timeout):
            return TransientEngineError(clean(f"{where} did not answer while {what}"), delay=2.0, data={"while": what})
        if isinstance(exc, requests.RequestException):
            reason = re.search(r"\[Errno -?\d+\][^)'\"]*", text)
            detail = reason.group(0).strip() if reason else text
            return TransientEngineError(
                clean(f"cannot reach {where} while {what}: {detail}", self._secrets), delay=2.0, data={"while": what}
            )
        return PermanentEngineError(clean(f"{what} failed: {text}", self._secrets), data={"while": what})


def _host_port(host: str, port: int) -> tuple[str, int]:
    """``pve``, ``pve:8006`` or ``https://pve:8006`` as host and port."""
    if "://" in host:
        parts = urlsplit(host)
        return parts.hostname or host, parts.port or port
    name, sep, rest = host.rpartition(":")
    return (name, int(rest)) if sep and rest.isdigit() and ":" not in name else (host, port)


def _number(value: object) -> float | None:
    """A config value such as ``"4096"`` as a number (None when it is not one)."""
    try:
        return float(str(value).split("=")[-1])
    except ValueError:
        return None


def _guest_api(api: Any, guest: Guest) -> Any:
    return getattr(api.nodes(guest.node), guest.kind)(guest.vmid)


def _not_found(deployment: DeploymentRef, resource: str, action: str) -> DeploymentNotFound:
    return DeploymentNotFound(
        f"deployment {deployment.id!r} has no resource {resource!r} to {action}; observe the deployment and re-plan",
        data={"deployment": deployment.id, "resource": resource, "action": action},
    )


def _by_resource(guests: Sequence[Guest]) -> dict[str, list[Guest]]:
    groups: dict[str, list[Guest]] = {}
    for guest in guests:
        groups.setdefault(guest.resource, []).append(guest)
    for group in groups.values():
        group.sort(key=lambda g: (g.replica, g.vmid))
    return groups


def _observed(name: str, guests: Sequence[Guest]) -> ObservedResource:
    """One resource from its guests: their common fingerprint, or ``incomplete`` when they disagree or are missing."""
    marker = guests[0].marker
    raw = marker.get("specs")
    specs: dict[str, Any] = raw if isinstance(raw, dict) else {}
    replicas = specs.get("replicas") or 1
    fingerprints = {g.fingerprint for g in guests}
    whole = sorted(g.replica for g in guests) == list(range(replicas if isinstance(replicas, int) else 1))
    statuses = {g.status for g in guests}
    status: ResourceStatus = "running" if statuses == {"running"} else "unknown" if "unknown" in statuses else "stopped"
    return ObservedResource(
        name=name,
        type=str(marker.get("type", "unknown")),
        provider=str(marker.get("provider", ProxmoxEngine.name)),
        fingerprint=fingerprints.pop() if len(fingerprints) == 1 and whole else INCOMPLETE,
        status=status,
        engine_id=",".join(g.engine_id for g in guests),
        specs=dict(specs),
    )
