"""API keys: stored as hashes, compared in constant time, listed without secrets, revoked by id or name."""

import argparse
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alma_mcp import keys as keys_module
from alma_mcp.cli_keys import add_parser, run_keys
from alma_mcp.errors import InvalidRequest
from alma_mcp.ipr.principals import Principal, Role
from alma_mcp.keys import ApiKeyInfo, KeyStore
from alma_mcp.services import Services
from alma_mcp.settings import Settings
from alma_mcp.store import Store

KEY_RE = re.compile(r"alma_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
ALLOWED = "viewer, proposer, approver, deployer, admin"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def keys(services: Services) -> KeyStore:
    return KeyStore(services.store)


def stored_row(services: Services, key_id: str) -> dict[str, object]:
    return dict(services.store.db["api_keys"].get(key_id))  # type: ignore[union-attr]


def test_a_created_key_is_stored_only_as_the_hash_of_its_secret(services: Services, keys: KeyStore) -> None:
    info, raw = keys.create("ci", ["viewer", "proposer"], "user:ops", rate_limit_rpm=30)
    match = KEY_RE.fullmatch(raw)
    assert match is not None
    key_id, secret = match.groups()
    assert info.id == key_id
    row = stored_row(services, key_id)
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert not any(secret in str(value) for value in row.values())
    assert row["roles"] == "proposer,viewer"
    assert (row["name"], row["rate_limit_rpm"], row["created_by"]) == ("ci", 30, "user:ops")
    assert (row["revoked_at"], row["last_used_at"]) == (None, None)


def test_two_keys_never_share_an_id_or_a_secret(keys: KeyStore) -> None:
    raws = [keys.create(f"k{i}", ["viewer"], "test")[1] for i in range(20)]
    assert len({raw.split("_")[1] for raw in raws}) == 20
    assert len(set(raws)) == 20


def test_authenticate_returns_the_key_it_is(keys: KeyStore) -> None:
    info, raw = keys.create("ci", ["deployer"], "test")
    found = keys.authenticate(raw)
    assert found is not None
    assert found.model_copy(update={"last_used_at": None}) == info
    assert keys.principal(found) == Principal(id="key:ci", roles=frozenset({Role.DEPLOYER}))


def test_authenticate_refuses_malformed_unknown_mistyped_and_revoked_keys(keys: KeyStore) -> None:
    info, raw = keys.create("ci", ["viewer"], "test")
    secret = raw.split("_", 2)[2]
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    assert keys.authenticate("") is None
    assert keys.authenticate("Bearer " + raw) is None
    assert keys.authenticate(raw + "x") is None
    assert keys.authenticate(f"alma_0123456789ab_{secret}") is None
    assert keys.authenticate(f"alma_{info.id}_{flipped}") is None
    keys.revoke(info.id)
    assert keys.authenticate(raw) is None


def test_secrets_are_compared_with_compare_digest_even_for_unknown_ids(
    keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, raw = keys.create("ci", ["viewer"], "test")
    secret = raw.split("_", 2)[2]
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    presented = hashlib.sha256(secret.encode()).hexdigest()
    assert keys.authenticate(f"alma_0123456789ab_{secret}") is None
    assert keys.authenticate(raw) is not None
    assert compared == [(presented, keys_module._DUMMY_HASH), (presented, presented)]


def test_last_used_is_written_at_most_once_a_minute(services: Services) -> None:
    clock = Clock()
    keys = KeyStore(services.store, clock=clock)
    info, raw = keys.create("ci", ["viewer"], "test")
    first = clock.now.isoformat(timespec="microseconds")
    assert keys.authenticate(raw) is not None
    assert stored_row(services, info.id)["last_used_at"] == first
    clock.now += timedelta(seconds=59)
    seen = keys.authenticate(raw)
    assert seen is not None
    assert seen.last_used_at == first
    assert stored_row(services, info.id)["last_used_at"] == first
    clock.now += timedelta(seconds=2)
    assert keys.authenticate(raw) is not None
    assert stored_row(services, info.id)["last_used_at"] == clock.now.isoformat(timespec="microseconds")


def test_listing_never_shows_a_hash_or_a_secret(keys: KeyStore) -> None:
    keys.create("a", ["viewer"], "test")
    keys.create("b", ["admin"], "test", rate_limit_rpm=5)
    listed = keys.all_keys()
    assert [k.name for k in listed] == ["a", "b"]
    assert set(ApiKeyInfo.model_fields) == {
        "id",
        "name",
        "roles",
        "rate_limit_rpm",
        "created_at",
        "created_by",
        "revoked_at",
        "last_used_at",
    }
    assert all(k.active for k in listed)


def test_revoke_by_id_or_by_name(keys: KeyStore) -> None:
    first, _ = keys.create("first", ["viewer"], "test")
    keys.create("second", ["viewer"], "test")
    by_id = keys.revoke(first.id)
    by_name = keys.revoke("second")
    assert by_id.name == "first"
    assert by_id.revoked_at is not None
    assert by_name.name == "second"
    assert by_name.revoked_at is not None
    assert keys.revoke("first") == by_id  # revoking again changes nothing
    assert [k.active for k in keys.all_keys()] == [False, False]


def test_revoking_an_unknown_key_names_what_to_do(keys: KeyStore) -> None:
    with pytest.raises(InvalidRequest) as info:
        keys.revoke("ghost")
    assert str(info.value) == "[request.invalid] no key has the id or name 'ghost'; list them with alma-mcp keys list"


def test_an_unknown_role_names_the_allowed_roles(keys: KeyStore) -> None:
    with pytest.raises(InvalidRequest) as info:
        keys.create("ci", ["viewer", "root"], "test")
    assert str(info.value) == f"[request.invalid] unknown role 'root'; allowed: {ALLOWED}"
    assert keys.all_keys() == []


@pytest.mark.parametrize(
    ("name", "roles", "rpm", "message"),
    [
        ("ci", [], None, f"a key needs at least one role; allowed: {ALLOWED}"),
        (
            "bad name",
            ["viewer"],
            None,
            "key name 'bad name' is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
        ),
        (
            "ci",
            ["viewer"],
            0,
            "rate limit 0 is not allowed: give requests per minute, at least 1 (or none for the server's defaults)",
        ),
    ],
)
def test_invalid_key_requests_are_refused(
    keys: KeyStore, name: str, roles: list[str], rpm: int | None, message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        keys.create(name, roles, "test", rate_limit_rpm=rpm)
    assert info.value.message == message


def test_a_name_is_never_reused_even_after_revocation(keys: KeyStore) -> None:
    first, _ = keys.create("ci", ["viewer"], "test")
    keys.revoke("ci")
    with pytest.raises(InvalidRequest) as info:
        keys.create("ci", ["viewer"], "test")
    assert info.value.message == (
        f"a key named 'ci' already exists (id {first.id}); names are never reused, even after revocation: "
        "choose another name"
    )


def test_count_active_leaves_out_revoked_keys(keys: KeyStore) -> None:
    assert keys.count_active() == 0
    keys.create("a", ["viewer"], "test")
    keys.create("b", ["viewer"], "test")
    assert keys.count_active() == 2
    keys.revoke("a")
    assert keys.count_active() == 1


# The CLI: a real database file, since the command opens (and closes) its own store.


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alma-mcp")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["keys", *argv])


@pytest.fixture
def file_settings(tmp_path: Path) -> Settings:
    return Settings(db_path=str(tmp_path / "alma.db"))


def test_cli_create_prints_the_key_alone_on_stdout_once(
    file_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_keys(file_settings, parse("create", "--name", "ci", "--roles", "viewer,proposer", "--rate-limit", "30"))
        == 0
    )
    out, err = capsys.readouterr()
    raw = out.strip()
    assert out == raw + "\n"
    match = KEY_RE.fullmatch(raw)
    assert match is not None
    assert err == (
        f"created key 'ci' (id {match.group(1)}, roles proposer,viewer, 30 rpm); it acts as key:ci.\n"
        "Store it now: it is shown only this once. Send it as 'Authorization: Bearer <key>' or "
        "'X-API-Key: <key>'.\n"
    )
    store = Store.open(file_settings.db_path)
    try:
        found = KeyStore(store).authenticate(raw)
        assert found is not None
        assert found.created_by.startswith("user:")
    finally:
        store.close()


def test_cli_list_shows_keys_without_hashes_and_revoke_marks_them(
    file_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_keys(file_settings, parse("list")) == 0
    assert capsys.readouterr().out == "no keys; create one with: alma-mcp keys create --name NAME --roles viewer\n"
    run_keys(file_settings, parse("create", "--name", "ci", "--roles", "viewer"))
    run_keys(file_settings, parse("create", "--name", "deploy-bot", "--roles", "deployer,viewer", "--rate-limit", "5"))
    capsys.readouterr()
    store = Store.open(file_settings.db_path)
    try:
        ci, bot = KeyStore(store).all_keys()
        hashes = [str(row[0]) for row in store.db.execute("SELECT secret_hash FROM api_keys").fetchall()]
    finally:
        store.close()

    assert run_keys(file_settings, parse("revoke", "ci")) == 0
    assert capsys.readouterr().out == f"revoked key 'ci' (id {ci.id}); requests with it now get 401\n"
    assert run_keys(file_settings, parse("revoke", ci.id)) == 0
    again = capsys.readouterr().out
    assert again.startswith(f"key 'ci' (id {ci.id}) was already revoked at 20")

    assert run_keys(file_settings, parse("list")) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ROLES", "RPM", "CREATED", "LAST", "USED", "REVOKED"]
    created = ci.created_at[:16].replace("T", " ").split()
    assert lines[1].split()[:6] == [ci.id, "ci", "viewer", "-", *created]
    assert lines[1].split()[6] == "-"  # never used
    assert lines[1].split()[7:] == again.split(" at ")[1].split()  # revoked at
    assert lines[2].split()[:4] == [bot.id, "deploy-bot", "deployer,viewer", "5"]
    assert lines[2].split()[-1] == "-"  # not revoked
    assert not any(h in out for h in hashes)


def test_cli_create_with_an_unknown_role_raises_the_coded_error(file_settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as info:
        run_keys(file_settings, parse("create", "--name", "ci", "--roles", "viewer,god"))
    assert str(info.value) == f"[request.invalid] unknown role 'god'; allowed: {ALLOWED}"


def test_cli_refuses_an_in_memory_database(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_keys(settings, parse("list")) == 2
    assert capsys.readouterr().err == (
        "alma-mcp: ALMA_DB_PATH is ':memory:': keys kept there vanish when this command exits; point "
        "ALMA_DB_PATH at the database the server uses\n"
    )
