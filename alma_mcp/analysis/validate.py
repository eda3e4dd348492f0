"""validate_blueprint: every problem of a blueprint, in layers, each with a code and a JSON pointer.

Layers (after kubeconform and ``terraform validate``): parse (size, depth, aliases, syntax) ->
schema (the pydantic model: names, quantities, ports, enums, unknown fields) -> references
(duplicates, unknown dependencies, backends, networks) -> cycles -> field rules that span
resources (overlapping subnets) -> provider fit -> sanity warnings. Layers after the schema also run
when the schema fails, on a lenient view of the raw data, so one pass reports everything it can.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from alma_mcp.blueprint.graph import (
    Node,
    cycle_issues,
    nodes_from_blueprint,
    nodes_from_data,
    reference_issues,
)
from alma_mcp.blueprint.loader import DEFAULT_LIMITS, Limits, issues_from_validation, parse_document
from alma_mcp.blueprint.model import Blueprint, Provider, ResourceType
from alma_mcp.errors import BlueprintError, BlueprintTooManyResources, Issue
from alma_mcp.gcpause import without_gc

MAX_REPORTED: Final = 200
"""Output budget: at most this many errors and this many warnings are listed; the rest are counted."""

_ALL_TYPES = frozenset(ResourceType)
PROVIDER_TYPES: Final[Mapping[Provider, frozenset[ResourceType]]] = {
    Provider.SIMULATION: _ALL_TYPES,
    # Containers engines cannot run a VM; Proxmox runs VMs and LXC guests, not OCI containers.
    Provider.DOCKER: _ALL_TYPES - {ResourceType.COMPUTE},
    Provider.KUBERNETES: _ALL_TYPES - {ResourceType.COMPUTE},
    Provider.PROXMOX: _ALL_TYPES - {ResourceType.CONTAINER},
}
_IMAGE_PROVIDERS = frozenset({Provider.DOCKER, Provider.KUBERNETES})
# Containers are an error without an image (see _missing_images); these other types get a warning.
_RUNS_AN_IMAGE = frozenset({ResourceType.SERVICE, ResourceType.DATABASE, ResourceType.CACHE, ResourceType.QUEUE})


class ValidationStats(BaseModel):
    resources: int
    dependencies: int
    by_type: dict[str, int]
    by_provider: dict[str, int]


class ValidationReport(BaseModel):
    """The outcome of validate_blueprint."""

    valid: bool
    strict: bool
    summary: str
    errors: list[Issue]
    warnings: list[Issue]
    errors_omitted: int = 0
    warnings_omitted: int = 0
    stats: ValidationStats | None = None


@without_gc
def validate(
    source: str | Mapping[str, Any], *, strict: bool = False, limits: Limits = DEFAULT_LIMITS
) -> ValidationReport:
    """Validate a blueprint given as YAML/JSON text or plain data; never raises for bad input."""
    try:
        data = parse_document(source, limits) if isinstance(source, str) else source
    except BlueprintError as err:
        return _report([Issue(code=err.code, path="", message=err.message)], [], strict, None)
    if not isinstance(data, Mapping):
        kind = "an empty document" if data is None else f"a {type(data).__name__}"
        issue = Issue(code="blueprint.parse_error", path="", message=f"a blueprint must be a mapping, not {kind}")
        return _report([issue], [], strict, None)
    resources = data.get("resources")
    if isinstance(resources, list) and len(resources) > limits.max_resources:
        message = (
            f"blueprint declares {len(resources)} resources; the limit is {limits.max_resources} (ALMA_MAX_RESOURCES)"
        )
        return _report(
            [Issue(code=BlueprintTooManyResources.code, path="/resources", message=message)], [], strict, None
        )

    errors: list[Issue] = []
    warnings: list[Issue] = []
    blueprint: Blueprint | None = None
    try:
        blueprint = Blueprint.model_validate(data)
    except ValidationError as exc:
        errors.extend(issues_from_validation(exc, Blueprint, data))
    nodes = nodes_from_blueprint(blueprint) if blueprint is not None else nodes_from_data(data)
    errors.extend(reference_issues(nodes))
    errors.extend(cycle_issues(nodes))
    errors.extend(_provider_fit(nodes))
    if blueprint is not None:
        errors.extend(_subnet_overlaps(blueprint))
        errors.extend(_missing_images(blueprint))
        warnings.extend(_sanity_warnings(blueprint, nodes))
    stats = _stats(blueprint) if blueprint is not None else None
    return _report(errors, warnings, strict, stats)


def _report(
    errors: list[Issue], warnings: list[Issue], strict: bool, stats: ValidationStats | None
) -> ValidationReport:
    valid = not errors and not (strict and warnings)
    if valid:
        summary = "valid"
        if stats is not None:
            summary += f": {stats.resources} resources, {stats.dependencies} dependencies"
        if warnings:
            summary += f"; {len(warnings)} warning{'s' * (len(warnings) != 1)}"
    else:
        first = (errors or warnings)[0]
        summary = (
            f"invalid: {len(errors)} error{'s' * (len(errors) != 1)}, "
            f"{len(warnings)} warning{'s' * (len(warnings) != 1)}"
            f"{' (strict: warnings count as errors)' if strict and warnings else ''}; "
            f"first: [{first.code}] {first.message} at {first.path or '/'}"
        )
    return ValidationReport(
        valid=valid,
        strict=strict,
        summary=summary,
        errors=errors[:MAX_REPORTED],
        warnings=warnings[:MAX_REPORTED],
        errors_omitted=max(0, len(errors) - MAX_REPORTED),
        warnings_omitted=max(0, len(warnings) - MAX_REPORTED),
        stats=stats,
    )


def _provider_fit(nodes: Sequence[Node]) -> list[Issue]:
    issues = []
    for node in nodes:
        try:
            provider, rtype = Provider(node.provider or ""), ResourceType(node.type or "")
        except ValueError:
            continue  # the schema layer reports the unknown value
        if rtype not in PROVIDER_TYPES[provider]:
            hosts = sorted(p.value for p, types in PROVIDER_TYPES.items() if rtype in types)
            issues.append(
                Issue(
                    code="blueprint.provider_mismatch",
                    path=f"/resources/{node.index}/type",
                    message=f"provider '{provider.value}' cannot host a '{rtype.value}' resource "
                    f"('{node.name}'); use one of: {', '.join(hosts)}",
                )
            )
    return issues


def _missing_images(blueprint: Blueprint) -> list[Issue]:
    # A container has nothing to run without an image; other types on container engines get a warning
    # from the sanity layer instead, because an engine may pick a default image for a known kind.
    return [
        Issue(
            code="blueprint.missing_image",
            path=f"/resources/{i}/specs/image",
            message=f"container '{r.name}' needs specs.image (an image with a tag, e.g. nginx:1.27)",
        )
        for i, r in enumerate(blueprint.resources)
        if r.type is ResourceType.CONTAINER and not r.specs.image
    ]


def _subnet_overlaps(blueprint: Blueprint) -> list[Issue]:
    # Sorting by network address makes overlap a neighbour relation: O(n log n), not all pairs.
    subnets = []
    for i, r in enumerate(blueprint.resources):
        if r.specs.cidr is not None:
            net = ipaddress.ip_network(r.specs.cidr)
            subnets.append((net.version, int(net.network_address), int(net.broadcast_address), i, r.name, net))
    subnets.sort()
    issues = []
    widest: tuple[int, int, int, str, Any] | None = None  # (version, end, index, name, network) reaching furthest
    for version, start, end, i, name, net in subnets:
        if widest is not None and widest[0] == version and start <= widest[1]:
            issues.append(
                Issue(
                    code="blueprint.subnet_overlap",
                    path=f"/resources/{i}/specs/cidr",
                    message=f"subnet {net} of '{name}' overlaps {widest[4]} of '{widest[3]}'",
                )
            )
        if widest is None or widest[0] != version or end > widest[1]:
            widest = (version, end, i, name, net)
    return issues


def _sanity_warnings(blueprint: Blueprint, nodes: Sequence[Node]) -> list[Issue]:
    warnings = []
    by_name = {r.name: r for r in blueprint.resources}
    for i, res in enumerate(blueprint.resources):
        specs = res.specs
        if res.type is ResourceType.LOAD_BALANCER and not specs.backends:
            warnings.append(
                Issue(
                    code="blueprint.lb_without_backends",
                    path=f"/resources/{i}/specs/backends",
                    message=f"load balancer '{res.name}' has no backends; list the resources it serves",
                )
            )
        for j, backend in enumerate(specs.backends):
            if backend in by_name and backend not in res.dependencies:
                warnings.append(
                    Issue(
                        code="blueprint.backend_not_dependency",
                        path=f"/resources/{i}/specs/backends/{j}",
                        message=f"'{res.name}' balances '{backend}' but does not depend on it, so it may be "
                        "created before its backend; add it to dependencies",
                    )
                )
        for j, dep in enumerate(res.dependencies):
            target = by_name.get(dep)
            if target is None or target.provider == res.provider:
                continue
            if target.type is ResourceType.NETWORK and target.name in specs.networks:
                continue  # joining a network is how resources on different providers meet
            if not set(specs.networks) & set(target.specs.networks):
                warnings.append(
                    Issue(
                        code="blueprint.cross_provider_dependency",
                        path=f"/resources/{i}/dependencies/{j}",
                        message=f"'{res.name}' ({res.provider.value}) depends on '{dep}' ({target.provider.value}) "
                        "with no network in common; add both to a shared network resource",
                    )
                )
        if res.provider in _IMAGE_PROVIDERS and res.type in _RUNS_AN_IMAGE and not specs.image:
            warnings.append(
                Issue(
                    code="blueprint.missing_image",
                    path=f"/resources/{i}/specs/image",
                    message=f"'{res.name}' runs on {res.provider.value} without specs.image; the engine "
                    "will need an image to run it",
                )
            )
        if specs.image is not None:
            warnings.extend(_image_warnings(i, res.name, specs.image))
        auto = specs.autoscaling
        if auto is not None and specs.replicas is not None and not auto.min <= specs.replicas <= auto.max:
            warnings.append(
                Issue(
                    code="blueprint.replicas_outside_autoscaling",
                    path=f"/resources/{i}/specs/replicas",
                    message=f"'{res.name}' starts with {specs.replicas} replicas, outside autoscaling "
                    f"{auto.min}..{auto.max}",
                )
            )
        duplicates = [p for p, n in Counter(specs.ports).items() if n > 1]
        if duplicates:
            warnings.append(
                Issue(
                    code="blueprint.duplicate_port",
                    path=f"/resources/{i}/specs/ports",
                    message=f"'{res.name}' lists port {duplicates[0]} more than once",
                )
            )
    return warnings


def _image_warnings(index: int, name: str, image: str) -> list[Issue]:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return []
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag is None or tag == "latest":
        return [
            Issue(
                code="blueprint.unpinned_image",
                path=f"/resources/{index}/specs/image",
                message=f"'{name}' uses image '{image}' without a fixed tag; pin a version or a digest "
                "so deploys are repeatable",
            )
        ]
    return []


def _stats(blueprint: Blueprint) -> ValidationStats:
    return ValidationStats(
        resources=len(blueprint.resources),
        dependencies=sum(len(r.dependencies) for r in blueprint.resources),
        by_type=dict(sorted(Counter(r.type.value for r in blueprint.resources).items())),
        by_provider=dict(sorted(Counter(r.provider.value for r in blueprint.resources).items())),
    )
