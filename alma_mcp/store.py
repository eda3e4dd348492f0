"""The SQLite store: one database, WAL mode, schema only through migrations.

Sync MCP tools run on worker threads, so the connection is opened with
``check_same_thread=False`` and every use goes through ``Store.lock``; SQLite itself serialises
writers across processes.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alma_mcp.errors import StoreError
from alma_mcp.paths import default_db_path
from alma_mcp.settings import MEMORY_DB


def _import_sqlite_utils_without_numpy() -> None:
    # sqlite-utils imports numpy whenever it is installed, only to map numpy scalar types on insert;
    # we never insert numpy values. Hiding numpy for that one import keeps ~50 ms out of every stdio
    # start; numpy still loads normally later, on first use by the forecasting tools.
    if "sqlite_utils" in sys.modules or "numpy" in sys.modules:
        return
    sys.modules["numpy"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("sqlite_utils")
    finally:
        del sys.modules["numpy"]


_import_sqlite_utils_without_numpy()

from sqlite_utils import Database  # noqa: E402 - after the import above, on purpose
from sqlite_utils.migrations import Migrations  # noqa: E402

MIGRATIONS = Migrations("alma_mcp")


@MIGRATIONS()
def m001_server_runs(db: Database) -> None:
    # One row per server start; a row never stopped is a run that crashed (deploy recovery reads it).
    db["server_runs"].create(  # type: ignore[union-attr]
        {"id": int, "version": str, "transport": str, "pid": int, "started_at": str, "stopped_at": str},
        pk="id",
        not_null={"version", "transport", "pid", "started_at"},
    )


def _run_script(db: Database, script: str) -> None:
    # One statement at a time: sqlite3's executescript() would COMMIT first and break the atomicity
    # that Migrations gives each migration and its record.
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):  # a trigger body holds ';' of its own
            if buffer.strip(" \n;"):
                db.execute(buffer)
            buffer = ""


@MIGRATIONS()
def m002_iprs(db: Database) -> None:
    # SQL rather than table.create(): CHECK constraints and composite uniqueness keep bad rows out
    # even if a bug slips past the code.
    _run_script(
        db,
        """
        CREATE TABLE iprs (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            proposer TEXT NOT NULL,
            blueprint_name TEXT NOT NULL,
            revision INTEGER NOT NULL,
            deployed_revision INTEGER,
            version INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX iprs_state ON iprs(state);
        CREATE TABLE ipr_revisions (
            ipr_id INTEGER NOT NULL REFERENCES iprs(id),
            number INTEGER NOT NULL,
            content_hash TEXT NOT NULL,
            blueprint TEXT NOT NULL,
            checks TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (ipr_id, number)
        );
        CREATE TABLE ipr_events (
            id INTEGER PRIMARY KEY,
            ipr_id INTEGER NOT NULL REFERENCES iprs(id),
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            at TEXT NOT NULL,
            payload TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX ipr_events_ipr ON ipr_events(ipr_id, id);
        CREATE TABLE ipr_approvals (
            ipr_id INTEGER NOT NULL REFERENCES iprs(id),
            revision INTEGER NOT NULL,
            principal TEXT NOT NULL,
            at TEXT NOT NULL,
            PRIMARY KEY (ipr_id, revision, principal)
        );
        CREATE TABLE ipr_comments (
            id INTEGER PRIMARY KEY,
            ipr_id INTEGER NOT NULL REFERENCES iprs(id),
            revision INTEGER NOT NULL,
            author TEXT NOT NULL,
            verdict TEXT,
            body TEXT NOT NULL,
            at TEXT NOT NULL
        );
        """,
    )


@MIGRATIONS()
def m003_deployments(db: Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE deployments (
            id INTEGER PRIMARY KEY,
            ipr_id INTEGER NOT NULL REFERENCES iprs(id),
            revision INTEGER,
            kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
            state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'interrupted')),
            run_id INTEGER REFERENCES server_runs(id),
            actor TEXT NOT NULL,
            plan TEXT NOT NULL DEFAULT '{}',
            summary TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX deployments_ipr ON deployments(ipr_id, id);
        CREATE TABLE deployment_steps (
            id INTEGER PRIMARY KEY,
            deployment_id INTEGER NOT NULL REFERENCES deployments(id),
            resource TEXT NOT NULL,
            action TEXT NOT NULL,
            engine TEXT NOT NULL,
            wave INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'interrupted')),
            message TEXT NOT NULL DEFAULT '',
            engine_id TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            UNIQUE (deployment_id, resource, attempt)
        );
        CREATE TABLE sim_resources (
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            provider TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            specs TEXT NOT NULL,
            status TEXT NOT NULL,
            engine_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (scope, name)
        );
        CREATE TABLE sim_failures (
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            remaining INTEGER NOT NULL,
            PRIMARY KEY (scope, name)
        );
        """,
    )


@MIGRATIONS()
def m004_keys_and_audit(db: Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            roles TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            rate_limit_rpm INTEGER,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at TEXT,
            last_used_at TEXT
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            principal TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL,
            duration_ms REAL,
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE
        );
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
        """,
    )


def utc_now() -> str:
    """An ISO-8601 UTC timestamp with microseconds, the one time format the store uses."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Store:
    """The opened, migrated database and the lock that serialises its use in this process."""

    def __init__(self, db: Database, path: str) -> None:
        self.db = db
        self.path = path
        self.lock = threading.RLock()

    @classmethod
    def open(cls, path: str | None) -> Store:
        """Open (creating if needed) and migrate the database at ``path``.

        Raises:
            StoreError: the file cannot be created, opened or migrated.
        """
        target = path or str(default_db_path())
        try:
            if target == MEMORY_DB:
                conn = sqlite3.connect(":memory:", check_same_thread=False)
            else:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(target, check_same_thread=False, timeout=30)
            db = Database(conn)
            if target != MEMORY_DB:
                db.enable_wal()
                # In WAL mode NORMAL never corrupts and never loses a commit to a process crash
                # (SIGKILL); only an OS crash or power cut can drop the last transactions. FULL would
                # fsync every commit, which costs more than the rest of an IPR transition.
                db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            MIGRATIONS.apply(db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(
                f"cannot open database {target}: {exc}; set ALMA_DB_PATH to a writable file",
                data={"path": target},
            ) from exc
        return cls(db, target)

    @contextmanager
    def atomic(self) -> Iterator[Database]:
        """A write transaction under the process lock; a savepoint when nested.

        The outermost level is ``BEGIN IMMEDIATE``: it takes SQLite's write lock before the first
        read, so a read-check-write sequence (a compare-and-set) cannot interleave with another
        process's, which waits (up to the busy timeout) and then sees the committed result.
        """
        with self.lock:
            if self.db.conn.in_transaction:
                with self.db.atomic():
                    yield self.db
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.conn.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def journal_mode(self) -> str:
        with self.lock:
            row = self.db.execute("PRAGMA journal_mode").fetchone()
        return str(row[0])

    def applied_migrations(self) -> list[str]:
        with self.lock:
            return [m.name for m in MIGRATIONS.applied(self.db)]

    def record_start(self, version: str, transport: str) -> int:
        """Insert this run's row and return its id."""
        with self.atomic() as db:
            table = db.table("server_runs")
            table.insert({"version": version, "transport": transport, "pid": os.getpid(), "started_at": utc_now()})
            return int(table.last_pk)  # type: ignore[arg-type]

    def record_stop(self, run_id: int) -> None:
        with self.atomic() as db:
            db.table("server_runs").update(run_id, {"stopped_at": utc_now()})

    def close(self) -> None:
        with self.lock:
            self.db.close()
