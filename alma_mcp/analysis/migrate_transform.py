"""How migrate_infrastructure rewrites one resource for its target provider.

VMs become containers on Docker and Kubernetes (an image chosen by kind, role or GPU from
``resources/create/rules.yaml``, or a pinned placeholder to replace, said so in the changes);
containers become VMs on Proxmox that run their image under Docker (``options.container_image``),
with the guest OS, clone template and size a Proxmox VM needs. Settings that mean nothing on the
target are dropped and listed, dependencies on what retires are removed, and ``refactor`` makes a
stateless tier twelve-factor (two replicas or more, autoscaling on Kubernetes, a health check,
non-root, read-only root filesystem).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from alma_mcp.analysis.create import CreateRules
from alma_mcp.blueprint.model import Provider, Resource, ResourceType

CONTAINER_PROVIDERS: Final = frozenset({Provider.DOCKER, Provider.KUBERNETES})
CONTAINER_ONLY: Final = ("user", "read_only_root_filesystem", "capabilities", "privileged", "host_network")
PLATFORM_OPTIONS: Final[Mapping[Provider, tuple[str, ...]]] = {
    Provider.KUBERNETES: ("host_ip", "pids_limit"),
    Provider.DOCKER: ("pod_disruption_budget", "topology_spread", "service_type", "cluster_role", "role"),
    Provider.PROXMOX: ("pod_disruption_budget", "topology_spread", "service_type", "host_ip", "pids_limit"),
    Provider.SIMULATION: (),
}


def target_type(rtype: ResourceType, target: Provider) -> ResourceType:
    if target in CONTAINER_PROVIDERS and rtype is ResourceType.COMPUTE:
        return ResourceType.CONTAINER
    if target is Provider.PROXMOX and rtype is ResourceType.CONTAINER:
        return ResourceType.COMPUTE
    return rtype


def transform(
    res: Resource, disposition: str, target: Provider, rules: CreateRules, gone: Collection[str]
) -> tuple[dict[str, Any], list[str]]:
    """The resource as data on ``target``, and what changed; ``gone`` names what retires or is repurchased."""
    changes: list[str] = []
    data = res.model_dump(mode="json", exclude_unset=True, by_alias=True)
    data["dependencies"] = [d for d in res.dependencies if d not in gone]
    dropped_deps = [d for d in res.dependencies if d not in data["dependencies"]]
    if dropped_deps:
        changes.append(f"dependencies on {', '.join(dropped_deps)} removed (they do not carry on)")
    specs: dict[str, Any] = data.setdefault("specs", {})
    for key in ("backends", "networks"):
        kept = [n for n in specs.get(key, []) if n not in gone]
        if key in specs and kept != specs[key]:
            specs[key] = kept
            changes.append(f"{key}: retired {', '.join(sorted(set(res.specs.model_dump()[key]) - set(kept)))}")
    if disposition == "retain" or res.provider is target:
        return data, changes
    data["provider"] = target.value
    new_type = target_type(res.type, target)
    if new_type is not res.type:
        data["type"] = new_type.value
        changes.append(f"type {res.type.value} -> {new_type.value}")
    options: dict[str, Any] = specs.setdefault("options", {})
    if target in CONTAINER_PROVIDERS:
        _to_container(changes, specs, options, new_type, target, rules)
    elif target is Provider.PROXMOX:
        _to_vm(changes, specs, options, new_type, rules)
    else:
        for key in ("os", "template", "ostemplate"):
            specs.pop(key, None)
    changes.extend(
        f"options.{key} dropped (means nothing on {target.value})"
        for key in PLATFORM_OPTIONS[target]
        if options.pop(key, None) is not None
    )
    if not options:
        specs.pop("options", None)
    if disposition == "refactor":
        _refactor(changes, specs, target)
    return data, changes


def _to_container(
    changes: list[str],
    specs: dict[str, Any],
    options: dict[str, Any],
    rtype: ResourceType,
    target: Provider,
    rules: CreateRules,
) -> None:
    dropped = [k for k in ("os", "template", "ostemplate") if specs.pop(k, None) is not None]
    if dropped:
        changes.append(f"dropped {', '.join(dropped)} (VM settings)")
    carried = options.pop("container_image", None)
    if not specs.get("image") and rtype in (*rules.images.required_for, ResourceType.LOAD_BALANCER):
        image, why = _image(specs, rules, carried)
        specs["image"] = image
        changes.append(f"image {image} ({why})")
    options.pop("container_runtime", None)
    if target is Provider.DOCKER and specs.get("autoscaling"):
        auto = specs.pop("autoscaling")
        specs["replicas"] = max(specs.get("replicas") or 1, auto.get("min", 1))
        changes.append(f"autoscaling dropped (Docker does not scale by load): {specs['replicas']} replicas")


def _image(specs: Mapping[str, Any], rules: CreateRules, carried: Any) -> tuple[str, str]:
    images = rules.images
    kind, role = specs.get("kind"), specs.get("role")
    if isinstance(carried, str) and carried:
        return carried, "the image the VM ran"
    if specs.get("gpu") or specs.get("gpu_count"):
        return images.gpu, "GPU image"
    if kind in images.by_kind:
        return images.by_kind[kind], f"the image for kind {kind}"
    if role in images.by_role:
        return images.by_role[role], f"the image for role {role}"
    fallback = {
        "http": "haproxy:3.0.5",
        "tcp": "haproxy:3.0.5",
        "haproxy": "haproxy:3.0.5",
        "pgpool": "pgpool/pgpool:4.4.3",
    }
    if kind in fallback:
        return fallback[kind], f"the image for kind {kind}"
    return "nginx:1.27.2", "a pinned PLACEHOLDER: build the application into an image and put it here"


def _to_vm(
    changes: list[str], specs: dict[str, Any], options: dict[str, Any], rtype: ResourceType, rules: CreateRules
) -> None:
    image = specs.pop("image", None)
    if image:
        options["container_image"] = image
        options["container_runtime"] = "docker"
        changes.append(f"image {image} runs under Docker inside the VM (options.container_image)")
    dropped = [k for k in CONTAINER_ONLY if specs.pop(k, None) is not None]
    if dropped:
        changes.append(f"dropped {', '.join(dropped)} (container settings; harden the VM instead)")
    guest = rules.providers[Provider.PROXMOX].guest
    if guest is not None and rtype in guest.types:
        added = []
        if not specs.get("os"):
            specs["os"] = guest.os
            added.append(f"os {guest.os}")
        if not specs.get("template") and not specs.get("ostemplate"):
            specs["template"] = guest.template
            added.append(f"template {guest.template}")
        if not specs.get("cpu"):
            specs["cpu"] = guest.cpu
            added.append(f"cpu {guest.cpu}")
        if not specs.get("memory"):
            specs["memory"] = guest.memory
            added.append(f"memory {guest.memory} MiB")
        if added:
            changes.append(f"VM guest: {', '.join(added)}")


def _refactor(changes: list[str], specs: dict[str, Any], target: Provider) -> None:
    replicas = max(2, specs.get("replicas") or 1)
    specs["replicas"] = replicas
    if target is Provider.KUBERNETES and "autoscaling" not in specs:
        specs["autoscaling"] = {"min": replicas, "max": replicas * 2, "target_cpu": 70}
    if "healthcheck" not in specs:
        port = (specs.get("ports") or [None])[0]
        specs["healthcheck"] = {"path": "/health", **({"port": port} if port else {})}
    if target in CONTAINER_PROVIDERS:
        specs.setdefault("user", "10001")
        specs["read_only_root_filesystem"] = True
    changes.append("refactored: at least 2 replicas, autoscaling on Kubernetes, a health check, non-root")
