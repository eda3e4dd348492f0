"""compare_blueprints: planted changes classified exactly, impact, similarity, and a patch that always applies."""

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alma_mcp.analysis.compare import (
    Comparison,
    FieldChange,
    Impact,
    ResourceChange,
    compare_blueprints,
    diff_resources,
    resource_footprint,
)
from alma_mcp.blueprint.loader import load_blueprint
from alma_mcp.blueprint.model import Blueprint

Doc = dict[str, Any]

BASE: list[Doc] = [
    {
        "name": "db",
        "type": "database",
        "provider": "proxmox",
        "specs": {
            "kind": "postgresql",
            "cpu": 2,
            "memory": 2048,
            "storage": 10240,
            "ostemplate": "local:vztmpl/debian-12.tar.zst",
        },
    },
    {"name": "cache", "type": "cache", "provider": "docker", "specs": {"image": "redis:7", "memory": 256}},
    {
        "name": "app",
        "type": "container",
        "provider": "docker",
        "specs": {
            "image": "nginx:1.26",
            "ports": [80, 443],
            "memory": 512,
            "env": {"LOG": "info"},
            "autoscaling": {"min": 2, "max": 5},
        },
        "dependencies": ["db", "cache"],
    },
    {
        "name": "web",
        "type": "compute",
        "provider": "proxmox",
        "specs": {"cpu": 2, "memory": "4GB", "storage": "50GB", "template": "ubuntu-22.04"},
    },
]


def blueprint(resources: list[Doc], **top: Any) -> Blueprint:
    return load_blueprint({"name": "shop", **top, "resources": resources})


def edited(name: str, edit: Callable[[Doc], object]) -> list[Doc]:
    """BASE with one resource edited in place (on a copy)."""
    out = copy.deepcopy(BASE)
    for res in out:
        if res["name"] == name:
            edit(res)
    return out


def specs(res: Doc, **values: Any) -> None:
    res["specs"].update(values)


def updated(name: str, rtype: str, *changes: FieldChange) -> ResourceChange:
    return ResourceChange(name=name, action="update", type=rtype, changes=list(changes))


def replaced(name: str, rtype: str, reason: str, *changes: FieldChange) -> ResourceChange:
    return ResourceChange(name=name, action="replace", type=rtype, changes=list(changes), replace_reasons=[reason])


def change(path: str, kind: str, before: Any, after: Any) -> FieldChange:
    return FieldChange.model_validate({"path": path, "kind": kind, "before": before, "after": after})


def without(name: str) -> list[Doc]:
    return [copy.deepcopy(r) for r in BASE if r["name"] != name]


def db_renamed(memory: int) -> list[Doc]:
    out = copy.deepcopy(BASE)
    out[0]["name"] = "database"
    out[0]["specs"]["memory"] = memory
    out[2]["dependencies"] = ["database", "cache"]
    return out


DB_RENAMED_APP = updated("app", "container", change("/dependencies", "modify", ["cache", "db"], ["cache", "database"]))

PLANTED: list[tuple[str, list[Doc], float, list[ResourceChange]]] = [
    (
        "memory-grows",
        edited("web", lambda r: specs(r, memory="8GB")),
        0.8,
        [updated("web", "compute", change("/specs/memory", "modify", 4096, 8192))],
    ),
    (
        "cpu-in-millicores",
        edited("web", lambda r: specs(r, cpu="500m")),
        0.8,
        [updated("web", "compute", change("/specs/cpu", "modify", 2, 0.5))],
    ),
    (
        "storage-grows-is-an-update",
        edited("web", lambda r: specs(r, storage="100GB")),
        0.8,
        [updated("web", "compute", change("/specs/storage", "modify", 51200, 102400))],
    ),
    (
        "storage-shrinks-is-a-replace",
        edited("web", lambda r: specs(r, storage="20GB")),
        0.8,
        [
            replaced(
                "web",
                "compute",
                "storage shrunk: 50Gi -> 20Gi (volumes cannot shrink)",
                change("/specs/storage", "replace", 51200, 20480),
            )
        ],
    ),
    (
        "provider-changes",
        edited("cache", lambda r: r.update(provider="kubernetes")),
        0.8,
        [
            replaced(
                "cache",
                "cache",
                "provider changed: docker -> kubernetes",
                change("/provider", "replace", "docker", "kubernetes"),
            )
        ],
    ),
    (
        "type-changes",
        edited("web", lambda r: r.update(type="container")),
        0.8,
        [
            replaced(
                "web",
                "container",
                "type changed: compute -> container",
                change("/type", "replace", "compute", "container"),
            )
        ],
    ),
    (
        "image-changes",
        edited("app", lambda r: specs(r, image="nginx:1.27")),
        0.8,
        [
            replaced(
                "app",
                "container",
                "image changed: nginx:1.26 -> nginx:1.27",
                change("/specs/image", "replace", "nginx:1.26", "nginx:1.27"),
            )
        ],
    ),
    (
        "image-set-where-there-was-none",
        edited("web", lambda r: specs(r, image="nginx:1.27")),
        0.8,
        [
            replaced(
                "web",
                "compute",
                "image changed: unset -> nginx:1.27",
                change("/specs/image", "replace", None, "nginx:1.27"),
            )
        ],
    ),
    (
        "template-changes",
        edited("web", lambda r: specs(r, template="debian-12")),
        0.8,
        [
            replaced(
                "web",
                "compute",
                "template changed: ubuntu-22.04 -> debian-12",
                change("/specs/template", "replace", "ubuntu-22.04", "debian-12"),
            )
        ],
    ),
    (
        "ostemplate-changes",
        edited("db", lambda r: specs(r, ostemplate="local:vztmpl/debian-13.tar.zst")),
        0.8,
        [
            replaced(
                "db",
                "database",
                "ostemplate changed: local:vztmpl/debian-12.tar.zst -> local:vztmpl/debian-13.tar.zst",
                change(
                    "/specs/ostemplate", "replace", "local:vztmpl/debian-12.tar.zst", "local:vztmpl/debian-13.tar.zst"
                ),
            )
        ],
    ),
    ("dependency-order-is-no-change", edited("app", lambda r: r.update(dependencies=["cache", "db"])), 0.8, []),
    (
        "dependency-added",
        edited("web", lambda r: r.update(dependencies=["db"])),
        0.8,
        [updated("web", "compute", change("/dependencies", "add", [], ["db"]))],
    ),
    (
        "dependency-removed",
        edited("app", lambda r: r.update(dependencies=["db"])),
        0.8,
        [updated("app", "container", change("/dependencies", "modify", ["cache", "db"], ["db"]))],
    ),
    ("port-order-is-no-change", edited("app", lambda r: specs(r, ports=[443, 80])), 0.8, []),
    (
        "port-added",
        edited("app", lambda r: specs(r, ports=[8080, 443, 80])),
        0.8,
        [updated("app", "container", change("/specs/ports", "modify", [80, 443], [80, 443, 8080]))],
    ),
    (
        "made-public",
        edited("web", lambda r: specs(r, public=True)),
        0.8,
        [updated("web", "compute", change("/specs/public", "modify", False, True))],
    ),
    (
        "autoscaling-max-raised",
        edited("app", lambda r: specs(r, autoscaling={"min": 2, "max": 10})),
        0.8,
        [updated("app", "container", change("/specs/autoscaling/max", "modify", 5, 10))],
    ),
    (
        "autoscaling-dropped",
        edited("app", lambda r: r["specs"].pop("autoscaling")),
        0.8,
        [
            updated(
                "app",
                "container",
                change("/specs/autoscaling", "remove", {"min": 2, "max": 5, "target_cpu": 70}, None),
            )
        ],
    ),
    (
        "env-var-removed",
        edited("app", lambda r: specs(r, env={})),
        0.8,
        [updated("app", "container", change("/specs/env/LOG", "remove", "info", None))],
    ),
    (
        "metadata-label-added",
        edited("web", lambda r: r.update(metadata={"team": "core"})),
        0.8,
        [updated("web", "compute", change("/metadata/team", "add", None, "core"))],
    ),
    (
        "memory-unset",
        edited("web", lambda r: r["specs"].pop("memory")),
        0.8,
        [updated("web", "compute", change("/specs/memory", "remove", 4096, None))],
    ),
    (
        "quantities-respelled-are-no-change",
        edited("web", lambda r: specs(r, memory="4096MB", storage=51200, cpu="2000m")),
        0.8,
        [],
    ),
    ("explicit-defaults-are-no-change", edited("web", lambda r: specs(r, public=False, env={}, ports=[])), 0.8, []),
    (
        "resource-created",
        [*copy.deepcopy(BASE), {"name": "queue", "type": "queue", "provider": "docker"}],
        0.8,
        [ResourceChange(name="queue", action="create", type="queue")],
    ),
    ("resource-deleted", without("cache"), 0.8, [ResourceChange(name="cache", action="delete", type="cache")]),
    (
        "rename-with-identical-specs",
        db_renamed(2048),
        0.8,
        [
            ResourceChange(
                name="database",
                action="replace",
                type="database",
                renamed_from="db",
                changes=[change("/name", "replace", "db", "database")],
                replace_reasons=["renamed from db"],
            ),
            DB_RENAMED_APP,
        ],
    ),
    (
        "rename-with-a-changed-spec-above-a-lower-threshold",  # 6 of 8 path=value strings shared: 0.75
        db_renamed(4096),
        0.7,
        [
            ResourceChange(
                name="database",
                action="replace",
                type="database",
                renamed_from="db",
                changes=[
                    change("/name", "replace", "db", "database"),
                    change("/specs/memory", "modify", 2048, 4096),
                ],
                replace_reasons=["renamed from db"],
            ),
            DB_RENAMED_APP,
        ],
    ),
    (
        "rename-below-the-threshold-is-create-and-delete",
        db_renamed(4096),
        0.8,
        [
            ResourceChange(name="database", action="create", type="database"),
            DB_RENAMED_APP,
            ResourceChange(name="db", action="delete", type="database"),
        ],
    ),
]


@pytest.mark.parametrize(("after", "threshold", "expected"), [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_planted_change_is_classified_exactly(
    after: list[Doc], threshold: float, expected: list[ResourceChange]
) -> None:
    a, b = blueprint(BASE), blueprint(after)
    rows = diff_resources(a, b, rename_threshold=threshold)
    assert [r for r in rows if r.action != "no-op"] == expected
    assert len(rows) == len(b.resources) + sum(r.action == "delete" for r in expected)
    result = compare_blueprints(a, b, rename_threshold=threshold)
    assert result.resources == rows
    assert result.identical is (expected == [])
    assert (result.similarity == 1.0) is result.identical
    assert jsonpatch.apply_patch(a.to_data(), result.patch) == b.to_data()


def test_reformatted_blueprint_is_identical_with_a_patch_that_only_restates_it() -> None:
    a = load_blueprint("""
name: shop
description: a small shop
metadata: {environment: production, owner: ops}
resources:
  - {name: db, type: database, provider: proxmox, specs: {cpu: 2, memory: 4GB, storage: 50GB}}
  - name: app
    type: container
    provider: docker
    specs: {image: "nginx:1.27", ports: [80, 443], memory: 512Mi}
    dependencies: [db, cache]
  - {name: cache, type: cache, provider: docker, specs: {memory: 256}}
""")
    b = load_blueprint("""
resources:
  - name: cache
    provider: docker
    type: cache
    specs: {memory: 256Mi, public: false}
  - provider: docker
    name: app
    dependencies: [cache, db]
    specs: {ports: [443, 80], memory: 512, image: "nginx:1.27"}
    type: container
  - {type: database, name: db, provider: proxmox, specs: {storage: 51200MB, memory: 4096MB, cpu: "2000m"}}
metadata: {owner: ops, environment: prod}
description: a small shop
name: shop
""")
    result = compare_blueprints(a, b)
    assert result.identical is True
    assert result.similarity == 1.0
    assert [(r.name, r.action) for r in result.resources] == [("cache", "no-op"), ("app", "no-op"), ("db", "no-op")]
    assert result.summary == {"create": 0, "delete": 0, "update": 0, "replace": 0, "no-op": 3, "rename": 0}
    assert result.blueprint_changes == []
    assert result.patch != []
    assert jsonpatch.apply_patch(a.to_data(), result.patch) == b.to_data()
    assert result.notes == ["no semantic change; the patch only restates the document (order, or defaults written out)"]


def test_same_blueprint_compared_with_itself_has_an_empty_patch() -> None:
    a = blueprint(BASE)
    result = compare_blueprints(a, blueprint(copy.deepcopy(BASE)))
    assert result.identical is True
    assert result.similarity == 1.0
    assert result.patch == []
    assert result.notes == []
    assert result.summary == {"create": 0, "delete": 0, "update": 0, "replace": 0, "no-op": 4, "rename": 0}


def test_mixed_changes_are_counted_per_action_with_renames_counted_twice() -> None:
    after = db_renamed(2048)  # rename (a replace), and app's dependency follows it (an update)
    after[1]["provider"] = "kubernetes"  # cache: replace
    after.pop(3)  # web: delete
    after.append({"name": "queue", "type": "queue", "provider": "docker"})  # create
    result = compare_blueprints(blueprint(BASE), blueprint(after))
    assert result.summary == {"create": 1, "delete": 1, "update": 1, "replace": 2, "no-op": 0, "rename": 1}
    assert [(r.name, r.action, r.renamed_from) for r in result.resources] == [
        ("database", "replace", "db"),
        ("cache", "replace", None),
        ("app", "update", None),
        ("queue", "create", None),
        ("web", "delete", None),
    ]
    assert result.identical is False


def test_deleting_a_resource_patches_with_one_remove_not_a_shift_of_every_later_resource() -> None:
    result = compare_blueprints(blueprint(BASE), blueprint(without("db")))
    assert result.patch == [{"op": "remove", "path": "/resources/0"}]


def test_inserting_a_resource_patches_with_one_add_at_its_position() -> None:
    queue = {"name": "queue", "type": "queue", "provider": "docker"}
    after = copy.deepcopy(BASE)
    after.insert(1, queue)
    result = compare_blueprints(blueprint(BASE), blueprint(after))
    assert result.patch == [{"op": "add", "path": "/resources/1", "value": queue}]


def test_memory_change_patches_one_value() -> None:
    result = compare_blueprints(blueprint(BASE), blueprint(edited("web", lambda r: specs(r, memory="8GB"))))
    assert result.patch == [{"op": "replace", "path": "/resources/3/specs/memory", "value": 8192}]


def test_blueprint_level_changes_are_reported_with_their_paths() -> None:
    a = blueprint(BASE, description="v1", metadata={"environment": "staging", "owner": "ops"})
    b = blueprint(BASE, name="shop-2", description="v2", metadata={"environment": "prod", "cost_center": "42"})
    result = compare_blueprints(a, b)
    assert result.blueprint_changes == [
        change("/name", "modify", "shop", "shop-2"),
        change("/description", "modify", "v1", "v2"),
        change("/metadata/environment", "modify", "staging", "production"),
        change("/metadata/owner", "remove", "ops", None),
        change("/metadata/cost_center", "add", None, "42"),
    ]
    assert result.identical is False
    assert result.similarity < 1.0
    assert jsonpatch.apply_patch(a.to_data(), result.patch) == b.to_data()


def test_patch_escapes_slash_and_tilde_in_keys() -> None:
    a = blueprint(BASE)
    b = blueprint(edited("web", lambda r: r.update(metadata={"a/b~c": 1})))
    result = compare_blueprints(a, b)
    assert result.resources[3].changes == [change("/metadata/a~1b~0c", "add", None, 1)]
    assert result.patch == [{"op": "add", "path": "/resources/3/metadata", "value": {"a/b~c": 1}}]


def test_true_and_one_differ_in_free_form_metadata() -> None:
    a = blueprint(edited("web", lambda r: r.update(metadata={"flag": 1})))
    b = blueprint(edited("web", lambda r: r.update(metadata={"flag": True})))
    result = compare_blueprints(a, b)
    assert result.resources[3] == updated("web", "compute", change("/metadata/flag", "modify", 1, True))
    assert result.patch == [{"op": "replace", "path": "/resources/3/metadata/flag", "value": True}]


def test_impact_counts_replicas_and_autoscaling_minimum() -> None:
    a = blueprint(
        [
            {
                "name": "web",
                "type": "compute",
                "provider": "proxmox",
                "specs": {"cpu": 2, "memory": "4GB", "storage": "50GB"},
            },
            {
                "name": "api",
                "type": "container",
                "provider": "docker",
                "specs": {"cpu": "500m", "memory": 512, "replicas": 3},
            },
        ]
    )
    b = blueprint(
        [
            {
                "name": "web",
                "type": "compute",
                "provider": "proxmox",
                "specs": {"cpu": 4, "memory": "8GB", "storage": "50GB", "replicas": 2},
            },
            {
                "name": "api",
                "type": "container",
                "provider": "docker",
                "specs": {"cpu": "250m", "memory": 1024, "autoscaling": {"min": 2, "max": 6}},
            },
            {"name": "bus", "type": "queue", "provider": "docker"},
        ]
    )
    assert compare_blueprints(a, b).impact == Impact(
        resources_before=2,
        resources_after=3,
        resource_delta=1,
        cpu_before=3.5,  # 2 + 0.5 * 3
        cpu_after=8.5,  # 4 * 2 + 0.25 * 2
        cpu_delta=5.0,
        memory_mib_before=5632,  # 4096 + 512 * 3
        memory_mib_after=18432,  # 8192 * 2 + 1024 * 2
        memory_mib_delta=12800,
        storage_mib_before=51200,
        storage_mib_after=102400,
        storage_mib_delta=51200,
    )


def test_resource_footprint_counts_instances_and_treats_missing_values_as_zero() -> None:
    bp = blueprint(
        [
            {"name": "a", "type": "compute", "provider": "proxmox", "specs": {"cpu": "1500m", "replicas": 2}},
            {"name": "b", "type": "service", "provider": "kubernetes", "specs": {"autoscaling": {"min": 3, "max": 4}}},
            {"name": "c", "type": "storage", "provider": "proxmox", "specs": {"storage": "1TB"}},
        ]
    )
    assert [resource_footprint(r) for r in bp.resources] == [(3.0, 0, 0), (0.0, 0, 0), (0.0, 0, 1048576)]


def test_similarity_is_the_jaccard_of_the_path_value_sets() -> None:
    # Each side: /name, /description, /metadata={} plus web's type, provider, cpu, memory, storage and
    # its /metadata={}: 9 strings, 8 shared, 10 in the union.
    web: Doc = {
        "name": "web",
        "type": "compute",
        "provider": "proxmox",
        "specs": {"cpu": 2, "memory": 4096, "storage": 100},
    }
    bigger = copy.deepcopy(web)
    bigger["specs"]["memory"] = 8192
    assert compare_blueprints(blueprint([web]), blueprint([bigger])).similarity == 0.8


def test_similarity_ignores_resource_order() -> None:
    reordered = list(reversed(copy.deepcopy(BASE)))
    result = compare_blueprints(blueprint(BASE), blueprint(reordered))
    assert result.similarity == 1.0
    assert result.identical is True


def test_rename_of_a_dependency_lets_its_renamed_dependent_match_in_a_later_round() -> None:
    a = blueprint(
        [
            {"name": "db", "type": "database", "provider": "docker", "specs": {"image": "postgres:16", "memory": 1024}},
            {"name": "worker", "type": "container", "provider": "docker", "dependencies": ["db"]},
        ]
    )
    b = blueprint(
        [
            {"name": "pg", "type": "database", "provider": "docker", "specs": {"image": "postgres:16", "memory": 1024}},
            {"name": "jobs", "type": "container", "provider": "docker", "dependencies": ["pg"]},
        ]
    )
    rows = diff_resources(a, b)
    assert [(r.name, r.action, r.renamed_from) for r in rows] == [
        ("pg", "replace", "db"),
        ("jobs", "replace", "worker"),
    ]
    assert rows[1].changes == [
        change("/name", "replace", "worker", "jobs"),
        change("/dependencies", "modify", ["db"], ["pg"]),
    ]


def test_threshold_above_one_turns_rename_detection_off() -> None:
    rows = diff_resources(blueprint(BASE), blueprint(db_renamed(2048)), rename_threshold=1.01)
    assert [(r.name, r.action) for r in rows] == [
        ("database", "create"),
        ("cache", "no-op"),
        ("app", "update"),
        ("web", "no-op"),
        ("db", "delete"),
    ]


def test_rename_search_is_skipped_with_a_note_beyond_the_candidate_limit() -> None:
    def many(prefix: str) -> list[Doc]:
        return [{"name": f"{prefix}{i}", "type": "compute", "provider": "proxmox"} for i in range(201)]

    result = compare_blueprints(blueprint(many("a")), blueprint(many("b")))
    assert result.summary == {"create": 201, "delete": 201, "update": 0, "replace": 0, "no-op": 0, "rename": 0}
    assert result.notes == [
        "rename detection skipped for type compute: 201 unmatched resources in a and 201 in b "
        "(limit 200 per side); they are reported as deletes and creates"
    ]


def test_duplicate_names_are_matched_in_order_with_a_note() -> None:
    twice = [copy.deepcopy(BASE[1]), copy.deepcopy(BASE[1])]
    after = copy.deepcopy(twice)
    after[1]["specs"]["memory"] = 512
    result = compare_blueprints(blueprint(twice), blueprint(after))
    assert [(r.name, r.action) for r in result.resources] == [("cache", "no-op"), ("cache", "update")]
    assert result.notes == [
        "resource name 'cache' appears 2 times in a; copies are matched in order of appearance",
        "resource name 'cache' appears 2 times in b; copies are matched in order of appearance",
    ]
    assert jsonpatch.apply_patch(blueprint(twice).to_data(), result.patch) == blueprint(after).to_data()


# --- properties ---------------------------------------------------------------------------------

NAMES = ("api", "db", "cache", "web", "jobs", "queue")


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    """Valid blueprints over a small name alphabet, so matches and renames between two draws happen."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    resources = []
    for i, name in enumerate(names):
        spec: Doc = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "cpu": st.sampled_from([1, 2, 0.5, "500m", "2"]),
                    "memory": st.sampled_from([512, "512Mi", "1GB", "1024MB", 4096]),
                    "storage": st.sampled_from([10240, "10GB", "20Gi"]),
                    "replicas": st.integers(1, 3),
                    "image": st.sampled_from(["nginx:1.26", "nginx:1.27", "redis:7"]),
                    "ports": st.lists(st.sampled_from([80, 443, 8080]), unique=True, max_size=3),
                    "public": st.booleans(),
                },
            )
        )
        res: Doc = {
            "name": name,
            "type": draw(st.sampled_from(["compute", "container", "database"])),
            "provider": draw(st.sampled_from(["docker", "proxmox"])),
        }
        empty_specs_written: bool = draw(st.booleans())
        if spec or empty_specs_written:
            res["specs"] = spec
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        empty_deps_written: bool = draw(st.booleans())
        if deps or empty_deps_written:
            res["dependencies"] = deps
        meta = draw(
            st.dictionaries(st.sampled_from(["team", "tier", "a/b"]), st.one_of(st.booleans(), st.integers(0, 1)))
        )
        if meta:
            res["metadata"] = meta
        resources.append(res)
    doc: Doc = {"name": draw(st.sampled_from(["shop", "shop-2"])), "resources": resources}
    if draw(st.booleans()):
        doc["description"] = draw(st.sampled_from(["", "v1", "v2"]))
    if draw(st.booleans()):
        doc["metadata"] = {"environment": draw(st.sampled_from(["prod", "production", "dev"]))}
    return doc


@st.composite
def related_pairs(draw: st.DrawFn) -> tuple[Doc, Doc]:
    """A document and an edit of it: kept, resized, renamed (dependents follow), dropped or reordered."""
    a = draw(documents())
    b = copy.deepcopy(a)
    unused = [n for n in NAMES if n not in {r["name"] for r in a["resources"]}]
    renames: dict[str, str] = {}
    kept = []
    for res in b["resources"]:
        edit = draw(st.sampled_from(["keep", "resize", "rename", "drop"]))
        if edit == "resize":
            res.setdefault("specs", {})["memory"] = draw(st.sampled_from([256, "2GB"]))
        elif edit == "rename" and unused:
            renames[res["name"]] = res["name"] = unused.pop()
        if edit != "drop":
            kept.append(res)
    names = {r["name"] for r in kept}
    for res in kept:
        if "dependencies" in res:
            res["dependencies"] = [renames.get(d, d) for d in res["dependencies"] if renames.get(d, d) in names]
    b["resources"] = draw(st.permutations(kept)) if draw(st.booleans()) else kept
    return a, b


def canonical(data: Any) -> str:
    # Python's == says True == 1; JSON does not, and neither may the patch.
    return json.dumps(data, sort_keys=True)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.one_of(st.tuples(documents(), documents()), related_pairs()))
def test_patch_turns_a_into_b_and_rows_add_up(pair: tuple[Doc, Doc]) -> None:
    a, b = load_blueprint(pair[0]), load_blueprint(pair[1])
    result: Comparison = compare_blueprints(a, b)
    assert canonical(jsonpatch.apply_patch(a.to_data(), result.patch)) == canonical(b.to_data())
    assert sum(result.summary[action] for action in ("create", "delete", "update", "replace", "no-op")) == len(
        result.resources
    )
    assert len(result.resources) == len(b.resources) + result.summary["delete"]
    assert result.summary["rename"] <= result.summary["replace"]
    assert (result.similarity == 1.0) is result.identical
    assert 0.0 <= result.similarity <= 1.0


@settings(derandomize=True, max_examples=200, deadline=None)
@given(documents())
def test_blueprint_compared_with_itself_is_identical(doc: Doc) -> None:
    a = load_blueprint(doc)
    result = compare_blueprints(a, load_blueprint(copy.deepcopy(doc)))
    assert result.identical is True
    assert result.similarity == 1.0
    assert result.patch == []
    assert all(row.action == "no-op" for row in result.resources)
