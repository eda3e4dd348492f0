"""validate_blueprint: every problem of a blueprint, in layers, each with a code and a JSON pointer.

Layers (after kubeconform and ``terraform validate``): parse (size, depth, aliases, syntax) ->
schema (the pydantic model: names, quantities, ports, enums, unknown fields) -> references
(duplicates, unknown dependencies, backends, networks) -> cycles -> field rules that span
resources (overlapping subnets) -> provider fit -> sanity warnings. Layers after the schema also run
when the schema fails, on a lenient view of the raw data, so one pass reports everything it can.
"""

import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from alma_mcp.blueprint.graph import Node, check_graph, nodes_from_blueprint, nodes_from_data
from alma_mcp.blueprint.loader import (
    DEFAULT_LIMITS,
    Limits,
    issues_from_validation,
    parse_document,
    validated_with_nodes,
)
from alma_mcp.blueprint.model import Blueprint, Provider, Resource, ResourceType
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
# (provider, type) -> the providers that could host that type instead, for every pair that does not fit.
_MISFITS: Final[Mapping[tuple[str | None, str | None], str]] = {
    (provider.value, rtype.value): ", ".join(sorted(p.value for p, types in PROVIDER_TYPES.items() if rtype in types))
    for provider in Provider
    for rtype in ResourceType
    if rtype not in PROVIDER_TYPES[provider]
}
_IMAGE_PROVIDERS = frozenset({Provider.DOCKER, Provider.KUBERNETES})
# Containers are an error without an image (see _resource_rules); these other types get a warning.
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
    found = validated_with_nodes(data)
    if found is not None:
        blueprint, nodes = found
    else:
        try:
            blueprint = Blueprint.model_validate(data)
        except ValidationError as exc:
            errors.extend(issues_from_validation(exc, Blueprint, data))
        nodes = nodes_from_blueprint(blueprint) if blueprint is not None else nodes_from_data(data)
    graph = check_graph(nodes)
    errors.extend(graph.references)
    errors.extend(graph.cycles)
    errors.extend(_provider_fit(nodes))
    stats = None
    if blueprint is not None:
        overlaps, missing_images, sanity = _resource_rules(blueprint, nodes)
        errors.extend(overlaps)
        errors.extend(missing_images)
        warnings.extend(sanity)
        stats = _stats(nodes)
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
        # Unknown values are not in the table: the schema layer reports them.
        hosts = _MISFITS.get((node.provider, node.type))
        if hosts is not None:
            issues.append(
                Issue(
                    code="blueprint.provider_mismatch",
                    path=f"/resources/{node.index}/type",
                    message=f"provider '{node.provider}' cannot host a '{node.type}' resource "
                    f"('{node.name}'); use one of: {hosts}",
                )
            )
    return issues


def _resource_rules(blueprint: Blueprint, nodes: Sequence[Node]) -> tuple[list[Issue], list[Issue], list[Issue]]:
    """Subnet overlaps and containers without an image (errors), and the sanity warnings, in that order.

    One pass over the resources for all three: on a large blueprint every pass over the models costs
    a trip to memory per resource. What a rule needs of another resource comes from its ``Node``.
    """
    subnets: list[tuple[int, int, int, int, str, Any]] = []
    missing_images: list[Issue] = []
    warnings: list[Issue] = []
    by_name = {node.name: node for node in nodes}  # a repeated name means its last resource
    for i, (res, node) in enumerate(zip(blueprint.resources, nodes, strict=True)):
        specs = res.specs
        image = specs.image
        if specs.cidr is not None:
            net = ipaddress.ip_network(specs.cidr)
            subnets.append((net.version, int(net.network_address), int(net.broadcast_address), i, res.name, net))
        if res.type is ResourceType.CONTAINER and not image:
            # A container has nothing to run without an image; other types on container engines get
            # a warning instead, because an engine may pick a default image for a known kind.
            missing_images.append(
                Issue(
                    code="blueprint.missing_image",
                    path=f"/resources/{i}/specs/image",
                    message=f"container '{res.name}' needs specs.image (an image with a tag, e.g. nginx:1.27)",
                )
            )
        _sanity_warnings(i, res, node, by_name, warnings)
    return _subnet_overlaps(subnets), missing_images, warnings


def _subnet_overlaps(subnets: list[tuple[int, int, int, int, str, Any]]) -> list[Issue]:
    # Sorting by network address makes overlap a neighbour relation: O(n log n), not all pairs.
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


def _sanity_warnings(i: int, res: Resource, node: Node, by_name: Mapping[str | None, Node], out: list[Issue]) -> None:
    specs = res.specs
    if res.type is ResourceType.LOAD_BALANCER and not specs.backends:
        out.append(
            Issue(
                code="blueprint.lb_without_backends",
                path=f"/resources/{i}/specs/backends",
                message=f"load balancer '{res.name}' has no backends; list the resources it serves",
            )
        )
    for j, backend in enumerate(node.backends):
        if backend in by_name and backend not in node.dependencies:
            out.append(
                Issue(
                    code="blueprint.backend_not_dependency",
                    path=f"/resources/{i}/specs/backends/{j}",
                    message=f"'{res.name}' balances '{backend}' but does not depend on it, so it may be "
                    "created before its backend; add it to dependencies",
                )
            )
    for j, dep in enumerate(node.dependencies):
        target = by_name.get(dep)
        if target is None or target.provider == node.provider:
            continue
        if target.type == ResourceType.NETWORK and target.name in node.networks:
            continue  # joining a network is how resources on different providers meet
        if not set(node.networks) & set(target.networks):
            out.append(
                Issue(
                    code="blueprint.cross_provider_dependency",
                    path=f"/resources/{i}/dependencies/{j}",
                    message=f"'{res.name}' ({node.provider}) depends on '{dep}' ({target.provider}) "
                    "with no network in common; add both to a shared network resource",
                )
            )
    if not specs.image and res.provider in _IMAGE_PROVIDERS and res.type in _RUNS_AN_IMAGE:
        out.append(
            Issue(
                code="blueprint.missing_image",
                path=f"/resources/{i}/specs/image",
                message=f"'{res.name}' runs on {node.provider} without specs.image; the engine "
                "will need an image to run it",
            )
        )
    if specs.image is not None:
        out.extend(_image_warnings(i, res.name, specs.image))
    auto = specs.autoscaling
    if auto is not None and specs.replicas is not None and not auto.min <= specs.replicas <= auto.max:
        out.append(
            Issue(
                code="blueprint.replicas_outside_autoscaling",
                path=f"/resources/{i}/specs/replicas",
                message=f"'{res.name}' starts with {specs.replicas} replicas, outside autoscaling "
                f"{auto.min}..{auto.max}",
            )
        )
    ports = specs.ports
    if len(ports) > 1 and len(set(ports)) < len(ports):  # a Counter per resource would cost more than the rule
        duplicates = [p for p, n in Counter(ports).items() if n > 1]
        out.append(
            Issue(
                code="blueprint.duplicate_port",
                path=f"/resources/{i}/specs/ports",
                message=f"'{res.name}' lists port {duplicates[0]} more than once",
            )
        )


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


def _stats(nodes: Sequence[Node]) -> ValidationStats:
    return ValidationStats(
        resources=len(nodes),
        dependencies=sum(len(node.dependencies) for node in nodes),
        # Nodes of a validated blueprint always have a type and a provider.
        by_type=dict(sorted(Counter(node.type or "" for node in nodes).items())),
        by_provider=dict(sorted(Counter(node.provider or "" for node in nodes).items())),
    )
