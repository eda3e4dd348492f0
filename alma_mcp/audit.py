"""The audit log: an append-only table where every row carries the SHA-256 of the previous row.

Who did what, and how it went: every tool call (principal, tool, a digest of the arguments with
secrets redacted, outcome, duration), every IPR transition and every authentication failure.

    row.hash = sha256(canonical JSON of [prev_hash, at, kind, principal, action, target, outcome,
                                          duration_ms, detail])

The first row's ``prev_hash`` is :data:`GENESIS_HASH`. An append reads the last hash inside the
store's write transaction (``BEGIN IMMEDIATE``), so appends from threads and processes form one
chain. SQLite triggers refuse ``UPDATE`` and ``DELETE`` on the table; ``verify()`` recomputes the
chain and names the first row whose content or link was changed anyway (a chain cannot notice
that its newest rows were cut off: compare the row count with an earlier one for that).

Argument values never reach the log: a row keeps the tool name, the argument keys and the digest
of the arguments after every value under a secret-looking key was replaced by ``[redacted]``, so
two calls with the same non-secret arguments get the same digest, and nothing read from the
table reveals a value.
"""

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from pydantic import BaseModel

from alma_mcp.events import DomainEvent
from alma_mcp.store import Store, utc_now

logger = logging.getLogger(__name__)

GENESIS_HASH: Final = "0" * 64
"""The ``prev_hash`` of the first row."""

REDACTED: Final = "[redacted]"
SECRET_KEY: Final = re.compile(r"(secret|password|token|api[-_]?key|credential|private)", re.IGNORECASE)
"""Keys whose values are redacted before hashing (``x-api-key`` counts too)."""

MAX_ARGUMENT_KEYS: Final = 50
MAX_NAME_LENGTH: Final = 128
VERIFY_BATCH: Final = 1000

TOOL_CALL: Final = "tool_call"
IPR_TRANSITION: Final = "ipr_transition"
AUTH_FAILURE: Final = "auth_failure"
ANONYMOUS: Final = "anonymous"

_COLUMNS = "id, at, kind, principal, action, target, outcome, duration_ms, detail, prev_hash, hash"


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, ASCII only: equal data, equal text, on every platform."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def redact(value: Any) -> Any:
    """A copy of ``value`` with the value of every secret-looking key (at any depth) replaced."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if SECRET_KEY.search(str(k)) else redact(v)
            for k, v in value.items()  # keys made strings: JSON objects have no other
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def arguments_digest(arguments: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of the arguments, secrets redacted."""
    return hashlib.sha256(canonical_json(redact(arguments)).encode()).hexdigest()


def tool_call_detail(tool: str, arguments: Any) -> dict[str, Any]:
    """What a tool-call row keeps of a call: the tool, the argument keys and the digest, no values."""
    keys = sorted(str(k)[:MAX_NAME_LENGTH] for k in arguments) if isinstance(arguments, Mapping) else []
    detail: dict[str, Any] = {
        "tool": tool[:MAX_NAME_LENGTH],
        "argument_keys": keys[:MAX_ARGUMENT_KEYS],
        "arguments_sha256": arguments_digest(arguments),
    }
    if len(keys) > MAX_ARGUMENT_KEYS:
        detail["argument_keys_omitted"] = len(keys) - MAX_ARGUMENT_KEYS
    return detail


def row_hash(
    prev_hash: str,
    at: str,
    kind: str,
    principal: str,
    action: str,
    target: str,
    outcome: str,
    duration_ms: float | None,
    detail: Any,
) -> str:
    content = [prev_hash, at, kind, principal, action, target, outcome, duration_ms, detail]
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


class AuditEntry(BaseModel):
    """One row of the log, as read back."""

    id: int
    at: str
    kind: str
    principal: str
    action: str
    target: str
    outcome: str
    duration_ms: float | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyResult(BaseModel):
    """The outcome of :meth:`AuditLog.verify`: ``rows`` counts the rows checked."""

    ok: bool
    rows: int
    first_broken_id: int | None = None
    reason: str | None = None


class AuditLog:
    """Appends to and verifies the hash chain in ``audit_log``; ``enabled=False`` records nothing."""

    def __init__(self, store: Store, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled

    def append(
        self,
        kind: str,
        principal: str,
        action: str,
        target: str,
        outcome: str,
        duration_ms: float | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Add one row to the chain and return its id (0 when the log is disabled).

        ``detail`` must be JSON data and never carry secrets: callers pass digests and names, not values.
        """
        if not self.enabled:
            return 0
        # A REAL column hands back a float: hash what will be read back, not an int that reads as 12.0.
        duration = None if duration_ms is None else round(float(duration_ms), 3)
        detail_data = json.loads(canonical_json(dict(detail or {})))  # plain JSON types, as read back
        with self.store.atomic() as db:
            last = db.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            prev_hash = str(last[0]) if last is not None else GENESIS_HASH
            at = utc_now()
            digest = row_hash(prev_hash, at, kind, principal, action, target, outcome, duration, detail_data)
            cursor = db.execute(
                "INSERT INTO audit_log (at, kind, principal, action, target, outcome, duration_ms, detail, "
                "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    at,
                    kind,
                    principal,
                    action,
                    target,
                    outcome,
                    duration,
                    canonical_json(detail_data),
                    prev_hash,
                    digest,
                ],
            )
            return int(cursor.lastrowid or 0)

    def subscriber(self, event: DomainEvent) -> None:
        """An ``EventBus`` subscriber recording IPR transitions and authentication failures."""
        if not self.enabled:
            return
        data = event.data
        if event.kind == "ipr.transition":
            self.append(
                IPR_TRANSITION,
                str(data.get("actor") or ANONYMOUS),
                str(data.get("action", "")),
                f"ipr:{data.get('ipr_id')}",
                "ok",
                detail={
                    "event_id": data.get("event_id"),
                    "from_state": data.get("from_state"),
                    "to_state": data.get("to_state"),
                },
            )
        elif event.kind == "auth.failure":
            extra = {k: v for k, v in data.items() if k not in ("reason", "path")}
            self.append(
                AUTH_FAILURE,
                ANONYMOUS,
                "authenticate",
                str(data.get("path", ""))[:1024],
                str(data.get("reason", "unknown"))[:MAX_NAME_LENGTH],
                detail=redact(extra),
            )

    def entries(self, after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Rows with ``id > after_id``, oldest first."""
        with self.store.lock:
            rows = self.store.db.execute(
                f"SELECT {_COLUMNS} FROM audit_log WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608 - fixed column list
                [after_id, limit],
            ).fetchall()
        return [_entry(row) for row in rows]

    def _rows(self) -> Iterator[tuple[Any, ...]]:
        after = 0
        while True:
            with self.store.lock:
                batch = self.store.db.execute(
                    f"SELECT {_COLUMNS} FROM audit_log WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608 - fixed column list
                    [after, VERIFY_BATCH],
                ).fetchall()
            yield from batch
            if len(batch) < VERIFY_BATCH:
                return
            after = int(batch[-1][0])

    def verify(self) -> VerifyResult:
        """Recompute the chain from the first row; the first row that does not fit is named."""
        expected_prev = GENESIS_HASH
        previous_id: int | None = None
        count = 0
        for row in self._rows():
            count += 1
            row_id, at, kind, principal, action, target, outcome, duration_ms, detail_text, prev_hash, stored = row
            if prev_hash != expected_prev:
                what = f"row {previous_id}" if previous_id is not None else "the start of the log"
                return VerifyResult(
                    ok=False,
                    rows=count,
                    first_broken_id=row_id,
                    reason=f"prev_hash does not match the hash of {what}",
                )
            try:
                detail = json.loads(detail_text)
            except (TypeError, ValueError):
                return VerifyResult(ok=False, rows=count, first_broken_id=row_id, reason="detail is not valid JSON")
            duration = None if duration_ms is None else float(duration_ms)
            actual = row_hash(prev_hash, at, kind, principal, action, target, outcome, duration, detail)
            if actual != stored:
                return VerifyResult(
                    ok=False, rows=count, first_broken_id=row_id, reason="hash does not match its content"
                )
            expected_prev = stored
            previous_id = row_id
        return VerifyResult(ok=True, rows=count)


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    names = [c.strip() for c in _COLUMNS.split(",")]
    data = dict(zip(names, row, strict=True))
    data["detail"] = json.loads(data["detail"])
    return AuditEntry.model_validate(data)
