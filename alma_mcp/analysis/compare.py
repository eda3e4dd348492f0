"""Semantic diff of two blueprints: what happens to each resource, to capacity, and an RFC 6902 patch.

Resources are matched by name (terraform plan's address), then unmatched same-type pairs that look
alike are reported as renames. Everything is compared on normalised data, so ``4GB`` equals
``4096MB``, key order is irrelevant, and a field written out at its default equals an unset one.
``None`` and a missing key mean the same thing. Dependencies, ``specs.ports`` and ``specs.networks``
are sets (order-insensitive); every other list is compared by position.

Pure and deterministic; near-linear in the number of resources. Unchanged resources are recognised
on the models without being dumped (dumping 10,000 resources costs more than comparing them), and
the cyclic garbage collector is paused meanwhile (``alma_mcp.gcpause``): its full passes over the
inputs would otherwise cost more than the comparison. The one pairwise step, rename detection,
runs over unmatched resources only and is capped per resource type.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from json.encoder import encode_basestring
from typing import Any, Final, Literal, NamedTuple, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from alma_mcp.blueprint.loader import DEFAULT_LIMITS, Limits, load_blueprint, pointer
from alma_mcp.blueprint.model import Blueprint, Resource, Specs
from alma_mcp.blueprint.quantities import format_mib
from alma_mcp.gcpause import without_gc

ResourceAction = Literal["create", "delete", "update", "replace", "no-op"]
FieldChangeKind = Literal["add", "remove", "modify", "replace"]

IMMUTABLE_PATHS: Final = frozenset({"/type", "/provider", "/specs/image", "/specs/template", "/specs/ostemplate"})
"""Fields whose change makes the provider destroy and recreate the resource."""

UNORDERED_SPECS: Final = frozenset({"ports", "networks"})
"""Spec lists that are sets: the same ports or networks in another order change nothing."""

RENAME_CANDIDATE_LIMIT: Final = 200
"""Above this many unmatched resources of one type on either side, renames are not searched."""

_RENAME_ROUNDS: Final = 3
_SPEC_DEFAULTS: Final[dict[str, Any]] = Specs().model_dump(mode="json")
_ACTIONS: Final[tuple[ResourceAction, ...]] = ("create", "delete", "update", "replace", "no-op")
_T = TypeVar("_T")
_SameFn = Callable[[Resource, Resource], bool]


class FieldChange(BaseModel):
    """One changed field inside a resource (or at the blueprint's top level)."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="JSON pointer inside the resource, e.g. /specs/memory.")
    kind: FieldChangeKind = Field(description="'replace' when the field is immutable or a volume shrinks.")
    before: Any = None
    after: Any = None


class ResourceChange(BaseModel):
    """What happens to one resource."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Name in b (in a for deletes).")
    action: ResourceAction
    type: str
    renamed_from: str | None = None
    changes: list[FieldChange] = Field(default_factory=list)
    replace_reasons: list[str] = Field(default_factory=list)


class Impact(BaseModel):
    """Capacity before and after, counting instances (replicas)."""

    resources_before: int
    resources_after: int
    resource_delta: int
    cpu_before: float
    cpu_after: float
    cpu_delta: float
    memory_mib_before: int
    memory_mib_after: int
    memory_mib_delta: int
    storage_mib_before: int
    storage_mib_after: int
    storage_mib_delta: int


class Comparison(BaseModel):
    """The semantic diff of blueprint a -> blueprint b."""

    identical: bool
    similarity: float = Field(description="0..1, 4 decimals; 1.0 exactly when semantically identical.")
    summary: dict[str, int]
    resources: list[ResourceChange]
    blueprint_changes: list[FieldChange]
    impact: Impact
    patch: list[dict[str, Any]] = Field(description="RFC 6902 operations turning a.to_data() into b.to_data().")
    notes: list[str]


class _Entry(NamedTuple):
    """One resource with its position and a key unique within its blueprint."""

    key: str
    pos: int
    res: Resource


def resource_footprint(res: Resource) -> tuple[float, int, int]:
    """(cpu cores, memory MiB, storage MiB) of a resource, counting instances; missing values count 0.

    Instances are ``specs.replicas``, else the autoscaling minimum, else 1.
    """
    specs = res.specs
    instances = specs.replicas or (specs.autoscaling.min if specs.autoscaling is not None else 1)
    cpu = round((specs.cpu or 0.0) * instances, 3)  # millicore precision, without float noise
    return cpu, (specs.memory or 0) * instances, (specs.storage or 0) * instances


@without_gc
def diff_resources(a: Blueprint, b: Blueprint, rename_threshold: float = 0.8) -> list[ResourceChange]:
    """Every resource of a and b with its action: b's order, then deletes in a's order.

    A ``rename_threshold`` above 1 turns rename detection off.
    """
    return _diff_resources(_entries(a)[0], _entries(b)[0], rename_threshold, [], _same)


@without_gc
def compare_sources(
    a: str | Mapping[str, Any], b: str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS
) -> Comparison:
    """compare_blueprints' work: load both blueprints (YAML/JSON text or data) and compare them.

    One bulk section: a collection between the loads and the comparison would walk every model of
    both blueprints just after they were built.

    Raises:
        The errors of ``load_blueprint``.
    """
    return compare_blueprints(load_blueprint(a, limits), load_blueprint(b, limits))


@without_gc
def compare_blueprints(a: Blueprint, b: Blueprint, rename_threshold: float = 0.8) -> Comparison:
    """The semantic diff of a -> b: per-resource actions, top-level changes, impact, similarity and patch."""
    (a_entries, a_counts), (b_entries, b_counts) = _entries(a), _entries(b)
    notes = [*_duplicate_notes("a", a_counts), *_duplicate_notes("b", b_counts)]
    same = _memoised(_same)  # the diff, the similarity and the patch all ask about the same pairs
    rows = _diff_resources(a_entries, b_entries, rename_threshold, notes, same)
    blueprint_changes: list[FieldChange] = []
    _diff_values("/name", a.name, b.name, blueprint_changes)
    _diff_values("/description", a.description, b.description, blueprint_changes)
    _diff_values("/metadata", a.metadata.model_dump(mode="json"), b.metadata.model_dump(mode="json"), blueprint_changes)

    summary: dict[str, int] = dict.fromkeys(_ACTIONS, 0)
    for row in rows:
        summary[row.action] += 1
    summary["rename"] = sum(row.renamed_from is not None for row in rows)
    identical = not blueprint_changes and all(row.action == "no-op" for row in rows)
    patch = _document_patch(a, b, same)
    if identical and patch:
        notes.append("no semantic change; the patch only restates the document (order, or defaults written out)")
    return Comparison(
        identical=identical,
        similarity=_similarity(a, a_entries, b, b_entries, identical, same),
        summary=summary,
        resources=rows,
        blueprint_changes=blueprint_changes,
        impact=_impact(a, b),
        patch=patch,
        notes=notes,
    )


# --- matching ---------------------------------------------------------------------------------


def _entries(bp: Blueprint) -> tuple[list[_Entry], dict[str, int]]:
    """The resources as entries, and how many resources bear each name."""
    seen: dict[str, int] = {}
    entries = []
    for pos, res in enumerate(bp.resources):
        name = res.name
        count = seen.get(name, 0)
        seen[name] = count + 1
        # '#' cannot occur in a DNS label, so a duplicate's key never collides with a real name.
        entries.append(_Entry(name if count == 0 else f"{name}#{count}", pos, res))
    return entries, seen


def _duplicate_notes(label: str, counts: dict[str, int]) -> list[str]:
    return [
        f"resource name '{name}' appears {n} times in {label}; copies are matched in order of appearance"
        for name, n in counts.items()
        if n > 1
    ]


def _diff_resources(
    a_entries: list[_Entry], b_entries: list[_Entry], threshold: float, notes: list[str], same: _SameFn
) -> list[ResourceChange]:
    a_by_key = {e.key: e for e in a_entries}
    b_keys = {e.key for e in b_entries}
    deleted = [e for e in a_entries if e.key not in b_keys]
    renames = _detect_renames(deleted, [e for e in b_entries if e.key not in a_by_key], threshold, notes)
    renamed_a = {e.pos for e in renames.values()}
    rows = []
    for entry in b_entries:
        res, matched = entry.res, a_by_key.get(entry.key)
        old = matched.res if matched is not None else renames[entry.pos].res if entry.pos in renames else None
        if old is None:
            rows.append(ResourceChange(name=res.name, action="create", type=res.type.value))
            continue
        changes: list[FieldChange] = []
        reasons: list[str] = []
        if old.name != res.name:
            changes.append(FieldChange(path="/name", kind="replace", before=old.name, after=res.name))
            reasons.append(f"renamed from {old.name}")
        changes.extend(_resource_changes(old, res, same))
        reasons.extend(_reason(c) for c in changes if c.kind == "replace" and c.path != "/name")
        rows.append(
            ResourceChange(
                name=res.name,
                action="replace" if reasons else "update" if changes else "no-op",
                type=res.type.value,
                renamed_from=old.name if old.name != res.name else None,
                changes=changes,
                replace_reasons=reasons,
            )
        )
    rows.extend(
        ResourceChange(name=e.res.name, action="delete", type=e.res.type.value)
        for e in deleted
        if e.pos not in renamed_a
    )
    return rows


def _detect_renames(
    deleted: list[_Entry], created: list[_Entry], threshold: float, notes: list[str]
) -> dict[int, _Entry]:
    """Greedy best-first pairing of deleted and created resources of one type: b position -> a entry.

    Scores map a's dependencies through the renames found so far, so a rename found in one round
    can reveal a dependent rename in the next (a bounded number of rounds).
    """
    buckets: dict[str, tuple[list[_Entry], list[_Entry]]] = {}
    for side, entries in enumerate((deleted, created)):
        for entry in entries:
            buckets.setdefault(entry.res.type.value, ([], []))[side].append(entry)
    for rtype in sorted(buckets):
        dels, cres = buckets[rtype]
        if threshold > 1 or not dels or not cres:
            del buckets[rtype]
        elif len(dels) > RENAME_CANDIDATE_LIMIT or len(cres) > RENAME_CANDIDATE_LIMIT:
            notes.append(
                f"rename detection skipped for type {rtype}: {len(dels)} unmatched resources in a and "
                f"{len(cres)} in b (limit {RENAME_CANDIDATE_LIMIT} per side); they are reported as deletes and creates"
            )
            del buckets[rtype]
    found: dict[int, _Entry] = {}
    new_names: dict[str, str] = {}
    used_a: set[int] = set()
    b_features = {e.pos: _resource_features(_normalised(e.res), {}) for _, cres in buckets.values() for e in cres}
    for _ in range(_RENAME_ROUNDS):
        scored: list[tuple[float, int, int, _Entry, _Entry]] = []
        for dels, cres in buckets.values():
            for old in (e for e in dels if e.pos not in used_a):
                a_feats = _resource_features(_normalised(old.res), new_names)
                for new in (e for e in cres if e.pos not in found):
                    b_feats = b_features[new.pos]
                    small, large = sorted((len(a_feats), len(b_feats)))
                    if small < threshold * large:  # Jaccard <= small/large: cannot reach the threshold
                        continue
                    score = len(a_feats & b_feats) / len(a_feats | b_feats)
                    if score >= threshold:
                        scored.append((-score, old.pos, new.pos, old, new))
        scored.sort(key=lambda s: s[:3])
        added: set[str] = set()
        for _score, _a_pos, _b_pos, old, new in scored:
            if old.pos not in used_a and new.pos not in found:
                found[new.pos] = old
                used_a.add(old.pos)
                new_names[old.res.name] = new.res.name
                added.add(old.res.name)
        # Another round helps only if a still-unmatched resource depends on a name just renamed.
        waiting = (e for dels, _ in buckets.values() for e in dels if e.pos not in used_a)
        if not any(added.intersection(e.res.dependencies) for e in waiting):
            break
    return found


# --- normal form and field changes ------------------------------------------------------------


def _written(res: Resource) -> dict[str, Any]:
    """The resource exactly as ``Blueprint.to_data()`` writes it."""
    return res.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _normalised(res: Resource) -> dict[str, Any]:
    """The resource with every default filled in, as plain JSON data."""
    return res.model_dump(mode="json")


def _same(before: Resource, after: Resource) -> bool:
    """Whether two resources write the same JSON (``to_data``), decided on the models without dumping.

    Model equality ignores which fields were set (that decides what ``to_data`` writes), so the
    sets are compared too; and Python's ``True == 1`` can only fool it in the free-form fields.
    """
    if before != after or not _same_fields_set(before, after) or not _same_fields_set(before.specs, after.specs):
        return False
    for key in _nested_specs():
        x, y = getattr(before.specs, key), getattr(after.specs, key)
        pairs = zip(x, y, strict=True) if isinstance(x, list) else [(x, y)] if x is not None else []
        if not all(_same_fields_set(i, j) for i, j in pairs):
            return False
    return _equal(before.metadata, after.metadata) and _equal(before.specs.options, after.specs.options)


def _memoised(same: _SameFn) -> _SameFn:
    """``same`` remembering its answers by object identity (the models outlive one comparison)."""
    memo: dict[tuple[int, int], bool] = {}

    def remembered(before: Resource, after: Resource) -> bool:
        key = (id(before), id(after))
        if key not in memo:
            memo[key] = same(before, after)
        return memo[key]

    return remembered


def _same_fields_set(before: BaseModel, after: BaseModel) -> bool:
    return before.model_fields_set == after.model_fields_set


@cache
def _nested_specs() -> tuple[str, ...]:
    """Spec fields holding models or lists of models (autoscaling, volumes, ...)."""
    return tuple(name for name, field in Specs.model_fields.items() if _holds_model(field.annotation))


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


def _resource_changes(old: Resource, new: Resource, same: _SameFn) -> list[FieldChange]:
    if same(old, new):
        return []
    before, after = _normalised(old), _normalised(new)
    out: list[FieldChange] = []
    for key in ("type", "provider", "specs"):
        _diff_values("/" + key, before[key], after[key], out)
    deps_before, deps_after = sorted(before["dependencies"]), sorted(after["dependencies"])
    if deps_before != deps_after:
        kind = _kind("/dependencies", deps_before, deps_after)
        out.append(FieldChange(path="/dependencies", kind=kind, before=deps_before, after=deps_after))
    _diff_values("/metadata", before["metadata"], after["metadata"], out)
    return out


def _diff_values(path: str, before: Any, after: Any, out: list[FieldChange]) -> None:
    """Append the changes from ``before`` to ``after`` at ``path``, recursing into dicts."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            _diff_values(_child(path, key), value, after.get(key), out)
        for key, value in after.items():
            if key not in before:
                _diff_values(_child(path, key), None, value, out)
        return
    if (
        path.startswith("/specs/")
        and path[7:] in UNORDERED_SPECS
        and isinstance(before, list)
        and isinstance(after, list)
    ):
        before, after = sorted(before), sorted(after)
    if not _equal(before, after):
        out.append(FieldChange(path=path, kind=_kind(path, before, after), before=before, after=after))


def _kind(path: str, before: Any, after: Any) -> FieldChangeKind:
    if path in IMMUTABLE_PATHS or _shrinks(path, before, after):
        return "replace"
    if before is None or before == []:
        return "add"
    if after is None or after == []:
        return "remove"
    return "modify"


def _shrinks(path: str, before: Any, after: Any) -> bool:
    return path == "/specs/storage" and isinstance(before, int) and isinstance(after, int) and after < before


def _reason(change: FieldChange) -> str:
    if _shrinks(change.path, change.before, change.after):
        return f"storage shrunk: {format_mib(change.before)} -> {format_mib(change.after)} (volumes cannot shrink)"
    field = change.path.rsplit("/", 1)[-1]
    return f"{field} changed: {_show(change.before)} -> {_show(change.after)}"


def _show(value: Any) -> str:
    return "unset" if value is None else str(value)


def _child(path: str, key: str) -> str:
    """``path`` extended by one key, escaped as ``loader.pointer`` does (~0, ~1)."""
    return path + pointer((key,)) if "~" in key or "/" in key else f"{path}/{key}"


def _equal(x: Any, y: Any) -> bool:
    """JSON equality: ``True`` is not ``1`` (Python says it is), ``1`` is ``1.0``, NaN equals NaN."""
    if x is y:
        return True
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(v, y[k]) for k, v in x.items())
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(map(_equal, x, y))
    if isinstance(x, bool) or isinstance(y, bool):
        return False  # equal bools were caught by the identity check: True and False are singletons
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return bool(x == y)


# --- similarity -------------------------------------------------------------------------------


def _similarity(
    a: Blueprint, a_entries: list[_Entry], b: Blueprint, b_entries: list[_Entry], identical: bool, same: _SameFn
) -> float:
    """Jaccard over the documents' ``path=value`` sets, resources keyed by name; 1.0 iff identical.

    Each resource's strings sit under its own key, so the sets of different resources are disjoint
    and the Jaccard sums per resource: an unchanged one adds its size to both counts without its
    strings being built. The sets hold exactly what the diff compares, so equal sets mean no
    change; the override and the cap keep "1.0 iff identical" true after rounding.
    """
    if identical:
        return 1.0
    top_a, top_b = _top_features(a), _top_features(b)
    inter, union = len(top_a & top_b), len(top_a | top_b)
    a_by_key = {e.key: e for e in a_entries}
    for entry in b_entries:
        old = a_by_key.pop(entry.key, None)
        if old is None:
            union += _feature_count(entry.res)
        elif same(old.res, entry.res):
            count = _feature_count(entry.res)
            inter, union = inter + count, union + count
        else:
            before, after = _document_features(old.res), _document_features(entry.res)
            inter, union = inter + len(before & after), union + len(before | after)
    union += sum(_feature_count(e.res) for e in a_by_key.values())
    return min(round(inter / union, 4), 0.9999)


def _top_features(bp: Blueprint) -> set[str]:
    out: set[str] = set()
    _flatten("/name", bp.name, out)
    _flatten("/description", bp.description, out)
    _flatten("/metadata", bp.metadata.model_dump(mode="json"), out)
    return out


def _document_features(res: Resource) -> set[str]:
    data = _normalised(res)
    out = _resource_features(data, {})
    _flatten("/metadata", data["metadata"], out)
    return out


def _resource_features(data: Mapping[str, Any], new_names: Mapping[str, str]) -> set[str]:
    """``path=value`` strings of type, provider, specs set away from their defaults, and dependencies."""
    out = {"/type=" + _scalar(data["type"]), "/provider=" + _scalar(data["provider"])}
    for key, value in _set_specs(data["specs"]):
        path = _child("/specs", key)
        if key in UNORDERED_SPECS:
            _add_members(path, value, out)
        else:
            _flatten(path, value, out)
    _add_members("/dependencies", [new_names.get(d, d) for d in data["dependencies"]], out)
    return out


def _set_specs(specs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    # Typed spec fields hold one JSON type each, so Python's == cannot confuse True with 1 here.
    return [(k, v) for k, v in specs.items() if v is not None and v != _SPEC_DEFAULTS[k]]


def _feature_count(res: Resource) -> int:
    """``len(_document_features(res))`` read off the model, without dumping it or building strings."""
    count = 2 + len(res.dependencies) + _leaf_count(res.metadata)
    for key, value in _set_specs(res.specs.__dict__):
        count += len(value) if key in UNORDERED_SPECS else _leaf_count(value)
    return count


def _leaf_count(value: Any) -> int:
    # Mirrors _flatten: None items are absent, and an empty container is a leaf of its own.
    if isinstance(value, BaseModel):
        value = value.__dict__
    if isinstance(value, dict):
        return sum(_leaf_count(v) for v in value.values() if v is not None) or 1
    if isinstance(value, list | tuple):
        return sum(map(_leaf_count, value)) or 1
    return 1


def _add_members(path: str, items: list[Any], out: set[str]) -> None:
    # A set member is one string whatever its position; repeats get a counter so multiplicity counts.
    seen: dict[str, int] = {}
    for item in items:
        text = _scalar(item)
        count = seen.get(text, 0)
        seen[text] = count + 1
        out.add(f"{path}[]={text}" + (f"*{count}" if count else ""))


def _flatten(path: str, value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        present = {k: v for k, v in value.items() if v is not None}  # None means absent
        if not present:
            out.add(path + "={}")
        for key, item in present.items():
            _flatten(_child(path, key), item, out)
    elif isinstance(value, list):
        if not value:
            out.add(path + "=[]")
        for index, item in enumerate(value):
            _flatten(f"{path}/{index}", item, out)
    else:
        out.add(f"{path}={_scalar(value)}")


def _scalar(value: Any) -> str:
    """The JSON text of a scalar (json.dumps is several times slower; this runs once per leaf)."""
    if isinstance(value, str):
        return str(encode_basestring(value))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2.0 and 2 are the same JSON number
    return repr(value)


# --- impact -----------------------------------------------------------------------------------


def _impact(a: Blueprint, b: Blueprint) -> Impact:
    cpu_a, mem_a, disk_a = _totals(a)
    cpu_b, mem_b, disk_b = _totals(b)
    return Impact(
        resources_before=len(a.resources),
        resources_after=len(b.resources),
        resource_delta=len(b.resources) - len(a.resources),
        cpu_before=cpu_a,
        cpu_after=cpu_b,
        cpu_delta=round(cpu_b - cpu_a, 3),
        memory_mib_before=mem_a,
        memory_mib_after=mem_b,
        memory_mib_delta=mem_b - mem_a,
        storage_mib_before=disk_a,
        storage_mib_after=disk_b,
        storage_mib_delta=disk_b - disk_a,
    )


def _totals(bp: Blueprint) -> tuple[float, int, int]:
    cpu, memory, storage = 0.0, 0, 0
    for res in bp.resources:
        c, m, s = resource_footprint(res)
        cpu, memory, storage = cpu + c, memory + m, storage + s
    return round(cpu, 3), memory, storage


# --- patch ------------------------------------------------------------------------------------


def _document_patch(a: Blueprint, b: Blueprint, same: _SameFn) -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``a.to_data()`` into ``b.to_data()``; only changed resources are dumped."""
    ops: list[dict[str, Any]] = []
    exclude = {"resources"}
    top_a = {"version": a.version, **a.model_dump(mode="json", exclude_unset=True, by_alias=True, exclude=exclude)}
    top_b = {"version": b.version, **b.model_dump(mode="json", exclude_unset=True, by_alias=True, exclude=exclude)}
    _patch("", top_a, top_b, ops)
    in_a, in_b = "resources" in a.model_fields_set, "resources" in b.model_fields_set
    if in_a and in_b:
        _patch_list("/resources", a.resources, b.resources, ops, same, _written, _resource_name)
    elif in_b:
        ops.append({"op": "add", "path": "/resources", "value": [_written(r) for r in b.resources]})
    elif in_a:
        ops.append({"op": "remove", "path": "/resources"})
    return ops


def _patch(path: str, before: Any, after: Any, ops: list[dict[str, Any]]) -> None:
    """Append operations turning ``before`` into ``after``; every index is valid when its op applies."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            if key in after:
                _patch(_child(path, key), value, after[key], ops)
            else:
                ops.append({"op": "remove", "path": _child(path, key)})
        ops.extend(
            {"op": "add", "path": _child(path, key), "value": value}
            for key, value in after.items()
            if key not in before
        )
    elif isinstance(before, list) and isinstance(after, list):
        _patch_list(path, before, after, ops, _equal, _as_is, _dict_name)
    elif not _equal(before, after):
        ops.append({"op": "replace", "path": path, "value": after})


def _patch_list(
    path: str,
    before: Sequence[_T],
    after: Sequence[_T],
    ops: list[dict[str, Any]],
    same: Callable[[_T, _T], bool],
    data: Callable[[_T], Any],
    name_of: Callable[[_T], str | None],
) -> None:
    """Append operations turning list ``before`` into ``after``.

    Items are aligned by name when every item has a distinct one and the names both sides share keep
    their order: the patch is then as long as the change (deleting the first of 10,000 resources is
    one op, not 10,000 shifted replaces). Otherwise: common prefix and suffix, then by position.
    ``same`` spots unchanged items; ``data`` gives an item's JSON (resources are dumped only here).
    """
    before_pos, after_pos = _positions(before, name_of), _positions(after, name_of)
    if before_pos is not None and after_pos is not None:
        kept = [n for n in before_pos if n in after_pos]
        if kept == [n for n in after_pos if n in before_pos]:
            gone = [i for i, n in enumerate(before_pos) if n not in after_pos]
            ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in reversed(gone))
            # The list now holds the kept items in order; walking b inserts the new ones in place.
            for index, (name, item) in enumerate(zip(after_pos, after, strict=True)):
                old = before_pos.get(name)
                if old is None:
                    ops.append({"op": "add", "path": f"{path}/{index}", "value": data(item)})
                elif not same(before[old], item):
                    _patch(f"{path}/{index}", data(before[old]), data(item), ops)
            return
    n, m = len(before), len(after)
    start = 0
    while start < min(n, m) and same(before[start], after[start]):
        start += 1
    tail = 0
    while tail < min(n, m) - start and same(before[n - 1 - tail], after[m - 1 - tail]):
        tail += 1
    # The middle is paired element-wise, which keeps every index stable; then the longer side's
    # rest is inserted in order, or removed from the end backwards.
    mid_before, mid_after = n - start - tail, m - start - tail
    for i in range(start, start + min(mid_before, mid_after)):
        if not same(before[i], after[i]):
            _patch(f"{path}/{i}", data(before[i]), data(after[i]), ops)
    ops.extend(
        {"op": "add", "path": f"{path}/{i}", "value": data(after[i])}
        for i in range(start + mid_before, start + mid_after)
    )
    ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in reversed(range(start + mid_after, start + mid_before)))


def _positions(items: Sequence[_T], name_of: Callable[[_T], str | None]) -> dict[str, int] | None:
    """Name -> position, in order, when every item has a distinct name; else None."""
    positions: dict[str, int] = {}
    for index, item in enumerate(items):
        name = name_of(item)
        if name is None or name in positions:
            return None
        positions[name] = index
    return positions


def _resource_name(res: Resource) -> str:
    return res.name


def _dict_name(item: Any) -> str | None:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else None


def _as_is(item: Any) -> Any:
    return item
