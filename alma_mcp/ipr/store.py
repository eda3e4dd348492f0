"""IPR persistence: records, immutable revisions, events, approvals and comments.

Every state change is a compare-and-set inside one write transaction together with its event:
``UPDATE iprs SET state = new, version = version + 1 WHERE id = ? AND version = seen``. The write
transaction starts ``BEGIN IMMEDIATE``, so of two racing transitions (threads or processes) the
second reads the first's result and gets ``ipr.invalid_transition`` (or ``ipr.conflict`` if the
state still allows its action but the record moved on under it).
"""

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from alma_mcp.errors import IPRConflict, IPRNotFound
from alma_mcp.events import EventBus
from alma_mcp.ipr.states import Action, IPRState, next_state
from alma_mcp.store import Store, utc_now

if TYPE_CHECKING:
    from sqlite_utils import Database


class IPRRecord(BaseModel):
    id: int
    title: str
    description: str
    state: IPRState
    proposer: str
    blueprint_name: str
    revision: int
    deployed_revision: int | None
    version: int
    created_at: str
    updated_at: str


class CheckResult(BaseModel):
    """One check run on a revision (validation, plan, later audit and cost)."""

    name: str
    status: str  # pass | warn | fail
    blocking: bool
    overridable: bool = False
    """A blocking result an admin may override with a recorded reason (budget, critical findings)."""
    summary: str
    details: dict[str, Any] = {}


class Revision(BaseModel):
    ipr_id: int
    number: int
    content_hash: str
    blueprint: dict[str, Any]
    checks: list[CheckResult]
    created_by: str
    created_at: str


class Event(BaseModel):
    id: int
    ipr_id: int
    actor: str
    action: str
    from_state: str | None
    to_state: str
    at: str
    payload: dict[str, Any]


class Comment(BaseModel):
    id: int
    revision: int
    author: str
    verdict: str | None
    body: str
    at: str


def content_hash(blueprint: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a normalised blueprint: equal content, equal hash."""
    canonical = json.dumps(blueprint, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _record(row: Mapping[str, Any]) -> IPRRecord:
    return IPRRecord.model_validate(dict(row))


def _event(db: "Database", ipr_id: int, actor: str, action: str, before: str | None, after: str, payload: Any) -> int:
    cursor = db.execute(
        "INSERT INTO ipr_events (ipr_id, actor, action, from_state, to_state, at, payload) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [ipr_id, actor, action, before, after, utc_now(), json.dumps(payload or {}, sort_keys=True)],
    )
    return int(cursor.lastrowid or 0)


class IPRStore:
    """Data access for IPRs; every write is one transaction."""

    def __init__(self, store: Store, bus: EventBus | None = None) -> None:
        self.store = store
        self.bus = bus

    def _published(self, record: IPRRecord, event_id: int, action: str, before: str | None, actor: str) -> IPRRecord:
        # After the commit: observers only ever see what is durable.
        if self.bus is not None:
            self.bus.emit(
                "ipr.transition",
                ipr_id=record.id,
                event_id=event_id,
                action=action,
                from_state=before,
                to_state=record.state.value,
                actor=actor,
            )
        return record

    def _read(self, db: "Database", ipr_id: int) -> IPRRecord:
        rows = list(db.query("SELECT * FROM iprs WHERE id = ?", [ipr_id]))
        if not rows:
            raise IPRNotFound(f"no IPR {ipr_id}; list them with ipr_list", data={"ipr_id": ipr_id})
        return _record(rows[0])

    def create(
        self,
        *,
        title: str,
        description: str,
        proposer: str,
        blueprint: Mapping[str, Any],
        checks: list[CheckResult],
    ) -> IPRRecord:
        now = utc_now()
        with self.store.atomic() as db:
            cursor = db.execute(
                "INSERT INTO iprs (title, description, state, proposer, blueprint_name, revision, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                [title, description, IPRState.OPEN.value, proposer, blueprint["name"], now, now],
            )
            ipr_id = int(cursor.lastrowid or 0)
            self._insert_revision(db, ipr_id, 1, blueprint, checks, proposer)
            event_id = _event(db, ipr_id, proposer, "open", None, IPRState.OPEN.value, {"revision": 1})
            record = self._read(db, ipr_id)
        return self._published(record, event_id, "open", None, proposer)

    def _insert_revision(
        self,
        db: "Database",
        ipr_id: int,
        number: int,
        blueprint: Mapping[str, Any],
        checks: list[CheckResult],
        author: str,
    ) -> None:
        db.execute(
            "INSERT INTO ipr_revisions (ipr_id, number, content_hash, blueprint, checks, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ipr_id,
                number,
                content_hash(blueprint),
                json.dumps(blueprint, sort_keys=True),
                json.dumps([c.model_dump() for c in checks]),
                author,
                utc_now(),
            ],
        )

    def get(self, ipr_id: int) -> IPRRecord:
        with self.store.lock:
            return self._read(self.store.db, ipr_id)

    def page(self, state: IPRState | None, limit: int, after: int | None) -> list[IPRRecord]:
        """Newest first; ``after`` is the last id of the previous page (a keyset cursor)."""
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            clauses.append("state = ?")
            params.append(state.value)
        if after is not None:
            clauses.append("id < ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.store.lock:
            rows = self.store.db.query(f"SELECT * FROM iprs {where} ORDER BY id DESC LIMIT ?", [*params, limit])  # noqa: S608 - fixed clause text, values bound
            return [_record(r) for r in rows]

    def revision(self, ipr_id: int, number: int) -> Revision:
        with self.store.lock:
            rows = list(
                self.store.db.query("SELECT * FROM ipr_revisions WHERE ipr_id = ? AND number = ?", [ipr_id, number])
            )
        if not rows:
            raise IPRNotFound(f"IPR {ipr_id} has no revision {number}", data={"ipr_id": ipr_id, "revision": number})
        row = dict(rows[0])
        row["blueprint"] = json.loads(row["blueprint"])
        row["checks"] = json.loads(row["checks"])
        return Revision.model_validate(row)

    def events(self, ipr_id: int) -> list[Event]:
        with self.store.lock:
            rows = list(self.store.db.query("SELECT * FROM ipr_events WHERE ipr_id = ? ORDER BY id", [ipr_id]))
        return [Event.model_validate({**r, "payload": json.loads(r["payload"])}) for r in rows]

    def comments(self, ipr_id: int) -> list[Comment]:
        with self.store.lock:
            rows = self.store.db.query("SELECT * FROM ipr_comments WHERE ipr_id = ? ORDER BY id", [ipr_id])
            return [Comment.model_validate(dict(r)) for r in rows]

    def approvals(self, ipr_id: int, revision: int) -> list[str]:
        with self.store.lock:
            rows = self.store.db.query(
                "SELECT principal FROM ipr_approvals WHERE ipr_id = ? AND revision = ? ORDER BY at", [ipr_id, revision]
            )
            return [r["principal"] for r in rows]

    def transition(
        self,
        ipr_id: int,
        action: Action,
        actor: str,
        *,
        payload: Mapping[str, Any] | None = None,
        expect_version: int | None = None,
        guard: Callable[["Database", IPRRecord], IPRState | None] | None = None,
        also: Callable[["Database", IPRRecord], None] | None = None,
        updates: Mapping[str, Any] | None = None,
    ) -> IPRRecord:
        """Apply ``action`` as one compare-and-set, with its event, in one transaction.

        ``guard`` may veto (raise) or override the target state (a partial approval stays open);
        ``also`` writes related rows in the same transaction; ``updates`` sets extra columns.

        Raises:
            IPRNotFound, InvalidTransition, IPRConflict (``expect_version`` no longer current).
        """
        with self.store.atomic() as db:
            record = self._read(db, ipr_id)
            if expect_version is not None and record.version != expect_version:
                raise IPRConflict(
                    f"IPR {ipr_id} changed while this {action.value} was prepared (version {expect_version} -> "
                    f"{record.version}); read it again and retry",
                    data={"ipr_id": ipr_id, "expected": expect_version, "found": record.version},
                )
            target = next_state(record.state, action)
            if guard is not None:
                target = guard(db, record) or target
            columns = {"state": target.value, "updated_at": utc_now(), **(updates or {})}
            assignments = ", ".join(f"{name} = ?" for name in columns)
            cursor = db.execute(
                f"UPDATE iprs SET {assignments}, version = version + 1 WHERE id = ? AND version = ?",  # noqa: S608 - column names are ours
                [*columns.values(), ipr_id, record.version],
            )
            if cursor.rowcount != 1:  # pragma: no cover - BEGIN IMMEDIATE makes this unreachable
                raise IPRConflict(f"IPR {ipr_id} changed concurrently; read it again and retry")
            if also is not None:
                also(db, record)
            event_id = _event(db, ipr_id, actor, action.value, record.state.value, target.value, payload)
            after = self._read(db, ipr_id)
        return self._published(after, event_id, action.value, record.state.value, actor)

    def add_revision(
        self, ipr_id: int, actor: str, blueprint: Mapping[str, Any], checks: list[CheckResult], expect_version: int
    ) -> IPRRecord:
        """A new immutable revision; the IPR goes (back) to open and earlier approvals lapse."""

        def write(db: "Database", record: IPRRecord) -> None:
            self._insert_revision(db, ipr_id, record.revision + 1, blueprint, checks, actor)

        record = self.get(ipr_id)
        return self.transition(
            ipr_id,
            Action.REVISE,
            actor,
            payload={"revision": record.revision + 1, "content_hash": content_hash(blueprint)},
            expect_version=expect_version,
            also=write,
            updates={"revision": record.revision + 1, "blueprint_name": blueprint["name"]},
        )

    def add_comment(
        self, db: "Database", ipr_id: int, revision: int, author: str, verdict: str | None, body: str
    ) -> None:
        db.execute(
            "INSERT INTO ipr_comments (ipr_id, revision, author, verdict, body, at) VALUES (?, ?, ?, ?, ?, ?)",
            [ipr_id, revision, author, verdict, body, utc_now()],
        )

    def deployed_blueprint(self, blueprint_name: str, exclude_ipr: int | None = None) -> dict[str, Any] | None:
        """The blueprint revision currently deployed under this name (by any IPR), if any."""
        with self.store.lock:
            rows = list(
                self.store.db.query(
                    "SELECT r.blueprint FROM iprs i JOIN ipr_revisions r "
                    "ON r.ipr_id = i.id AND r.number = i.deployed_revision "
                    "WHERE i.blueprint_name = ? AND i.deployed_revision IS NOT NULL AND i.id IS NOT ? "
                    "ORDER BY i.updated_at DESC LIMIT 1",
                    [blueprint_name, exclude_ipr],
                )
            )
        return json.loads(rows[0]["blueprint"]) if rows else None
