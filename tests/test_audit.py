"""The hash-chained audit log: chaining, redaction, tamper detection, append-only triggers, the CLI."""

import argparse
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alma_mcp.audit import (
    GENESIS_HASH,
    REDACTED,
    AuditLog,
    arguments_digest,
    canonical_json,
    redact,
    row_hash,
    tool_call_detail,
)
from alma_mcp.cli_audit import add_parser, run_audit
from alma_mcp.events import DomainEvent, EventBus
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.store import Store

SHOP: dict[str, Any] = {
    "name": "shop",
    "resources": [{"name": "db", "type": "database", "provider": "simulation"}],
}
ALICE = Principal(id="user:alice", roles=frozenset({Role.VIEWER, Role.APPROVER}))
MODEL = Principal(id="mcp:model", roles=frozenset({Role.VIEWER, Role.PROPOSER}))


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store.open(":memory:")
    yield opened
    opened.close()


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store, enabled=True)


def fill(audit: AuditLog, rows: int) -> list[int]:
    return [
        audit.append("tool_call", f"key:{n % 3}", "list_templates", "", "ok", n * 1.5, {"n": n}) for n in range(rows)
    ]


def test_rows_form_a_chain_from_the_genesis_hash(audit: AuditLog) -> None:
    ids = fill(audit, 3)
    entries = audit.entries()
    assert [e.id for e in entries] == ids
    assert entries[0].prev_hash == GENESIS_HASH
    assert entries[1].prev_hash == entries[0].hash
    assert entries[2].prev_hash == entries[1].hash
    assert len({e.hash for e in entries}) == 3
    assert audit.verify().model_dump() == {"ok": True, "rows": 3, "first_broken_id": None, "reason": None}


def test_a_row_hash_is_sha256_of_the_canonical_json_of_its_content(audit: AuditLog) -> None:
    audit.append("tool_call", "key:a", "ipr_get", "ipr:1", "ok", 12, {"b": 1, "a": [1, 2]})
    entry = audit.entries()[0]
    assert entry.duration_ms == 12.0  # what a REAL column reads back is what was hashed
    content = [
        GENESIS_HASH,
        entry.at,
        "tool_call",
        "key:a",
        "ipr_get",
        "ipr:1",
        "ok",
        12.0,
        {"a": [1, 2], "b": 1},
    ]
    expected = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert entry.hash == expected


def test_an_empty_log_verifies(audit: AuditLog) -> None:
    assert audit.verify().model_dump() == {"ok": True, "rows": 0, "first_broken_id": None, "reason": None}


def test_a_disabled_log_records_nothing(store: Store) -> None:
    log = AuditLog(store, enabled=False)
    assert log.append("tool_call", "key:a", "ipr_get", "", "ok") == 0
    log.subscriber(DomainEvent(kind="ipr.transition", data={"ipr_id": 7, "action": "approve", "actor": "x"}))
    assert log.entries() == []


def test_changing_a_rows_content_is_found_at_that_row(store: Store, audit: AuditLog) -> None:
    ids = fill(audit, 20)
    store.db.execute("DROP TRIGGER audit_log_no_update")
    store.db.execute("UPDATE audit_log SET outcome = 'ok-but-not-really' WHERE id = ?", [ids[16]])
    result = audit.verify()
    assert result.model_dump() == {
        "ok": False,
        "rows": 17,
        "first_broken_id": ids[16],
        "reason": "hash does not match its content",
    }


@pytest.mark.parametrize("column", ["at", "kind", "principal", "action", "target", "duration_ms", "detail"])
def test_any_hashed_column_changed_breaks_the_row(store: Store, audit: AuditLog, column: str) -> None:
    ids = fill(audit, 5)
    store.db.execute("DROP TRIGGER audit_log_no_update")
    value: Any = 99.5 if column == "duration_ms" else ('{"n":77}' if column == "detail" else "tampered")
    store.db.execute(f"UPDATE audit_log SET {column} = ? WHERE id = ?", [value, ids[2]])  # noqa: S608 - test's own SQL
    result = audit.verify()
    assert (result.ok, result.first_broken_id, result.reason) == (False, ids[2], "hash does not match its content")


def test_changing_a_prev_hash_is_found_at_that_row(store: Store, audit: AuditLog) -> None:
    ids = fill(audit, 6)
    store.db.execute("DROP TRIGGER audit_log_no_update")
    store.db.execute("UPDATE audit_log SET prev_hash = ? WHERE id = ?", ["f" * 64, ids[3]])
    result = audit.verify()
    assert result.first_broken_id == ids[3]
    assert result.reason == f"prev_hash does not match the hash of row {ids[2]}"


def test_rewriting_a_row_and_its_hash_is_found_at_the_next_row(store: Store, audit: AuditLog) -> None:
    """A forger who recomputes the changed row's own hash still breaks the link to the next row."""
    ids = fill(audit, 4)
    entry = audit.entries()[1]
    fields = (entry.prev_hash, entry.at, entry.kind, entry.principal, entry.action, entry.target)
    forged = row_hash(*fields, "denied", entry.duration_ms, entry.detail)
    store.db.execute("DROP TRIGGER audit_log_no_update")
    store.db.execute("UPDATE audit_log SET outcome = 'denied', hash = ? WHERE id = ?", [forged, ids[1]])
    result = audit.verify()
    assert (result.first_broken_id, result.reason) == (ids[2], f"prev_hash does not match the hash of row {ids[1]}")


def test_deleting_a_middle_row_is_found_at_the_next_row(store: Store, audit: AuditLog) -> None:
    ids = fill(audit, 5)
    store.db.execute("DROP TRIGGER audit_log_no_delete")
    store.db.execute("DELETE FROM audit_log WHERE id = ?", [ids[2]])
    result = audit.verify()
    assert (result.first_broken_id, result.reason) == (ids[3], f"prev_hash does not match the hash of row {ids[1]}")


def test_a_first_row_not_linked_to_genesis_is_broken(store: Store, audit: AuditLog) -> None:
    ids = fill(audit, 2)
    store.db.execute("DROP TRIGGER audit_log_no_delete")
    store.db.execute("DELETE FROM audit_log WHERE id = ?", [ids[0]])
    result = audit.verify()
    assert (result.first_broken_id, result.reason) == (
        ids[1],
        "prev_hash does not match the hash of the start of the log",
    )


def test_unparsable_detail_is_reported(store: Store, audit: AuditLog) -> None:
    ids = fill(audit, 2)
    store.db.execute("DROP TRIGGER audit_log_no_update")
    store.db.execute("UPDATE audit_log SET detail = '{not json' WHERE id = ?", [ids[1]])
    result = audit.verify()
    assert (result.first_broken_id, result.reason) == (ids[1], "detail is not valid JSON")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'x'",
        "UPDATE audit_log SET hash = 'y' WHERE id = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = 1",
    ],
)
def test_update_and_delete_are_refused_by_the_triggers(store: Store, audit: AuditLog, statement: str) -> None:
    fill(audit, 2)
    with pytest.raises(sqlite3.IntegrityError) as refused:
        store.db.execute(statement)
    assert str(refused.value) == "the audit log is append-only"
    assert audit.verify().ok
    assert len(audit.entries()) == 2


def test_verify_walks_more_rows_than_one_batch(audit: AuditLog) -> None:
    fill(audit, 2500)
    assert audit.verify().model_dump() == {"ok": True, "rows": 2500, "first_broken_id": None, "reason": None}


def test_appends_from_many_threads_form_one_chain(audit: AuditLog) -> None:
    def worker(n: int) -> None:
        for i in range(25):
            audit.append("tool_call", f"key:{n}", "ipr_list", "", "ok", float(i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert audit.verify().model_dump() == {"ok": True, "rows": 200, "first_broken_id": None, "reason": None}


def test_appends_through_two_connections_to_one_file_form_one_chain(tmp_path: Path) -> None:
    """Two processes' stores: the last hash is read inside each write transaction."""
    first, second = Store.open(str(tmp_path / "a.db")), Store.open(str(tmp_path / "a.db"))
    try:
        logs = [AuditLog(first), AuditLog(second)]

        def worker(log: AuditLog) -> None:
            for i in range(40):
                log.append("tool_call", "key:x", "ipr_get", "", "ok", float(i))

        threads = [threading.Thread(target=worker, args=(log,)) for log in logs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert logs[0].verify().model_dump() == {"ok": True, "rows": 80, "first_broken_id": None, "reason": None}
    finally:
        first.close()
        second.close()


# -- redaction -------------------------------------------------------------------------------------


def test_secret_looking_keys_are_redacted_at_any_depth() -> None:
    arguments = {
        "name": "web",
        "password": "hunter2",
        "API_KEY": "k-1",
        "apiKey": "k-2",
        "x-api-key": "k-3",
        "nested": {"db_password": "p", "list": [{"Token": "t", "keep": 1}], "privateKey": "pk"},
        "client_secret": {"deep": "s"},
        "credentials": ["a", "b"],
    }
    assert redact(arguments) == {
        "name": "web",
        "password": REDACTED,
        "API_KEY": REDACTED,
        "apiKey": REDACTED,
        "x-api-key": REDACTED,
        "nested": {"db_password": REDACTED, "list": [{"Token": REDACTED, "keep": 1}], "privateKey": REDACTED},
        "client_secret": REDACTED,
        "credentials": REDACTED,
    }


def test_the_digest_ignores_secret_values_and_sees_everything_else() -> None:
    base = {"name": "web", "token": "one", "specs": {"cpu": 2}}
    assert arguments_digest(base) == arguments_digest({**base, "token": "two"})
    assert arguments_digest(base) != arguments_digest({**base, "name": "api"})
    assert arguments_digest(base) == arguments_digest({"specs": {"cpu": 2}, "token": "x", "name": "web"})
    assert arguments_digest(base) == hashlib.sha256(canonical_json(redact(base)).encode()).hexdigest()


def test_tool_call_detail_keeps_keys_and_digest_never_values() -> None:
    detail = tool_call_detail("ipr_create", {"title": "very visible title", "password": "hunter2"})
    assert detail == {
        "tool": "ipr_create",
        "argument_keys": ["password", "title"],
        "arguments_sha256": arguments_digest({"title": "very visible title", "password": "hunter2"}),
    }
    text = json.dumps(detail)
    assert "hunter2" not in text
    assert "very visible title" not in text


def test_tool_call_detail_caps_the_key_list() -> None:
    detail = tool_call_detail("t", {f"k{n:03}": n for n in range(60)})
    assert len(detail["argument_keys"]) == 50
    assert detail["argument_keys_omitted"] == 10


def test_tool_call_detail_of_arguments_that_are_not_an_object() -> None:
    assert tool_call_detail("t", None)["argument_keys"] == []
    assert tool_call_detail("t", [1, 2])["arguments_sha256"] == arguments_digest([1, 2])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_redaction_is_idempotent_and_leaves_no_secret_key_unredacted(value: Any) -> None:
    once = redact(value)
    assert redact(once) == once

    def check(node: Any) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if any(w in key.lower() for w in ("secret", "password", "token", "apikey", "api_key", "private")):
                    assert child == REDACTED
                check(child)
        elif isinstance(node, list):
            for child in node:
                check(child)

    check(once)


# -- events ----------------------------------------------------------------------------------------


def test_ipr_transitions_on_the_bus_are_recorded(services: Services) -> None:
    audit = services.audit  # open_services subscribes it to the bus
    view = services.iprs.create(MODEL, title="shop", blueprint=SHOP)
    services.iprs.review(ALICE, view.ipr.id, "approve")
    rows = [(e.kind, e.principal, e.action, e.target, e.outcome) for e in audit.entries()]
    assert rows == [
        ("ipr_transition", "mcp:model", "open", f"ipr:{view.ipr.id}", "ok"),
        ("ipr_transition", "user:alice", "approve", f"ipr:{view.ipr.id}", "ok"),
    ]
    assert audit.entries()[1].detail == {"event_id": 2, "from_state": "open", "to_state": "approved"}
    assert audit.verify().ok


def test_auth_failures_on_the_bus_are_recorded_without_secrets(store: Store) -> None:
    bus, audit = EventBus(), AuditLog(store)
    bus.subscribe(audit.subscriber)
    bus.emit("auth.failure", reason="invalid_key", path="/mcp", client="10.0.0.9", api_key="leaked?")
    bus.emit("deployment.step", step_id=1)  # not an audited kind
    [entry] = audit.entries()
    assert (entry.kind, entry.principal, entry.action, entry.target, entry.outcome) == (
        "auth_failure",
        "anonymous",
        "authenticate",
        "/mcp",
        "invalid_key",
    )
    assert entry.detail == {"client": "10.0.0.9", "api_key": REDACTED}


# -- the CLI -----------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alma-mcp")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_verify_reports_an_intact_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(db_path=str(tmp_path / "alma.db"))
    store = Store.open(settings.db_path)
    fill(AuditLog(store), 3)
    store.close()
    assert run_audit(settings, parse(["audit", "verify"])) == 0
    assert capsys.readouterr().out == "audit log ok: 3 rows\n"


def test_cli_verify_names_the_first_broken_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(db_path=str(tmp_path / "alma.db"))
    store = Store.open(settings.db_path)
    ids = fill(AuditLog(store), 20)
    store.db.execute("DROP TRIGGER audit_log_no_update")
    store.db.execute("UPDATE audit_log SET principal = 'someone-else' WHERE id = ?", [ids[16]])
    store.close()
    assert run_audit(settings, parse(["audit", "verify"])) == 1
    assert capsys.readouterr().out == f"audit log broken at row {ids[16]}: hash does not match its content\n"


def test_cli_needs_an_action() -> None:
    with pytest.raises(SystemExit):
        parse(["audit"])
