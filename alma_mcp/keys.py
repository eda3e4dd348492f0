"""API keys for the HTTP side app: created once, stored only as a hash, each with roles and a rate limit.

A key reads ``alma_<keyid>_<secret>``: ``keyid`` is 12 hex characters (the row's primary key,
safe to show and log), ``secret`` 32 random bytes from ``secrets`` in URL-safe base64. Only the
SHA-256 of the secret is stored: the secret is random and long, so a slow KDF would add latency to
every request and no protection. A presented key is looked up by its id and its hash compared with
``hmac.compare_digest``; an unknown id is compared against a dummy hash, so it costs the same.

A key acts as ``Principal(id="key:<name>")``. Names are never reused, even after revocation, so
that every event and approval recorded under ``key:<name>`` names one key.
"""

import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict

from alma_mcp.errors import AlmaError, InvalidRequest
from alma_mcp.ipr.principals import Principal, Role, parse_roles
from alma_mcp.store import Store

if TYPE_CHECKING:
    from sqlite_utils import Database

logger = logging.getLogger(__name__)

KEY_PREFIX: Final = "alma"
KEY_ID_HEX_CHARS: Final = 12
SECRET_BYTES: Final = 32
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per key: no write per request."""

_KEY_RE: Final = re.compile(r"alma_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DUMMY_HASH: Final = hashlib.sha256(b"alma-mcp: no key has this secret").hexdigest()
_COLUMNS: Final = "id, name, roles, rate_limit_rpm, created_at, created_by, revoked_at, last_used_at"


class Unauthenticated(AlmaError):
    """No API key, or one that is unknown, revoked or mistyped (HTTP 401)."""

    code = "auth.unauthenticated"


class ApiKeyInfo(BaseModel):
    """What is known about a key, never its secret or hash."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    roles: frozenset[Role]
    rate_limit_rpm: int | None
    created_at: str
    created_by: str
    revoked_at: str | None
    last_used_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _roles_text(roles: frozenset[Role]) -> str:
    return ",".join(sorted(r.value for r in roles))


def _info(row: tuple[Any, ...]) -> ApiKeyInfo:
    key_id, name, roles, rpm, created_at, created_by, revoked_at, last_used_at = row
    return ApiKeyInfo(
        id=key_id,
        name=name,
        roles=parse_roles(r for r in str(roles).split(",") if r),
        rate_limit_rpm=rpm,
        created_at=created_at,
        created_by=created_by,
        revoked_at=revoked_at,
        last_used_at=last_used_at,
    )


def _now() -> datetime:
    return datetime.now(UTC)


class KeyStore:
    """The ``api_keys`` table: create, list, revoke and authenticate keys."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self._clock = clock

    def _stamp(self) -> str:
        return self._clock().isoformat(timespec="microseconds")

    def create(
        self,
        name: str,
        roles: Iterable[str],
        created_by: str,
        rate_limit_rpm: int | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """A new key; returns its record and the key itself, which is never available again.

        Raises:
            InvalidRequest: a bad or already used name, an unknown role, no role, or a limit below 1.
        """
        if not _NAME_RE.fullmatch(name):
            raise InvalidRequest(
                f"key name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
                data={"name": name},
            )
        try:
            parsed = parse_roles(roles)
        except ValueError as exc:
            raise InvalidRequest(str(exc), data={"allowed": [r.value for r in Role]}) from None
        if not parsed:
            allowed = ", ".join(r.value for r in Role)
            raise InvalidRequest(
                f"a key needs at least one role; allowed: {allowed}", data={"allowed": [r.value for r in Role]}
            )
        if rate_limit_rpm is not None and rate_limit_rpm < 1:
            raise InvalidRequest(
                f"rate limit {rate_limit_rpm} is not allowed: give requests per minute, at least 1 "
                "(or none for the server's defaults)",
                data={"rate_limit_rpm": rate_limit_rpm},
            )
        secret = secrets.token_urlsafe(SECRET_BYTES)
        created_at = self._stamp()
        with self.store.atomic() as db:
            taken = db.execute("SELECT id FROM api_keys WHERE name = ?", [name]).fetchone()
            if taken is not None:
                raise InvalidRequest(
                    f"a key named {name!r} already exists (id {taken[0]}); names are never reused, even after "
                    "revocation: choose another name",
                    data={"name": name, "id": taken[0]},
                )
            key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
            while db.execute("SELECT 1 FROM api_keys WHERE id = ?", [key_id]).fetchone() is not None:
                key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)  # 2**48 ids: practically never loops
            db.execute(
                "INSERT INTO api_keys (id, name, roles, secret_hash, rate_limit_rpm, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [key_id, name, _roles_text(parsed), _hash(secret), rate_limit_rpm, created_at, created_by],
            )
        info = ApiKeyInfo(
            id=key_id,
            name=name,
            roles=parsed,
            rate_limit_rpm=rate_limit_rpm,
            created_at=created_at,
            created_by=created_by,
            revoked_at=None,
            last_used_at=None,
        )
        return info, f"{KEY_PREFIX}_{key_id}_{secret}"

    def all_keys(self) -> list[ApiKeyInfo]:
        """Every key, revoked ones included, in the order they were created."""
        with self.store.lock:
            rows = self.store.db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY rowid").fetchall()  # noqa: S608
        return [_info(row) for row in rows]

    def count_active(self) -> int:
        """Keys not revoked."""
        with self.store.lock:
            row = self.store.db.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()
        return int(row[0])

    def get(self, id_or_name: str) -> ApiKeyInfo:
        """A key by id or name (an id wins over a name that looks like one).

        Raises:
            InvalidRequest: no key has that id or name.
        """
        with self.store.lock:
            return self._lookup(self.store.db, id_or_name)

    def revoke(self, id_or_name: str) -> ApiKeyInfo:
        """Revoke a key by id or name; revoking a revoked key changes nothing and returns it.

        Raises:
            InvalidRequest: no key has that id or name.
        """
        with self.store.atomic() as db:
            info = self._lookup(db, id_or_name)
            if info.revoked_at is not None:
                return info
            revoked_at = self._stamp()
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [revoked_at, info.id])
        return info.model_copy(update={"revoked_at": revoked_at})

    @staticmethod
    def _lookup(db: "Database", id_or_name: str) -> ApiKeyInfo:
        for column in ("id", "name"):
            row = db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE {column} = ?", [id_or_name]).fetchone()  # noqa: S608
            if row is not None:
                return _info(row)
        raise InvalidRequest(
            f"no key has the id or name {id_or_name!r}; list them with alma-mcp keys list",
            data={"key": id_or_name},
        )

    def authenticate(self, raw_key: str) -> ApiKeyInfo | None:
        """The active key ``raw_key`` is, else ``None`` (malformed, unknown, wrong secret or revoked).

        Blocking (SQLite, possibly a write): call it off the event loop.
        """
        match = _KEY_RE.fullmatch(raw_key)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self.store.lock:
            row = self.store.db.execute(
                f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE id = ?",  # noqa: S608
                [key_id],
            ).fetchone()
        # Same work whether or not the id exists: hash, then a constant-time compare.
        stored = _DUMMY_HASH if row is None else str(row[-1])
        matches = hmac.compare_digest(_hash(secret), stored)
        if row is None or not matches:
            return None
        info = _info(row[:-1])
        if not info.active:
            return None
        return self._touch(info)

    def _touch(self, info: ApiKeyInfo) -> ApiKeyInfo:
        now = self._clock()
        if info.last_used_at is not None and now - datetime.fromisoformat(info.last_used_at) < LAST_USED_RESOLUTION:
            return info
        stamp = now.isoformat(timespec="microseconds")
        try:
            with self.store.atomic() as db:
                db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", [stamp, info.id])
        except sqlite3.Error:
            # Bookkeeping only: a busy database must not turn a valid key away.
            logger.warning("could not record the use of key %s", info.id, exc_info=True)
            return info
        return info.model_copy(update={"last_used_at": stamp})

    def principal(self, info: ApiKeyInfo) -> Principal:
        """Who a key acts as: ``key:<name>`` with the key's roles."""
        return Principal(id=f"key:{info.name}", roles=info.roles)
