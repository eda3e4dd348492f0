"""Docker Compose files read as blueprints: the Kompose conversion table, applied to blueprint keys.

A Compose project runs on one Docker host, so each service becomes a ``docker`` resource; moving it
elsewhere is then an ordinary migration (Kubernetes reads these keys the way Kompose writes its
manifests). The table (kubernetes/kompose ``docs/conversion.md``):

    service            -> a resource (Deployment; a data store by image: postgres, redis, ...)
    image              -> specs.image                   build without image -> not migratable
    ports / expose     -> specs.ports (container side)  published -> public (a LoadBalancer Service)
    volumes (named)    -> specs.volumes (PVC)           bind mounts -> options.host_paths (hostPath)
    environment        -> specs.env; secret-looking names -> specs.secrets references (values dropped)
    mem_limit, cpus, deploy.resources.limits -> specs.memory, specs.cpu
    deploy.replicas    -> specs.replicas                 healthcheck -> specs.healthcheck
    cap_add / cap_drop -> specs.capabilities / options.cap_drop
    privileged, user, read_only, network_mode: host, pid: host, ipc: host -> the hardening keys
    tmpfs              -> options.tmpfs (emptyDir, medium Memory)
    labels             -> metadata.annotations           depends_on -> dependencies (ordering only:
                                                         Kubernetes uses readiness probes instead)

Every key read, dropped or refused is reported, so nothing disappears silently.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from alma_mcp.blueprint.model import ResourceType
from alma_mcp.errors import InvalidRequest

SECRET_NAME: Final = re.compile(
    r"(?i)(passw(or)?d|pwd|secret|token|api[_.-]?key|private[_.-]?key|access[_.-]?key|credentials?|auth[_.-]?key)"
)
# Image name (without registry and tag) -> (type, kind).
DATA_IMAGES: Final[Mapping[str, tuple[ResourceType, str]]] = {
    "postgres": (ResourceType.DATABASE, "postgresql"),
    "postgis": (ResourceType.DATABASE, "postgresql"),
    "mysql": (ResourceType.DATABASE, "mysql"),
    "mariadb": (ResourceType.DATABASE, "mariadb"),
    "mongo": (ResourceType.DATABASE, "mongodb"),
    "elasticsearch": (ResourceType.DATABASE, "elasticsearch"),
    "clickhouse-server": (ResourceType.DATABASE, "clickhouse"),
    "redis": (ResourceType.CACHE, "redis"),
    "valkey": (ResourceType.CACHE, "redis"),
    "memcached": (ResourceType.CACHE, "memcached"),
    "rabbitmq": (ResourceType.QUEUE, "rabbitmq"),
    "kafka": (ResourceType.QUEUE, "kafka"),
    "nats": (ResourceType.QUEUE, "nats"),
    "minio": (ResourceType.STORAGE, "s3-compatible"),
}
IGNORED_KEYS: Final = frozenset({"container_name", "restart", "logging", "stop_grace_period", "init", "hostname"})
REFUSED_KEYS: Final[Mapping[str, str]] = {
    "devices": "host devices are passed through; Kubernetes needs a device plugin for them",
    "network_mode:service": "shares another service's network namespace (a sidecar); merge it into that service",
}
DOCKER_SOCKETS: Final = frozenset({"/var/run/docker.sock", "/run/docker.sock"})
MAX_PORT_RANGE: Final = 64
ALL_INTERFACES: Final = frozenset({"0.0.0.0", "::"})  # noqa: S104 - recognising a Compose binding, not binding


@dataclass
class ComposeService:
    """One service as a blueprint resource, and what the conversion did to it."""

    compose_name: str
    resource: dict[str, Any] | None
    conversions: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@dataclass
class ComposeProject:
    services: list[ComposeService]
    networks: list[dict[str, Any]]
    renamed: dict[str, str]

    def blueprint(self, name: str) -> dict[str, Any]:
        """The convertible services (and declared networks) as a docker blueprint."""
        resources = [*self.networks, *(s.resource for s in self.services if s.resource is not None)]
        return {
            "version": "1.0",
            "name": name,
            "description": "Imported from a Docker Compose file (Kompose's conversion table)",
            "resources": resources,
        }


def is_compose(data: Mapping[str, Any]) -> bool:
    """A Compose document has ``services`` and no ``resources``."""
    return "services" in data and "resources" not in data


def dns_name(raw: str) -> str:
    """A Compose service name as a DNS-1123 label (web_app -> web-app)."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    return (name or "service")[:63].rstrip("-")


def parse_compose(doc: Mapping[str, Any]) -> ComposeProject:
    """Read a Compose document (already parsed, a mapping).

    Raises:
        InvalidRequest: ``services`` is not a mapping of service mappings.
    """
    services = doc.get("services")
    if not isinstance(services, Mapping) or not services:
        raise InvalidRequest(
            "a Docker Compose file needs 'services': a mapping of service name -> settings",
            data={"path": "/services"},
        )
    renamed: dict[str, str] = {}
    for raw in services:
        if not isinstance(raw, str):
            raise InvalidRequest(f"service names must be strings, got {raw!r}", data={"path": "/services"})
        name = dns_name(raw)
        if name in renamed.values():
            raise InvalidRequest(
                f"services {raw!r} and another both become {name!r} as DNS names; rename one",
                data={"path": f"/services/{raw}"},
            )
        renamed[raw] = name
    declared_networks = doc.get("networks") if isinstance(doc.get("networks"), Mapping) else {}
    networks = [
        {"name": dns_name(str(n)), "type": "network", "provider": "docker", "specs": {"kind": "bridge"}}
        for n in sorted(declared_networks or {}, key=str)
    ]
    network_names = {dns_name(str(n)) for n in declared_networks or {}}
    out = []
    for raw, spec in services.items():
        if not isinstance(spec, Mapping):
            raise InvalidRequest(
                f"service {raw!r} must be a mapping of settings, not {type(spec).__name__}",
                data={"path": f"/services/{raw}"},
            )
        out.append(_service(str(raw), spec, renamed, network_names))
    return ComposeProject(services=out, networks=networks, renamed={k: v for k, v in renamed.items() if k != v})


def _service(raw: str, spec: Mapping[str, Any], renamed: Mapping[str, str], networks: set[str]) -> ComposeService:
    name = renamed[raw]
    svc = ComposeService(compose_name=raw, resource=None)
    note = svc.conversions.append
    if name != raw:
        note(f"service name {raw!r} -> {name!r} (DNS-1123 label)")
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        if "build" in spec:
            svc.refused.append("built from source ('build') with no 'image': build and push it, then set 'image'")
        else:
            svc.refused.append("no 'image' to run")
        return svc
    rtype, kind = _type_of(image)
    specs: dict[str, Any] = {"image": image}
    if kind:
        specs["kind"] = kind
    options: dict[str, Any] = {}
    _ports(spec, specs, options, note)
    _environment(name, spec, specs, note)
    _resources(spec, specs, note)
    _volumes(spec, specs, options, svc)
    _hardening(spec, specs, options, svc)
    _healthcheck(spec, specs, note)
    command = spec.get("command")
    if isinstance(command, str):
        specs["command"] = shlex.split(command)
    elif isinstance(command, list):
        specs["command"] = [str(c) for c in command]
    if "entrypoint" in spec:
        options["entrypoint"] = spec["entrypoint"]
        note("entrypoint -> options.entrypoint (the container's command override)")
    joined = spec.get("networks")
    names = list(joined) if isinstance(joined, Mapping | list) else []
    member = [dns_name(str(n)) for n in names if dns_name(str(n)) in networks]
    if member:
        specs["networks"] = member
    if options:
        specs["options"] = options
    dependencies = _depends_on(spec.get("depends_on"), renamed)
    if dependencies:
        note("depends_on -> dependencies (start order; on Kubernetes readiness probes do this job)")
    metadata: dict[str, Any] = {"compose_service": raw}
    labels = spec.get("labels")
    if isinstance(labels, Mapping | list):
        metadata["annotations"] = _labels(labels)
        note("labels -> metadata.annotations")
    for key in sorted(str(k) for k in spec if k in IGNORED_KEYS):
        note(f"{key}: not carried over (the platform decides it)")
    svc.resource = {
        "name": name,
        "type": rtype.value,
        "provider": "docker",
        "specs": specs,
        "dependencies": dependencies,
        "metadata": metadata,
    }
    return svc


def _type_of(image: str) -> tuple[ResourceType, str | None]:
    base = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0].lower()
    if base in DATA_IMAGES:
        rtype, kind = DATA_IMAGES[base]
        return rtype, kind
    return ResourceType.CONTAINER, None


def _ports(spec: Mapping[str, Any], specs: dict[str, Any], options: dict[str, Any], note: Any) -> None:
    ports: list[int] = []
    public = False
    host_ips: set[str] = set()
    for entry in spec.get("ports") or []:
        target, published, host_ip = _port(entry)
        ports.extend(target)
        if published:
            if host_ip is None or host_ip in ALL_INTERFACES:
                public = True
            else:
                host_ips.add(host_ip)
    for entry in spec.get("expose") or []:
        ports.extend(_port(entry)[0])
    if ports:
        specs["ports"] = sorted(set(ports))
        note("ports/expose -> specs.ports (a Service per resource)")
    if public:
        specs["public"] = True
        note("ports published on every host interface -> public: true (a LoadBalancer Service; Kompose's "
             "default is ClusterIP: set public: false to keep it internal)")  # fmt: skip
    elif host_ips:
        options["host_ip"] = sorted(host_ips)[0]


def _port(entry: Any) -> tuple[list[int], bool, str | None]:
    """(container ports, published to the host?, host ip) of a short or long port entry."""
    if isinstance(entry, Mapping):
        target = entry.get("target")
        ports = [int(target)] if isinstance(target, int) or (isinstance(target, str) and target.isdigit()) else []
        given = entry.get("host_ip")
        return ports, entry.get("published") is not None, given if isinstance(given, str) else None
    text = str(entry).split("/", 1)[0]
    host_ip: str | None = None
    if text.startswith("["):  # [::1]:8080:80
        close = text.find("]")
        host_ip, text = text[1:close], text[close + 2 :]
    parts = text.split(":")
    if len(parts) == 3:
        host_ip = parts[0]
    return _range(parts[-1]), len(parts) >= 2, host_ip


def _range(text: str) -> list[int]:
    if "-" in text:
        low, _, high = text.partition("-")
        if low.isdigit() and high.isdigit() and 0 < int(low) <= int(high) <= 65535:
            return list(range(int(low), min(int(high), int(low) + MAX_PORT_RANGE - 1) + 1))
        return []
    return [int(text)] if text.isdigit() and 0 < int(text) <= 65535 else []


def _environment(name: str, spec: Mapping[str, Any], specs: dict[str, Any], note: Any) -> None:
    raw = spec.get("environment")
    pairs: list[tuple[str, str | None]] = []
    if isinstance(raw, Mapping):
        pairs = [(str(k), None if v is None else str(v)) for k, v in raw.items()]
    elif isinstance(raw, list):
        for item in raw:
            key, sep, text = str(item).partition("=")
            pairs.append((key, text if sep else None))
    env: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in pairs:
        if SECRET_NAME.search(key):
            secrets[key] = dns_name(f"{name}-{key}")
        elif value is None:
            note(f"environment {key} takes its value from the host's environment: set it in specs.env")
        else:
            env[key] = value
    if env:
        specs["env"] = env
        note("environment -> specs.env")
    if secrets:
        specs["secrets"] = secrets
        note(
            f"secret-looking variables {', '.join(sorted(secrets))} -> specs.secrets references "
            f"({', '.join(sorted(set(secrets.values())))}); their values are not copied: create those secrets"
        )
    if "env_file" in spec:
        note("env_file: not read (files are not part of the input); load it into a ConfigMap or secrets")


def _resources(spec: Mapping[str, Any], specs: dict[str, Any], note: Any) -> None:
    deploy = spec.get("deploy") if isinstance(spec.get("deploy"), Mapping) else {}
    limits = ((deploy or {}).get("resources") or {}).get("limits") or {}
    memory = limits.get("memory") or spec.get("mem_limit")
    cpus = limits.get("cpus") or spec.get("cpus")
    mib = _memory_mib(memory)
    if mib is not None:
        specs["memory"] = mib
        note("mem_limit / deploy.resources.limits.memory -> specs.memory (a container limit)")
    elif memory is not None:
        note(f"memory limit {memory!r} not understood; write it like 512m or 2g")
    try:
        cores = float(cpus) if cpus is not None else None
    except (TypeError, ValueError):
        cores = None
        note(f"cpus {cpus!r} not understood; write a number of cores such as 1.5")
    if cores is not None and cores > 0:
        specs["cpu"] = round(cores, 3)
        note("cpus / deploy.resources.limits.cpus -> specs.cpu")
    replicas = (deploy or {}).get("replicas", spec.get("scale"))
    if isinstance(replicas, int) and replicas >= 1:
        specs["replicas"] = replicas
        note("deploy.replicas -> specs.replicas")


def _memory_mib(value: Any) -> int | None:
    """Docker's memory spellings (bytes, or 512m / 1.5g / 100000k, binary units) in whole MiB."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(1, -(-value // (1024 * 1024)))
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*", str(value).lower())
    if match is None:
        return None
    factor = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[match.group(2)]
    return max(1, -(-int(float(match.group(1)) * factor) // (1024 * 1024)))


def _volumes(spec: Mapping[str, Any], specs: dict[str, Any], options: dict[str, Any], svc: ComposeService) -> None:
    volumes: list[dict[str, Any]] = []
    host_paths: list[str] = []
    for entry in spec.get("volumes") or []:
        if isinstance(entry, Mapping):
            source, target = str(entry.get("source") or ""), str(entry.get("target") or "")
            read_only = bool(entry.get("read_only"))
            bind = entry.get("type") == "bind"
        else:
            parts = str(entry).split(":")
            if len(parts) == 1:
                source, target, read_only = "", parts[0], False
            else:
                source, target = parts[0], parts[1]
                read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            bind = source.startswith(("/", ".", "~"))
        if not target.startswith("/"):
            continue
        if bind:
            host_paths.append(f"{source}:{target}")
        else:
            name = dns_name(source or f"{svc.compose_name}-{target}")
            volumes.append({"name": name, "mount_path": target, "read_only": read_only})
    if volumes:
        specs["volumes"] = volumes
        svc.conversions.append("named volumes -> specs.volumes (a PersistentVolumeClaim each)")
    if host_paths:
        options["host_paths"] = host_paths
        svc.conversions.append(
            "bind mounts -> options.host_paths (hostPath on Kubernetes: tied to one node; copy the data "
            "into a volume instead)"
        )


def _hardening(spec: Mapping[str, Any], specs: dict[str, Any], options: dict[str, Any], svc: ComposeService) -> None:
    note = svc.conversions.append
    if isinstance(spec.get("cap_add"), list):
        specs["capabilities"] = [str(c) for c in spec["cap_add"]]
        note("cap_add -> specs.capabilities")
    if isinstance(spec.get("cap_drop"), list):
        options["cap_drop"] = [str(c) for c in spec["cap_drop"]]
        note("cap_drop -> options.cap_drop")
    for key, target in (("privileged", "privileged"), ("read_only", "read_only_root_filesystem")):
        if isinstance(spec.get(key), bool):
            specs[target] = spec[key]
            note(f"{key} -> specs.{target}")
    if spec.get("user") is not None:
        specs["user"] = str(spec["user"])
        note("user -> specs.user (securityContext.runAsUser)")
    mode = spec.get("network_mode")
    if mode == "host":
        specs["host_network"] = True
        note("network_mode: host -> specs.host_network (hostNetwork)")
    elif isinstance(mode, str) and mode.startswith(("service:", "container:")):
        svc.refused.append(REFUSED_KEYS["network_mode:service"])
    for key, option in (("pid", "host_pid"), ("ipc", "host_ipc")):
        if spec.get(key) == "host":
            options[option] = True
            note(f"{key}: host -> options.{option}")
    for opt in spec.get("security_opt") or []:
        text = str(opt).replace("=", ":")
        if text.startswith("no-new-privileges") and not text.endswith("false"):
            options["no_new_privileges"] = True
        elif text == "seccomp:unconfined":
            options["seccomp"] = "unconfined"
    tmpfs = spec.get("tmpfs")
    if tmpfs:
        options["tmpfs"] = [str(t) for t in tmpfs] if isinstance(tmpfs, list) else [str(tmpfs)]
        note("tmpfs -> options.tmpfs (emptyDir with medium Memory)")
    if spec.get("devices"):
        svc.refused.append(REFUSED_KEYS["devices"])


def _healthcheck(spec: Mapping[str, Any], specs: dict[str, Any], note: Any) -> None:
    check = spec.get("healthcheck")
    if not isinstance(check, Mapping) or check.get("disable") is True:
        return
    test = check.get("test")
    command: list[str] | None = None
    if isinstance(test, list) and test:
        head, rest = str(test[0]), [str(t) for t in test[1:]]
        if head == "NONE":
            return
        command = ["/bin/sh", "-c", " ".join(rest)] if head == "CMD-SHELL" else rest if head == "CMD" else None
    elif isinstance(test, str):
        command = ["/bin/sh", "-c", test]
    if not command:
        return
    out: dict[str, Any] = {"command": command}
    for key, target in (("interval", "interval_s"), ("timeout", "timeout_s")):
        seconds = _seconds(check.get(key))
        if seconds is not None:
            out[target] = seconds
    if isinstance(check.get("retries"), int) and check["retries"] >= 1:
        out["retries"] = check["retries"]
    specs["healthcheck"] = out
    note("healthcheck -> specs.healthcheck (liveness and readiness probes)")


def _seconds(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", value):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "ns": 1e-9}[unit]
    return max(1, min(3600, round(total))) if total else None


def _depends_on(raw: Any, renamed: Mapping[str, str]) -> list[str]:
    names = list(raw) if isinstance(raw, Mapping | list) else []
    return [renamed[str(n)] for n in names if str(n) in renamed]


def _labels(labels: Mapping[str, Any] | list[Any]) -> dict[str, str]:
    if isinstance(labels, Mapping):
        return {str(k): str(v) for k, v in labels.items()}
    out = {}
    for item in labels:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out
