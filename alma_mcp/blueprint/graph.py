"""Reference integrity and the dependency graph of a blueprint, in linear time.

Edges point from a resource to what it depends on. Cycles are found as strongly connected
components (Tarjan, iterative so that 10,000-resource chains do not hit the recursion limit); each
component is reported once with one concrete cycle path such as ``a -> b -> c -> a``.
"""

from __future__ import annotations

from collections import deque

from alma_mcp.blueprint.model import Blueprint
from alma_mcp.errors import BlueprintError, Issue


def reference_issues(blueprint: Blueprint) -> list[Issue]:
    """Duplicate names, unknown or self dependencies, and dangling backend/network references."""
    issues: list[Issue] = []
    first_index: dict[str, int] = {}
    for i, res in enumerate(blueprint.resources):
        if res.name in first_index:
            issues.append(
                Issue(
                    code="blueprint.duplicate_name",
                    path=f"/resources/{i}/name",
                    message=f"resource name '{res.name}' is already used by /resources/{first_index[res.name]}",
                )
            )
        else:
            first_index[res.name] = i
    for i, res in enumerate(blueprint.resources):
        seen: set[str] = set()
        for j, dep in enumerate(res.dependencies):
            path = f"/resources/{i}/dependencies/{j}"
            if dep == res.name:
                issues.append(Issue(code="blueprint.self_dependency", path=path, message=f"'{dep}' depends on itself"))
            elif dep not in first_index:
                issues.append(
                    Issue(
                        code="blueprint.unknown_dependency",
                        path=path,
                        message=f"resource '{res.name}' depends on unknown '{dep}'",
                    )
                )
            elif dep in seen:
                issues.append(
                    Issue(
                        code="blueprint.duplicate_dependency",
                        path=path,
                        message=f"resource '{res.name}' lists dependency '{dep}' twice",
                    )
                )
            seen.add(dep)
        for field in ("backends", "networks"):
            for j, ref in enumerate(getattr(res.specs, field)):
                if ref not in first_index:
                    issues.append(
                        Issue(
                            code="blueprint.unknown_reference",
                            path=f"/resources/{i}/specs/{field}/{j}",
                            message=f"resource '{res.name}' names unknown {field[:-1]} '{ref}'",
                        )
                    )
    return issues


def adjacency(blueprint: Blueprint) -> dict[str, list[str]]:
    """Resource name -> names it depends on (known, distinct, not itself), in declaration order."""
    names = {r.name for r in blueprint.resources}
    graph: dict[str, list[str]] = {}
    for res in blueprint.resources:
        if res.name in graph:
            continue
        graph[res.name] = list(dict.fromkeys(d for d in res.dependencies if d in names and d != res.name))
    return graph


def strongly_connected_components(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion; components in discovery order."""
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


def _cycle_through(start: str, members: set[str], graph: dict[str, list[str]]) -> list[str]:
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


def cycle_issues(blueprint: Blueprint) -> list[Issue]:
    """One ``blueprint.cycle`` issue per dependency cycle, with the cycle path in the message."""
    graph = adjacency(blueprint)
    position = {r.name: i for i, r in reversed(list(enumerate(blueprint.resources)))}
    issues = []
    for component in strongly_connected_components(graph):
        if len(component) < 2:
            continue
        members = set(component)
        start = min(component, key=lambda n: position[n])
        cycle = _cycle_through(start, members, graph)
        issues.append(
            Issue(
                code="blueprint.cycle",
                path=f"/resources/{position[start]}/dependencies",
                message=f"dependency cycle: {' -> '.join(cycle)}",
            )
        )
    return issues


def check_integrity(blueprint: Blueprint) -> None:
    """Raise ``BlueprintError`` listing every reference and cycle problem, if there is any."""
    issues = reference_issues(blueprint) + cycle_issues(blueprint)
    if issues:
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise BlueprintError(f"{issues[0].message} at {issues[0].path}{more}", issues=issues)
