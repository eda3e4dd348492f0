"""Reference integrity and cycles, in linear time."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alma_mcp.analysis.plan import dependency_levels
from alma_mcp.blueprint.graph import (
    Node,
    adjacency,
    check_graph,
    check_integrity,
    cycle_issues,
    nodes_from_blueprint,
    nodes_from_data,
    reference_issues,
    strongly_connected_components,
)
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import BlueprintError


def bp(*resources: dict[str, Any]) -> Blueprint:
    full = [{"type": "compute", "provider": "simulation", **r} for r in resources]
    return load_blueprint({"name": "g", "resources": full})


def test_a_clean_blueprint_has_no_issues() -> None:
    check_integrity(bp({"name": "db"}, {"name": "web", "dependencies": ["db"]}))


def test_reference_problems_are_each_reported_at_their_pointer() -> None:
    blueprint = bp(
        {"name": "a", "dependencies": ["a", "ghost", "b", "b"]},
        {"name": "b"},
        {"name": "b"},
        {"name": "lb", "type": "load_balancer", "specs": {"backends": ["nope"], "networks": ["net"]}},
    )
    assert [(i.code, i.path) for i in reference_issues(nodes_from_blueprint(blueprint))] == [
        ("blueprint.duplicate_name", "/resources/2/name"),
        ("blueprint.self_dependency", "/resources/0/dependencies/0"),
        ("blueprint.unknown_dependency", "/resources/0/dependencies/1"),
        ("blueprint.duplicate_dependency", "/resources/0/dependencies/3"),
        ("blueprint.unknown_reference", "/resources/3/specs/backends/0"),
        ("blueprint.unknown_reference", "/resources/3/specs/networks/0"),
    ]


def test_each_cycle_is_reported_once_with_its_path() -> None:
    blueprint = bp(
        {"name": "a", "dependencies": ["b"]},
        {"name": "b", "dependencies": ["c"]},
        {"name": "c", "dependencies": ["a"]},
        {"name": "x", "dependencies": ["y"]},
        {"name": "y", "dependencies": ["x"]},
        {"name": "z", "dependencies": ["a"]},
    )
    issues = cycle_issues(nodes_from_blueprint(blueprint))
    assert [(i.code, i.path, i.message) for i in issues] == [
        ("blueprint.cycle", "/resources/0/dependencies", "dependency cycle: a -> b -> c -> a"),
        ("blueprint.cycle", "/resources/3/dependencies", "dependency cycle: x -> y -> x"),
    ]
    with pytest.raises(BlueprintError) as info:
        check_integrity(blueprint)
    assert info.value.message == "dependency cycle: a -> b -> c -> a at /resources/0/dependencies (and 1 more)"


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    n = 20_000
    graph = {f"r{i}": [f"r{i + 1}"] if i + 1 < n else [] for i in range(n)}
    components = strongly_connected_components(graph)
    assert len(components) == n
    graph["r19999"] = ["r0"]
    assert [len(c) for c in strongly_connected_components(graph)] == [n]


def test_raw_data_that_fails_the_schema_still_gets_its_references_checked() -> None:
    data = {
        "resources": [
            {"name": "a", "type": "bogus", "dependencies": ["b", 7, "ghost"]},
            "not a mapping",
            {"name": "b", "dependencies": ["a"], "specs": {"backends": ["nope"]}},
        ]
    }
    nodes = nodes_from_data(data)
    assert [(i.code, i.path) for i in reference_issues(nodes)] == [
        ("blueprint.unknown_dependency", "/resources/0/dependencies/2"),
        ("blueprint.unknown_reference", "/resources/2/specs/backends/0"),
    ]
    assert [i.message for i in cycle_issues(nodes)] == ["dependency cycle: a -> b -> a"]


@st.composite
def node_lists(draw: st.DrawFn) -> list[Node]:
    """Raw resources, half of them clean (distinct names, known references), the others with every kind
    of reference problem: repeats, unknowns, self-edges and gaps; cycles in both."""
    names = [f"n{i}" for i in range(draw(st.integers(min_value=0, max_value=12)))]
    if draw(st.booleans()):
        clean = []
        for i, own in enumerate(draw(st.permutations(names))):
            others = [n for n in names if n != own]
            deps = draw(st.lists(st.sampled_from(others), max_size=3, unique=True)) if others else []
            named = draw(st.lists(st.sampled_from(names), max_size=2))
            clean.append(
                Node(index=i, name=own, dependencies=tuple(deps), backends=tuple(named[:1]), networks=tuple(named[1:]))
            )
        return clean
    refs = st.sampled_from([*names, "ghost"]) if names else st.just("ghost")
    nodes = []
    for i in range(draw(st.integers(min_value=0, max_value=len(names) + 2))):
        name = draw(st.one_of(st.sampled_from(names), st.none())) if names else None
        nodes.append(
            Node(
                index=i,
                name=name,
                dependencies=tuple(draw(st.lists(st.one_of(refs, st.none()), max_size=4))),
                backends=tuple(draw(st.lists(refs, max_size=2))),
                networks=tuple(draw(st.lists(refs, max_size=2))),
            )
        )
    return nodes


@settings(derandomize=True, max_examples=300, deadline=None)
@given(node_lists())
def test_the_integer_graph_agrees_with_the_named_checks(nodes: list[Node]) -> None:
    check = check_graph(nodes)
    edges = adjacency(nodes)
    assert check.graph.names == list(edges)
    assert [[check.graph.names[j] for j in needs] for needs in check.graph.needs] == list(edges.values())
    assert check.references == reference_issues(nodes)
    if check.graph.resolved:
        assert check.references == []
    cyclic = any(len(c) > 1 for c in strongly_connected_components(edges))
    assert (check.levels is None) == cyclic == bool(check.cycles)
    assert check.cycles == cycle_issues(nodes)
    if check.levels is not None:
        assert dict(zip(check.graph.names, check.levels, strict=True)) == dependency_levels(list(edges), edges)
