"""security_audit: findings from a rule catalogue kept as data, a score, and explicit suppressions.

The rules live in ``resources/policies/*.yaml`` (one file per category) and the framework control
catalogue in ``resources/policies/frameworks.yaml``; ``PolicyCatalog.from_directory`` validates and
compiles them once (a bad rule stops start-up with its file named). Rules are indexed by
(resource type, provider) at load, so an audit touches each resource once with only the rules that
can apply to it; graph rules share one BFS from the internet-facing resources. The work is linear in
resources plus dependencies.

Score (also in every report's ``formula``): start at 100 and subtract, for every unsuppressed
finding of any severity, 25 per critical, 10 per high, 4 per medium, 1 per low and 0 per info;
floor at 0. The severity threshold only shortens the listed findings; counts and score always cover
every unsuppressed finding, so a score does not change with the view. Grade: A >= 90, B >= 75,
C >= 60, D >= 40, else F.

Suppressions live in the blueprint, ``metadata.alma.suppress: [{rule, resource, reason}]``
(``resource`` omitted or ``"*"`` for every resource); a suppressed finding moves to ``suppressed``
with its reason, never disappears, and a suppression that matches nothing is reported as unused.
"""

import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alma_mcp.analysis.audit_checks import (
    CHECKS,
    AuditContext,
    Hit,
    Params,
    Predicate,
    compile_condition,
)
from alma_mcp.blueprint.loader import Limits
from alma_mcp.blueprint.model import Blueprint, Provider, Resource, ResourceType
from alma_mcp.datacache import NO_CACHE, ParseCache
from alma_mcp.errors import AlmaError, ConfigError, InvalidRequest
from alma_mcp.gcpause import without_gc


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


RANK: Final[Mapping[Severity, int]] = {
    Severity.INFO: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}
WEIGHTS: Final[Mapping[Severity, int]] = {
    Severity.CRITICAL: 25,
    Severity.HIGH: 10,
    Severity.MEDIUM: 4,
    Severity.LOW: 1,
    Severity.INFO: 0,
}
GRADES: Final = ((90, "A"), (75, "B"), (60, "C"), (40, "D"))
FORMULA: Final = (
    "score = max(0, 100 - 25 x critical - 10 x high - 4 x medium - 1 x low - 0 x info), counting every "
    "unsuppressed finding whatever the threshold; grade A >= 90, B >= 75, C >= 60, D >= 40, else F"
)
FRAMEWORK_IDS: Final = ("cis", "nist-800-53", "pci-dss-4.0", "hipaa", "soc2", "iso27001-2022")
CATEGORIES: Final = (
    "exposure",
    "secrets",
    "container",
    "data",
    "availability",
    "segmentation",
    "logging",
    "proxmox",
    "kubernetes",
    "graph",
)
ENVIRONMENTS: Final = ("production", "staging", "development", "unspecified")
PLACEHOLDERS: Final = frozenset({"resource", "type", "provider", "kind", "detail", "environment", "blueprint"})
_FILE_LIMITS: Final = Limits(max_bytes=2 * 1024 * 1024)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class Finding(BaseModel):
    """One rule firing at one place; ``patch`` is RFC 6902 with paths absolute in the blueprint."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    title: str
    severity: Severity
    resource: str = Field(description="Resource name; empty for a finding about the blueprint as a whole.")
    path: str = Field(description="JSON pointer to the offending field, e.g. /resources/3/specs/privileged.")
    message: str
    remediation: str
    patch: list[dict[str, Any]] | None = None
    references: list[str]
    frameworks: dict[str, list[str]]


class Suppressed(BaseModel):
    finding: Finding
    reason: str


class AuditReport(BaseModel):
    """The outcome of security_audit."""

    score: int
    grade: str
    summary: str
    counts: dict[str, int] = Field(description="Unsuppressed findings per severity, every severity listed.")
    findings: list[Finding] = Field(description="At or above the threshold: severity desc, resource order, rule id.")
    suppressed: list[Suppressed]
    threshold: str
    rules_evaluated: int = Field(description="Distinct rules that applied to at least one resource or the blueprint.")
    formula: str
    below_threshold: int = Field(default=0, description="Unsuppressed findings not listed because of the threshold.")
    unused_suppressions: list[dict[str, str]] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The rule model (what a policy file holds)
# ---------------------------------------------------------------------------------------------


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatchOp(_Data):
    """One RFC 6902 operation, its path relative to the resource (``/specs/tls``)."""

    op: Literal["add", "remove", "replace"]
    path: str = Field(pattern=r"^/")
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "path": self.path} if self.op == "remove" else self.model_dump()


class Remediation(_Data):
    text: str = Field(min_length=1)
    patch: list[PatchOp] | None = None


class AppliesTo(_Data):
    """Which resources a rule looks at; an empty list means any."""

    types: list[ResourceType] = Field(default_factory=list)
    providers: list[Provider] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    environments: list[Literal["production", "staging", "development", "unspecified"]] = Field(default_factory=list)


class Policy(_Data):
    """One security rule: what it applies to, how it is decided, and how to fix what it finds."""

    id: str = Field(pattern=r"^ALMA-SEC-\d{3}$")
    title: str = Field(min_length=1)
    severity: Severity
    category: Literal[
        "exposure", "secrets", "container", "data", "availability", "segmentation", "logging", "proxmox",
        "kubernetes", "graph",
    ]  # fmt: skip
    scope: Literal["resource", "blueprint"] = "resource"
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    condition: dict[str, Any] | None = None
    check: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    pointer: str | None = Field(default=None, pattern=r"^/")
    message: str
    rationale: str = Field(min_length=1)
    remediation: Remediation
    references: list[str] = Field(min_length=1)
    frameworks: dict[str, list[str]] = Field(min_length=1)

    @field_validator("message")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = sorted(names - PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholders {unknown}; allowed: {', '.join(sorted(PLACEHOLDERS))}")
        return value


class Control(_Data):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    manual: bool = Field(default=False, description="No automated rule can decide it; a person must.")


class Framework(_Data):
    id: str
    title: str
    aliases: list[str] = Field(default_factory=list)
    note: str
    controls: list[Control] = Field(min_length=1)


class _FrameworksFile(_Data):
    disclaimer: str = Field(min_length=1)
    frameworks: list[Framework]


class _PolicyFile(_Data):
    category: str
    rules: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, slots=True, eq=False)
class _Rule:
    """A policy compiled for evaluation."""

    policy: Policy
    position: int
    predicate: Predicate | None
    check: Any
    params: Params | None
    gate: Any
    rank: int
    types: frozenset[ResourceType]
    providers: frozenset[Provider]
    kinds: frozenset[str]
    environments: frozenset[str]
    static_patch: list[dict[str, Any]]

    def fits(self, res: Resource) -> bool:
        return (not self.types or res.type in self.types) and (not self.providers or res.provider in self.providers)


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------


class PolicyCatalog:
    """The validated rule catalogue and framework controls; build it once with ``from_directory``."""

    def __init__(self, policies: Sequence[Policy], frameworks: Sequence[Framework], disclaimer: str) -> None:
        self._policies = sorted(policies, key=lambda p: p.id)
        self._by_id = {p.id: p for p in self._policies}
        self.frameworks: dict[str, Framework] = {f.id: f for f in frameworks}
        self.disclaimer = disclaimer
        self._aliases = {name: f.id for f in frameworks for name in (f.id, *f.aliases)}
        self._compiled = [_compile(p, k) for k, p in enumerate(self._policies)]
        self.control_rules: dict[str, dict[str, list[str]]] = {f.id: {c.id: [] for c in f.controls} for f in frameworks}
        for policy in self._policies:
            for fw, controls in policy.frameworks.items():
                for control in controls:
                    self.control_rules[fw][control].append(policy.id)
        self._tables: dict[tuple[str, tuple[str, ...] | None], _Selection] = {}

    @classmethod
    def from_directory(cls, path: Path, cache: ParseCache = NO_CACHE) -> "PolicyCatalog":
        """Load ``frameworks.yaml`` and every other ``*.yaml`` in ``path`` as rules (parsed through ``cache``).

        Raises:
            ConfigError: a file is missing or invalid, a rule id is duplicated, a check function or
                framework control is unknown, or a control is neither mapped nor marked manual
                (the file is named).
        """
        fw_file = path / "frameworks.yaml"
        try:
            fw_data = _FrameworksFile.model_validate(_read(fw_file, cache))
        except ValidationError as exc:
            raise ConfigError(f"policy file {fw_file.name} is invalid: {exc}", data={"file": str(fw_file)}) from exc
        frameworks = fw_data.frameworks
        _check_frameworks(frameworks, fw_file)
        known = {f.id: {c.id for c in f.controls} for f in frameworks}
        policies: list[Policy] = []
        owner: dict[str, Path] = {}
        files = sorted(p for p in path.glob("*.yaml") if p.name != "frameworks.yaml")
        if not files:
            raise ConfigError(f"no rule files (*.yaml) in {path}", data={"folder": str(path)})
        for file in files:
            for policy in _read_rules(file, known, cache):
                if policy.id in owner:
                    raise ConfigError(
                        f"policy file {file.name} redefines {policy.id}, already defined in {owner[policy.id].name}",
                        data={"file": str(file), "rule": policy.id, "other": str(owner[policy.id])},
                    )
                owner[policy.id] = file
                policies.append(policy)
        catalog = cls(policies, frameworks, fw_data.disclaimer)
        for fw in frameworks:
            for control in fw.controls:
                mapped = catalog.control_rules[fw.id][control.id]
                if bool(mapped) == control.manual:
                    state = "is marked manual but rules map to it" if mapped else "has no rule and is not manual"
                    raise ConfigError(
                        f"policy file {fw_file.name}: control {fw.id} {control.id} {state}",
                        data={"file": str(fw_file), "framework": fw.id, "control": control.id},
                    )
        return catalog

    @property
    def rules(self) -> list[Policy]:
        """Every rule, in id order."""
        return list(self._policies)

    def get(self, rule_id: str) -> Policy:
        """The rule with that id.

        Raises:
            InvalidRequest: no such rule.
        """
        try:
            return self._by_id[rule_id]
        except KeyError:
            raise InvalidRequest(
                f"no security rule {rule_id!r}; rule ids look like ALMA-SEC-001 (see alma://policies)",
                data={"rule": rule_id},
            ) from None

    def resolve_framework(self, name: str) -> str:
        """The canonical framework id for an id or alias (case-insensitive).

        Raises:
            InvalidRequest: unknown framework; the message lists the known ones.
        """
        found = self._aliases.get(name.strip().lower())
        if found is None:
            raise InvalidRequest(
                f"unknown framework {name!r}; known: {', '.join(self.frameworks)}",
                data={"framework": name, "known": list(self.frameworks)},
            )
        return found

    def as_resource(self) -> dict[str, Any]:
        """What ``alma://policies`` serves: ids, titles, severities, scope, mappings and fixes (no rationale)."""
        return {
            "count": len(self._policies),
            "severities": [s.value for s in Severity],
            "categories": list(CATEGORIES),
            "score_formula": FORMULA,
            "frameworks": {
                f.id: {"title": f.title, "aliases": f.aliases, "controls": len(f.controls), "note": f.note}
                for f in self.frameworks.values()
            },
            "disclaimer": self.disclaimer,
            "rules": [
                {
                    "id": p.id,
                    "title": p.title,
                    "severity": p.severity.value,
                    "category": p.category,
                    "scope": p.scope,
                    "applies_to": p.applies_to.model_dump(mode="json"),
                    "frameworks": p.frameworks,
                    "remediation": {
                        "text": p.remediation.text,
                        "patch": None if p.remediation.patch is None else [o.as_dict() for o in p.remediation.patch],
                    },
                    "references": p.references,
                }
                for p in self._policies
            ],
        }

    def _selection(self, environment: str, frameworks: tuple[str, ...] | None) -> "_Selection":
        key = (environment, frameworks)
        if key not in self._tables:
            chosen = [
                r
                for r in self._compiled
                if (not r.environments or environment in r.environments)
                and (frameworks is None or any(fw in r.policy.frameworks for fw in frameworks))
            ]
            table: dict[tuple[ResourceType, Provider], _Group] = {}
            for rtype in ResourceType:
                for provider in Provider:
                    rules = [
                        r
                        for r in chosen
                        if r.policy.scope == "resource"
                        and (not r.types or rtype in r.types)
                        and (not r.providers or provider in r.providers)
                    ]
                    plain = [r for r in rules if not r.kinds]
                    table[(rtype, provider)] = _Group(
                        declarative=tuple((r.predicate, r) for r in plain if r.predicate is not None),
                        checks=tuple((r.check, r.params, r.gate, r) for r in plain if r.predicate is None),
                        kinded=tuple(r for r in rules if r.kinds),
                        unconditional=tuple(r.position for r in plain),
                    )
            blueprint_rules = tuple(r for r in chosen if r.policy.scope == "blueprint")
            self._tables[key] = _Selection(table, blueprint_rules)
        return self._tables[key]


@dataclass(frozen=True, slots=True)
class _Group:
    """The rules for one (type, provider), split so the per-resource loop does no dispatch."""

    declarative: tuple[tuple[Predicate, _Rule], ...]
    checks: tuple[tuple[Any, Params | None, Any, _Rule], ...]
    kinded: tuple[_Rule, ...]
    unconditional: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Selection:
    by_type_provider: dict[tuple[ResourceType, Provider], _Group]
    blueprint_rules: tuple[_Rule, ...]


def _read(path: Path, cache: ParseCache) -> Any:
    try:
        return cache.document(path, _FILE_LIMITS)
    except (OSError, UnicodeDecodeError, AlmaError) as exc:
        raise ConfigError(f"policy file {path.name} cannot be read: {exc}", data={"file": str(path)}) from exc


def _check_frameworks(frameworks: Sequence[Framework], path: Path) -> None:
    ids = [f.id for f in frameworks]
    if sorted(ids) != sorted(FRAMEWORK_IDS):
        raise ConfigError(
            f"policy file {path.name} must define exactly the frameworks {', '.join(FRAMEWORK_IDS)}; "
            f"it has {', '.join(ids)}",
            data={"file": str(path)},
        )
    names: dict[str, str] = {}
    for fw in frameworks:
        controls = [c.id for c in fw.controls]
        if len(set(controls)) != len(controls):
            raise ConfigError(f"policy file {path.name}: framework {fw.id} lists a control twice")
        for name in (fw.id, *fw.aliases):
            if name.lower() in names:
                raise ConfigError(f"policy file {path.name}: framework name {name!r} is claimed twice")
            names[name.lower()] = fw.id


def _read_rules(path: Path, known: Mapping[str, set[str]], cache: ParseCache) -> list[Policy]:
    try:
        content = _PolicyFile.model_validate(_read(path, cache))
    except ValidationError as exc:
        raise ConfigError(f"policy file {path.name} is invalid: {exc}", data={"file": str(path)}) from exc
    policies = []
    for k, raw in enumerate(content.rules):
        where = f"policy file {path.name}, rule {raw.get('id', f'#{k + 1}')}"
        try:
            policy = Policy.model_validate({**raw, "category": content.category})
        except ValidationError as exc:
            raise ConfigError(f"{where} is invalid: {exc}", data={"file": str(path)}) from exc
        for fw, controls in policy.frameworks.items():
            if fw not in known:
                raise ConfigError(f"{where} maps unknown framework {fw!r}; known: {', '.join(known)}")
            unknown = [c for c in controls if c not in known[fw]]
            if unknown or not controls:
                raise ConfigError(
                    f"{where} maps {fw} controls not in frameworks.yaml: {', '.join(unknown) or '(none listed)'}",
                    data={"file": str(path), "rule": policy.id},
                )
        try:
            _compile(policy, 0)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}", data={"file": str(path), "rule": policy.id}) from exc
        policies.append(policy)
    return policies


def _compile(policy: Policy, position: int) -> _Rule:
    if (policy.condition is None) == (policy.check is None):
        raise ValueError("give exactly one of 'condition' (declarative) and 'check' (a named check function)")
    predicate: Predicate | None = None
    check: Any = None
    params: Params | None = None
    gate: Any = None
    if policy.condition is not None:
        if policy.scope != "resource" or policy.pointer is None:
            raise ValueError("a declarative condition needs scope 'resource' and a 'pointer' to the offending field")
        if policy.params:
            raise ValueError("'params' belong to named checks only")
        predicate = compile_condition(policy.condition)
    else:
        spec = CHECKS.get(policy.check or "")
        if spec is None:
            raise ValueError(f"unknown check function {policy.check!r}; known: {', '.join(sorted(CHECKS))}")
        if spec.scope != policy.scope:
            raise ValueError(f"check {policy.check!r} works on scope {spec.scope!r}, the rule says {policy.scope!r}")
        try:
            params = spec.params.model_validate(policy.params)
        except ValidationError as exc:
            raise ValueError(f"params for {policy.check!r} are invalid: {exc}") from exc
        check = spec.fn
        gate = spec.gate
    applies = policy.applies_to
    return _Rule(
        policy=policy,
        position=position,
        predicate=predicate,
        check=check,
        params=params,
        gate=gate,
        rank=-RANK[policy.severity],
        types=frozenset(applies.types),
        providers=frozenset(applies.providers),
        kinds=frozenset(k.lower() for k in applies.kinds),
        environments=frozenset(applies.environments),
        static_patch=[o.as_dict() for o in policy.remediation.patch or ()],
    )


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


class Suppression(_Data):
    rule: str
    resource: str = "*"
    reason: str = Field(min_length=1)


SortKey = tuple[int, int, str, str]
"""(-severity rank, resource index or -1, rule id, path): the order of findings in every report."""


@dataclass
class Evaluation:
    """Everything one pass over a blueprint produced; the audit and compliance reports read it."""

    findings: list[tuple[SortKey, Finding]] = field(default_factory=list)
    suppressed: list[tuple[SortKey, Suppressed]] = field(default_factory=list)
    applicable: dict[str, int] = field(default_factory=dict)
    unused: list[Suppression] = field(default_factory=list)


@without_gc
def evaluate(blueprint: Blueprint, catalog: PolicyCatalog, frameworks: Sequence[str] | None = None) -> Evaluation:
    """Run every applicable rule once over the blueprint; findings come with their resource index.

    Raises:
        InvalidRequest: an unknown framework, or a malformed or unknown suppression.
    """
    chosen = tuple(sorted({catalog.resolve_framework(f) for f in frameworks})) if frameworks else None
    suppressions = _suppressions(blueprint, catalog)
    ctx = AuditContext(blueprint)
    selection = catalog._selection(ctx.environment, chosen)
    counts = [0] * len(catalog._compiled)
    raw: list[tuple[_Rule, Hit]] = []
    table = selection.by_type_provider
    for i, res in enumerate(blueprint.resources):
        group = table[(res.type, res.provider)]
        for predicate, rule in group.declarative:
            if predicate(res):
                raw.append((rule, _declarative_hit(rule, i, res)))
        specs = res.specs
        for check, params, gate, rule in group.checks:
            if gate is None or gate(specs):
                raw.extend((rule, hit) for hit in check(ctx, i, res, params))
        if group.kinded:
            kind = (specs.kind or "").lower()
            for rule in group.kinded:
                if kind in rule.kinds:
                    counts[rule.position] += 1
                    if rule.predicate is not None:
                        if rule.predicate(res):
                            raw.append((rule, _declarative_hit(rule, i, res)))
                    elif rule.gate is None or rule.gate(specs):
                        raw.extend((rule, hit) for hit in rule.check(ctx, i, res, rule.params))
    for group_key, n in Counter((r.type, r.provider) for r in blueprint.resources).items():
        for position in table[group_key].unconditional:
            counts[position] += n
    present = {(r.type, r.provider) for r in blueprint.resources}
    for rule in selection.blueprint_rules:
        if (rule.types or rule.providers) and not any(
            (not rule.types or t in rule.types) and (not rule.providers or p in rule.providers) for t, p in present
        ):
            continue
        counts[rule.position] += 1
        raw.extend(
            (rule, hit)
            for hit in rule.check(ctx, rule.params)
            if hit.index is None or (rule.fits(blueprint.resources[hit.index]) and _kind_fits(rule, hit.index, ctx))
        )

    result = Evaluation(applicable={r.policy.id: counts[r.position] for r in catalog._compiled if counts[r.position]})
    used: set[int] = set()
    seen: set[tuple[str, int, str]] = set()
    for rule, hit in raw:
        index = -1 if hit.index is None else hit.index
        key = (rule.policy.id, index, hit.pointer)
        if key in seen:
            continue
        seen.add(key)
        finding = _finding(rule, ctx, hit, chosen)
        order = (rule.rank, index, rule.policy.id, finding.path)
        k = _match(suppressions, rule.policy.id, finding.resource)
        if k is None:
            result.findings.append((order, finding))
        else:
            used.add(k)
            result.suppressed.append((order, Suppressed(finding=finding, reason=suppressions[k].reason)))
    result.unused = [s for k, s in enumerate(suppressions) if k not in used]
    return result


def _declarative_hit(rule: _Rule, index: int, res: Resource) -> Hit:
    pointer = rule.policy.pointer or ""
    return Hit(index, pointer, _detail(res, pointer))


def _detail(res: Resource, pointer: str) -> str:
    """The offending value of a declarative rule, for ``{detail}`` (scalars only)."""
    node: Any = res
    for token in pointer.split("/")[1:]:
        node = getattr(node, token, None) if isinstance(node, BaseModel) else _child(node, token)[0]
    return str(node) if isinstance(node, str | int | float) else ""


def _kind_fits(rule: _Rule, index: int, ctx: AuditContext) -> bool:
    return not rule.kinds or (ctx.resources[index].specs.kind or "").lower() in rule.kinds


def _suppressions(blueprint: Blueprint, catalog: PolicyCatalog) -> list[Suppression]:
    alma = (blueprint.metadata.model_extra or {}).get("alma")
    if alma is None:
        return []
    if not isinstance(alma, Mapping) or not isinstance(alma.get("suppress", []), list):
        raise InvalidRequest(
            "metadata.alma.suppress must be a list of {rule, resource, reason}",
            data={"path": "/metadata/alma/suppress"},
        )
    out = []
    for k, entry in enumerate(alma.get("suppress", [])):
        where = f"/metadata/alma/suppress/{k}"
        try:
            suppression = Suppression.model_validate(entry)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(
                f"suppression at {where} is invalid ({problem}); write {{rule: ALMA-SEC-NNN, resource: <name>, "
                "reason: <why this is accepted>}",
                data={"path": where},
            ) from exc
        catalog.get(suppression.rule)
        if suppression.resource != "*" and blueprint.resource(suppression.resource) is None and suppression.resource:
            raise InvalidRequest(
                f"suppression at {where} names unknown resource {suppression.resource!r}; use a resource name, "
                "'*' for all, or '' for blueprint-wide findings",
                data={"path": where},
            )
        out.append(suppression)
    return out


def _match(suppressions: Sequence[Suppression], rule_id: str, resource: str) -> int | None:
    for k, s in enumerate(suppressions):
        if s.rule == rule_id and s.resource in ("*", resource):
            return k
    return None


def _finding(rule: _Rule, ctx: AuditContext, hit: Hit, frameworks: tuple[str, ...] | None) -> Finding:
    policy = rule.policy
    res = ctx.resources[hit.index] if hit.index is not None else None
    values: dict[str, str] = {
        "resource": res.name if res is not None else "",
        "type": res.type if res is not None else "",
        "provider": res.provider if res is not None else "",
        "kind": (res.specs.kind or "") if res is not None else "",
        "detail": hit.detail,
        "environment": ctx.environment,
        "blueprint": ctx.blueprint.name,
    }
    ops = hit.patch if hit.patch is not None else rule.static_patch
    patch = _absolute_patch(res, hit.index, ops) if ops and res is not None and hit.index is not None else None
    mapped = (
        policy.frameworks if frameworks is None else {k: v for k, v in policy.frameworks.items() if k in frameworks}
    )
    return Finding(
        rule_id=policy.id,
        title=policy.title,
        severity=policy.severity,
        resource=values["resource"],
        path=f"/resources/{hit.index}{hit.pointer}" if hit.index is not None else hit.pointer,
        message=policy.message.format_map(values),
        remediation=policy.remediation.text.format_map(values),
        patch=patch,
        references=policy.references,
        frameworks=mapped,
    )


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _absolute_patch(res: Resource, index: int, ops: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ops made absolute, preceded by ``add`` ops for containers the author never wrote.

    A blueprint as data holds only the fields its author set, so ``/resources/3/specs/options`` may
    not exist yet when a fix adds a key below it; RFC 6902 ``add`` needs the parent to exist.
    """
    prefix = f"/resources/{index}"
    out: list[dict[str, Any]] = []
    created: set[str] = set()
    for op in ops:
        tokens = [_unescape(t) for t in str(op["path"]).split("/")[1:]]
        node: Any = res
        missing = False
        for depth, token in enumerate(tokens[:-1]):
            if not missing:
                node, found = _child(node, token)
                if found:
                    continue
                missing = True
            parent = "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[: depth + 1])
            if parent not in created:
                nxt = tokens[depth + 1]
                created.add(parent)
                out.append({"op": "add", "path": prefix + parent, "value": [] if nxt == "-" or nxt.isdigit() else {}})
        out.append({**op, "path": prefix + str(op["path"])})
    return out


def _child(node: Any, token: str) -> tuple[Any, bool]:
    if isinstance(node, BaseModel):
        if token in node.model_fields_set and getattr(node, token, None) is not None:
            return getattr(node, token), True
        return None, False
    if isinstance(node, Mapping) and node.get(token) is not None:
        return node[token], True
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)], True
    return None, False


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def score_of(counts: Mapping[str, int]) -> int:
    """The documented formula (see ``FORMULA``)."""
    return max(0, 100 - sum(WEIGHTS[Severity(s)] * n for s, n in counts.items()))


def grade_of(score: int) -> str:
    return next((letter for floor, letter in GRADES if score >= floor), "F")


def audit(
    blueprint: Blueprint,
    catalog: PolicyCatalog,
    *,
    severity_threshold: str = "info",
    frameworks: Sequence[str] | None = None,
) -> AuditReport:
    """Audit a validated blueprint against the catalogue.

    ``frameworks`` (ids or aliases; None or empty for all) limits the run to rules mapped to them and each
    finding's ``frameworks`` to them; ``severity_threshold`` limits the listed findings only.

    Raises:
        InvalidRequest: unknown threshold or framework, or a malformed or unknown suppression.
    """
    try:
        threshold = Severity(severity_threshold.strip().lower())
    except ValueError:
        raise InvalidRequest(
            f"unknown severity threshold {severity_threshold!r}; use one of {', '.join(s.value for s in Severity)}",
            data={"threshold": severity_threshold, "allowed": [s.value for s in Severity]},
        ) from None
    result = evaluate(blueprint, catalog, frameworks)
    ordered = sorted(result.findings, key=itemgetter(0))
    counts = {s.value: 0 for s in Severity}
    for _, finding in ordered:
        counts[finding.severity] += 1
    floor = -RANK[threshold]
    shown = [f for order, f in ordered if order[0] <= floor]
    suppressed = [s for _, s in sorted(result.suppressed, key=itemgetter(0))]
    score = score_of(counts)
    grade = grade_of(score)
    summary = (
        f"score {score}/100 (grade {grade}): "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; {len(result.applicable)} rules applied to {len(blueprint.resources)} resources"
    )
    if suppressed:
        summary += f"; {len(suppressed)} suppressed (listed with reasons)"
    if len(shown) < len(ordered):
        summary += f"; {len(ordered) - len(shown)} findings below '{threshold.value}' not listed"
    if result.unused:
        summary += f"; {len(result.unused)} suppressions matched nothing"
    return AuditReport(
        score=score,
        grade=grade,
        summary=summary,
        counts=counts,
        findings=shown,
        suppressed=suppressed,
        threshold=threshold.value,
        rules_evaluated=len(result.applicable),
        formula=FORMULA,
        below_threshold=len(ordered) - len(shown),
        unused_suppressions=[s.model_dump() for s in result.unused],
    )


def blocking_findings(report: AuditReport) -> list[Finding]:
    """The unsuppressed critical findings: what blocks an IPR's approval."""
    return [f for f in report.findings if f.severity is Severity.CRITICAL]
