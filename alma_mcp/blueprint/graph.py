"""Reference integrity and the dependency graph of a blueprint, in linear time.

The checks run on ``Node`` views, which come from a validated ``Blueprint`` or, leniently, from raw
data that failed schema validation, so that a blueprint with a typo in one field still gets its
dangling references and cycles reported in the same pass. Edges point from a resource to what it
depends on. ``DependencyGraph`` holds the same edges on integer positions, which is what the hot paths
walk: one depth-first pass both finds every resource's wave and tells whether there is a cycle at all.
Only then are cycles named: strongly connected components (Tarjan, iterative so 10,000-resource chains
do not hit the recursion limit); each is reported once with one concrete path such as ``a -> b -> a``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from alma_mcp.blueprint.model import Blueprint, Resource
from alma_mcp.errors import BlueprintError, Issue

MAX_DEPENDENCIES = 1000
"""Most dependencies one resource may list (the model enforces it; the lenient view skips longer lists)."""


class Node(NamedTuple):
    """What the graph checks need of one resource, whether or not it passed schema validation.

    A named tuple rather than a frozen dataclass: as immutable, a fraction of the size, and several
    times quicker to build, which matters when there is one per resource of a large blueprint.
    """

    index: int  # type: ignore[assignment]  # the resource's position; it hides tuple.index, unused on a Node
    name: str | None
    type: str | None = None
    provider: str | None = None
    dependencies: tuple[str | None, ...] = ()
    backends: tuple[str | None, ...] = ()
    networks: tuple[str | None, ...] = ()


def node_of(index: int, r: Resource) -> Node:
    specs = r.specs
    return Node(
        index,
        r.name,
        r.type.value,
        r.provider.value,
        tuple(r.dependencies),
        tuple(specs.backends),
        tuple(specs.networks),
    )


def nodes_from_blueprint(blueprint: Blueprint) -> list[Node]:
    return [node_of(i, r) for i, r in enumerate(blueprint.resources)]


def _strings(value: Any) -> tuple[str | None, ...]:
    # An over-long list is already a schema error; checking its items would only repeat it.
    if not isinstance(value, list) or len(value) > MAX_DEPENDENCIES:
        return ()
    return tuple(v if isinstance(v, str) else None for v in value)


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def nodes_from_data(data: Mapping[str, Any]) -> list[Node]:
    """A best-effort view of raw resources: anything malformed is left out (the schema reports it)."""
    resources = data.get("resources")
    if not isinstance(resources, list):
        return []
    nodes = []
    for i, raw in enumerate(resources):
        if not isinstance(raw, Mapping):
            continue
        specs = raw.get("specs")
        specs = specs if isinstance(specs, Mapping) else {}
        nodes.append(
            Node(
                index=i,
                name=_string(raw.get("name")),
                type=_string(raw.get("type")),
                provider=_string(raw.get("provider")),
                dependencies=_strings(raw.get("dependencies")),
                backends=_strings(specs.get("backends")),
                networks=_strings(specs.get("networks")),
            )
        )
    return nodes


def reference_issues(nodes: Sequence[Node]) -> list[Issue]:
    """Duplicate names, unknown or self dependencies, and dangling backend/network references."""
    issues: list[Issue] = []
    first_index: dict[str, int] = {}
    for node in nodes:
        if node.name is None:
            continue
        if node.name in first_index:
            issues.append(
                Issue(
                    code="blueprint.duplicate_name",
                    path=f"/resources/{node.index}/name",
                    message=f"resource name '{node.name}' is already used by /resources/{first_index[node.name]}",
                )
            )
        else:
            first_index[node.name] = node.index
    for node in nodes:
        seen: set[str] = set()
        for j, dep in enumerate(node.dependencies):
            if dep is None:
                continue
            path = f"/resources/{node.index}/dependencies/{j}"
            if dep == node.name:
                issues.append(Issue(code="blueprint.self_dependency", path=path, message=f"'{dep}' depends on itself"))
            elif dep not in first_index:
                issues.append(
                    Issue(
                        code="blueprint.unknown_dependency",
                        path=path,
                        message=f"resource '{node.name}' depends on unknown '{dep}'",
                    )
                )
            elif dep in seen:
                issues.append(
                    Issue(
                        code="blueprint.duplicate_dependency",
                        path=path,
                        message=f"resource '{node.name}' lists dependency '{dep}' twice",
                    )
                )
            seen.add(dep)
        for field, refs in (("backends", node.backends), ("networks", node.networks)):
            for j, ref in enumerate(refs):
                if ref is not None and ref not in first_index:
                    issues.append(
                        Issue(
                            code="blueprint.unknown_reference",
                            path=f"/resources/{node.index}/specs/{field}/{j}",
                            message=f"resource '{node.name}' names unknown {field[:-1]} '{ref}'",
                        )
                    )
    return issues


def adjacency(nodes: Sequence[Node]) -> dict[str, list[str]]:
    """Resource name -> names it depends on (known, distinct, not itself), in declaration order."""
    names = {n.name for n in nodes if n.name is not None}
    graph: dict[str, list[str]] = {}
    for node in nodes:
        if node.name is None or node.name in graph:
            continue
        graph[node.name] = list(
            dict.fromkeys(d for d in node.dependencies if d is not None and d in names and d != node.name)
        )
    return graph


class DependencyGraph(NamedTuple):
    """``adjacency`` on integer positions: resource ``i`` is ``names[i]`` and depends on ``needs[i]``.

    Positions and lists of small integers are what the hot paths walk (waves, critical paths): cheaper
    to hash, compare and keep in cache than names, and each list is built once.
    """

    names: list[str]
    """Distinct resource names in declaration order (a duplicate's later copies are left out)."""
    needs: list[list[int]]
    """Per position: the positions of its known, distinct dependencies, not itself, in declaration order."""
    resolved: bool
    """Every resource is named, uniquely, and every reference resolves, so ``reference_issues`` finds
    nothing (when false it usually finds something, but it is the judge)."""

    @classmethod
    def from_nodes(cls, nodes: Sequence[Node]) -> DependencyGraph:
        position: dict[str | None, int] = {}
        names: list[str] = []
        firsts: list[Node] = []
        for node in nodes:
            name = node.name
            if name is not None and name not in position:
                position[name] = len(names)
                names.append(name)
                firsts.append(node)
        # With a nameless or duplicate resource, reference_issues has something to say (or to check).
        resolved = len(firsts) == len(nodes)
        needs: list[list[int]] = []
        find, known = position.get, position.__contains__
        for i, node in enumerate(firsts):
            deps = node.dependencies
            targets = []
            for dep in deps:
                j = find(dep)
                if j is not None and j != i:
                    targets.append(j)
            # A plain loop and a set only to detect repeats: this runs once per resource.
            if len(targets) > 1 and len(set(targets)) < len(targets):
                targets = list(dict.fromkeys(targets))
            needs.append(targets)
            # Fewer targets than listed names: an unknown, a self or a repeated dependency.
            if resolved and (
                len(targets) != len(deps)
                or (node.backends and not all(map(known, node.backends)))
                or (node.networks and not all(map(known, node.networks)))
            ):
                resolved = False
        return cls(names, needs, resolved)

    def levels(self) -> list[int] | None:
        """Wave per position (1 + the deepest wave among its needs), or None if there is a cycle.

        One iterative depth-first pass: a position is settled once everything it needs is, and reaching
        a position whose needs are still being settled closes a cycle. O(V + E), no recursion.
        """
        needs = self.needs
        level = [0] * len(needs)  # 0: not reached; -1: open, its needs are being settled
        for root, root_needs in enumerate(needs):
            if level[root]:
                continue
            # Declarations usually come after what they depend on, so most positions settle at once.
            deepest = 0
            for dep in root_needs:
                if level[dep] <= 0:
                    break
                deepest = max(deepest, level[dep])
            else:
                level[root] = deepest + 1
                continue
            stack = [root]
            while stack:
                node = stack[-1]
                if level[node] == 0:
                    level[node] = -1
                    for dep in needs[node]:
                        if level[dep] == 0:
                            stack.append(dep)
                        elif level[dep] < 0:
                            return None
                    continue
                stack.pop()
                if level[node] < 0:  # a second copy of a settled position is only popped
                    level[node] = 1 + max((level[dep] for dep in needs[node]), default=0)
        return level


def strongly_connected_components(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion; components in completion order (dependencies first)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_i = work.pop()
            if child_i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = graph[node]
            descended = False
            while child_i < len(children):
                child = children[child_i]
                child_i += 1
                if child not in index:
                    work.append((node, child_i))
                    work.append((child, 0))
                    descended = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if descended:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycle_through(start: str, members: set[str], graph: Mapping[str, Sequence[str]]) -> list[str]:
    # Shortest path from start back to start inside one component (BFS): the clearest cycle to show.
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph[node]:
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                path.reverse()
                return [*path, start]
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return [start, start]  # pragma: no cover - a component of size > 1 always has a cycle


def cycle_issues(nodes: Sequence[Node]) -> list[Issue]:
    """One ``blueprint.cycle`` issue per dependency cycle, with the cycle path in the message."""
    if DependencyGraph.from_nodes(nodes).levels() is not None:
        return []
    return _named_cycles(nodes)


def _named_cycles(nodes: Sequence[Node]) -> list[Issue]:
    graph = adjacency(nodes)
    position: dict[str, int] = {}
    for node in nodes:
        if node.name is not None:
            position.setdefault(node.name, node.index)
    found = []
    for component in strongly_connected_components(graph):
        if len(component) < 2:
            continue
        start = min(component, key=lambda n: position[n])
        cycle = _cycle_through(start, set(component), graph)
        found.append(
            Issue(
                code="blueprint.cycle",
                path=f"/resources/{position[start]}/dependencies",
                message=f"dependency cycle: {' -> '.join(cycle)}",
            )
        )
    return sorted(found, key=lambda issue: int(issue.path.split("/")[2]))


class GraphCheck(NamedTuple):
    """The graph of a set of nodes with its waves and its problems, from one pass over the nodes."""

    graph: DependencyGraph
    levels: list[int] | None
    """``graph.levels()``: None when there is a cycle."""
    references: list[Issue]
    """``reference_issues(nodes)``."""
    cycles: list[Issue]
    """``cycle_issues(nodes)``."""


def check_graph(nodes: Sequence[Node]) -> GraphCheck:
    """``reference_issues`` and ``cycle_issues`` together, with the graph and waves they are read from.

    Both issue lists are built only when the integer graph shows they are not empty, so a clean
    blueprint costs one pass over its nodes and one over its edges.
    """
    graph = DependencyGraph.from_nodes(nodes)
    levels = graph.levels()
    references = [] if graph.resolved else reference_issues(nodes)
    return GraphCheck(graph, levels, references, [] if levels is not None else _named_cycles(nodes))


def check_integrity(blueprint: Blueprint) -> None:
    """Raise ``BlueprintError`` listing every reference and cycle problem, if there is any."""
    check = check_graph(nodes_from_blueprint(blueprint))
    issues = check.references + check.cycles
    if issues:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise BlueprintError(f"{issues[0].message} at {issues[0].path}{more}", issues=issues)
