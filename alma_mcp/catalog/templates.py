"""The template catalogue: blueprint files under ``resources/templates``, validated at start-up.

A template is an ordinary blueprint whose ``metadata`` carries ``category``, ``complexity``,
``estimated_cost`` (the range the template's authors declare) and optional ``aliases``. An invalid
file, or two files claiming one name or alias, stops start-up with the file named: the data is
ours, so a mistake in it is a bug to fix, not a warning to log.
"""

import copy
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from alma_mcp.blueprint.graph import check_integrity
from alma_mcp.blueprint.loader import DEFAULT_LIMITS, Limits, load_blueprint
from alma_mcp.blueprint.model import Blueprint, Environment, ResourceType, normalise_environment
from alma_mcp.blueprint.quantities import format_cpu, format_mib, parse_cpu, parse_size_mib
from alma_mcp.datacache import NO_CACHE, ParseCache
from alma_mcp.errors import (
    BlueprintError,
    ConfigError,
    TemplateInvalidParameter,
    TemplateNotFound,
)

CATEGORIES: Final = ("web", "database", "microservices", "data", "ml", "security", "networking", "monitoring")
COMPLEXITIES: Final = ("simple", "medium", "advanced")

# Customization parameters size the application tier: the horizontally scalable resources. Data
# stores, networks and storage keep their own sizing (their size is about data, not traffic).
SCALABLE_TYPES: Final = frozenset({ResourceType.COMPUTE, ResourceType.CONTAINER, ResourceType.SERVICE})

PARAMETERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "instance_count": "integer 1..1000: replicas of each compute, container and service resource",
        "cpu_per_instance": "cores > 0 and <= 1024 (or millicores such as '500m') for those resources",
        "memory_per_instance": "size from 64Mi to 16Ti (e.g. '8GB') for those resources",
        "environment": "production, staging or development (prod, stage, dev accepted)",
    }
)
MAX_SCALE_FACTOR: Final = 100.0
MIN_MEMORY_MIB: Final = 64


class TemplateInfo(BaseModel):
    """One row of the template index."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    category: str
    complexity: str
    resource_count: int
    estimated_cost: str
    aliases: list[str]
    uri: str


class TemplateCatalog:
    """Read-only templates by name, with aliases; every lookup returns a fresh copy."""

    def __init__(self, templates: Mapping[str, Blueprint], aliases: Mapping[str, str]) -> None:
        self._templates = dict(sorted(templates.items()))
        self._aliases = dict(aliases)

    @classmethod
    def from_directory(
        cls, folder: Path, limits: Limits = DEFAULT_LIMITS, cache: ParseCache = NO_CACHE
    ) -> "TemplateCatalog":
        """Load and validate every ``*.yaml`` file in ``folder`` (parsed through ``cache``).

        Raises:
            ConfigError: a file is invalid, or a name or alias is claimed twice (the file is named).
        """
        templates: dict[str, Blueprint] = {}
        owners: dict[str, Path] = {}
        aliases: dict[str, str] = {}
        files = sorted(folder.glob("*.yaml"))
        if not files:
            raise ConfigError(f"no template files (*.yaml) in {folder}", data={"folder": str(folder)})
        for path in files:
            blueprint = _load_template_file(path, limits, cache)
            for claimed in (blueprint.name, *_aliases_of(blueprint, path)):
                if claimed in owners:
                    raise ConfigError(
                        f"template file {path.name} claims '{claimed}', already claimed by {owners[claimed].name}",
                        data={"file": str(path), "name": claimed, "other": str(owners[claimed])},
                    )
                owners[claimed] = path
                if claimed != blueprint.name:
                    aliases[claimed] = blueprint.name
            templates[blueprint.name] = blueprint
        return cls(templates, aliases)

    def names(self) -> list[str]:
        return list(self._templates)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def resolve(self, name: str) -> str:
        """The canonical template name for a name or an alias.

        Raises:
            TemplateNotFound: naming the available templates.
        """
        if name in self._templates:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise TemplateNotFound(
            f"no template {name!r}; available: {', '.join(self._templates)}",
            data={"name": name, "available": self.names()},
        )

    def get(self, name: str) -> Blueprint:
        """The template (a frozen model: callers cannot change the catalogue through it)."""
        return self._templates[self.resolve(name)]

    def info(self, name: str) -> TemplateInfo:
        bp = self.get(name)
        meta = bp.metadata.model_extra or {}
        return TemplateInfo(
            name=bp.name,
            description=bp.description,
            category=str(meta.get("category", "")),
            complexity=str(meta.get("complexity", "")),
            resource_count=len(bp.resources),
            estimated_cost=str(meta.get("estimated_cost", "")),
            aliases=sorted(a for a, target in self._aliases.items() if target == bp.name),
            uri=f"alma://templates/{bp.name}",
        )

    def search(
        self, category: str | None = None, complexity: str | None = None, query: str | None = None
    ) -> list[TemplateInfo]:
        """Templates matching every filter given; ``query`` is a case-insensitive substring."""
        rows = [self.info(n) for n in self._templates]
        if category is not None:
            rows = [r for r in rows if r.category == category.lower()]
        if complexity is not None:
            rows = [r for r in rows if r.complexity == complexity.lower()]
        if query:
            q = query.lower()
            rows = [r for r in rows if q in r.name or q in r.description.lower() or q in r.category]
        return rows

    def customize(
        self,
        template: str,
        *,
        name: str | None = None,
        description: str | None = None,
        scale_factor: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> tuple[Blueprint, list[str]]:
        """A new blueprint derived from a template, and a line per change made.

        Raises:
            TemplateNotFound: unknown template.
            TemplateInvalidParameter: a parameter is unknown or outside its range.
            BlueprintError: the new name is not a valid blueprint name.
        """
        base = self.get(template)
        # Callers outside MCP (REST, IPR customization) hand over untyped JSON: check shapes before use.
        for field, value in (("name", name), ("description", description)):
            if value is not None and not isinstance(value, str):
                raise _invalid(field, value, "text")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise _invalid("parameters", parameters, f"an object with any of {', '.join(PARAMETERS)}")
        data = copy.deepcopy(base.to_data())
        changes: list[str] = []
        params = dict(parameters or {})
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise TemplateInvalidParameter(
                f"unknown parameter {unknown[0]!r}; allowed: {', '.join(PARAMETERS)}",
                data={"parameter": unknown[0], "allowed": list(PARAMETERS)},
            )
        if name is not None:
            data["name"] = name
            changes.append(f"name: {base.name} -> {name}")
        if description is not None:
            data["description"] = description
            changes.append("description replaced")
        if scale_factor is not None:
            changes.extend(_apply_scale(data, _check_scale(scale_factor)))
        changes.extend(_apply_parameters(data, params))
        meta = data.setdefault("metadata", {})
        # A derived blueprint is not the template: it claims no alias, and the template's declared
        # cost range no longer describes it.
        meta.pop("aliases", None)
        meta.pop("estimated_cost", None)
        meta["customized"] = True
        meta["base_template"] = base.name
        try:
            result = load_blueprint(data, limits)
            check_integrity(result)
        except BlueprintError as exc:
            raise type(exc)(f"customized template is invalid: {exc.message}", issues=exc.issues) from None
        return result, changes


def _load_template_file(path: Path, limits: Limits, cache: ParseCache) -> Blueprint:
    try:
        blueprint = load_blueprint(cache.document(path, limits), limits)
        check_integrity(blueprint)
    except (BlueprintError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"template file {path.name} is invalid: {exc}", data={"file": str(path)}) from exc
    meta = blueprint.metadata.model_extra or {}
    if meta.get("category") not in CATEGORIES or meta.get("complexity") not in COMPLEXITIES:
        raise ConfigError(
            f"template file {path.name} needs metadata.category (one of {', '.join(CATEGORIES)}) and "
            f"metadata.complexity (one of {', '.join(COMPLEXITIES)})",
            data={"file": str(path)},
        )
    if path.stem != blueprint.name:
        raise ConfigError(
            f"template file {path.name} declares name '{blueprint.name}'; name the file {blueprint.name}.yaml",
            data={"file": str(path)},
        )
    return blueprint


def _aliases_of(blueprint: Blueprint, path: Path) -> list[str]:
    raw = (blueprint.metadata.model_extra or {}).get("aliases", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise ConfigError(f"template file {path.name}: metadata.aliases must be a list of names")
    return list(raw)


def _invalid(parameter: str, value: object, allowed: str) -> TemplateInvalidParameter:
    return TemplateInvalidParameter(
        f"{parameter}={value!r} is out of range; allowed: {allowed}",
        data={"parameter": parameter, "allowed": allowed},
    )


def _check_scale(factor: object) -> float:
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not math.isfinite(factor)
        or not 0 < factor <= MAX_SCALE_FACTOR
    ):
        raise _invalid("scale_factor", factor, f"a number in (0, {MAX_SCALE_FACTOR:g}]")
    return float(factor)


def _apply_scale(data: dict[str, Any], factor: float) -> list[str]:
    # cpu and memory scale with the factor; storage does not (data size is not a function of load).
    changes = []
    for res in data.get("resources", []):
        specs = res.get("specs", {})
        if "cpu" in specs:
            cores = max(0.001, round(float(specs["cpu"]) * factor, 3))
            changes.append(f"{res['name']}: cpu {format_cpu(float(specs['cpu']))} -> {format_cpu(cores)}")
            specs["cpu"] = cores
        if "memory" in specs:
            mib = max(1, round(int(specs["memory"]) * factor))
            changes.append(f"{res['name']}: memory {format_mib(int(specs['memory']))} -> {format_mib(mib)}")
            specs["memory"] = mib
    return changes


def _apply_parameters(data: dict[str, Any], params: Mapping[str, Any]) -> list[str]:
    changes: list[str] = []
    scalable = [r for r in data.get("resources", []) if r["type"] in SCALABLE_TYPES]
    if "instance_count" in params:
        count = params["instance_count"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
            raise _invalid("instance_count", count, PARAMETERS["instance_count"])
        for res in scalable:
            specs = res.setdefault("specs", {})
            specs["replicas"] = count
            if "autoscaling" in specs:
                auto = specs["autoscaling"]
                auto["min"] = min(auto["min"], count)
                auto["max"] = max(auto["max"], count)
            changes.append(f"{res['name']}: replicas -> {count}")
    sizes: tuple[tuple[str, str, Callable[[Any], float], float, Callable[[Any], str]], ...] = (
        ("cpu_per_instance", "cpu", parse_cpu, 1024.0, format_cpu),
        ("memory_per_instance", "memory", lambda v: parse_size_mib(v, "memory"), 16 * 1024 * 1024, format_mib),
    )
    for param, key, parse, ceiling, show in sizes:
        if param not in params:
            continue
        raw = params[param]
        try:
            value = parse(raw)
        except ValueError:
            raise _invalid(param, raw, PARAMETERS[param]) from None
        if value > ceiling or (key == "memory" and value < MIN_MEMORY_MIB):
            raise _invalid(param, raw, PARAMETERS[param])
        for res in scalable:
            res.setdefault("specs", {})[key] = value
            changes.append(f"{res['name']}: {key} -> {show(value)}")
    if "environment" in params:
        raw = params["environment"]
        env = normalise_environment(raw) if isinstance(raw, str) else raw
        if env not in {e.value for e in Environment}:
            raise _invalid("environment", raw, PARAMETERS["environment"])
        data.setdefault("metadata", {})["environment"] = env
        changes.append(f"environment -> {env}")
    return changes
