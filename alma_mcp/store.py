"""The SQLite store: one database, WAL mode, schema only through migrations.

Sync MCP tools run on worker threads, so the connection is opened with
``check_same_thread=False`` and every use goes through ``Store.lock``; SQLite itself serialises
writers across processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from alma_mcp.errors import StoreError
from alma_mcp.paths import default_db_path
from alma_mcp.settings import MEMORY_DB

MIGRATIONS = Migrations("alma_mcp")


@MIGRATIONS()
def m001_server_runs(db: Database) -> None:
    # One row per server start; a row never stopped is a run that crashed (deploy recovery reads it).
    db["server_runs"].create(  # type: ignore[union-attr]
        {"id": int, "version": str, "transport": str, "pid": int, "started_at": str, "stopped_at": str},
        pk="id",
        not_null={"version", "transport", "pid", "started_at"},
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
        """A transaction (savepoint when nested) under the process lock."""
        with self.lock, self.db.atomic():
            yield self.db

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
