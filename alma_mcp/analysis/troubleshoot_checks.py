"""Blueprint checks troubleshoot_issue runs to make a diagnosis more (or less) likely.

Each check looks at one resource of a validated blueprint (and the resources it talks to) and
returns the defects that would cause the failures of the knowledge-base entries naming it: a memory
limit below the heap, a health check on a port the container does not serve, a client pointed at a
host or port no resource has, an even quorum, and so on. A defect multiplies the entry's score and
is reported with its JSON pointer, so the answer cites the line to change.
"""

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel

from alma_mcp.blueprint.model import Blueprint, Provider, Resource, ResourceType


class BlueprintFinding(BaseModel):
    """A defect in the blueprint that makes a diagnosis more likely, with the place to change."""

    check: str
    resource: str
    path: str
    message: str


Check = Callable[[Blueprint, int], list[BlueprintFinding]]
CHECKS: dict[str, Check] = {}

HEAP_ENV: Final = ("JAVA_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JVM_OPTS", "ES_JAVA_OPTS", "NODE_OPTIONS")
MEMORY_FLOOR_MIB: Final[Mapping[str, int]] = {
    "postgresql": 256,
    "mysql": 512,
    "mariadb": 512,
    "elasticsearch": 2048,
    "clickhouse": 2048,
    "kafka": 1024,
    "keycloak": 1024,
}
QUORUM_KINDS: Final = frozenset({"etcd", "redis-sentinel", "zookeeper", "consul", "vault"})
DATA_TYPES: Final = frozenset({ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE, ResourceType.STORAGE})
SMALL_STORAGE_MIB: Final = 10 * 1024
PASSWORD_KEY: Final = re.compile(r"(?i)(passw(or)?d|pwd|auth)")
HOST_KEY: Final = re.compile(r"(?i)(host|hostname|server|addr|address)$")
URL_KEY: Final = re.compile(r"(?i)(url|uri|dsn|endpoint)$")
TLS_OFF: Final = re.compile(r"(?i)(sslmode=disable|\bssl=false|\btls=false|usessl=false|encrypt=false)")
TLS_OFF_VALUES: Final = frozenset({"disable", "false", "off", "0", "no"})
DEFAULT_POOL: Final = 10
DEFAULT_MAX_CONNECTIONS: Final[Mapping[str, int]] = {"postgresql": 100, "mysql": 151, "mariadb": 151}
OVERSIZED_CPU: Final = 32.0
OVERSIZED_MEMORY_MIB: Final = 128 * 1024


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def _finding(name: str, bp: Blueprint, i: int, pointer: str, message: str) -> BlueprintFinding:
    return BlueprintFinding(check=name, resource=bp.resources[i].name, path=f"/resources/{i}{pointer}", message=message)


def _short(text: str, limit: int = 60) -> str:
    """A caller's string quoted in a message: printable characters only, bounded."""
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _index(bp: Blueprint) -> dict[str, int]:
    return {r.name: i for i, r in enumerate(bp.resources)}


def _mib(amount: str, unit: str) -> int:
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit.lower()]
    return int(float(amount) * factor)


@check("memory_below_heap")
def memory_below_heap(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    memory = res.specs.memory
    if memory is None:
        return []
    for key in HEAP_ENV:
        value = res.specs.env.get(key, "")
        found = re.search(r"-Xmx(\d+(?:\.\d+)?)([kmgt])", value, re.IGNORECASE)
        heap = _mib(found.group(1), found.group(2)) if found else None
        node = re.search(r"--max-old-space-size=(\d+)", value)
        heap = int(node.group(1)) if node else heap
        if heap is not None and heap >= memory * 0.9:
            return [
                _finding(
                    "memory_below_heap",
                    bp,
                    i,
                    "/specs/memory",
                    f"'{res.name}' has a {memory} MiB memory limit but {key} sets a {heap} MiB heap: the heap plus "
                    "the runtime's own memory exceed the limit",
                )
            ]
    floor = MEMORY_FLOOR_MIB.get((res.specs.kind or "").lower())
    if floor is not None and memory < floor:
        return [
            _finding(
                "memory_below_heap",
                bp,
                i,
                "/specs/memory",
                f"'{res.name}' ({res.specs.kind}) has {memory} MiB of memory, below the {floor} MiB it needs to run",
            )
        ]
    return []


@check("image_reference")
def image_reference(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    image = res.specs.image
    if image is None:
        return []
    out = []
    if image != image.strip() or any(c.isupper() or c.isspace() for c in image.split("@", 1)[0]):
        out.append(f"image '{_short(image)}' is not a valid reference (upper case or spaces)")
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last and "@" not in last else None
    if "@" not in last and (tag is None or tag == "latest"):
        out.append(f"image '{_short(image)}' has no fixed tag: the tag pulled may not exist or may change")
    first = image.split("/", 1)[0] if "/" in image else ""
    private = bool(first) and ("." in first or ":" in first or first == "localhost")
    has_secret = any(k in res.specs.options for k in ("image_pull_secret", "image_pull_secrets"))
    if private and not has_secret and res.provider in (Provider.KUBERNETES, Provider.DOCKER):
        out.append(
            f"image '{_short(image)}' comes from the registry {_short(first)} but no options.image_pull_secret is set"
        )
    return [_finding("image_reference", bp, i, "/specs/image", m) for m in out[:1]]


@check("missing_secret_refs")
def missing_secret_refs(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    return [
        _finding(
            "missing_secret_refs",
            bp,
            i,
            f"/specs/secrets/{_escape(key)}",
            f"'{res.name}' reads {_short(key)} from secret '{_short(ref)}': it must exist before the resource starts",
        )
        for key, ref in sorted(res.specs.secrets.items())[:1]
    ]


def _password_refs(res: Resource) -> dict[str, str]:
    return {k: v for k, v in res.specs.secrets.items() if PASSWORD_KEY.search(k)}


@check("secret_mismatch")
def secret_mismatch(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    """A client reads its password from another secret than the server it connects to."""
    index = _index(bp)
    res = bp.resources[i]
    pairs: list[tuple[int, int]] = []
    if res.type in (ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE):
        pairs = [(j, i) for j, r in enumerate(bp.resources) if res.name in r.dependencies]
    else:
        pairs = [(i, index[d]) for d in res.dependencies if d in index]
    out = []
    for client, server in pairs:
        mine, theirs = _password_refs(bp.resources[client]), _password_refs(bp.resources[server])
        if bp.resources[server].type not in (ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE):
            continue
        if mine and theirs and not set(mine.values()) & set(theirs.values()):
            key, ref = sorted(mine.items())[0]
            out.append(
                _finding(
                    "secret_mismatch",
                    bp,
                    client,
                    f"/specs/secrets/{_escape(key)}",
                    f"'{bp.resources[client].name}' reads its password ({_short(key)}) from secret "
                    f"'{_short(ref)}', but '{bp.resources[server].name}' takes its password from "
                    f"{_short(', '.join(sorted(set(theirs.values()))))}",
                )
            )
    return out[:1]


@check("healthcheck_port")
def healthcheck_port(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    hc = res.specs.healthcheck
    if hc is None or hc.port is None or not res.specs.ports or hc.port in res.specs.ports:
        return []
    return [
        _finding(
            "healthcheck_port",
            bp,
            i,
            "/specs/healthcheck/port",
            f"'{res.name}' is health-checked on port {hc.port} but serves {', '.join(map(str, res.specs.ports))}",
        )
    ]


def _backend_port(lb: Resource) -> int | None:
    for key in ("backend_port", "target_port", "upstream_port"):
        value = lb.specs.options.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@check("lb_backend_port")
def lb_backend_port(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    index = _index(bp)
    res = bp.resources[i]
    balancers = [i] if res.type is ResourceType.LOAD_BALANCER else []
    balancers += [j for j, r in enumerate(bp.resources) if res.name in r.specs.backends and j != i]
    out = []
    for j in balancers:
        lb = bp.resources[j]
        port = _backend_port(lb)
        for k, backend in enumerate(lb.specs.backends):
            target = bp.resources[index[backend]] if backend in index else None
            if target is None or not target.specs.ports:
                continue
            if port is not None and port not in target.specs.ports:
                key = next(key for key in ("backend_port", "target_port", "upstream_port") if key in lb.specs.options)
                out.append(
                    _finding(
                        "lb_backend_port",
                        bp,
                        j,
                        f"/specs/options/{key}",
                        f"'{lb.name}' sends traffic to port {port} of '{backend}', which serves "
                        f"{', '.join(map(str, target.specs.ports))}",
                    )
                )
            elif (
                port is None
                and lb.specs.kind in ("tcp", "udp")
                and lb.specs.ports
                and not set(lb.specs.ports) & set(target.specs.ports)
            ):
                # No explicit backend port: a TCP balancer forwards to the port it listens on.
                out.append(
                    _finding(
                        "lb_backend_port",
                        bp,
                        j,
                        f"/specs/backends/{k}",
                        f"'{lb.name}' forwards port {lb.specs.ports[0]} to '{backend}', which serves "
                        f"{', '.join(map(str, target.specs.ports))}; set options.backend_port",
                    )
                )
    return out[:1]


def _references(res: Resource) -> Iterator[tuple[str, str, str, int | None]]:
    """(host key, host, port key, port) of every host a resource's environment points at."""
    env = res.specs.env
    for key, value in env.items():
        if "://" in value:
            try:
                parts = urlsplit(value)
                host, port = parts.hostname, parts.port
            except ValueError:
                continue
            if host:
                yield key, host, key, port
        elif HOST_KEY.search(key) and value:
            host, _, port_text = value.partition(":")
            if port_text.isdigit():
                yield key, host, key, int(port_text)
                continue
            port_key = f"{HOST_KEY.sub('', key)}PORT"
            sibling = env.get(port_key, "")
            yield key, host, port_key, int(sibling) if sibling.isdigit() else None


def _is_ip(host: str) -> bool:
    return bool(re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host))


@check("dependency_host")
def dependency_host(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    names = {r.name for r in bp.resources}
    for key, host, _, _ in _references(res):
        short = host.split(".", 1)[0]
        if host in names or short in names or _is_ip(host) or host in ("localhost",) or "." in host:
            continue
        close = sorted(n for n in names if short in n or n in short) or sorted(names)[:5]
        return [
            _finding(
                "dependency_host",
                bp,
                i,
                f"/specs/env/{_escape(key)}",
                f"'{res.name}' connects to host '{_short(host)}' ({_short(key)}), but no resource has that name "
                f"(did you mean {', '.join(close[:3])}?)",
            )
        ]
    return []


@check("dependency_port")
def dependency_port(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    index = _index(bp)
    res = bp.resources[i]
    for _, host, key, port in _references(res):
        target = bp.resources[index[host.split(".", 1)[0]]] if host.split(".", 1)[0] in index else None
        if target is None or port is None or not target.specs.ports or port in target.specs.ports:
            continue
        return [
            _finding(
                "dependency_port",
                bp,
                i,
                f"/specs/env/{_escape(key)}",
                f"'{res.name}' connects to {_short(host)}:{port} ({_short(key)}), but '{target.name}' serves "
                f"{', '.join(map(str, target.specs.ports))}",
            )
        ]
    return []


@check("missing_dependency")
def missing_dependency(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    index = _index(bp)
    res = bp.resources[i]
    for key, host, _, _ in _references(res):
        name = host.split(".", 1)[0]
        if name in index and name != res.name and name not in res.dependencies:
            return [
                _finding(
                    "missing_dependency",
                    bp,
                    i,
                    "/dependencies",
                    f"'{res.name}' connects to '{name}' ({_short(key)}) but does not depend on it, so it can "
                    "start first and find nothing listening",
                )
            ]
    return []


def _published(res: Resource) -> bool:
    return res.provider is Provider.DOCKER and (res.specs.public or "host_ip" in res.specs.options)


@check("port_conflict")
def port_conflict(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if not _published(res):
        return []
    for j, other in enumerate(bp.resources):
        if j == i or not _published(other):
            continue
        shared = sorted(set(res.specs.ports) & set(other.specs.ports))
        if shared:
            k = res.specs.ports.index(shared[0])
            return [
                _finding(
                    "port_conflict",
                    bp,
                    i,
                    f"/specs/ports/{k}",
                    f"'{res.name}' and '{other.name}' both publish host port {shared[0]} on the Docker host",
                )
            ]
    return []


@check("storage_too_small")
def storage_too_small(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if res.type not in DATA_TYPES and res.type is not ResourceType.COMPUTE:
        return []
    if res.specs.storage is None:
        if res.type is ResourceType.DATABASE:
            return [
                _finding(
                    "storage_too_small",
                    bp,
                    i,
                    "/specs",
                    f"database '{res.name}' declares no storage: it writes to whatever the platform gives it",
                )
            ]
        return []
    if res.specs.storage < SMALL_STORAGE_MIB:
        return [
            _finding(
                "storage_too_small",
                bp,
                i,
                "/specs/storage",
                f"'{res.name}' has only {res.specs.storage} MiB of storage for its data, logs and temporary files",
            )
        ]
    return []


@check("max_connections")
def max_connections(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    index = _index(bp)
    res = bp.resources[i]
    targets = [i] if res.type is ResourceType.DATABASE else [index[d] for d in res.dependencies if d in index]
    for j in targets:
        db = bp.resources[j]
        if db.type is not ResourceType.DATABASE:
            continue
        kind = (db.specs.kind or "postgresql").lower()
        configured = db.specs.options.get("max_connections")
        limit = configured if isinstance(configured, int) else DEFAULT_MAX_CONNECTIONS.get(kind)
        if limit is None:
            continue
        demand = 0
        for client in bp.resources:
            if db.name not in client.dependencies:
                continue
            auto = client.specs.autoscaling
            count = max(client.specs.replicas or 1, auto.max if auto is not None else 0)
            pool = client.specs.options.get("pool_size")
            env_pool = next((v for k, v in client.specs.env.items() if "POOL" in k.upper() and v.isdigit()), None)
            size = pool if isinstance(pool, int) else int(env_pool) if env_pool else DEFAULT_POOL
            demand += count * size
        if demand > limit:
            pointer = "/specs/options/max_connections" if isinstance(configured, int) else "/specs/options"
            return [
                _finding(
                    "max_connections",
                    bp,
                    j,
                    pointer,
                    f"clients of '{db.name}' may open {demand} connections (replicas x pool size) but it allows "
                    f"{limit}{'' if isinstance(configured, int) else ' (the default)'}",
                )
            ]
    return []


@check("redis_eviction")
def redis_eviction(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if (res.specs.kind or "").lower() != "redis":
        return []
    opts = res.specs.options
    policy = str(opts.get("maxmemory_policy", opts.get("maxmemory-policy", "noeviction"))).lower()
    if "maxmemory" in opts and policy == "noeviction":
        pointer = "/specs/options/maxmemory_policy" if "maxmemory_policy" in opts else "/specs/options/maxmemory"
        return [
            _finding(
                "redis_eviction",
                bp,
                i,
                pointer,
                f"'{res.name}' caps memory at {opts['maxmemory']} with the noeviction policy: writes fail when full",
            )
        ]
    return []


@check("quorum_size")
def quorum_size(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    kind = (res.specs.kind or "").lower()
    members = res.specs.replicas or 1
    if kind in QUORUM_KINDS and (members < 3 or members % 2 == 0):
        return [
            _finding(
                "quorum_size",
                bp,
                i,
                "/specs/replicas",
                f"'{res.name}' ({kind}) runs {members} member{'s' * (members != 1)}: a quorum needs an odd number, "
                "at least 3, to survive one loss",
            )
        ]
    nodes = res.specs.options.get("cluster_nodes")
    if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes % 2 == 0:
        return [
            _finding(
                "quorum_size",
                bp,
                i,
                "/specs/options/cluster_nodes",
                f"'{res.name}' declares {nodes} cluster nodes: an even count can split with no majority",
            )
        ]
    return []


@check("read_only_root_without_volume")
def read_only_root_without_volume(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if res.specs.read_only_root_filesystem is not True or res.specs.volumes or res.specs.options.get("tmpfs"):
        return []
    return [
        _finding(
            "read_only_root_without_volume",
            bp,
            i,
            "/specs/read_only_root_filesystem",
            f"'{res.name}' has a read-only root filesystem and no volume or tmpfs to write to",
        )
    ]


@check("privileged_port_nonroot")
def privileged_port_nonroot(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    user = (res.specs.user or "").split(":", 1)[0]
    if not user or user in ("0", "root"):
        return []
    low = [p for p in res.specs.ports if p < 1024]
    if not low or "NET_BIND_SERVICE" in {c.upper().removeprefix("CAP_") for c in res.specs.capabilities}:
        return []
    k = res.specs.ports.index(low[0])
    return [
        _finding(
            "privileged_port_nonroot",
            bp,
            i,
            f"/specs/ports/{k}",
            f"'{res.name}' runs as user {user} but listens on port {low[0]}, below 1024",
        )
    ]


@check("tls_mismatch")
def tls_mismatch(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    index = _index(bp)
    res = bp.resources[i]
    clients = (
        [i] if res.type not in DATA_TYPES else [j for j, r in enumerate(bp.resources) if res.name in r.dependencies]
    )
    for c in clients:
        client = bp.resources[c]
        servers = [bp.resources[index[d]] for d in client.dependencies if d in index]
        if not any(s.specs.encryption_in_transit or s.specs.tls for s in servers):
            continue
        for key, value in client.specs.env.items():
            off = TLS_OFF.search(value) or (
                re.search(r"(?i)(ssl|tls)(_?mode)?$", key) is not None and value.strip().lower() in TLS_OFF_VALUES
            )
            if off:
                return [
                    _finding(
                        "tls_mismatch",
                        bp,
                        c,
                        f"/specs/env/{_escape(key)}",
                        f"'{client.name}' turns TLS off ({_short(key)}) towards a server that requires "
                        "encryption in transit",
                    )
                ]
    return []


@check("command_override")
def command_override(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if not res.specs.command:
        return []
    return [
        _finding(
            "command_override",
            bp,
            i,
            "/specs/command",
            f"'{res.name}' overrides the image's command with {_short(' '.join(res.specs.command))!r}: check it exists "
            "in the image and exits only on error",
        )
    ]


@check("oversized_requests")
def oversized_requests(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if res.specs.cpu is not None and res.specs.cpu > OVERSIZED_CPU:
        return [
            _finding(
                "oversized_requests", bp, i, "/specs/cpu", f"'{res.name}' asks for {res.specs.cpu} cores per instance"
            )
        ]
    if res.specs.memory is not None and res.specs.memory > OVERSIZED_MEMORY_MIB:
        return [
            _finding(
                "oversized_requests",
                bp,
                i,
                "/specs/memory",
                f"'{res.name}' asks for {res.specs.memory} MiB per instance",
            )
        ]
    return []


@check("autoscaling_without_requests")
def autoscaling_without_requests(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    if res.specs.autoscaling is None or res.specs.cpu is not None:
        return []
    return [
        _finding(
            "autoscaling_without_requests",
            bp,
            i,
            "/specs/autoscaling",
            f"'{res.name}' autoscales on CPU but sets no cpu request to measure utilisation against",
        )
    ]


@check("firewall_blocks")
def firewall_blocks(bp: Blueprint, i: int) -> list[BlueprintFinding]:
    res = bp.resources[i]
    inbound = [r for r in res.specs.firewall if r.direction == "in"]
    if not inbound or not res.specs.ports:
        return []
    for port in res.specs.ports:
        allowed = any(r.action == "allow" and r.protocol in ("tcp", "any") and r.port in (None, port) for r in inbound)
        if not allowed:
            return [
                _finding(
                    "firewall_blocks",
                    bp,
                    i,
                    "/specs/firewall",
                    f"'{res.name}' serves port {port} but its inbound firewall rules allow no traffic to it",
                )
            ]
    return []
