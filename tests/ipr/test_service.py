"""The IPR lifecycle rules: roles, separation of duties, checks, approvals, revisions, races."""

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from alma_mcp.errors import (
    AlmaError,
    ApprovalBlocked,
    BlueprintParseError,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    IPRNotFound,
)
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import Services, open_services
from alma_mcp.settings import Settings

MODEL = Principal(id="mcp:local", roles=frozenset({Role.VIEWER, Role.PROPOSER, Role.DEPLOYER}))
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER, Role.DEPLOYER, Role.PROPOSER}))
BOB = Principal(id="user:bob", roles=frozenset({Role.VIEWER, Role.APPROVER}))
READER = Principal(id="user:reader", roles=frozenset({Role.VIEWER}))

SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [
        {"name": "db", "type": "database", "provider": "simulation", "specs": {"memory": "4GB"}},
        {"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["db"]},
    ],
}


@pytest.fixture
def two_approvals() -> Iterator[Services]:
    with open_services(Settings(db_path=":memory:", ipr_required_approvals=2), "test") as opened:
        yield opened


def test_opening_stores_a_revision_with_checks_and_an_event(services: Services) -> None:
    view = services.iprs.create(MODEL, title="Add the shop", blueprint=SHOP)
    assert view.ipr.state == "open"
    assert view.ipr.proposer == "mcp:local"
    assert view.revision.number == 1
    assert view.revision.content_hash.startswith("sha256:")
    assert [(c.name, c.status, c.blocking) for c in view.revision.checks] == [
        ("validation", "pass", False),
        ("plan", "pass", False),
        ("security", "warn", False),
        ("cost", "pass", False),
    ]
    assert view.revision.checks[3].summary.startswith("+")
    assert view.revision.checks[1].summary == "Plan: 2 to create, 0 to update, 0 to destroy."
    assert [(e.actor, e.action, e.from_state, e.to_state) for e in view.events] == [("mcp:local", "open", None, "open")]
    assert view.allowed_actions == ["approve", "request_changes", "reject", "revise", "close"]


def test_equal_content_has_an_equal_hash(services: Services) -> None:
    one = services.iprs.create(MODEL, title="a", blueprint=SHOP)
    reordered = {"resources": SHOP["resources"], "name": "shop"}
    two = services.iprs.create(MODEL, title="b", blueprint=reordered)
    assert one.revision.content_hash == two.revision.content_hash


def test_from_a_template_with_customization(services: Services) -> None:
    view = services.iprs.create(
        MODEL, title="Redis", template="redis-cluster", customization={"name": "cache-prod", "scale_factor": 0.5}
    )
    assert view.ipr.blueprint_name == "cache-prod"
    assert view.revision.blueprint["metadata"]["base_template"] == "redis-cluster"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of blueprint or template (with optional customization)"),
        ({"blueprint": SHOP, "template": "redis-cluster"}, "give exactly one of blueprint or template"),
        ({"blueprint": SHOP, "customization": {"scale_factor": 2}}, "customization applies to a template"),
        ({"template": "redis-cluster", "customization": {"colour": 1}}, "unknown customization 'colour'"),
    ],
)
def test_contradictory_arguments_are_request_errors(services: Services, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        services.iprs.create(MODEL, title="x", **kwargs)
    assert info.value.code == "request.invalid"
    assert info.value.message.startswith(message)


def test_an_unparseable_blueprint_is_refused_and_nothing_is_stored(services: Services) -> None:
    with pytest.raises(BlueprintParseError):
        services.iprs.create(MODEL, title="x", blueprint="[unclosed")
    assert services.iprs.list_iprs(READER, None, 10, None).iprs == []


def test_an_invalid_blueprint_opens_but_cannot_be_approved(services: Services) -> None:
    bad = {
        "name": "shop",
        "resources": [{"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["ghost"]}],
    }
    view = services.iprs.create(MODEL, title="broken", blueprint=bad)
    assert view.revision.checks[0].status == "fail"
    assert view.revision.checks[0].blocking is True
    with pytest.raises(ApprovalBlocked) as info:
        services.iprs.review(ALICE, view.ipr.id, "approve")
    assert info.value.code == "ipr.approval_blocked"
    assert info.value.message.startswith(f"IPR {view.ipr.id} cannot be approved: the validation check failed (invalid:")
    assert services.iprs.get(READER, view.ipr.id).ipr.state == "open"


def test_the_proposer_can_never_approve(services: Services) -> None:
    admin = Principal(id="user:root", roles=frozenset({Role.ADMIN}))
    view = services.iprs.create(admin, title="mine", blueprint=SHOP)
    with pytest.raises(Forbidden) as info:
        services.iprs.review(admin, view.ipr.id, "approve")
    assert str(info.value) == (
        f"[auth.forbidden] user:root cannot approve IPR {view.ipr.id}: it proposed or wrote this revision "
        "(separation of duties: another person must approve)"
    )


def test_the_model_session_lacks_the_approver_role(services: Services) -> None:
    view = services.iprs.create(ALICE, title="by alice", blueprint=SHOP)
    with pytest.raises(Forbidden) as info:
        services.iprs.review(MODEL, view.ipr.id, "approve")
    assert str(info.value) == (
        "[auth.forbidden] mcp:local needs the 'approver' role to approve an IPR; it has: deployer, proposer, viewer"
    )


@pytest.mark.parametrize(
    ("call", "role"),
    [
        (lambda s: s.iprs.create(READER, title="x", blueprint=SHOP), "proposer"),
        (lambda s: s.iprs.list_iprs(Principal(id="nobody", roles=frozenset()), None, 5, None), "viewer"),
    ],
)
def test_calls_without_the_role_name_the_role_needed(services: Services, call: Any, role: str) -> None:
    with pytest.raises(Forbidden) as info:
        call(services)
    assert info.value.data["needed"] == role


def test_approve_with_a_comment_then_nothing_more_to_approve(services: Services) -> None:
    ipr = services.iprs.create(MODEL, title="shop", blueprint=SHOP).ipr
    view = services.iprs.review(ALICE, ipr.id, "approve", "looks right")
    assert view.ipr.state == "approved"
    assert view.approvals == ["user:alice"]
    assert [(c.author, c.verdict, c.body) for c in view.comments] == [("user:alice", "approve", "looks right")]
    with pytest.raises(InvalidTransition) as info:
        services.iprs.review(BOB, ipr.id, "approve")
    assert info.value.message == ("cannot approve an IPR that is 'approved'; allowed from 'approved': deploy, close")


def test_two_approvals_when_required(two_approvals: Services) -> None:
    ipr = two_approvals.iprs.create(MODEL, title="shop", blueprint=SHOP).ipr
    first = two_approvals.iprs.review(ALICE, ipr.id, "approve")
    assert first.ipr.state == "open"
    assert first.approvals == ["user:alice"]
    with pytest.raises(InvalidRequest) as again:
        two_approvals.iprs.review(ALICE, ipr.id, "approve")
    assert again.value.message == f"user:alice has already approved revision 1 of IPR {ipr.id}"
    second = two_approvals.iprs.review(BOB, ipr.id, "approve")
    assert second.ipr.state == "approved"
    assert [(e.action, e.from_state, e.to_state) for e in second.events] == [
        ("open", None, "open"),
        ("approve", "open", "open"),
        ("approve", "open", "approved"),
    ]


def test_request_changes_revise_and_approvals_lapse(two_approvals: Services) -> None:
    ipr = two_approvals.iprs.create(MODEL, title="shop", blueprint=SHOP).ipr
    two_approvals.iprs.review(ALICE, ipr.id, "approve")
    two_approvals.iprs.review(BOB, ipr.id, "request_changes", "more memory")
    changed = {**SHOP, "resources": [{**SHOP["resources"][0], "specs": {"memory": "8GB"}}, SHOP["resources"][1]]}
    view = two_approvals.iprs.revise(MODEL, ipr.id, changed)
    assert view.ipr.state == "open"
    assert view.ipr.revision == 2
    assert view.approvals == []
    assert view.revision.blueprint["resources"][0]["specs"]["memory"] == 8192
    assert two_approvals.iprs.iprs.revision(ipr.id, 1).blueprint["resources"][0]["specs"]["memory"] == 4096


def test_only_the_proposer_revises(services: Services) -> None:
    ipr = services.iprs.create(MODEL, title="shop", blueprint=SHOP).ipr
    with pytest.raises(Forbidden):
        services.iprs.revise(ALICE, ipr.id, SHOP)


def test_reject_is_final_and_close_works_from_open(services: Services) -> None:
    one = services.iprs.create(MODEL, title="a", blueprint=SHOP).ipr
    assert services.iprs.review(ALICE, one.id, "reject", "no").ipr.state == "rejected"
    with pytest.raises(InvalidTransition):
        services.iprs.close(MODEL, one.id)
    two = services.iprs.create(MODEL, title="b", blueprint=SHOP).ipr
    assert services.iprs.close(MODEL, two.id).ipr.state == "closed"


def test_unknown_ipr_and_review_action(services: Services) -> None:
    with pytest.raises(IPRNotFound) as info:
        services.iprs.get(READER, 999)
    assert str(info.value) == "[ipr.not_found] no IPR 999; list them with ipr_list"
    ipr = services.iprs.create(MODEL, title="a", blueprint=SHOP).ipr
    with pytest.raises(InvalidRequest) as bad:
        services.iprs.review(ALICE, ipr.id, "merge")
    assert bad.value.message == "unknown review action 'merge'; allowed: approve, request_changes, reject"


def test_listing_pages_newest_first_and_filters(services: Services) -> None:
    ids = [services.iprs.create(MODEL, title=f"t{i}", blueprint=SHOP).ipr.id for i in range(5)]
    services.iprs.review(ALICE, ids[1], "approve")
    first = services.iprs.list_iprs(READER, None, 2, None)
    assert [r.id for r in first.iprs] == [ids[4], ids[3]]
    assert first.next_cursor is not None
    second = services.iprs.list_iprs(READER, None, 2, first.next_cursor)
    assert [r.id for r in second.iprs] == [ids[2], ids[1]]
    last = services.iprs.list_iprs(READER, None, 2, second.next_cursor)
    assert [r.id for r in last.iprs] == [ids[0]]
    assert last.next_cursor is None
    assert [r.id for r in services.iprs.list_iprs(READER, "approved", 10, None).iprs] == [ids[1]]
    with pytest.raises(InvalidRequest) as info:
        services.iprs.list_iprs(READER, "merged", 10, None)
    assert info.value.message.startswith("unknown state 'merged'; allowed: open, changes_requested, approved")


def test_auto_approve_is_recorded_as_such() -> None:
    with open_services(Settings(db_path=":memory:", ipr_auto_approve=True), "test") as services:
        view = services.iprs.create(MODEL, title="demo", blueprint=SHOP)
    assert view.ipr.state == "approved"
    assert view.approvals == ["system:auto-approve"]
    assert view.events[-1].payload == {"auto": True, "revision": 1, "setting": "ALMA_IPR_AUTO_APPROVE"}


def test_two_racing_approvals_one_wins_the_other_gets_a_coded_error(tmp_path: Any) -> None:
    settings = Settings(db_path=str(tmp_path / "race.db"))
    with open_services(settings, "test") as services:
        ipr = services.iprs.create(MODEL, title="race", blueprint=SHOP).ipr
    for _ in range(5):
        results: list[str] = []
        barrier = threading.Barrier(2)

        def approve(
            who: Principal, ipr_id: int, barrier: threading.Barrier = barrier, results: list[str] = results
        ) -> None:
            # Each thread opens its own connection, as two processes would.
            with open_services(settings, "test") as own:
                barrier.wait()
                try:
                    own.iprs.review(who, ipr_id, "approve")
                    results.append("won")
                except AlmaError as err:
                    results.append(err.code)

        with open_services(settings, "test") as services:
            ipr = services.iprs.create(MODEL, title="race", blueprint=SHOP).ipr
        threads = [threading.Thread(target=approve, args=(who, ipr.id)) for who in (ALICE, BOB)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results)[-1] == "won"
        assert results.count("won") == 1
        assert set(results) - {"won"} <= {"ipr.invalid_transition", "ipr.conflict"}
        with open_services(settings, "test") as services:
            view = services.iprs.get(READER, ipr.id)
        assert view.ipr.state == "approved"
        assert len(view.approvals) == 1
        assert [e.action for e in view.events] == ["open", "approve"]


def test_over_budget_blocks_approval_until_an_admin_overrides_with_a_reason() -> None:
    with open_services(Settings(db_path=":memory:", budget_monthly=1.0), "test") as services:
        ipr_id = services.iprs.create(MODEL, title="pricey", blueprint=SHOP).ipr.id
        cost = services.iprs.get(READER, ipr_id).revision.checks[3]
        assert (cost.name, cost.status, cost.blocking, cost.overridable) == ("cost", "fail", True, True)
        assert "over the budget of 1.00 USD/month" in cost.summary
        with pytest.raises(ApprovalBlocked) as info:
            services.iprs.review(ALICE, ipr_id, "approve")
        assert info.value.message.endswith("or an admin approves with an override reason")
        assert info.value.data == {"checks": ["cost"], "overridable": True}
        with pytest.raises(ApprovalBlocked):
            services.iprs.review(ALICE, ipr_id, "approve", override="not an admin")
        admin = Principal(id="user:boss", roles=frozenset({Role.ADMIN}))
        view = services.iprs.review(admin, ipr_id, "approve", override="quarter-end launch, budget raised next month")
    assert view.ipr.state == "approved"
    assert view.events[-1].payload["override"] == {
        "reason": "quarter-end launch, budget raised next month",
        "checks": ["cost"],
    }


def test_validation_failures_are_never_overridable(services: Services) -> None:
    bad = {
        "name": "shop",
        "resources": [{"name": "web", "type": "compute", "provider": "simulation", "dependencies": ["ghost"]}],
    }
    ipr_id = services.iprs.create(MODEL, title="broken", blueprint=bad).ipr.id
    admin = Principal(id="user:boss", roles=frozenset({Role.ADMIN}))
    with pytest.raises(ApprovalBlocked) as info:
        services.iprs.review(admin, ipr_id, "approve", override="please")
    assert info.value.data["overridable"] is False
    with pytest.raises(InvalidRequest) as nothing:
        services.iprs.review(
            admin, services.iprs.create(MODEL, title="ok", blueprint=SHOP).ipr.id, "approve", override="why"
        )
    assert nothing.value.message.startswith("nothing to override: no check blocks IPR")


def test_critical_findings_block_approval_until_an_admin_overrides(services: Services) -> None:
    risky = {
        "name": "risky",
        "resources": [
            {
                "name": "app",
                "type": "container",
                "provider": "docker",
                "specs": {"image": "nginx:1.27", "privileged": True, "public": True, "ports": [80]},
            },
        ],
    }
    ipr_id = services.iprs.create(MODEL, title="risky", blueprint=risky).ipr.id
    security = next(c for c in services.iprs.get(READER, ipr_id).revision.checks if c.name == "security")
    assert (security.status, security.blocking, security.overridable) == ("fail", True, True)
    with pytest.raises(ApprovalBlocked) as info:
        services.iprs.review(ALICE, ipr_id, "approve")
    assert info.value.message.startswith(f"IPR {ipr_id} cannot be approved: the security check failed")
    admin = Principal(id="user:boss", roles=frozenset({Role.ADMIN}))
    view = services.iprs.review(admin, ipr_id, "approve", override="isolated lab, accepted risk")
    assert view.ipr.state == "approved"
    assert view.events[-1].payload["override"]["checks"] == ["security"]
