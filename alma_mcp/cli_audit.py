"""``alma-mcp audit verify``: recompute the audit log's hash chain and name the first broken row.

Exit status 0 when every row fits the chain, 1 when one does not (the row and the reason are
printed), so a cron job or a CI step can alert on it.
"""

from __future__ import annotations

import argparse

from alma_mcp.audit import AuditLog
from alma_mcp.settings import Settings
from alma_mcp.store import Store

EXIT_OK = 0
EXIT_BROKEN = 1


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``audit`` (with its ``verify`` action) to the CLI's subcommands."""
    audit = subparsers.add_parser("audit", help="check the hash-chained audit log")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    actions.add_parser("verify", help="recompute the hash chain; exit 1 and name the first broken row")
    return audit


def run_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``audit`` action; a ``StoreError`` propagates to the CLI, which prints it."""
    store = Store.open(settings.db_path)
    try:
        result = AuditLog(store, enabled=settings.audit_enabled).verify()
    finally:
        store.close()
    if result.ok:
        print(f"audit log ok: {result.rows} rows")
        return EXIT_OK
    print(f"audit log broken at row {result.first_broken_id}: {result.reason}")
    return EXIT_BROKEN
