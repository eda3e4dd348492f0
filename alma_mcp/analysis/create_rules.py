"""The rules create_blueprint follows, read from ``resources/create/rules.yaml`` and checked at load.

Every table create_blueprint decides with lives in that file: keywords and number patterns for free
text, the template per workload, throughput per instance, availability minimums, environment
policies, provider adaptations, images, reference prices and budget steps. The model refuses a file
that could yield an invalid blueprint (an unpinned image, an availability with no minimum, a pattern
without a value), so such a mistake stops start-up with the file named instead of surfacing in a tool
call. Free-text extraction lives here too because it is nothing but these tables applied to a string.
"""

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from alma_mcp.blueprint.model import Environment, Provider, ResourceType
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.datacache import NO_CACHE, ParseCache
from alma_mcp.errors import ConfigError, TemplateNotFound

RPS_MAX: Final = 10_000_000.0
USERS_MAX: Final = 1_000_000_000
AVAILABILITY_MIN: Final = 90.0
AVAILABILITY_MAX: Final = 99.999

# Derived blueprint names are "<workload>-<environment>": 40 + len("-development") stays a DNS label.
_WORKLOAD_NAME = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
_NUMBER = r"(?<![\w.,])(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"

T = TypeVar("T")


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_pinned(image: str) -> str:
    # Same test as validate's unpinned-image warning: a digest, or a tag other than 'latest'.
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return image
    tag = last.split(":", 1)[1] if ":" in last else ""
    if not tag or tag == "latest":
        raise ValueError(f"image {image!r} is not pinned; give a version tag or a digest")
    return image


class HighAvailability(_Rules):
    template: str
    at_least: float = Field(ge=AVAILABILITY_MIN, le=AVAILABILITY_MAX)


class Workload(_Rules):
    """One workload kind: its base template and the traffic model of its request-serving tiers."""

    template: str
    high_availability: HighAvailability | None = None
    per_instance_rps: float = Field(gt=0, allow_inf_nan=False)
    default_rps: float = Field(ge=0, le=RPS_MAX, allow_inf_nan=False)
    app_image: str

    @field_validator("app_image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        return _check_pinned(value)

    def template_for(self, availability: float) -> str:
        """The high-availability template at or above its threshold, else the base template."""
        ha = self.high_availability
        return ha.template if ha is not None and availability >= ha.at_least else self.template


class MinimumInstances(_Rules):
    at_least: float = Field(ge=0, le=100)
    instances: int = Field(ge=1)


class AvailabilityRules(_Rules):
    defaults: dict[Environment, float]
    minimum_instances: list[MinimumInstances] = Field(min_length=1)

    @model_validator(mode="after")
    def _complete(self) -> "AvailabilityRules":
        missing = sorted(e.value for e in Environment if e not in self.defaults)
        if missing:
            raise ValueError(f"availability.defaults lacks: {', '.join(missing)}")
        if any(not AVAILABILITY_MIN <= v <= AVAILABILITY_MAX for v in self.defaults.values()):
            raise ValueError(f"availability.defaults must lie in {AVAILABILITY_MIN:g}..{AVAILABILITY_MAX:g}")
        thresholds = [row.at_least for row in self.minimum_instances]
        if thresholds != sorted(thresholds, reverse=True) or len(set(thresholds)) != len(thresholds):
            raise ValueError("availability.minimum_instances must be in strictly descending order of at_least")
        if thresholds[-1] > AVAILABILITY_MIN:
            raise ValueError(f"availability.minimum_instances needs a row with at_least <= {AVAILABILITY_MIN:g}")
        return self

    def minimum_for(self, target: float) -> int:
        """Instances a traffic tier needs at least for an availability target (percent)."""
        return next(row.instances for row in self.minimum_instances if target >= row.at_least)


class AppTierRules(_Rules):
    types: list[ResourceType]
    fixed_roles: list[str]
    fixed_kinds: list[str]
    fixed_with_gpu: bool
    headroom: float = Field(ge=0, le=10)
    rps_per_user: float = Field(gt=0, le=100)
    max_instances: int = Field(ge=1, le=1000)
    per_instance_rps_by_kind: dict[str, float] = Field(default_factory=dict)

    @field_validator("per_instance_rps_by_kind")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not (math.isfinite(v) and v > 0) for v in value.values()):
            raise ValueError("per_instance_rps_by_kind values must be positive numbers")
        return value


class EnvironmentPolicy(_Rules):
    size_factor: float = Field(gt=0, le=1)
    drop_backups: bool
    harden: bool


class Floors(_Rules):
    cpu: float = Field(gt=0, le=1024)
    memory: int = Field(ge=64, description="MiB")


class Hardening(_Rules):
    backup_types: list[ResourceType]
    backup_schedule: str
    backup_retention_days: int = Field(ge=1)
    encryption_types: list[ResourceType]
    tls_on_public: bool


class Guest(_Rules):
    """What a Proxmox VM needs when a resource becomes one."""

    types: list[ResourceType]
    os: str
    template: str
    cpu: float = Field(gt=0, le=1024)
    memory: int = Field(ge=64, description="MiB")


class ProviderRules(_Rules):
    type_changes: dict[ResourceType, ResourceType] = Field(default_factory=dict)
    drop_specs: list[Literal["os", "template", "ostemplate", "image"]] = Field(default_factory=list)
    guest: Guest | None = None


class Images(_Rules):
    providers: list[Provider]
    required_for: list[ResourceType]
    gpu: str
    by_kind: dict[str, str] = Field(default_factory=dict)
    by_role: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pinned(self) -> "Images":
        for image in (self.gpu, *self.by_kind.values(), *self.by_role.values()):
            _check_pinned(image)
        return self


class Prices(_Rules):
    hours_per_month: float = Field(gt=0, le=744)
    vcpu_hour: float = Field(ge=0, allow_inf_nan=False)
    ram_gib_hour: float = Field(ge=0, allow_inf_nan=False)
    gpu_hour: float = Field(ge=0, allow_inf_nan=False)
    storage_gib_month: dict[Literal["HDD", "SSD", "NVMe"], float]
    default_storage_type: Literal["HDD", "SSD", "NVMe"]

    @field_validator("storage_gib_month")
    @classmethod
    def _every_type(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != {"HDD", "SSD", "NVMe"} or any(not (math.isfinite(v) and v >= 0) for v in value.values()):
            raise ValueError("storage_gib_month needs a non-negative price for each of HDD, SSD and NVMe")
        return value

    def monthly_cost(self, specs: Mapping[str, Any]) -> float:
        """USD a month for one resource's plain-data specs: every instance pays compute and its own disks."""
        instances = int(specs.get("replicas") or 1)
        gpus = int(specs.get("gpu_count") or (1 if specs.get("gpu") else 0))
        per_hour = (
            float(specs.get("cpu") or 0) * self.vcpu_hour
            + int(specs.get("memory") or 0) / 1024 * self.ram_gib_hour
            + gpus * self.gpu_hour
        )
        disk_price = self.storage_gib_month[specs.get("storage_type") or self.default_storage_type]
        volume_mib = sum(int(v.get("size") or 0) for v in specs.get("volumes") or [])
        per_month = (
            int(specs.get("storage") or 0) / 1024 * disk_price
            + volume_mib / 1024 * self.storage_gib_month[self.default_storage_type]
        )
        return instances * (per_hour * self.hours_per_month + per_month)


class BudgetRules(_Rules):
    size_steps: list[float] = Field(min_length=1)

    @field_validator("size_steps")
    @classmethod
    def _descending(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value) or value != sorted(value, reverse=True) or len(set(value)) != len(value):
            raise ValueError("size_steps must be fractions in (0, 1), in strictly descending order")
        return value


class KeywordRule(_Rules, Generic[T]):
    """A value and the words that select it."""

    value: T
    keywords: list[str] = Field(min_length=1)
    _regex: re.Pattern[str] = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._regex = keyword_regex(self.keywords)

    def search(self, text: str) -> re.Match[str] | None:
        return self._regex.search(text)


class NumberRule(_Rules):
    """A regular expression with a ``value`` group, and what divides the value into the field's unit."""

    pattern: str
    divide_by: float = Field(default=1.0, gt=0, allow_inf_nan=False)


def keyword_regex(keywords: Iterable[str]) -> re.Pattern[str]:
    """Whole words, case-insensitive, optional plural; a space in a keyword also matches a hyphen.

    Raises:
        ValueError: no keyword is non-blank.
    """
    alternatives = sorted(
        {r"[\s-]+".join(re.escape(part) for part in kw.split()) for kw in keywords if kw.strip()},
        key=lambda a: (-len(a), a),
    )
    if not alternatives:
        raise ValueError("a keyword list needs at least one non-blank keyword")
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?:e?s)?(?!\w)", re.IGNORECASE)


def _number_regex(pattern: str, scales: Iterable[str]) -> re.Pattern[str]:
    words = sorted(scales, key=lambda w: (-len(w), w))  # longest first: 'million' before 'm'
    scale = r"(?:(?P<scale>" + "|".join(re.escape(w) for w in words) + r")(?!\w))?"
    try:
        regex = re.compile(pattern.replace("{number}", _NUMBER).replace("{scale}", scale), re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from None
    if "value" not in regex.groupindex:
        raise ValueError(f"pattern {pattern!r} has no value: use {{number}} or a (?P<value>...) group")
    return regex


@dataclass(frozen=True)
class TextFindings:
    """What free text says, by request field (in request order), with the words that said it."""

    values: dict[str, str | float | int] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


# Request field -> the range a value read from text must fall in (outside it, it is ignored with a note).
_NUMBER_FIELDS: Final[dict[str, tuple[float, float]]] = {
    "expected_rps": (0.0, RPS_MAX),
    "expected_users": (0.0, float(USERS_MAX)),
    "availability": (AVAILABILITY_MIN, AVAILABILITY_MAX),
    "budget_monthly": (0.01, math.inf),
}


class TextRules(_Rules):
    scales: dict[str, float]
    workloads: list[KeywordRule[str]]
    environments: list[KeywordRule[Environment]]
    providers: list[KeywordRule[Provider]]
    availability_percent: list[NumberRule]
    availability_phrases: list[KeywordRule[float]]
    rps: list[NumberRule]
    users: list[NumberRule]
    budget: list[NumberRule]
    _numbers: dict[str, list[tuple[re.Pattern[str], float]]] = PrivateAttr()

    @field_validator("scales")
    @classmethod
    def _scales(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(not re.fullmatch(r"[a-z]+", w) for w in value) or any(v <= 0 for v in value.values()):
            raise ValueError("scales maps lower-case words to positive multipliers")
        return value

    def model_post_init(self, context: Any, /) -> None:
        tables = {
            "expected_rps": self.rps,
            "expected_users": self.users,
            "availability": self.availability_percent,
            "budget_monthly": self.budget,
        }
        self._numbers = {
            name: [(_number_regex(rule.pattern, self.scales), rule.divide_by) for rule in rules]
            for name, rules in tables.items()
        }

    def extract(self, text: str) -> TextFindings:
        """Request fields found in ``text``; in each table the first rule that matches wins."""
        # One space per gap: patterns put several optional \s* side by side, and a long run of
        # whitespace would make them backtrack for minutes (a 4000-character text is allowed).
        text = " ".join(text.split())
        found = TextFindings()
        _first_keyword(found, "workload", text, self.workloads)
        for name in ("expected_rps", "expected_users", "availability"):
            self._first_number(found, name, text)
        if "availability" not in found.values:
            # A number beats a phrase: "high availability, 99.99% uptime" means 99.99.
            _first_keyword(found, "availability", text, self.availability_phrases)
        _first_keyword(found, "environment", text, self.environments)
        _first_keyword(found, "provider", text, self.providers)
        self._first_number(found, "budget_monthly", text)
        return found

    def _first_number(self, found: TextFindings, name: str, text: str) -> None:
        low, high = _NUMBER_FIELDS[name]
        for regex, divide_by in self._numbers[name]:
            for match in regex.finditer(text):
                scale = match.groupdict().get("scale")
                raw = float(match.group("value").replace(",", "")) * (self.scales[scale.lower()] if scale else 1.0)
                value: float | int = round(raw / divide_by) if name == "expected_users" else round(raw / divide_by, 2)
                if low <= value <= high:
                    found.values[name] = value
                    found.evidence[name] = match.group(0)
                    return
                note = f"ignored {name} {value:.15g} read from {match.group(0)!r}: outside {low:.15g}..{high:.15g}"
                if note not in found.ignored:
                    found.ignored.append(note)


def _first_keyword(found: TextFindings, name: str, text: str, table: list[KeywordRule[Any]]) -> None:
    for rule in table:
        match = rule.search(text)
        if match is not None:
            found.values[name] = rule.value
            found.evidence[name] = match.group(0)
            return


class CreateRules(_Rules):
    """The whole rules file."""

    version: Literal[1]
    default_workload: str
    default_environment: Environment
    workloads: dict[str, Workload] = Field(min_length=1)
    availability: AvailabilityRules
    app_tier: AppTierRules
    environments: dict[Environment, EnvironmentPolicy]
    floors: Floors
    hardening: Hardening
    providers: dict[Provider, ProviderRules]
    images: Images
    prices: Prices
    budget: BudgetRules
    text: TextRules

    @model_validator(mode="after")
    def _consistent(self) -> "CreateRules":
        bad = sorted(w for w in self.workloads if not re.fullmatch(_WORKLOAD_NAME, w))
        if bad:
            raise ValueError(f"workload names must be DNS labels of at most 40 characters: {', '.join(bad)}")
        if self.default_workload not in self.workloads:
            raise ValueError(f"default_workload {self.default_workload!r} is not a workload")
        unknown = sorted({r.value for r in self.text.workloads} - set(self.workloads))
        if unknown:
            raise ValueError(f"text.workloads names unknown workloads: {', '.join(unknown)}")
        missing = [e.value for e in Environment if e not in self.environments]
        missing += [p.value for p in Provider if p not in self.providers]
        if missing:
            raise ValueError(f"environments and providers need an entry for each of: {', '.join(missing)}")
        if self.availability.minimum_instances[0].instances > self.app_tier.max_instances:
            raise ValueError("an availability minimum exceeds app_tier.max_instances")
        return self


def load_create_rules(path: Path, cache: ParseCache = NO_CACHE) -> CreateRules:
    """Read (through ``cache``) and validate the create_blueprint rules.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks a rule (the file is named).
    """
    try:
        return CreateRules.model_validate(cache.data_file(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"create rules file {path} is invalid: {exc}", data={"file": str(path)}) from exc


def check_rules_against_catalog(rules: CreateRules, catalog: TemplateCatalog) -> None:
    """Every template the rules name is in the catalogue; call once at start-up, after both are loaded.

    Raises:
        ConfigError: a workload names an unknown template.
    """
    for kind, workload in rules.workloads.items():
        named = [workload.template]
        if workload.high_availability is not None:
            named.append(workload.high_availability.template)
        for template in named:
            try:
                catalog.resolve(template)
            except TemplateNotFound as exc:
                raise ConfigError(
                    f"create rules: workload {kind!r} names unknown template {template!r}; "
                    f"available: {', '.join(catalog.names())}",
                    data={"workload": kind, "template": template},
                ) from exc
