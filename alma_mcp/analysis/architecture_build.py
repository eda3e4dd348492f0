"""Writing a sized candidate architecture as a blueprint (suggest_architecture's last step).

Every resource comes from a role in ``resources/architecture/patterns.yaml``; this module places it on
the provider (a VM with an OS and a clone template on Proxmox, an image elsewhere), wires the
dependencies, balancer backends and client settings the roles declare, segments the networks
(default-deny networks, per-resource inbound rules admitting only the tier's clients), and applies
the recovery plan (replication, failover, backups, WAL archiving) to the data stores. The result must
pass validate() and security_audit with no high or critical finding; tests hold it to that.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from alma_mcp.analysis.architecture_data import PatternsFile, Role
from alma_mcp.blueprint.model import Provider, ResourceType

CONTAINER_ONLY: Final = ("user", "read_only_root_filesystem", "capabilities")
NETWORK_KIND: Final[Mapping[Provider, str]] = {
    Provider.DOCKER: "bridge",
    Provider.KUBERNETES: "network-policy",
    Provider.PROXMOX: "vnet",
    Provider.SIMULATION: "bridge",
}
WORLD: Final = "0.0.0.0/0"
DOCKER_PIDS_LIMIT: Final = 4096


@dataclass(frozen=True)
class RecoveryPlan:
    """How the data tier meets the RPO and RTO."""

    replication: Literal["synchronous", "asynchronous"]
    failover: Literal["automatic", "manual"]
    wal_archiving: bool
    backup_schedule: str
    retention_days: int
    restore_minutes: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Design:
    """What the blueprint is written from: the chosen roles, their sizes and the context."""

    name: str
    description: str
    provider: Provider
    pattern: str
    based_on: str
    workload: str
    availability_target: float
    roles: Mapping[str, Role]
    instances: Mapping[str, int]
    autoscale: bool
    data_size_gb: float
    recovery: RecoveryPlan
    compliance: Sequence[str]


def build_blueprint(design: Design, data: PatternsFile) -> dict[str, Any]:
    """The design as blueprint data (validated by the caller)."""
    cidrs = {name: spec.cidr for name, spec in data.networks.items()}
    resources: list[dict[str, Any]] = []
    for net, cidr in cidrs.items():
        resources.append(
            {
                "name": net,
                "type": ResourceType.NETWORK.value,
                "provider": design.provider.value,
                "specs": {
                    "kind": NETWORK_KIND[design.provider],
                    "cidr": cidr,
                    "options": {"default_policy": "deny"},
                },
            }
        )
    for key, role in design.roles.items():
        resources.append(_resource(design, data, key, role, cidrs))
    meta: dict[str, Any] = {
        "environment": "production",
        "availability": f"{format(design.availability_target, '.15g')}%",
        "workload": design.workload,
        "pattern": design.pattern,
        "based_on": design.based_on,
        "monitoring": "external: scrape every resource's metrics (add a Prometheus or name the system here)",
        "logging": "external: ship every resource's logs to the central log store",
        "alerting": "external: route alerts to the on-call rota",
    }
    if design.compliance:
        meta["compliance"] = list(design.compliance)
    return {
        "version": "1.0",
        "name": design.name,
        "description": design.description,
        "metadata": meta,
        "resources": resources,
    }


def _resource(design: Design, data: PatternsFile, key: str, role: Role, cidrs: Mapping[str, str]) -> dict[str, Any]:
    provider = design.provider
    present = design.roles
    vm = provider is Provider.PROXMOX
    rtype = role.resource.vm_type if vm and role.resource.vm_type is not None else role.resource.type
    specs: dict[str, Any] = copy.deepcopy(role.resource.specs)
    n = design.instances[key]
    if vm:
        for field in CONTAINER_ONLY:
            specs.pop(field, None)
        if rtype not in (ResourceType.NETWORK, ResourceType.STORAGE):
            specs["os"] = data.proxmox_guest.os
            specs["template"] = data.proxmox_guest.template
    elif role.resource.image is not None:
        specs["image"] = role.resource.image
    if rtype is not ResourceType.STORAGE:
        specs["replicas"] = n
    networks = {"app": ["app-net"], "data": ["data-net"], "both": ["app-net", "data-net"]}[role.network]
    specs["networks"] = networks
    # Inbound rules: the world for a public endpoint, otherwise only the tier's client network.
    client_net = "app-net" if role.network in ("app", "both") else "data-net"
    source = WORLD if specs.get("public") else cidrs[client_net]
    ports = list(specs.get("ports", []))
    if ports:
        specs["firewall"] = [
            {"action": "allow", "direction": "in", "protocol": "tcp", "port": p, "source": source} for p in ports
        ]
    dependencies: list[str] = []
    env: dict[str, str] = dict(specs.get("env", {}))
    secrets: dict[str, str] = dict(specs.get("secrets", {}))
    for used in role.uses:
        target = present.get(used)
        if target is None:
            continue
        dependencies.append(target.name)
        env.update(target.client_env)
        secrets.update(target.client_secrets)
    if role.balances is not None and role.balances in present:
        backend = present[role.balances].name
        specs["backends"] = [backend]
        dependencies.append(backend)
    if env:
        specs["env"] = env
    if secrets:
        specs["secrets"] = secrets
    _data_protection(design, rtype, specs)
    if n >= 2 and rtype is not ResourceType.STORAGE:
        # The availability maths assumes independent failures: one instance per host or zone.
        options = specs.setdefault("options", {})
        options["anti_affinity"] = True
        if provider is Provider.KUBERNETES:
            options["pod_disruption_budget"] = {"max_unavailable": 1}
    if vm and rtype in (ResourceType.DATABASE, ResourceType.STORAGE):
        specs.setdefault("options", {})["protection"] = True
    if provider is Provider.DOCKER and rtype not in (ResourceType.NETWORK, ResourceType.STORAGE):
        options = specs.setdefault("options", {})
        options.update(no_new_privileges=True, pids_limit=DOCKER_PIDS_LIMIT)
        if ports and not specs.get("public"):
            options["host_ip"] = "127.0.0.1"  # reachable on the deployment's network, not on the host's
    if design.autoscale and role.composition == "capacity":
        specs["autoscaling"] = {"min": n, "max": min(role.max_instances, max(n + 1, 2 * n)), "target_cpu": 70}
    return {
        "name": role.name,
        "type": rtype.value,
        "provider": provider.value,
        "specs": specs,
        "dependencies": [*dependencies, *networks],
    }


def _data_protection(design: Design, rtype: ResourceType, specs: dict[str, Any]) -> None:
    plan = design.recovery
    gb = design.data_size_gb
    if rtype is ResourceType.DATABASE:
        specs["storage"] = f"{max(20, math.ceil(gb * 2))}GB"
        specs["backup"] = {"schedule": plan.backup_schedule, "retention_days": plan.retention_days}
        specs["options"] = {
            **specs.get("options", {}),
            "ha": "patroni" if plan.failover == "automatic" else "streaming-replication",
            "failover": plan.failover,
            "replication": plan.replication,
            "wal_archiving": plan.wal_archiving,
            "audit_log": True,
        }
    elif rtype is ResourceType.STORAGE:
        specs["storage"] = f"{max(50, math.ceil(gb * 3))}GB"
        specs["retention_days"] = plan.retention_days
    elif rtype is ResourceType.CACHE:
        if "db" not in design.roles:
            specs["memory"] = f"{min(256, max(1, math.ceil(gb * 1.25)))}GB"
        specs["options"] = {**specs.get("options", {}), "auth": "required"}
        if "cache-sentinel" in design.roles:
            specs["options"]["sentinel"] = design.roles["cache-sentinel"].name
