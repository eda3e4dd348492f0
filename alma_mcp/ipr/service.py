"""The IPR lifecycle with its rules: roles, separation of duties, checks, approvals.

Every method takes the calling ``Principal`` first. Reading needs ``viewer``; opening and revising
need ``proposer``; reviewing needs ``approver``, and nobody approves a revision they proposed or
wrote; deploying and rolling back need ``deployer`` (see ``alma_mcp.ipr.deploy``). Approval counts
per revision: a revision resets them.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from alma_mcp.analysis.audit import PolicyCatalog
from alma_mcp.analysis.durations import DurationTable
from alma_mcp.analysis.pricing import PriceCatalog
from alma_mcp.blueprint.loader import Limits, load_blueprint, parse_document
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.errors import ApprovalBlocked, BlueprintError, BlueprintParseError, Forbidden, InvalidRequest
from alma_mcp.events import EventBus
from alma_mcp.ipr.checks import CheckContext, run_checks
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.ipr.states import Action, IPRState, allowed_actions
from alma_mcp.ipr.store import CheckResult, Comment, Event, IPRRecord, IPRStore, Revision
from alma_mcp.settings import Settings
from alma_mcp.store import Store, utc_now

if TYPE_CHECKING:
    from sqlite_utils import Database

AUTO_APPROVER = "system:auto-approve"
ReviewAction = Literal["approve", "request_changes", "reject"]


class DeploymentSummary(BaseModel):
    id: int
    kind: str
    state: str
    revision: int | None
    actor: str
    started_at: str
    finished_at: str | None
    summary: str


class IPRView(BaseModel):
    """An IPR as tools and the CLI show it."""

    ipr: IPRRecord
    revision: Revision
    approvals: list[str]
    required_approvals: int
    allowed_actions: list[str]
    comments: list[Comment]
    events: list[Event]
    deployments: list[DeploymentSummary]


class IPRPage(BaseModel):
    iprs: list[IPRRecord]
    next_cursor: str | None


class IPRService:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        limits: Limits,
        durations: DurationTable,
        catalog: TemplateCatalog,
        bus: EventBus | None = None,
        prices: PriceCatalog | None = None,
        policies: PolicyCatalog | None = None,
    ) -> None:
        self.prices = prices
        self.policies = policies
        self.store = store
        self.iprs = IPRStore(store, bus)
        self.settings = settings
        self.limits = limits
        self.durations = durations
        self.catalog = catalog

    # -- reading ---------------------------------------------------------------------------------

    def get(self, principal: Principal, ipr_id: int) -> IPRView:
        principal.require(Role.VIEWER, "read IPRs")
        return self.view(ipr_id)

    def view(self, ipr_id: int) -> IPRView:
        record = self.iprs.get(ipr_id)
        return IPRView(
            ipr=record,
            revision=self.iprs.revision(ipr_id, record.revision),
            approvals=self.iprs.approvals(ipr_id, record.revision),
            required_approvals=self.settings.ipr_required_approvals,
            allowed_actions=[a.value for a in allowed_actions(record.state) if a not in (Action.SUCCEED, Action.FAIL)],
            comments=self.iprs.comments(ipr_id),
            events=self.iprs.events(ipr_id),
            deployments=self.deployments(ipr_id),
        )

    def deployments(self, ipr_id: int) -> list[DeploymentSummary]:
        with self.store.lock:
            rows = self.store.db.query(
                "SELECT id, kind, state, revision, actor, started_at, finished_at, summary FROM deployments "
                "WHERE ipr_id = ? ORDER BY id",
                [ipr_id],
            )
            return [DeploymentSummary.model_validate(dict(r)) for r in rows]

    def list_iprs(self, principal: Principal, state: str | None, limit: int, cursor: str | None) -> IPRPage:
        principal.require(Role.VIEWER, "list IPRs")
        try:
            wanted = IPRState(state) if state is not None else None
        except ValueError:
            allowed = ", ".join(s.value for s in IPRState)
            raise InvalidRequest(f"unknown state {state!r}; allowed: {allowed}") from None
        if not 1 <= limit <= 200:
            raise InvalidRequest(f"limit {limit} is out of range; allowed: 1..200")
        after = None
        if cursor is not None:
            if not cursor.isdigit():
                raise InvalidRequest(f"cursor {cursor!r} is not one this server issued; pass next_cursor back as is")
            after = int(cursor)
        rows = self.iprs.page(wanted, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        return IPRPage(iprs=rows, next_cursor=str(rows[-1].id) if more and rows else None)

    # -- proposing -------------------------------------------------------------------------------

    def _normalise(self, source: str | Mapping[str, Any]) -> dict[str, Any]:
        """Normalised data when the blueprint loads; the raw mapping when only its schema is wrong
        (the validation check then records why, and blocks approval)."""
        try:
            return load_blueprint(source, self.limits).to_data()
        except BlueprintParseError:
            raise
        except BlueprintError as err:
            data = parse_document(source, self.limits) if isinstance(source, str) else dict(source)
            name = data.get("name")
            if not isinstance(name, str) or not name:
                raise BlueprintError(
                    f"a proposed blueprint needs at least a name: {err.message}", issues=err.issues
                ) from None
            return dict(data)

    def _blueprint_from(
        self,
        blueprint: str | Mapping[str, Any] | None,
        template: str | None,
        customization: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        if (blueprint is None) == (template is None):
            raise InvalidRequest("give exactly one of blueprint or template (with optional customization)")
        if blueprint is not None:
            if customization:
                raise InvalidRequest("customization applies to a template, not to a blueprint")
            return self._normalise(blueprint)
        assert template is not None
        options = dict(customization or {})
        allowed = {"name", "description", "scale_factor", "parameters"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InvalidRequest(f"unknown customization {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        derived, _ = self.catalog.customize(template, limits=self.limits, **options)
        return derived.to_data()

    def _checks(self, data: Mapping[str, Any], ipr_id: int | None) -> list[CheckResult]:
        name = data.get("name")
        current = self.iprs.deployed_blueprint(name, exclude_ipr=None) if isinstance(name, str) else None
        context = CheckContext(
            limits=self.limits,
            durations=self.durations,
            parallelism=self.settings.plan_parallelism,
            current=current,
            prices=self.prices,
            budget_monthly=self.settings.budget_monthly,
            policies=self.policies,
        )
        return run_checks(data, context)

    def create(
        self,
        principal: Principal,
        *,
        title: str,
        description: str = "",
        blueprint: str | Mapping[str, Any] | None = None,
        template: str | None = None,
        customization: Mapping[str, Any] | None = None,
    ) -> IPRView:
        principal.require(Role.PROPOSER, "open an IPR")
        if not title.strip():
            raise InvalidRequest("an IPR needs a title")
        data = self._blueprint_from(blueprint, template, customization)
        checks = self._checks(data, None)
        record = self.iprs.create(
            title=title.strip(), description=description, proposer=principal.id, blueprint=data, checks=checks
        )
        self._maybe_auto_approve(record.id, checks)
        return self.view(record.id)

    def revise(self, principal: Principal, ipr_id: int, blueprint: str | Mapping[str, Any]) -> IPRView:
        principal.require(Role.PROPOSER, "revise an IPR")
        record = self.iprs.get(ipr_id)
        if record.proposer != principal.id and not principal.has(Role.ADMIN):
            raise Forbidden(
                f"{principal.id} cannot revise IPR {ipr_id}: only its proposer ({record.proposer}) or an admin can",
                data={"principal": principal.id, "proposer": record.proposer},
            )
        data = self._normalise(blueprint)
        checks = self._checks(data, ipr_id)
        self.iprs.add_revision(ipr_id, principal.id, data, checks, record.version)
        self._maybe_auto_approve(ipr_id, checks)
        return self.view(ipr_id)

    def _maybe_auto_approve(self, ipr_id: int, checks: list[CheckResult]) -> None:
        if not self.settings.ipr_auto_approve or any(c.blocking for c in checks):
            return
        record = self.iprs.get(ipr_id)

        def write(db: "Database", rec: IPRRecord) -> None:
            db.execute(
                "INSERT INTO ipr_approvals (ipr_id, revision, principal, at) VALUES (?, ?, ?, ?)",
                [ipr_id, rec.revision, AUTO_APPROVER, utc_now()],
            )

        self.iprs.transition(
            ipr_id,
            Action.APPROVE,
            AUTO_APPROVER,
            payload={"revision": record.revision, "auto": True, "setting": "ALMA_IPR_AUTO_APPROVE"},
            expect_version=record.version,
            also=write,
        )

    # -- reviewing -------------------------------------------------------------------------------

    def review(
        self,
        principal: Principal,
        ipr_id: int,
        action: str,
        comment: str | None = None,
        override: str | None = None,
    ) -> IPRView:
        """Approve, request changes or reject. ``override`` (admins only, with a reason) approves past
        overridable blocking checks (budget, critical findings); it is recorded on the event."""
        try:
            act = Action(action)
        except ValueError:
            act = None
        if act not in (Action.APPROVE, Action.REQUEST_CHANGES, Action.REJECT):
            raise InvalidRequest(f"unknown review action {action!r}; allowed: approve, request_changes, reject")
        assert act is not None
        principal.require(Role.APPROVER, f"{act.value.replace('_', ' ')} an IPR")
        record = self.iprs.get(ipr_id)
        revision = self.iprs.revision(ipr_id, record.revision)
        overridden: list[str] = []
        if act is Action.APPROVE:
            overridden = self._check_can_approve(principal, record, revision, override)
        elif override:
            raise InvalidRequest("override applies to approve only")
        required = self.settings.ipr_required_approvals

        def guard(db: "Database", rec: IPRRecord) -> IPRState | None:
            if act is not Action.APPROVE:
                return None
            already = {
                r["principal"]
                for r in db.query(
                    "SELECT principal FROM ipr_approvals WHERE ipr_id = ? AND revision = ?", [ipr_id, rec.revision]
                )
            }
            if principal.id in already:
                raise InvalidRequest(f"{principal.id} has already approved revision {rec.revision} of IPR {ipr_id}")
            # Fewer approvals than required: record this one, stay open.
            return IPRState.OPEN if len(already) + 1 < required else None

        def write(db: "Database", rec: IPRRecord) -> None:
            if act is Action.APPROVE:
                db.execute(
                    "INSERT INTO ipr_approvals (ipr_id, revision, principal, at) VALUES (?, ?, ?, ?)",
                    [ipr_id, rec.revision, principal.id, utc_now()],
                )
            if comment:
                self.iprs.add_comment(db, ipr_id, rec.revision, principal.id, act.value, comment)

        self.iprs.transition(
            ipr_id,
            act,
            principal.id,
            payload={"revision": record.revision, "comment": bool(comment)}
            | ({"override": {"reason": override, "checks": overridden}} if overridden else {}),
            expect_version=record.version,
            guard=guard,
            also=write,
        )
        return self.view(ipr_id)

    def _check_can_approve(
        self, principal: Principal, record: IPRRecord, revision: Revision, override: str | None
    ) -> list[str]:
        """The names of the blocking checks an admin's ``override`` passes (empty when none block)."""
        if principal.id in (record.proposer, revision.created_by):
            raise Forbidden(
                f"{principal.id} cannot approve IPR {record.id}: it proposed or wrote this revision "
                "(separation of duties: another person must approve)",
                data={"principal": principal.id, "proposer": record.proposer},
            )
        blocking = [c for c in revision.checks if c.blocking]
        if not blocking or record.state is not IPRState.OPEN:
            if override:
                raise InvalidRequest(f"nothing to override: no check blocks IPR {record.id}")
            return []
        hard = [c for c in blocking if not c.overridable]
        first = (hard or blocking)[0]
        if hard or not override or not principal.has(Role.ADMIN):
            how = (
                "revise the blueprint" if hard else "revise the blueprint, or an admin approves with an override reason"
            )
            raise ApprovalBlocked(
                f"IPR {record.id} cannot be approved: the {first.name} check failed ({first.summary}); {how}",
                data={"checks": [c.name for c in blocking], "overridable": not hard},
            )
        return [c.name for c in blocking]

    def close(self, principal: Principal, ipr_id: int, comment: str | None = None) -> IPRView:
        record = self.iprs.get(ipr_id)
        if record.proposer != principal.id:
            principal.require(Role.APPROVER, "close someone else's IPR")
        else:
            principal.require(Role.PROPOSER, "close an IPR")

        def write(db: "Database", rec: IPRRecord) -> None:
            if comment:
                self.iprs.add_comment(db, ipr_id, rec.revision, principal.id, "close", comment)

        self.iprs.transition(
            ipr_id,
            Action.CLOSE,
            principal.id,
            payload={"revision": record.revision},
            expect_version=record.version,
            also=write,
        )
        return self.view(ipr_id)
