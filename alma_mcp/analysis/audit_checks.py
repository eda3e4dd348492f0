"""What security_audit's rules test: a declarative condition compiler and the named checks.

A rule in ``resources/policies/*.yaml`` states its condition declaratively where it can, as a small
predicate over one resource (``{field: specs.privileged, equals: true}``, combined with ``all``,
``any`` and ``not``), and names a check function here where it cannot (secrets in values, firewall
reasoning, redundancy, graph paths). Both are compiled once, when the catalogue loads; a typo in a
field name, an unknown operator or bad check parameters is a load error, never a silent pass.

``AuditContext`` holds what checks share about one blueprint (names, reverse dependencies,
load-balancer groups, network membership, the exposure BFS), each computed once and only if a rule
needs it, so an audit stays linear in the size of the blueprint.

Firewall semantics used throughout: a resource (or a network it joins) with at least one inbound
rule is default-deny; the first inbound rule that matches a port and covers internet sources
decides whether that port is open to the internet. A network with ``options.default_policy: deny``
(or ``deny-all``) is micro-segmented. Kubernetes resources read ``firewall`` as their NetworkPolicy.
"""

import math
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import attrgetter
from typing import Any, Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from alma_mcp.blueprint.model import (
    Autoscaling,
    Backup,
    Blueprint,
    FirewallRule,
    Healthcheck,
    Resource,
    ResourceType,
    Specs,
)

WORLD: Final = "0.0.0.0/0"
# Sources that mean "anyone"; we detect such rules, we never create them.
WORLD_SOURCES: Final = frozenset({WORLD, "::/0", "0.0.0.0", "any", "*"})  # noqa: S104
DATA_STORES: Final = frozenset({ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE, ResourceType.STORAGE})
REPLICA_ROLES: Final = frozenset({"replica", "standby", "secondary", "follower"})
EXPOSED_SERVICE_TYPES: Final = frozenset({"loadbalancer", "nodeport"})
DENY_POLICIES: Final = frozenset({"deny", "deny-all"})

Patch = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One place a rule fires.

    ``pointer`` is relative to the resource (``/specs/privileged``), or absolute when ``index`` is
    None (a finding about the blueprint as a whole). ``patch`` holds RFC 6902 operations relative to
    the resource; None means "use the rule's static patch", an empty list means "no patch exists".
    """

    index: int | None
    pointer: str
    detail: str = ""
    patch: Patch | None = None


def escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def secret_name(resource: str, key: str) -> str:
    """A secret reference name for a value moved out of a spec: ``<resource>-<key>`` in DNS style."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
    return f"{resource}-{slug}" if slug else resource


def move_env_to_secret(resource: Resource, key: str) -> Patch:
    """Ops that replace a literal environment value with a secret reference of the same name."""
    return [
        {"op": "remove", "path": f"/specs/env/{escape(key)}"},
        {"op": "add", "path": f"/specs/secrets/{escape(key)}", "value": secret_name(resource.name, key)},
    ]


# ---------------------------------------------------------------------------------------------
# Shared facts about one blueprint
# ---------------------------------------------------------------------------------------------


def inbound(rules: Sequence[FirewallRule]) -> list[FirewallRule]:
    return [rule for rule in rules if rule.direction == "in"]


def covers_world(rule: FirewallRule) -> bool:
    return rule.source.strip().lower() in WORLD_SOURCES


def matches_port(rule: FirewallRule, port: int) -> bool:
    return rule.protocol != "icmp" and (rule.port is None or rule.port == port)


def exposed(resource: Resource) -> bool:
    """Reachable from outside the blueprint: ``public``, or a Kubernetes LoadBalancer/NodePort service."""
    if resource.specs.public:
        return True
    service_type = resource.specs.options.get("service_type")
    return isinstance(service_type, str) and service_type.lower() in EXPOSED_SERVICE_TYPES


def image_tag(image: str) -> tuple[str | None, bool]:
    """(tag, pinned by digest) of an image reference; a registry port is not a tag."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return None, True
    return (last.split(":", 1)[1] if ":" in last else None), False


class AuditContext:
    """What checks share about one blueprint; every derived table is built once, on first use."""

    def __init__(self, blueprint: Blueprint) -> None:
        self.blueprint = blueprint
        self.resources = blueprint.resources
        env = blueprint.metadata.environment
        self.environment: str = env.value if env is not None else "unspecified"
        self.index: dict[str, int] = {}
        self._values: dict[int, list[tuple[str, str, str]]] = {}
        for i, res in enumerate(self.resources):
            self.index.setdefault(res.name, i)

    def values(self, i: int) -> list[tuple[str, str, str]]:
        """(pointer, key, text) of every configured string of resource ``i``, walked once per audit."""
        found = self._values.get(i)
        if found is None:
            found = self._values[i] = list(_all_values(self.resources[i]))
        return found

    def resource(self, name: str) -> Resource | None:
        i = self.index.get(name)
        return self.resources[i] if i is not None else None

    @cached_property
    def dependents(self) -> dict[str, list[int]]:
        """Name -> indexes of the resources that depend on it."""
        table: dict[str, list[int]] = {}
        for i, res in enumerate(self.resources):
            for dep in res.dependencies:
                table.setdefault(dep, []).append(i)
        return table

    @cached_property
    def balanced_groups(self) -> frozenset[str]:
        """Names that are one of two or more backends of a load balancer (redundant as a group)."""
        return frozenset(
            name
            for res in self.resources
            if res.type is ResourceType.LOAD_BALANCER and len(set(res.specs.backends)) >= 2
            for name in res.specs.backends
        )

    @cached_property
    def exposed_members(self) -> dict[str, list[int]]:
        """Network name -> indexes of exposed resources that join it."""
        table: dict[str, list[int]] = {}
        for i, res in enumerate(self.resources):
            if exposed(res):
                for net in res.specs.networks:
                    table.setdefault(net, []).append(i)
        return table

    def network(self, name: str) -> Resource | None:
        res = self.resource(name)
        return res if res is not None and res.type is ResourceType.NETWORK else None

    def micro_segmented(self, network: Resource) -> bool:
        policy = network.specs.options.get("default_policy")
        return isinstance(policy, str) and policy.lower() in DENY_POLICIES

    def has_firewall(self, resource: Resource) -> bool:
        """Inbound rules on the resource, or on a network it joins, or a default-deny network."""
        if inbound(resource.specs.firewall):
            return True
        for name in resource.specs.networks:
            net = self.network(name)
            if net is not None and (inbound(net.specs.firewall) or self.micro_segmented(net)):
                return True
        return False

    def segmented(self, resource: Resource) -> bool:
        """Inbound traffic is filtered and no inbound rule lets the internet in."""
        rules = inbound(resource.specs.firewall)
        if rules and not any(r.action == "allow" and covers_world(r) for r in rules):
            return True
        for name in resource.specs.networks:
            net = self.network(name)
            if net is None:
                continue
            net_rules = inbound(net.specs.firewall)
            if self.micro_segmented(net) or (
                net_rules and not any(r.action == "allow" and covers_world(r) for r in net_rules)
            ):
                return True
        return False

    def world_open(self, resource: Resource, port: int) -> tuple[bool, int | None]:
        """Whether an exposed resource's port is open to the internet, and the deciding rule's index."""
        if not exposed(resource):
            return False, None
        rules = resource.specs.firewall
        if not inbound(rules):
            return True, None
        for k, rule in enumerate(rules):
            if rule.direction == "in" and matches_port(rule, port) and covers_world(rule):
                return rule.action == "allow", k
        return False, None

    def internal_cidr(self, resource: Resource) -> str | None:
        """The subnet of the first network the resource joins that declares one."""
        for name in resource.specs.networks:
            net = self.network(name)
            if net is not None and net.specs.cidr is not None:
                return net.specs.cidr
        return None

    def redundant(self, i: int) -> bool:
        """More than one instance, a member of a replicated group, or balanced with siblings."""
        res = self.resources[i]
        specs = res.specs
        if (specs.replicas or 1) >= 2 or (specs.autoscaling is not None and specs.autoscaling.min >= 2):
            return True
        if (specs.role or "").lower() in REPLICA_ROLES or res.name in self.balanced_groups:
            return True
        opts = specs.options
        for key in ("replication_factor", "replicas_per_shard"):
            value = opts.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
                return True
        if opts.get("ha") is True:
            return True
        return any(
            self.resources[j].type is res.type and (self.resources[j].specs.role or "").lower() in REPLICA_ROLES
            for j in self.dependents.get(res.name, ())
        )

    @cached_property
    def exposure_parents(self) -> dict[int, int]:
        """One multi-source BFS from every exposed resource over dependencies and backends.

        Maps each reached resource to the resource it was reached from (-1 for the exposed entry
        points). Networks are not hops; a segmented resource is reached but not expanded, so every
        recorded path is one with no segmentation on the way.
        """
        parents: dict[int, int] = {}
        queue: deque[int] = deque()
        for i, res in enumerate(self.resources):
            if res.type is not ResourceType.NETWORK and exposed(res):
                parents[i] = -1
                queue.append(i)
        while queue:
            i = queue.popleft()
            res = self.resources[i]
            if parents[i] != -1 and self.segmented(res):
                continue
            for name in chain(res.dependencies, res.specs.backends):
                j = self.index.get(name)
                if j is None or j in parents or self.resources[j].type is ResourceType.NETWORK:
                    continue
                parents[j] = i
                queue.append(j)
        return parents

    def exposure_path(self, i: int) -> list[str]:
        """Names from the exposed entry point to resource ``i`` (one BFS-shortest path)."""
        parents = self.exposure_parents
        path = [i]
        while parents[path[-1]] != -1:
            path.append(parents[path[-1]])
        return [self.resources[j].name for j in reversed(path)]


# ---------------------------------------------------------------------------------------------
# Declarative conditions
# ---------------------------------------------------------------------------------------------

Predicate = Callable[[Resource], bool]
_MISSING: Final = object()
_MODEL_FIELDS: Final[Mapping[str, type[BaseModel]]] = {
    "backup": Backup,
    "healthcheck": Healthcheck,
    "autoscaling": Autoscaling,
}
_OPERATORS: Final = frozenset(
    {"equals", "not_equals", "in", "not_in", "missing", "present", "lt", "le", "gt", "ge", "contains", "matches"}
)


def _normalise(value: Any) -> Any:
    # Case-insensitive strings, numbers compared by their text (so "1.1" matches 1.1), booleans kept.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, int | float):
        return str(value)
    return value


def _is_missing(value: Any) -> bool:
    return value is None or value is _MISSING or (isinstance(value, str | list | dict) and not value)


def _getter(path: str) -> Callable[[Resource], Any]:
    parts = path.split(".")
    head = parts[0]
    if head in {"name", "type", "provider"} and len(parts) == 1:
        return attrgetter(head)
    if head == "metadata":
        keys = parts[1:]
        return lambda r: _walk(r.metadata, keys)
    if head != "specs" or len(parts) < 2:
        raise ValueError(f"unknown field {path!r}: use name, type, provider, specs.<field> or metadata.<key>")
    field = parts[1]
    if field not in Specs.model_fields:
        raise ValueError(f"unknown field {path!r}: specs has no {field!r}")
    rest = parts[2:]
    if field in _MODEL_FIELDS and rest:
        if len(rest) != 1 or rest[0] not in _MODEL_FIELDS[field].model_fields:
            raise ValueError(f"unknown field {path!r}: {field} has {', '.join(_MODEL_FIELDS[field].model_fields)}")
        sub = rest[0]
        return lambda r: getattr(getattr(r.specs, field), sub, None)
    if rest and field not in {"options", "env", "secrets"}:
        raise ValueError(f"unknown field {path!r}: specs.{field} has no sub-fields")
    if not rest:
        return attrgetter(f"specs.{field}")
    if len(rest) == 1:
        key = rest[0]
        container = attrgetter(f"specs.{field}")
        return lambda r: container(r).get(key, _MISSING)
    return lambda r: _walk(getattr(r.specs, field), rest)


def _walk(value: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def compile_condition(node: Any) -> Predicate:
    """A predicate over one resource from the declarative form.

    Raises:
        ValueError: the condition is malformed (message says where and what is allowed).
    """
    if not isinstance(node, Mapping) or not node:
        raise ValueError(f"a condition is a mapping, not {node!r}")
    if set(node) == {"all"} or set(node) == {"any"}:
        (kind, items), *_ = node.items()
        if not isinstance(items, list) or not items:
            raise ValueError(f"'{kind}' takes a non-empty list of conditions")
        return _chain([compile_condition(item) for item in items], every=kind == "all")
    if set(node) == {"not"}:
        inner = compile_condition(node["not"])
        return lambda r: not inner(r)
    if set(node) == {"exposed"}:
        want = node["exposed"]
        if not isinstance(want, bool):
            raise ValueError("'exposed' takes true or false")
        return lambda r: exposed(r) is want
    return _leaf(node)


def _chain(parts: list[Predicate], *, every: bool) -> Predicate:
    # Nested closures instead of all()/any() over a generator: no generator object per call.
    if len(parts) == 1:
        return parts[0]
    first, rest = parts[0], _chain(parts[1:], every=every)
    if every:
        return lambda r: first(r) and rest(r)
    return lambda r: first(r) or rest(r)


def _leaf(node: Mapping[str, Any]) -> Predicate:
    ops = set(node) - {"field"}
    if "field" not in node or len(ops) != 1 or not ops <= _OPERATORS:
        raise ValueError(
            f"a condition leaf is {{field: ..., <operator>: ...}} with one operator of "
            f"{', '.join(sorted(_OPERATORS))}, or all/any/not/exposed; got {dict(node)!r}"
        )
    get = _getter(str(node["field"]))
    op = ops.pop()
    arg = node[op]
    if op in {"missing", "present"}:
        if not isinstance(arg, bool):
            raise ValueError(f"'{op}' takes true or false")
        want_missing = arg if op == "missing" else not arg
        return lambda r: _is_missing(get(r)) is want_missing
    if op in {"equals", "not_equals"} and isinstance(arg, bool):
        # A boolean matches only a boolean (1 is not true), so identity is the whole test.
        if op == "equals":
            return lambda r: get(r) is arg
        return lambda r: get(r) is not arg
    if op in {"equals", "not_equals"}:
        expected = _normalise(arg)
        if op == "equals":
            return lambda r: _normalise(get(r)) == expected
        return lambda r: _normalise(get(r)) != expected
    if op in {"in", "not_in", "contains"}:
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"'{op}' takes a non-empty list")
        allowed = frozenset(_normalise(a) for a in arg)
        if op == "in":
            return lambda r: _hashable_in(get(r), allowed)
        if op == "not_in":
            return lambda r: not _hashable_in(get(r), allowed)
        return lambda r: _contains(get(r), allowed)
    if op == "matches":
        try:
            pattern = re.compile(str(arg))
        except re.error as exc:
            raise ValueError(f"'matches' has an invalid pattern {arg!r}: {exc}") from exc
        return lambda r: isinstance(value := get(r), str) and pattern.search(value) is not None
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise ValueError(f"'{op}' takes a number")
    bound = float(arg)
    compare: Callable[[float], bool] = {
        "lt": lambda v: v < bound,
        "le": lambda v: v <= bound,
        "gt": lambda v: v > bound,
        "ge": lambda v: v >= bound,
    }[op]
    return lambda r: (value := _number(get(r))) is not None and compare(value)


def _hashable_in(value: Any, allowed: frozenset[Any]) -> bool:
    value = _normalise(value)
    return not isinstance(value, list | dict) and value in allowed


def _contains(value: Any, allowed: frozenset[Any]) -> bool:
    return isinstance(value, list) and any(_hashable_in(item, allowed) for item in value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------
# Named checks: registry
# ---------------------------------------------------------------------------------------------

ResourceCheck = Callable[[AuditContext, int, Resource, Any], Iterator[Hit]]
BlueprintCheck = Callable[[AuditContext, Any], Iterator[Hit]]


class Params(BaseModel):
    """Base of every check's parameters (from the rule's ``params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


class CheckSpec(NamedTuple):
    scope: Literal["resource", "blueprint"]
    fn: Callable[..., Iterator[Hit]]
    params: type[Params]
    gate: Callable[[Specs], Any] | None
    """Returns something falsy when the check cannot fire (every field it reads is empty): skip the call."""


def _gate(fields: Sequence[str]) -> Callable[[Specs], Any] | None:
    for name in fields:
        if name not in Specs.model_fields:
            raise ValueError(f"a check cannot require unknown specs field {name!r}")
    if not fields:
        return None
    if len(fields) == 1:
        return attrgetter(fields[0])
    together = attrgetter(*fields)
    return lambda specs: any(together(specs))


CHECKS: dict[str, CheckSpec] = {}


def resource_check(
    name: str, params: type[Params] = NoParams, *, reads: Sequence[str] = ()
) -> Callable[[ResourceCheck], ResourceCheck]:
    """Register a per-resource check; ``reads`` names the specs fields without which it cannot fire."""

    def register(fn: ResourceCheck) -> ResourceCheck:
        CHECKS[name] = CheckSpec("resource", fn, params, _gate(reads))
        return fn

    return register


def blueprint_check(name: str, params: type[Params] = NoParams) -> Callable[[BlueprintCheck], BlueprintCheck]:
    def register(fn: BlueprintCheck) -> BlueprintCheck:
        CHECKS[name] = CheckSpec("blueprint", fn, params, None)
        return fn

    return register


# Secret-looking names: shared by the environment checks (the rules pass their own patterns).
_NON_VALUE_SUFFIXES: Final = frozenset(
    {"file", "path", "ttl", "expiry", "timeout", "length", "enabled", "mode", "policy", "type", "url", "uri", "host",
     "port", "dir", "user", "username", "name", "ref", "reference", "required"}
)  # fmt: skip
# In options a key ending in "secret" names a secret (receivers_secret: alertmanager-receivers).
_NON_VALUE_OPTION_SUFFIXES: Final = _NON_VALUE_SUFFIXES | {"secret"}
_FLAG_VALUES: Final = frozenset(
    {"true", "false", "yes", "no", "on", "off", "enabled", "disabled", "required", "none", "optional"}
)
_REFERENCE_PREFIXES: Final = ("$", "{{", "/", "file:", "vault:", "secretref:", "ref+", "env:", "secret:")


def _last_token(key: str) -> str:
    return re.split(r"[^a-z0-9]+", key.lower().strip("_.- "))[-1]


def _literal_value(value: str) -> bool:
    """A value that is itself a secret, not a flag, a number, a path or a reference to one."""
    text = value.strip()
    return (
        bool(text)
        and text.lower() not in _FLAG_VALUES
        and not text.isdigit()
        and not text.startswith(_REFERENCE_PREFIXES)
    )


def _strings(value: Any, pointer: str, depth: int = 0) -> Iterator[tuple[str, str, str]]:
    """(pointer, key, text) for every string inside nested options, at most four levels deep."""
    if depth > 4:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings_keyed(item, f"{pointer}/{escape(str(key))}", str(key), depth)
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from _strings_keyed(item, f"{pointer}/{k}", "", depth)


def _strings_keyed(item: Any, pointer: str, key: str, depth: int) -> Iterator[tuple[str, str, str]]:
    if isinstance(item, str):
        yield pointer, key, item
    elif isinstance(item, int | float) and not isinstance(item, bool):
        yield pointer, key, str(item)
    else:
        yield from _strings(item, pointer, depth + 1)


_VALUE_FIELDS: Final = ("env", "options", "command", "secrets")


def _all_values(resource: Resource) -> Iterator[tuple[str, str, str]]:
    """Every configured string of a resource: environment, options, command, secret references."""
    specs = resource.specs
    for key, value in specs.env.items():
        yield f"/specs/env/{escape(key)}", key, value
    yield from _strings(specs.options, "/specs/options")
    for k, arg in enumerate(specs.command or ()):
        yield f"/specs/command/{k}", "", arg
    for key, value in specs.secrets.items():
        yield f"/specs/secrets/{escape(key)}", key, value


def _env_patch(resource: Resource, pointer: str, key: str) -> Patch:
    return move_env_to_secret(resource, key) if pointer.startswith("/specs/env/") else []


# ---------------------------------------------------------------------------------------------
# Exposure
# ---------------------------------------------------------------------------------------------


class PortsParams(Params):
    ports: list[int] = Field(min_length=1)


@resource_check("world_open_ports", PortsParams, reads=("ports",))
def world_open_ports(ctx: AuditContext, i: int, res: Resource, p: PortsParams) -> Iterator[Hit]:
    """Sensitive ports of an exposed resource that the internet can reach."""
    sensitive = set(p.ports)
    for k, port in enumerate(res.specs.ports):
        if port not in sensitive:
            continue
        is_open, rule_index = ctx.world_open(res, port)
        if is_open:
            yield Hit(i, f"/specs/ports/{k}", str(port), _close_port_patch(ctx, res, port, rule_index, sensitive))


def _close_port_patch(
    ctx: AuditContext, res: Resource, port: int, rule_index: int | None, sensitive: set[int]
) -> Patch:
    cidr = ctx.internal_cidr(res)
    if cidr is None:
        return []
    if rule_index is not None:
        if res.specs.firewall[rule_index].port != port:
            return []
        return [{"op": "add", "path": f"/specs/firewall/{rule_index}/source", "value": cidr}]
    rules = [
        {
            "action": "allow",
            "direction": "in",
            "protocol": "tcp",
            "port": q,
            "source": cidr if q in sensitive else WORLD,
        }
        for q in dict.fromkeys(res.specs.ports)
    ]
    return [{"op": "add", "path": "/specs/firewall", "value": rules}]


class AnyPortParams(Params):
    world: bool


@resource_check("firewall_any_port", AnyPortParams, reads=("firewall",))
def firewall_any_port(ctx: AuditContext, i: int, res: Resource, p: AnyPortParams) -> Iterator[Hit]:
    """Inbound allow rules without a port: from the internet on exposed resources, or from anywhere."""
    if p.world and not exposed(res):
        return
    for k, rule in enumerate(res.specs.firewall):
        if rule.direction != "in" or rule.action != "allow" or rule.port is not None or rule.protocol == "icmp":
            continue
        if covers_world(rule) is not p.world:
            continue
        patch: Patch = []
        if res.specs.ports:
            replacement = [
                {"action": "allow", "direction": "in", "protocol": "tcp", "port": port, "source": rule.source}
                for port in dict.fromkeys(res.specs.ports)
            ]
            rules = [r.model_dump(mode="json", exclude_unset=True) for r in res.specs.firewall]
            patch = [{"op": "add", "path": "/specs/firewall", "value": [*rules[:k], *replacement, *rules[k + 1 :]]}]
        yield Hit(i, f"/specs/firewall/{k}", f"{rule.protocol} from {rule.source}", patch)


_ALL_INTERFACES = re.compile(r"(^|[\s,=])(0\.0\.0\.0|\[::\]|\*)(:\d+)?($|[\s,])")


@resource_check("admin_listen_all", reads=("env", "options"))
def admin_listen_all(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """An admin listener (environment or option whose name says admin) bound to every interface."""
    for key, value in res.specs.env.items():
        if "admin" in key.lower() and _ALL_INTERFACES.search(value):
            fixed = _ALL_INTERFACES.sub(lambda m: f"{m[1]}127.0.0.1{m[3] or ''}{m[4]}", value)
            yield Hit(
                i,
                f"/specs/env/{escape(key)}",
                key,
                [{"op": "add", "path": f"/specs/env/{escape(key)}", "value": fixed}],
            )
    for key, value in res.specs.options.items():
        if "admin" in key.lower() and isinstance(value, str) and _ALL_INTERFACES.search(value):
            yield Hit(i, f"/specs/options/{escape(key)}", key, [])


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


class NamePatternParams(Params):
    name_pattern: re.Pattern[str]


@resource_check("plaintext_secret_env", NamePatternParams, reads=("env",))
def plaintext_secret_env(ctx: AuditContext, i: int, res: Resource, p: NamePatternParams) -> Iterator[Hit]:
    """Environment variables named like secrets that hold a literal value."""
    for key, value in res.specs.env.items():
        if p.name_pattern.search(key) and _last_token(key) not in _NON_VALUE_SUFFIXES and _literal_value(value):
            yield Hit(i, f"/specs/env/{escape(key)}", key, move_env_to_secret(res, key))


class CredentialPatternParams(Params):
    patterns: dict[str, re.Pattern[str]] = Field(min_length=1)

    @cached_property
    def combined(self) -> tuple[re.Pattern[str], dict[str, str]]:
        """One alternation of every pattern (one search per value), and group name -> label."""
        groups = {f"p{k}": label for k, label in enumerate(self.patterns)}
        alternation = "|".join(f"(?P<p{k}>{pattern.pattern})" for k, pattern in enumerate(self.patterns.values()))
        return re.compile(alternation), groups


@resource_check("credential_pattern", CredentialPatternParams, reads=_VALUE_FIELDS)
def credential_pattern(ctx: AuditContext, i: int, res: Resource, p: CredentialPatternParams) -> Iterator[Hit]:
    """Values shaped like a known credential format (cloud keys, private keys, tokens)."""
    pattern, labels = p.combined
    for pointer, key, text in ctx.values(i):
        match = pattern.search(text)
        if match is not None and match.lastgroup is not None:
            yield Hit(i, pointer, labels[match.lastgroup], _env_patch(res, pointer, key))


class EntropyParams(Params):
    min_length: int = Field(ge=8)
    min_entropy: float = Field(gt=0)
    skip_name_pattern: re.Pattern[str]


def shannon_entropy(text: str) -> float:
    """Bits per character of the string's own character distribution."""
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


@resource_check("high_entropy_env", EntropyParams, reads=("env",))
def high_entropy_env(ctx: AuditContext, i: int, res: Resource, p: EntropyParams) -> Iterator[Hit]:
    """Random-looking values in variables whose names do not say secret (those are caught by name)."""
    for key, value in res.specs.env.items():
        if p.skip_name_pattern.search(key) or len(value) < p.min_length or not _literal_value(value):
            continue
        if any(c.isspace() for c in value) or "://" in value:
            continue
        classes = sum(
            (any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value))
        )
        if classes >= 2 and shannon_entropy(value) >= p.min_entropy:
            yield Hit(i, f"/specs/env/{escape(key)}", key, move_env_to_secret(res, key))


_URL_CREDENTIALS = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://([^/\s:@]+):([^/\s@]+)@")


@resource_check("url_credentials", reads=_VALUE_FIELDS)
def url_credentials(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """user:password@ inside a URL (connection strings in environment, options or command)."""
    for pointer, key, text in ctx.values(i):
        if pointer.startswith("/specs/secrets/"):
            continue
        match = _URL_CREDENTIALS.search(text)
        if match and _literal_value(match[2]) and not match[2].startswith(("$", "{", "<")):
            yield Hit(i, pointer, key or pointer.rsplit("/", 1)[-1], _env_patch(res, pointer, key))


class DefaultCredentialParams(Params):
    name_pattern: re.Pattern[str]
    values: list[str] = Field(min_length=1)

    @cached_property
    def weak(self) -> frozenset[str]:
        return frozenset(v.lower() for v in self.values)


@resource_check("default_credentials", DefaultCredentialParams, reads=("env", "options"))
def default_credentials(ctx: AuditContext, i: int, res: Resource, p: DefaultCredentialParams) -> Iterator[Hit]:
    """Password-named settings holding a vendor default or a well-known weak password."""
    weak = p.weak
    for pointer, key, text in ctx.values(i):
        if not key or not pointer.startswith(("/specs/env/", "/specs/options/")):
            continue
        if p.name_pattern.search(key) and text.strip().lower() in weak:
            yield Hit(i, pointer, key, _env_patch(res, pointer, key))


class ReferenceParams(Params):
    reference_pattern: re.Pattern[str]


@resource_check("secret_ref_literal", ReferenceParams, reads=("secrets",))
def secret_ref_literal(ctx: AuditContext, i: int, res: Resource, p: ReferenceParams) -> Iterator[Hit]:
    """``specs.secrets`` values that do not look like references (a value pasted where a name belongs)."""
    for key, ref in res.specs.secrets.items():
        if not p.reference_pattern.fullmatch(ref):
            patch = [{"op": "add", "path": f"/specs/secrets/{escape(key)}", "value": secret_name(res.name, key)}]
            yield Hit(i, f"/specs/secrets/{escape(key)}", key, patch)


@resource_check("options_secret", NamePatternParams, reads=("options",))
def options_secret(ctx: AuditContext, i: int, res: Resource, p: NamePatternParams) -> Iterator[Hit]:
    """Secret-named service options holding a literal value."""
    for pointer, key, text in ctx.values(i):
        if (
            pointer.startswith("/specs/options/")
            and key
            and p.name_pattern.search(key)
            and _last_token(key) not in _NON_VALUE_OPTION_SUFFIXES
            and _literal_value(text)
        ):
            yield Hit(i, pointer, key, [])


_COMMAND_SECRET = re.compile(
    r"(?i)^--?(password|passwd|pwd|token|secret|api[-_]?key|access[-_]?key|auth[-_]?token)(=(.*))?$"
)


@resource_check("command_secret", reads=("command",))
def command_secret(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """``--password=...`` style arguments: the value shows in process listings and logs."""
    args = res.specs.command or []
    for k, arg in enumerate(args):
        match = _COMMAND_SECRET.match(arg)
        if match is None:
            continue
        if match[2] is not None:
            if _literal_value(match[3] or ""):
                yield Hit(i, f"/specs/command/{k}", match[1], [])
        elif k + 1 < len(args) and not args[k + 1].startswith("-") and _literal_value(args[k + 1]):
            yield Hit(i, f"/specs/command/{k + 1}", match[1], [])


_NO_AUTH_OPTION: Final = frozenset({"none", "disabled", "false", "off", "no"})
_NO_AUTH_ENV: Final[Mapping[str, frozenset[str]]] = {
    "postgres_host_auth_method": frozenset({"trust"}),
    "mysql_allow_empty_password": frozenset({"yes", "true", "1"}),
    "mariadb_allow_empty_root_password": frozenset({"yes", "true", "1"}),
    "allow_empty_password": frozenset({"yes", "true", "1"}),
    "xpack.security.enabled": frozenset({"false", "no", "0"}),
    "redis_protected_mode": frozenset({"no", "false"}),
}


@resource_check("no_auth", reads=("env", "options"))
def no_auth(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """Authentication switched off explicitly: an option, or the image's own environment switch."""
    opts = res.specs.options
    for key in ("auth", "authentication", "protected_mode"):
        value = opts.get(key)
        if value is False or (isinstance(value, str) and value.lower() in _NO_AUTH_OPTION):
            fixed: Any = True if key == "protected_mode" else "required"
            yield Hit(
                i,
                f"/specs/options/{key}",
                f"options.{key}",
                [{"op": "add", "path": f"/specs/options/{key}", "value": fixed}],
            )
    for key, value in res.specs.env.items():
        bad = _NO_AUTH_ENV.get(key.lower())
        if bad is not None and value.strip().lower() in bad:
            pointer = f"/specs/env/{escape(key)}"
            patch = (
                [{"op": "add", "path": pointer, "value": "true"}]
                if key.lower() == "xpack.security.enabled"
                else [{"op": "remove", "path": pointer}]
            )
            yield Hit(i, pointer, f"{key}={value}", patch)


# ---------------------------------------------------------------------------------------------
# Container hardening
# ---------------------------------------------------------------------------------------------


class CapabilityParams(Params):
    match: list[str] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)


def _capability(name: str) -> str:
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


@resource_check("capabilities", CapabilityParams, reads=("capabilities",))
def capabilities(ctx: AuditContext, i: int, res: Resource, p: CapabilityParams) -> Iterator[Hit]:
    """Added capabilities in ``match`` (when given), or any not in ``allow``."""
    caps = res.specs.capabilities
    match = {_capability(c) for c in p.match}
    allow = {_capability(c) for c in p.allow}
    flagged = [
        k for k, cap in enumerate(caps) if (_capability(cap) in match if match else _capability(cap) not in allow)
    ]
    if not flagged:
        return
    kept = [cap for k, cap in enumerate(caps) if k not in flagged]
    patch = [{"op": "add", "path": "/specs/capabilities", "value": kept}]
    for k in flagged:
        yield Hit(i, f"/specs/capabilities/{k}", _capability(caps[k]), patch)


class ImageTagParams(Params):
    mode: Literal["latest", "untagged"]


@resource_check("image_tag", ImageTagParams, reads=("image",))
def image_tag_check(ctx: AuditContext, i: int, res: Resource, p: ImageTagParams) -> Iterator[Hit]:
    """The image floats: tagged ``latest``, or neither tagged nor pinned by digest."""
    image = res.specs.image
    if image is None:
        return
    tag, digest = image_tag(image)
    if digest:
        return
    if (p.mode == "latest" and tag is not None and tag.lower() == "latest") or (p.mode == "untagged" and tag is None):
        yield Hit(i, "/specs/image", image, [])


_DOCKER_SOCKETS: Final = frozenset({"/var/run/docker.sock", "/run/docker.sock"})


def _host_path(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry.split(":", 1)[0]
    if isinstance(entry, Mapping):
        value = entry.get("host", entry.get("source"))
        return value if isinstance(value, str) else None
    return None


@resource_check("docker_socket", reads=("volumes", "options"))
def docker_socket(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """The container engine's socket mounted into the workload (root on the host)."""
    volumes = res.specs.volumes
    bad = [k for k, v in enumerate(volumes) if v.mount_path.rstrip("/") in _DOCKER_SOCKETS]
    if bad:
        kept = [v.model_dump(mode="json", exclude_unset=True) for k, v in enumerate(volumes) if k not in bad]
        for k in bad:
            yield Hit(
                i,
                f"/specs/volumes/{k}",
                volumes[k].mount_path,
                [{"op": "add", "path": "/specs/volumes", "value": kept}],
            )
    host_paths = res.specs.options.get("host_paths")
    if isinstance(host_paths, list):
        flagged = [k for k, e in enumerate(host_paths) if (_host_path(e) or "").rstrip("/") in _DOCKER_SOCKETS]
        kept_paths = [e for k, e in enumerate(host_paths) if k not in flagged]
        for k in flagged:
            patch = [{"op": "add", "path": "/specs/options/host_paths", "value": kept_paths}]
            yield Hit(i, f"/specs/options/host_paths/{k}", str(_host_path(host_paths[k])), patch)


class HostPathParams(Params):
    sensitive: list[str] = Field(min_length=1)


@resource_check("host_paths", HostPathParams, reads=("options",))
def host_paths(ctx: AuditContext, i: int, res: Resource, p: HostPathParams) -> Iterator[Hit]:
    """Host directories mounted into the workload that expose the host (``options.host_paths``)."""
    entries = res.specs.options.get("host_paths")
    if not isinstance(entries, list):
        return
    roots = [s.rstrip("/") for s in p.sensitive]

    def sensitive(path: str | None) -> bool:
        if path is None or path.rstrip("/") in _DOCKER_SOCKETS:
            return False
        clean = path.rstrip("/") or "/"
        return clean == "/" or any(root and (clean == root or clean.startswith(root + "/")) for root in roots)

    flagged = [k for k, entry in enumerate(entries) if sensitive(_host_path(entry))]
    kept = [entry for k, entry in enumerate(entries) if k not in flagged]
    for k in flagged:
        yield Hit(
            i,
            f"/specs/options/host_paths/{k}",
            str(_host_path(entries[k])),
            [{"op": "add", "path": "/specs/options/host_paths", "value": kept}],
        )


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

_INSECURE_VALUE = re.compile(r"(?i)(sslmode=disable|\bssl=false|usessl=false|\btls=false|encrypt=false)")
_TLS_SWITCH = re.compile(r"(?i)(^|[_.])(ssl|tls)([_.]?(mode|enabled))?$")
_OFF: Final = frozenset({"off", "false", "0", "no", "disable", "disabled"})


@resource_check("tls_disabled_connection", reads=("env", "options"))
def tls_disabled_connection(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """Client settings that turn TLS off (``sslmode=disable``, ``*_SSL=off``, ``options.tls: false``)."""
    for key, value in res.specs.env.items():
        pointer = f"/specs/env/{escape(key)}"
        if _INSECURE_VALUE.search(value):
            fixed = re.sub(r"(?i)sslmode=disable", "sslmode=require", value)
            fixed = re.sub(r"(?i)\b(ssl|usessl|tls|encrypt)=false", lambda m: f"{m[1]}=true", fixed)
            yield Hit(i, pointer, key, [{"op": "add", "path": pointer, "value": fixed}])
        elif _TLS_SWITCH.search(key) and value.strip().lower() in _OFF:
            yield Hit(i, pointer, key, [{"op": "add", "path": pointer, "value": "on"}])
    for key in ("tls", "ssl"):
        if res.specs.options.get(key) is False:
            yield Hit(
                i,
                f"/specs/options/{key}",
                f"options.{key}",
                [{"op": "add", "path": f"/specs/options/{key}", "value": True}],
            )


@resource_check("not_redundant")
def not_redundant(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """One instance with no replica, standby, replicated group or balanced sibling to take over."""
    if not ctx.redundant(i):
        yield Hit(i, "/specs/replicas", str(res.specs.replicas or 1))


@resource_check("lb_single_backend", reads=("backends",))
def lb_single_backend(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """A load balancer whose only backend is a single instance: balancing nothing, failing with it."""
    backends = list(dict.fromkeys(res.specs.backends))
    if len(backends) != 1:
        return
    j = ctx.index.get(backends[0])
    if j is not None and not ctx.redundant(j):
        yield Hit(i, "/specs/backends", backends[0], [])


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def _firewall_patch(ctx: AuditContext, res: Resource, *, public: bool) -> Patch:
    source = WORLD if public else ctx.internal_cidr(res)
    ports = list(dict.fromkeys(res.specs.ports))
    if source is None or not ports:
        return []
    rules = [
        {"action": "allow", "direction": "in", "protocol": "tcp", "port": port, "source": source} for port in ports
    ]
    return [{"op": "add", "path": "/specs/firewall", "value": rules}]


@resource_check("no_firewall")
def no_firewall(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """No inbound firewall or network policy on the resource or on any network it joins."""
    if not ctx.has_firewall(res):
        yield Hit(i, "/specs/firewall", "", _firewall_patch(ctx, res, public=exposed(res)))


@resource_check("no_firewall_exposed")
def no_firewall_exposed(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """An exposed resource with no inbound firewall: every port it listens on is reachable."""
    if exposed(res) and not ctx.has_firewall(res):
        yield Hit(i, "/specs/firewall", "", _firewall_patch(ctx, res, public=True))


@resource_check("firewall_world_nonpublic", reads=("firewall",))
def firewall_world_nonpublic(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """An internal resource whose firewall admits any source: the first mistake away from exposure."""
    if exposed(res):
        return
    cidr = ctx.internal_cidr(res)
    for k, rule in enumerate(res.specs.firewall):
        if rule.direction == "in" and rule.action == "allow" and covers_world(rule):
            patch: Patch = [] if cidr is None else [{"op": "add", "path": f"/specs/firewall/{k}/source", "value": cidr}]
            yield Hit(i, f"/specs/firewall/{k}/source", rule.source, patch)


@resource_check("shared_network_with_public", reads=("networks",))
def shared_network_with_public(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """A data service on the same (not micro-segmented) network as an internet-facing resource."""
    for k, name in enumerate(res.specs.networks):
        net = ctx.network(name)
        if net is None or ctx.micro_segmented(net):
            continue
        others = [j for j in ctx.exposed_members.get(name, ()) if j != i]
        if others:
            yield Hit(i, f"/specs/networks/{k}", f"{name} (with {ctx.resources[others[0]].name})", [])


class ComponentParams(Params):
    kinds: list[str] = Field(min_length=1)
    options: list[str] = Field(default_factory=list)
    metadata_key: str
    only_if_kinds: list[str] = Field(default_factory=list)


@blueprint_check("missing_component", ComponentParams)
def missing_component(ctx: AuditContext, p: ComponentParams) -> Iterator[Hit]:
    """No resource of the kinds that provide a capability (monitoring, logging, alerting).

    Also satisfied by any resource option among ``options`` set to true, or by a blueprint metadata
    key (``metadata.monitoring: external-prometheus``) declaring that a system outside the
    blueprint provides it.
    """
    kinds = {k.lower() for k in p.kinds}
    present = {(r.specs.kind or "").lower() for r in ctx.resources}
    if p.only_if_kinds and not present & {k.lower() for k in p.only_if_kinds}:
        return
    if present & kinds or (ctx.blueprint.metadata.model_extra or {}).get(p.metadata_key):
        return
    if any(r.specs.options.get(key) is True for r in ctx.resources for key in p.options):
        return
    yield Hit(None, "/resources", " or ".join(p.kinds[:2]))


@blueprint_check("flat_network")
def flat_network(ctx: AuditContext, p: NoParams) -> Iterator[Hit]:
    """Internet-facing entry points and data services, no networks, and a data service with no firewall."""
    has_network = any(r.type is ResourceType.NETWORK for r in ctx.resources)
    if has_network or not any(exposed(r) for r in ctx.resources):
        return
    open_stores = [
        r.name
        for r in ctx.resources
        if r.type in DATA_STORES and r.type is not ResourceType.STORAGE and not ctx.has_firewall(r)
    ]
    if open_stores:
        yield Hit(None, "/resources", ", ".join(open_stores))


# ---------------------------------------------------------------------------------------------
# Platform specifics
# ---------------------------------------------------------------------------------------------


class EolParams(Params):
    patterns: list[re.Pattern[str]] = Field(min_length=1)

    @cached_property
    def combined(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{p.pattern})" for p in self.patterns))


@resource_check("eol_os", EolParams, reads=("os", "template", "ostemplate"))
def eol_os(ctx: AuditContext, i: int, res: Resource, p: EolParams) -> Iterator[Hit]:
    """An operating system (VM label, clone template or LXC template) past its vendor's support."""
    for field in ("os", "template", "ostemplate"):
        value = getattr(res.specs, field)
        if isinstance(value, str) and p.combined.search(value.lower()):
            yield Hit(i, f"/specs/{field}", value, [])
            return


@resource_check("wildcard_rbac", reads=("options",))
def wildcard_rbac(ctx: AuditContext, i: int, res: Resource, p: NoParams) -> Iterator[Hit]:
    """RBAC rules in ``options.rbac`` granting ``*`` verbs, resources or API groups."""
    rules = res.specs.options.get("rbac")
    if not isinstance(rules, list):
        return
    for k, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        wild = [
            key
            for key in ("verbs", "resources", "api_groups", "apiGroups")
            if isinstance(rule.get(key), list) and "*" in rule[key]
        ]
        if wild:
            yield Hit(i, f"/specs/options/rbac/{k}", ", ".join(wild), [])


class SysctlParams(Params):
    safe: list[str] = Field(min_length=1)


@resource_check("unsafe_sysctls", SysctlParams, reads=("options",))
def unsafe_sysctls(ctx: AuditContext, i: int, res: Resource, p: SysctlParams) -> Iterator[Hit]:
    """Sysctls outside the Pod Security Standards' safe set (they can reach the whole node)."""
    value = res.specs.options.get("sysctls")
    safe = set(p.safe)
    if isinstance(value, Mapping):
        for name in value:
            if str(name) not in safe:
                yield Hit(i, f"/specs/options/sysctls/{escape(str(name))}", str(name), [])
    elif isinstance(value, list):
        for k, item in enumerate(value):
            name = str(item.get("name") if isinstance(item, Mapping) else item).split("=", 1)[0]
            if name not in safe:
                yield Hit(i, f"/specs/options/sysctls/{k}", name, [])


# ---------------------------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------------------------


class PathParams(Params):
    target: Literal["data_store", "privileged"]
    min_hops: int = Field(default=1, ge=1)
    balancer_direct: Literal["any", "only", "exclude"] = Field(
        default="any",
        description="'only': just targets one hop behind an exposed load balancer (no application tier); "
        "'exclude': every other path.",
    )


def _is_target(res: Resource, target: str) -> bool:
    if target == "data_store":
        return res.type in DATA_STORES
    specs = res.specs
    return bool(specs.privileged or specs.host_network or specs.options.get("host_pid") is True)


@blueprint_check("exposure_path", PathParams)
def exposure_path(ctx: AuditContext, p: PathParams) -> Iterator[Hit]:
    """Targets the internet reaches through unsegmented hops, each reported with its path.

    One BFS from every exposed resource (``AuditContext.exposure_parents``) serves all graph rules,
    so the cost is linear in resources plus dependencies however many rules ask.
    """
    parents = ctx.exposure_parents
    for j in sorted(parents):
        res = ctx.resources[j]
        if parents[j] == -1 or not _is_target(res, p.target) or ctx.segmented(res):
            continue
        path = ctx.exposure_path(j)
        hops = len(path) - 1
        entry = ctx.resources[ctx.index[path[0]]]
        direct = hops == 1 and entry.type is ResourceType.LOAD_BALANCER
        if (
            hops < p.min_hops
            or (p.balancer_direct == "only" and not direct)
            or (p.balancer_direct == "exclude" and direct)
        ):
            continue
        patch = _firewall_patch(ctx, res, public=False) if not direct else []
        yield Hit(j, "/specs/firewall", " -> ".join(path), patch)
