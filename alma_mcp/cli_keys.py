"""``alma-mcp keys create|list|revoke``: API keys for the HTTP side app.

``create`` prints the key on stdout, alone, exactly once (``KEY=$(alma-mcp keys create ...)``
works); what it created goes to stderr. Only the key's hash is stored, so a lost key is revoked and
replaced, never recovered. The commands open only the database, not the services, so they are safe
to run next to a serving process.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from alma_mcp.errors import InvalidRequest
from alma_mcp.ipr.principals import Role
from alma_mcp.keys import ApiKeyInfo, KeyStore
from alma_mcp.settings import MEMORY_DB, Settings
from alma_mcp.store import Store

EXIT_OK = 0
EXIT_USAGE = 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``keys`` and its actions to the CLI's subcommands; ``args.keys_command`` names the action."""
    allowed = ", ".join(r.value for r in Role)
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys for HTTP")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = ksub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="unique name; the key acts as key:NAME")
    create.add_argument("--roles", required=True, help=f"comma-separated roles: {allowed}")
    create.add_argument(
        "--rate-limit",
        dest="rate_limit",
        type=int,
        default=None,
        metavar="RPM",
        help="requests per minute for this key (default: the server's limits)",
    )
    ksub.add_parser("list", help="every key: id, name, roles, created, last used, revoked")
    revoke = ksub.add_parser("revoke", help="revoke a key by id or name (takes effect on the next request)")
    revoke.add_argument("key", metavar="ID_OR_NAME")
    return keys


def _operator() -> str:
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without USER): still record something
        return "user:unknown"


def _when(stamp: str | None) -> str:
    return "-" if stamp is None else stamp[:16].replace("T", " ")


def _roles(info: ApiKeyInfo) -> str:
    return ",".join(sorted(r.value for r in info.roles))


def render_table(keys: list[ApiKeyInfo]) -> str:
    """Keys as an aligned table; never a hash or a secret (``ApiKeyInfo`` carries neither)."""
    header = ("ID", "NAME", "ROLES", "RPM", "CREATED", "LAST USED", "REVOKED")
    rows = [
        (
            k.id,
            k.name,
            _roles(k),
            "-" if k.rate_limit_rpm is None else str(k.rate_limit_rpm),
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    )


def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Run one ``keys`` action; an ``AlmaError`` propagates to the CLI, which prints it and exits 1."""
    if settings.db_path == MEMORY_DB:
        print(
            "alma-mcp: ALMA_DB_PATH is ':memory:': keys kept there vanish when this command exits; "
            "point ALMA_DB_PATH at the database the server uses",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = Store.open(settings.db_path)
    try:
        keys = KeyStore(store)
        command = args.keys_command
        if command == "create":
            roles = [r for r in args.roles.split(",") if r.strip()]
            info, raw = keys.create(args.name, roles, _operator(), args.rate_limit)
            limit = "the server's rate limits" if info.rate_limit_rpm is None else f"{info.rate_limit_rpm} rpm"
            print(
                f"created key {info.name!r} (id {info.id}, roles {_roles(info)}, {limit}); it acts as "
                f"key:{info.name}.\nStore it now: it is shown only this once. Send it as "
                "'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
                file=sys.stderr,
            )
            print(raw)
            return EXIT_OK
        if command == "list":
            listed = keys.all_keys()
            if listed:
                print(render_table(listed))
            else:
                print("no keys; create one with: alma-mcp keys create --name NAME --roles viewer")
            return EXIT_OK
        if command == "revoke":
            found = keys.get(args.key)
            if found.revoked_at is not None:
                print(f"key {found.name!r} (id {found.id}) was already revoked at {_when(found.revoked_at)}")
                return EXIT_OK
            info = keys.revoke(found.id)
            print(f"revoked key {info.name!r} (id {info.id}); requests with it now get 401")
            return EXIT_OK
        raise InvalidRequest(f"unknown keys action {command!r}; use create, list or revoke")
    finally:
        store.close()
